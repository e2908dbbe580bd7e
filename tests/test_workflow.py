"""Workflow checks that run before any training: a bad backbone checkpoint fails early."""

import json
from dataclasses import replace

import pytest

from unipose_ray.config import load_config
from unipose_ray.config.loading import ConfigError
from unipose_ray.models import build_rtmpose
from unipose_ray.models.checkpoints import CheckpointError, save_checkpoint
from unipose_ray.workflows.training import ensure_backbone, run_train_teacher


def test_a_missing_backbone_checkpoint_is_named(tmp_path):
    config = load_config("demo", [f"student.backbone_checkpoint={tmp_path / 'cspnext-t.pth'}"])
    with pytest.raises(FileNotFoundError, match=r"student.backbone_checkpoint .*cspnext-t.pth"):
        ensure_backbone(config, None, tmp_path)


def test_a_backbone_of_another_size_fails_before_training(tmp_path):
    path = save_checkpoint(build_rtmpose("s", 17), tmp_path / "cspnext-s.pth")
    config = load_config("demo", [f"student.backbone_checkpoint={path}"])  # an RTMPose-t student
    with pytest.raises(CheckpointError, match="does not fit this RTMPose size"):
        ensure_backbone(config, None, tmp_path)
    # the right size passes, and the configured path is kept (no pretraining run)
    path = save_checkpoint(build_rtmpose("t", 17), tmp_path / "cspnext-t.pth")
    config = load_config("demo", [f"student.backbone_checkpoint={path}"])
    assert ensure_backbone(config, None, tmp_path).student.backbone_checkpoint == str(path)


def test_a_relative_backbone_path_reaches_the_workers_absolute(tmp_path, monkeypatch):
    """Ray Train workers run in their own folder: a path relative to the driver breaks there."""
    save_checkpoint(build_rtmpose("t", 17), tmp_path / "cspnext-t.pth")
    monkeypatch.chdir(tmp_path)
    config = load_config("demo", ["student.backbone_checkpoint=cspnext-t.pth"])
    assert ensure_backbone(config, None, tmp_path).student.backbone_checkpoint == str(
        tmp_path / "cspnext-t.pth")


def test_a_pretrained_backbone_from_other_settings_is_not_reused(tmp_path):
    run_dir = tmp_path / "models" / "demo_self_trained_pretrain"
    run_dir.mkdir(parents=True)
    save_checkpoint(build_rtmpose("t", 17), run_dir / "pretrained.pth")
    config = load_config("demo_self_trained")
    made = {"size": "t", "dataset": "coco", "epochs": config.pretrain.epochs + 1,
            "input_size": list(config.student.codec.input_size)}
    (run_dir / "pretrain.json").write_text(json.dumps(made))
    with pytest.raises(ConfigError, match=r"was pretrained with .*delete .*demo_self_trained_pretrain"):
        ensure_backbone(config, None, tmp_path)
    made["epochs"] = config.pretrain.epochs  # the same settings: reused as it is
    (run_dir / "pretrain.json").write_text(json.dumps(made))
    assert ensure_backbone(config, None, tmp_path).student.backbone_checkpoint == str(
        run_dir / "pretrained.pth")


def test_a_teacher_trained_here_must_fit_the_students_backbone(tmp_path):
    # paper: an RTMPose-s backbone checkpoint, RTMPose-m teachers (given as checkpoints there)
    with pytest.raises(ConfigError, match=r"\{'coco': 'm'\} ask for another size"):
        run_train_teacher(load_config("paper"), "coco", tmp_path)


def test_the_heatmap_head_is_only_for_the_pretraining_run(tmp_path):
    config = load_config("demo", ["student.head=heatmap", "teachers=[]", "pretrain=null"])
    with pytest.raises(ConfigError, match="only for the run the pretrain section starts"):
        ensure_backbone(config, None, tmp_path)


