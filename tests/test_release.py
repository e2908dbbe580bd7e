"""The released demo models: loadable as MMPose files, checked against their manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from unipose_ray.config import load_config
from unipose_ray.models import build_from_config
from unipose_ray.models.checkpoints import load_backbone
from unipose_ray.models.release import MANIFEST_NAME, ReleaseError, sha256_of
from unipose_ray.skeleton import KEYPOINT_SETS
from unipose_ray.train.job import build_student

RELEASE = Path(__file__).resolve().parents[1] / "released" / "demo"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((RELEASE / MANIFEST_NAME).read_text())


def test_every_file_matches_its_sha256_and_the_release_is_small(manifest):
    files = {p.name for p in RELEASE.iterdir() if p.name != MANIFEST_NAME}
    assert files == set(manifest["files"])
    for name, entry in manifest["files"].items():
        assert sha256_of(RELEASE / name) == entry["sha256"], name
    assert sum(e["bytes"] for e in manifest["files"].values()) <= 25 * 2**20
    assert manifest["command"].startswith("python jobs/release_demo_models.py")
    assert {"generate", "run"} <= set(manifest["seeds"])


def test_the_demo_loads_the_released_files_through_the_mmpose_config_path(manifest):
    config = load_config("demo")
    for teacher in config.teachers:
        released = manifest["teachers"][teacher.name]
        assert Path(teacher.config).name == released["config"]
        assert Path(teacher.checkpoint).name == released["checkpoint"]
        model = build_from_config(RELEASE / released["config"], RELEASE / released["checkpoint"])
        assert model.spec.num_keypoints == KEYPOINT_SETS[teacher.dataset].num_keypoints
        assert all(p.dtype == torch.float32 for p in model.parameters())  # fp16 on disk only
        with torch.no_grad():
            x, y = model.eval()(torch.zeros(1, 3, *model.spec.input_size[::-1]))
        assert torch.isfinite(x).all() and torch.isfinite(y).all()
        assert released["metrics"]["score"] > 0
    assert Path(config.student.backbone_checkpoint).name == manifest["backbone"]
    load_backbone(build_student(config), RELEASE / manifest["backbone"])


def test_a_changed_file_is_refused_by_name(manifest, tmp_path):
    copy = tmp_path / "demo"
    shutil.copytree(RELEASE, copy)
    teacher = manifest["teachers"]["coco"]
    checkpoint = copy / teacher["checkpoint"]
    data = bytearray(checkpoint.read_bytes())
    data[-100] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match=teacher["checkpoint"]):
        build_from_config(copy / teacher["config"], checkpoint)
    (copy / teacher["config"]).write_text((copy / teacher["config"]).read_text() + "\n# edited\n")
    with pytest.raises(ReleaseError, match=teacher["config"]):
        build_from_config(copy / teacher["config"], copy / manifest["teachers"]["mpii"]["checkpoint"])
    stray = copy / "other.pth"
    shutil.copyfile(copy / manifest["backbone"], stray)
    with pytest.raises(ReleaseError, match="not one of the files"):
        load_backbone(build_student(load_config("demo")), stray)
