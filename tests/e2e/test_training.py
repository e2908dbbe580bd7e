"""Ray Train runs on the shared Ray beyond the comparison: the training stream on both crop
paths, teachers as services and in the worker, faults (a killed teacher replica, a killed
training worker, a corrupt image), and the checks made before a run starts."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from runs import assert_same_weights, final_state, registered_steps

from unipose_ray.config import load_config
from unipose_ray.data.records import read_records
from unipose_ray.teachers.service import StudentGrid, TeacherPool
from unipose_ray.train.data import StepPlan, StreamSpec, epoch_order, stream_batches
from unipose_ray.train.driver import check_resources, run_training
from unipose_ray.train.job import TrainJob
from unipose_ray.workflows.training import check_teachers, prepare_data, train_model

pytestmark = pytest.mark.ci


@pytest.fixture(scope="module")
def prepared(ray_cluster, tiny, random_teachers, tmp_path_factory):
    """``demo_self_trained`` on the tiny dataset with the random teachers: ``(config, data,
    out)``."""
    out = tmp_path_factory.mktemp("training")
    config, data = prepare_data(load_config("demo_self_trained", [*tiny, "baseline=false"]), out)
    config = replace(config, teachers=tuple(random_teachers[t.name] for t in config.teachers),
                     pretrain=None)
    return config, data, out


def _grid(config) -> StudentGrid:
    return StudentGrid(config.student.codec.num_bins, config.student.codec.split_ratio)


def test_ray_data_and_the_inline_stream_give_the_same_batches(prepared):
    from unipose_ray.data.pipeline import PipelineConfig

    config, data, out = prepared
    records = str(data.train_records(["coco", "mpii"], out))
    spec = StreamSpec(records, PipelineConfig(config.student.codec, config.augment, seed=5),
                      teacher_sizes=((64, 64),))
    n = read_records(records).num_rows
    plan = StepPlan(n, 4, world_size=2, rank=1, start_step=3, total_steps=3 + n // 4)
    by_actors, inline = list(stream_batches(spec, plan, 1)), list(stream_batches(spec, plan, 0))
    assert [b["step"][0] for b in by_actors] == list(range(3, plan.total_steps))
    assert len(inline) == len(by_actors)
    for ours, theirs in zip(inline, by_actors, strict=True):
        assert ours.keys() == theirs.keys()
        for name in ours:
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name, strict=True)


def test_in_process_teachers_give_the_online_services_logits(prepared):
    """The worker's own teachers (``teachers_online=False``, the paper authors' way) and the
    teacher actors answer the same batch with the same student-grid logits."""
    from unipose_ray.data.pipeline import PipelineConfig
    from unipose_ray.train.data import CropStage
    from unipose_ray.train.kd_step import TeacherClient

    config, data, out = prepared
    records = str(data.train_records(["coco", "mpii"], out))
    specs = check_teachers(config)
    spec = StreamSpec(records, PipelineConfig(config.student.codec, config.augment, seed=0),
                      teacher_sizes=((64, 64),))
    batch = CropStage(spec)({"id": np.arange(8)})
    job = TrainJob(config, records, (), specs)
    pools = {t.name: TeacherPool(t, _grid(config)) for t in config.teachers}
    try:
        online = TeacherClient(job, pools)
        served = online.collect(online.request(batch))
    finally:
        for pool in pools.values():
            pool.shutdown()
    local = TeacherClient(replace(job, teachers_online=False), None)
    assert set(local.local) == {"coco", "mpii"}  # the worker's own models, no actor
    inline = local.collect(local.request(batch))
    assert served.keys() == inline.keys() == {"coco", "mpii"}
    for name, (x, y) in served.items():
        assert x.shape == (8, 17 if name == "coco" else 16, config.student.codec.num_bins[0])
        # threads differ (an actor's one vs this process's): float sums may round apart
        torch.testing.assert_close(inline[name][0], x, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(inline[name][1], y, rtol=1e-5, atol=1e-4)


def test_workers_share_the_replicas_and_a_killed_replica_is_restarted(prepared):
    """Two training workers, two replicas of each teacher: each worker starts its
    round-robin at its own replica, so every replica serves one call a step. One MPII
    replica is killed once it has served three calls; it restarts, its call is retried,
    and every step trains. (Ray Data's crop actors: ``test_a_corrupt_image_stops_the_run...``;
    here they would cost a minute of start-up on 2 cores.)"""
    import ray

    config, data, out = prepared
    config = replace(config, teachers=tuple(replace(t, replicas=2) for t in config.teachers),
                     optim=replace(config.optim, epochs=3),
                     run=replace(config.run, name="replicas", num_workers=2))
    pools = {t.name: TeacherPool(t, _grid(config)) for t in config.teachers}
    for pool in pools.values():
        pool.wait_ready()
    victim = pools["mpii"].replicas[0]
    killed = threading.Event()

    def kill_after_three_calls():
        # ping queues behind the replica's logits calls: the run cannot get far meanwhile
        while ray.get(victim.ping.remote()) < 3:
            time.sleep(0.1)
        ray.kill(victim, no_restart=False)
        killed.set()

    threading.Thread(target=kill_after_three_calls, daemon=True).start()
    job = TrainJob(config, data.train_records(["coco", "mpii"], out), (),
                   check_teachers(config), str(out / "models" / "replicas"))
    try:
        result = run_training(job, pools)
        assert killed.wait(timeout=10), "the replica was never killed: no restart exercised"
        assert result.error is None
        steps = read_records(job.train_records).num_rows // (2 * config.optim.batch_size) * 3
        assert result.metrics["train/step"] == steps  # every step trained, none lost
        calls = {name: ray.get([r.ping.remote() for r in pool.replicas])
                 for name, pool in pools.items()}
    finally:
        for pool in pools.values():
            pool.shutdown()
    assert calls["coco"] == [steps, steps]  # one call a step on each replica
    restarted, untouched = calls["mpii"]
    assert untouched == steps and 0 < restarted < steps  # a fresh actor, counting from zero


def _kill_the_worker_at_its_first_checkpoint(address: str, storage: Path, before: set[str],
                                             killed: list[int]) -> None:
    """SIGKILL the run's training worker as soon as the controller has registered a
    checkpoint. The worker's pid is found while it starts up, so the kill follows the
    registration by one poll (50 ms): the worker cannot have finished by then, since each
    of its reports waits for the controller to take the one before."""
    from ray.util.state import list_actors

    deadline = time.monotonic() + 600
    pid = None
    while pid is None and time.monotonic() < deadline:
        workers = [a for a in list_actors(address=address,
                                          filters=[("class_name", "=", "RayTrainWorker"),
                                                   ("state", "=", "ALIVE")])
                   if a.actor_id not in before]
        pid = workers[0].pid if workers else None
        time.sleep(0.2)
    while pid is not None and time.monotonic() < deadline:
        steps = registered_steps(storage)
        if steps:
            os.kill(pid, signal.SIGKILL)
            killed.append(max(steps))
            return
        time.sleep(0.05)


def _all_actors(address: str) -> dict[str, str]:
    from ray.util.state import list_actors

    return {a.actor_id: a.class_name for a in list_actors(address=address, limit=10_000)}


@pytest.fixture(scope="module")
def killed_run(comparison, ray_cluster, tmp_path_factory):
    """The comparison's joint student trained again as run ``killed``, a checkpoint every
    2 steps, its worker killed after the first: ``(config, data, out, result, killed at
    step, actors started)``."""
    out = tmp_path_factory.mktemp("killed")
    config, data = prepare_data(comparison.config, out)
    config = replace(config, teachers=(), tracking=replace(config.tracking, tracking_uri=None),
                     run=replace(config.run, name="killed", checkpoint_every_steps=2,
                                 max_failures=2))
    before = _all_actors(ray_cluster.dashboard)
    killed: list[int] = []
    killer = threading.Thread(target=_kill_the_worker_at_its_first_checkpoint, daemon=True,
                              args=(ray_cluster.dashboard,
                                    out / "models" / "killed" / "ray_results" / "killed",
                                    set(before), killed))
    killer.start()
    _, result = train_model(config, data, out, sorted(data.train))
    killer.join(timeout=10)
    started = {name for actor_id, name in _all_actors(ray_cluster.dashboard).items()
               if actor_id not in before}
    return config, data, out, result, killed, started


def test_a_killed_worker_resumes_where_it_was_and_ends_with_the_uninterrupted_weights(
        killed_run, comparison):
    """The run restarts from the checkpoint (``FailureConfig``), its stream starts at that
    step, and it ends with the very weights and EMA of the comparison's joint student,
    which was never stopped."""
    _, _, out, result, killed, started = killed_run
    assert killed, "the worker was never killed: the test did not exercise a restart"
    assert result.error is None
    reference = comparison.joint_state
    total = reference["step"]
    assert result.metrics["train/step"] == total
    start = result.metrics["train/start_step"]  # lost at most run.checkpoint_every_steps
    assert killed[0] <= start < total and start % 2 == 0
    assert_same_weights(final_state(out / "models" / "killed", "killed"), reference)
    # ... on this local Ray without the helper actors LeanTorchTrainer leaves out
    assert {"TrainController", "RayTrainWorker"} <= started
    assert not started & {"DatasetManager", "PlacementGroupCleaner"}


def test_a_finished_run_started_again_with_one_more_epoch_trains_only_that_epoch(killed_run):
    """The same run name and folder with ``optim.epochs`` + 1: it resumes from its last
    checkpoint (the end of its last epoch) and trains to the new end, in the same MLflow
    run."""
    from mlflow.tracking import MlflowClient

    config, data, out, first, _, _ = killed_run
    epochs = config.optim.epochs
    longer = replace(config, optim=replace(config.optim, epochs=epochs + 1))
    _, result = train_model(longer, data, out, sorted(data.train))
    per_epoch = first.metrics["train/step"] // epochs
    assert result.metrics["train/start_step"] == epochs * per_epoch
    assert result.metrics["train/step"] == (epochs + 1) * per_epoch
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    (run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'killed'")
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val/score")
    assert sorted(m.step for m in history)[-1] == result.metrics["train/step"]


@pytest.fixture
def corrupt(ray_cluster, tiny_dataset, tiny, tmp_path):
    """The tiny dataset's COCO training split in a copy whose image of the first COCO
    record the run trains is corrupted after the records were written: ``(config, data,
    bad image, records)``."""
    images = tmp_path / "coco_train"
    shutil.copytree(tiny_dataset.images_dir("coco", "train"), images)
    ann = tiny_dataset.annotation_file("coco", "train")
    config = load_config("demo_self_trained", [
        *tiny, f"data.coco_train={{ann_file: {ann}, img_dir: {images}}}", "teachers=[]",
        "loss.w_gt=1.0", "pretrain=null", "optim.epochs=1", "run.max_failures=0",
        "baseline=false"])
    config, data = prepare_data(config, tmp_path)
    records = read_records(data.train_records(sorted(data.train), tmp_path / "records"))
    paths = records.column("image_path").to_pylist()
    order = epoch_order(records.num_rows, config.run.seed, 0)
    bad = next(paths[i] for i in order if paths[i].startswith(f"{images}/"))  # the copy's
    Path(bad).write_bytes(b"\xff\xd8 truncated")
    return config, data, bad, records


def test_a_corrupt_image_stops_the_run_naming_it_and_the_run_is_marked_failed(corrupt, tmp_path):
    from mlflow.tracking import MlflowClient

    config, data, bad, _ = corrupt
    failing = replace(config, run=replace(config.run, name="bad_image", data_actors=1))
    with pytest.raises(Exception, match=rf"(?s)cannot read image {bad}.*data.skip_bad_images"):
        train_model(failing, data, tmp_path, sorted(data.train))  # Ray Data's crop actors
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    (run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'bad_image'")
    assert run.info.status == "FAILED"


def test_a_corrupt_image_skipped_is_counted_once_for_each_of_its_records(corrupt, tmp_path):
    config, data, bad, records = corrupt
    skipping = replace(config, data=replace(config.data, skip_bad_images=True),
                       run=replace(config.run, name="bad_image_skipped", data_actors=0))
    _, result = train_model(skipping, data, tmp_path, sorted(data.train))  # crops inline
    n, batch = records.num_rows, config.optim.batch_size
    steps = n // batch
    trained = epoch_order(n, config.run.seed, 0)[:steps * batch]  # the epoch's rows
    paths = records.column("image_path").to_pylist()
    assert result.metrics["train/step"] == steps
    assert result.metrics["train/bad_images"] == sum(paths[i] == bad for i in trained) > 0


def test_more_gpus_than_the_cluster_has_fails_before_training(prepared):
    import ray

    config, _, _ = prepared
    have = int(ray.cluster_resources().get("GPU", 0))
    gpu = replace(config, run=replace(config.run, use_gpu=True, num_workers=have + 1))
    with pytest.raises(RuntimeError, match=rf"asks for {have + 1} GPU\(s\).*cluster has {have}"):
        check_resources(gpu)


def test_local_ray_workers_run_this_interpreter_without_the_uv_hook(ray_cluster):
    """Started under ``uv run`` (as the README's test command is), Ray would start every
    worker through ``uv run`` in a copy of the working directory (its runtime-env hook):
    the local Ray has the hook off, and its workers run this very interpreter with no such
    runtime environment."""
    import os

    import ray
    from ray._private import ray_constants

    wanted = os.environ.get("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0").lower() in ("1", "true")
    assert ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV is wanted

    @ray.remote(num_cpus=0)
    def where() -> tuple[str, dict]:
        return sys.executable, dict(ray.get_runtime_context().runtime_env)

    executable, runtime_env = ray.get(where.remote())
    assert executable == sys.executable
    assert "py_executable" not in runtime_env and "working_dir" not in runtime_env, runtime_env


@pytest.mark.gpu
def test_two_half_gpu_teachers_share_one_gpu(prepared):
    import ray

    from unipose_ray.teachers.service import start_teachers, stop_teachers

    config, _, _ = prepared
    teachers = tuple(replace(t, num_gpus=0.5) for t in config.teachers)
    pools, group = start_teachers(teachers, _grid(config))
    try:
        where = [ray.get(p.replicas[0].placement.remote()) for p in pools.values()]
    finally:
        stop_teachers(pools, group)
    assert where[0]["gpu_ids"] == where[1]["gpu_ids"] and len(where[0]["gpu_ids"]) == 1
    assert {w["device"] for w in where} == {"cuda"}