def test_relative_data_paths_in_a_yaml_reach_the_workers_absolute(real_samples, tmp_path,
                                                                  monkeypatch):
    """The paths a user writes relative to where they start the job (the failure seen: a
    teacher run that trained, then could not find its COCO GT file at validation, in a
    worker's folder)."""
    import os
    import shutil
    from pathlib import Path

    from unipose_ray.workflows.training import prepare_data

    shutil.copytree(real_samples, tmp_path / "data")
    (tmp_path / "run.yaml").write_text(
        "data:\n"
        "  coco_train: {ann_file: data/coco/test_coco.json, img_dir: data/coco}\n"
        "  coco_val: {ann_file: data/coco/test_coco.json, img_dir: data/coco}\n"
        "  mpii_val: {ann_file: data/mpii/test_mpii.json, img_dir: data/mpii}\n")
    monkeypatch.chdir(tmp_path)
    config, data = prepare_data(load_config("run.yaml"), Path("out"))
    monkeypatch.chdir(tmp_path / "out")  # a worker's folder: elsewhere
    for split in config.data.splits().values():
        for path in (split.ann_file, split.img_dir):
            assert os.path.isabs(path) and os.path.exists(path), path
    for eval_set in data.eval_sets:
        for path in (eval_set.records_path, eval_set.ann_file, eval_set.img_dir):
            assert path is None or (os.path.isabs(path) and os.path.exists(path)), path
    assert all(os.path.isabs(p) and os.path.exists(p) for p in data.train.values())


def test_a_checkpoint_that_does_not_fit_its_config_fails_before_training(random_teachers,
                                                                        tmp_path):
    from unipose_ray.workflows.training import check_teachers

    config = replace(load_config("demo_self_trained"), teachers=tuple(random_teachers.values()))
    assert set(check_teachers(config)) == {"coco", "mpii"}  # the files as written fit
    wrong = build_rtmpose("t", 16, (96, 128), (2.45, 2.83))  # MPII-sized head for COCO config
    path = save_checkpoint(wrong, tmp_path / "wrong.pth")
    bad = replace(config, teachers=(replace(config.teachers[0], checkpoint=str(path)),
                                    config.teachers[1]))
    with pytest.raises(CheckpointError, match="head.final_layer.weight"):
        check_teachers(bad)
    missing = replace(config, teachers=(replace(config.teachers[0],
                                                checkpoint=str(tmp_path / "none.pth")),))
    with pytest.raises(FileNotFoundError,
                       match="teacher 'coco': checkpoint .*none.pth does not exist"):
        check_teachers(missing)


@pytest.mark.parametrize("cached", [False, True], ids=["online teachers", "from the cache"])
def test_teacher_services_start_for_a_run_unless_it_reads_the_cache(cached, random_teachers,
                                                                    monkeypatch, tmp_path):
    """``fit_with_teachers``: the run's teacher actors are started, handed to the training
    and stopped; a run that reads its targets from a cache starts none."""
    import unipose_ray.workflows.training as workflow
    from unipose_ray.train.job import TrainJob

    config = replace(load_config("demo_self_trained"), teachers=tuple(random_teachers.values()))
    if cached:
        config = replace(config, teacher_cache=replace(config.teacher_cache,
                                                       uri=str(tmp_path / "cache")))
    calls = []

    class Pool:
        def wait_ready(self):
            calls.append("ready")

    def start_teachers(teachers, grid):
        calls.append(("start", tuple(t.name for t in teachers)))
        return {t.name: Pool() for t in teachers}, "group"

    def run_training(job, pools):
        calls.append(("train", sorted(pools) if pools else None))
        return "result"

    monkeypatch.setattr(workflow, "start_teachers", start_teachers)
    monkeypatch.setattr(workflow, "stop_teachers", lambda pools, group: calls.append("stop"))
    monkeypatch.setattr(workflow, "run_training", run_training)
    monkeypatch.setattr(workflow, "export_best", lambda result, job: None)
    assert workflow.fit_with_teachers(TrainJob(config, "train.parquet", ())) == "result"
    if cached:
        assert calls == [("train", None)]
    else:
        assert calls == [("start", ("coco", "mpii")), "ready", "ready",
                         ("train", ["coco", "mpii"]), "stop"]
