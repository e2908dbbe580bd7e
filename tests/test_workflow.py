"""Workflow checks that run before any training: a bad backbone checkpoint fails early."""

import pytest

from unipose_ray.config import load_config
from unipose_ray.models import CheckpointError, build_rtmpose, save_checkpoint
from unipose_ray.workflow import ensure_backbone


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
