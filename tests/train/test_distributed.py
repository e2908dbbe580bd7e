"""Distributed training end to end on one local Ray instance (shared by this module).

A tiny generated dataset, RTMPose-t teachers with random weights written as MMPose config +
checkpoint files, a few steps of Ray Train: checks checkpoints, MLflow tracking, resume,
a killed teacher actor, and the early errors for bad input.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from unipose_ray.checkpoints import CheckpointError, load_weights, save_checkpoint
from unipose_ray.config import load_config
from unipose_ray.models import build_from_config, build_rtmpose, write_mmpose_config
from unipose_ray.skeleton import KEYPOINT_SETS
from unipose_ray.teachers.service import StudentGrid, TeacherPool
from unipose_ray.train.data import StepPlan, StreamSpec, num_records, stream_batches
from unipose_ray.train.driver import check_resources, run_training
from unipose_ray.train.job import TrainJob
from unipose_ray.workflow import check_teachers, ensure_backbone, prepare_data, train_model

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = ["generate.coco_train=24", "generate.mpii_train=24", "generate.coco_val=4",
        "generate.mpii_val=4", "optim.batch_size=8", "optim.epochs=2", "optim.warmup_steps=2",
        "run.val_every_epochs=1", "baseline=false", "parallel_runs=1",
        "run.data_actors=1"]  # Ray Data's crop actors (the demo presets crop in the worker)


def random_teacher_files(config, out):
    teachers = []
    for t in config.teachers:
        codec = t.train_codec or config.student.codec
        model = build_rtmpose("t", KEYPOINT_SETS[t.dataset].num_keypoints, codec.input_size,
                              codec.sigma)
        teachers.append(replace(t, config=str(write_mmpose_config(model, "t", out / f"{t.name}.py")),
                                checkpoint=str(save_checkpoint(model, out / f"{t.name}.pth"))))
    return replace(config, teachers=tuple(teachers))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("distill")
    config, data = prepare_data(load_config("demo_self_trained", TINY), out)
    config = random_teacher_files(config, out / "teachers")
    config = replace(config, run=replace(config.run, storage_path=str(out / "ray_results")))
    return config, data, out


def test_ray_data_and_the_inline_stream_give_the_same_batches(setup):
    from unipose_ray.data.pipeline import PipelineConfig

    config, data, out = setup
    records = str(data.train_records(["coco", "mpii"], out))
    spec = StreamSpec(records, PipelineConfig(config.student.codec, config.augment, seed=5),
                      teacher_sizes=((64, 64),))
    n = num_records(records)
    plan = StepPlan(n, 4, world_size=2, rank=1, start_step=3, total_steps=3 + n // 4)
    by_actors, inline = list(stream_batches(spec, plan, 1)), list(stream_batches(spec, plan, 0))
    assert [b["step"][0] for b in by_actors] == list(range(3, plan.total_steps))
    assert len(inline) == len(by_actors)
    for ours, theirs in zip(inline, by_actors, strict=True):
        assert ours.keys() == theirs.keys()
        for name in ours:
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name, strict=True)


def test_distillation_run_checkpoints_tracks_and_resumes(setup):
    from mlflow.tracking import MlflowClient

    config, data, out = setup
    specs = check_teachers(config)
    run_dir, _ = train_model(config, data, out, ["coco", "mpii"], specs)

    student = build_from_config(run_dir / "model_config.py", run_dir / "best.pth")
    assert student.spec.num_keypoints == 21 and student.spec.input_size == config.student.codec.input_size

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["loss.w_gt"] == str(config.loss.w_gt)
    assert run.data.params["teachers.1.weight"] == str(config.teachers[1].weight)
    for name in ("train/loss", "train/loss_gt", "train/loss_kd_coco", "train/loss_kd_mpii",
                 "val/coco_AP", "val/mpii_PCKh", "val/unified_AP", "val/score"):
        assert name in run.data.metrics, name
    assert len(client.get_metric_history(run.info.run_id, "val/score")) == 2  # once per epoch
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints", "val"} <= artifacts
    assert any(a.path.endswith(".png") for a in client.list_artifacts(run.info.run_id, "val"))

    # Started again with the same name and one more epoch: resumes after epoch 2.
    longer = replace(config, optim=replace(config.optim, epochs=3))
    pools = None
    job = TrainJob(longer, data.train_records(["coco", "mpii"], out), data.eval_sets, {},
                   str(run_dir))
    result = run_training(replace(job, config=replace(longer, teachers=(),
                                                      loss=replace(longer.loss, w_gt=1.0))), pools)
    steps_per_epoch = result.metrics["train/step"] // 3
    assert result.metrics["train/start_step"] == 2 * steps_per_epoch > 0


def test_a_killed_teacher_actor_is_restarted_and_training_finishes(setup):
    import ray

    config, data, out = setup
    config = replace(config, run=replace(config.run, name="killed_teacher"),
                     optim=replace(config.optim, epochs=3))
    specs = check_teachers(config)
    grid = StudentGrid(config.student.codec.num_bins, config.student.codec.split_ratio)
    pools = {t.name: TeacherPool(t, grid) for t in config.teachers}
    for pool in pools.values():
        pool.wait_ready()
    victim = pools["mpii"].replicas[0]
    killed = threading.Event()

    def kill_after_some_calls():
        deadline = time.time() + 300
        while time.time() < deadline:
            if ray.get(victim.ping.remote()) >= 3:
                ray.kill(victim, no_restart=False)
                killed.set()
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_some_calls, daemon=True)
    killer.start()
    job = TrainJob(config, data.train_records(["coco", "mpii"], out), (), specs,
                   str(out / "models" / "killed_teacher"))
    result = run_training(job, pools)
    killer.join(timeout=10)
    assert killed.is_set(), "the teacher was never killed: the test did not exercise a restart"
    assert result.error is None
    steps = (num_records(job.train_records) // config.optim.batch_size) * config.optim.epochs
    assert result.metrics["train/step"] == steps  # every step trained, none lost
    served_after_restart = ray.get(victim.ping.remote())  # the restarted actor answers
    assert 0 < served_after_restart < steps  # a fresh replica: its counter started from zero
    for pool in pools.values():
        pool.shutdown()


def test_more_gpus_than_the_cluster_has_fails_before_training(setup):
    config, _, _ = setup
    gpu = replace(config, run=replace(config.run, use_gpu=True, num_workers=2))
    with pytest.raises(RuntimeError, match=r"asks for 2 GPU\(s\).*cluster has 0"):
        check_resources(gpu)


def test_a_checkpoint_that_does_not_fit_its_config_fails_before_training(setup, tmp_path):
    config, _, _ = setup
    wrong = build_rtmpose("t", 16, (96, 128), (2.45, 2.83))  # MPII-sized head for COCO config
    path = save_checkpoint(wrong, tmp_path / "wrong.pth")
    bad = replace(config, teachers=(replace(config.teachers[0], checkpoint=str(path)),
                                    config.teachers[1]))
    with pytest.raises(CheckpointError, match="head.final_layer.weight"):
        check_teachers(bad)
    missing = replace(config, teachers=(replace(config.teachers[0], checkpoint=str(tmp_path / "none.pth")),))
    with pytest.raises(FileNotFoundError, match="teacher 'coco': checkpoint .*none.pth does not exist"):
        check_teachers(missing)


def test_a_training_run_is_tracked_on_a_real_mlflow_server(setup, mlflow_server):
    """Rank 0 logs to ``--tracking-uri http://...``: params, metrics and artifacts arrive."""
    from mlflow.tracking import MlflowClient

    uri, root = mlflow_server
    config, data, out = setup
    config = replace(config, teachers=(), loss=replace(config.loss, w_gt=1.0),
                     optim=replace(config.optim, epochs=1),
                     run=replace(config.run, name="served"),
                     tracking=replace(config.tracking, tracking_uri=uri, experiment="served"))
    train_model(config, data, out, ["coco", "mpii"])

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "served"
    assert run.data.params["optim.epochs"] == "1"
    assert {"train/loss", "train/loss_gt", "val/score", "val/coco_AP", "val/mpii_PCKh"} <= set(run.data.metrics)
    steps = num_records(data.train_records(["coco", "mpii"], out)) // config.optim.batch_size
    assert client.get_metric_history(run.info.run_id, "val/score")[-1].step == steps
    # Proxied artifacts: uploaded through the server into its --artifacts-destination.
    stored = {p.name for p in (root / "artifacts").rglob("*")}
    assert "config.yaml" in stored and "best.pth" in stored
    assert any(name.endswith(".png") for name in stored)


def test_local_ray_workers_skip_the_uv_run_hook(ray_session):
    import os

    from ray._private import ray_constants

    wanted = os.environ.get("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0").lower() in ("1", "true")
    assert ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV is wanted


def test_pretraining_trains_a_heatmap_backbone_that_runs_start_from(setup):
    """The demo's stand-in for RTMPose's pretrained CSPNeXt: a HeatmapHead model trained
    once, reused, and loaded into the backbone of the runs that follow."""
    from mlflow.tracking import MlflowClient

    config, data, out = setup
    config = replace(config, pretrain=replace(config.pretrain, epochs=1, cpus_per_worker=1),
                     run=replace(config.run, name="pre"))
    path = Path(ensure_backbone(config, data, out).student.backbone_checkpoint)
    assert path == out / "models" / "pre_pretrain" / "pretrained.pth"
    codec = config.student.codec
    pretrained = build_rtmpose("t", 17, codec.input_size, codec.sigma, head="heatmap")
    load_weights(pretrained, path)  # strict: a whole MMPose HeatmapHead model on COCO joints

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    (run,) = client.search_runs([experiment.experiment_id],
                                "tags.`unipose_ray.run_name` = 'pre_pretrain'")
    assert run.info.run_name == "pretrain_backbone"  # its MLflow name, as in a comparison
    assert run.data.metrics["train/loss_heatmap"] > 0

    written = path.stat().st_mtime_ns
    assert ensure_backbone(config, data, out).student.backbone_checkpoint == str(path)
    assert path.stat().st_mtime_ns == written  # reused, not trained again

    # A run from it, at a vanishing learning rate: its backbone weights are the pretrained ones
    # (a fresh initialisation would be nowhere near them).
    start = replace(config, teachers=(), loss=replace(config.loss, w_gt=1.0), pretrain=None,
                    student=replace(config.student, backbone_checkpoint=str(path)),
                    optim=replace(config.optim, epochs=1, lr=1e-12, warmup_steps=1),
                    run=replace(config.run, name="from_pretrained"))
    run_dir, _ = train_model(start, data, out, ["coco", "mpii"])
    student = build_from_config(run_dir / "model_config.py", run_dir / "best.pth")
    trained = dict(student.estimator.backbone.named_parameters())
    for name, weight in pretrained.estimator.backbone.named_parameters():
        torch.testing.assert_close(trained[name], weight, rtol=0, atol=1e-6)
