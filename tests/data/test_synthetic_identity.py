"""The demo's data does not move: a COCO + MPII config writes exactly the bytes the generator
wrote before it learnt other formats and feet (its results table is published), and other
datasets added to a run leave COCO and MPII as they were (Halpe-26 adds only feet)."""

from __future__ import annotations

import hashlib
import importlib
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from unipose_ray.data.synthetic import SyntheticConfig, generate_dataset, render_sample
from unipose_ray.skeleton import UNIFIED

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_COMMIT = "db5e9ba22f58c9bf214f540531380d58eb1a36cf"
"""The last commit whose generator wrote COCO and MPII only."""
_MODULES = ("__init__", "config", "drawing", "figure", "files", "scene")
SMALL = SyntheticConfig(seed=11, coco_train=5, coco_val=4, mpii_train=5, mpii_val=4)
SMALL_JSON_SHA256 = "e95d5988fcab352667c63fcaad39587b46a6bb8051e4c05a6bd7921db37dc88e"
"""The annotation files of ``SMALL`` as the reference commit writes them (its images depend
on OpenCV's JPEG encoder too: compared with the reference code itself below)."""


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _json_sha256(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.json")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, bytes]:
    return _tree_bytes(generate_dataset(tmp_path_factory.mktemp("small"), SMALL,
                                        progress=False).root)


def _reference_package(tmp_path: Path, monkeypatch) -> object:
    """The reference commit's generator, importable as ``synthetic_reference`` (it reads the
    skeleton of this tree, whose 21 unified joints tests/data/test_skeleton.py pins)."""
    package = tmp_path / "synthetic_reference"
    package.mkdir()
    for module in _MODULES:
        show = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "show",
             f"{REFERENCE_COMMIT}:unipose_ray/data/synthetic/{module}.py"],
            capture_output=True, text=True, check=False)
        if show.returncode != 0:
            pytest.skip(f"the reference commit is not in this checkout: {show.stderr.strip()}")
        source = show.stdout.replace("unipose_ray.data.synthetic", "synthetic_reference")
        (package / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module("synthetic_reference")


def test_coco_mpii_bytes_equal_the_reference_generators(small, tmp_path, monkeypatch):
    reference = _reference_package(tmp_path, monkeypatch)
    old_config = reference.SyntheticConfig(**SMALL.record())
    written = reference.generate_dataset(tmp_path / "old", old_config, progress=False)
    before = _tree_bytes(written.root)
    assert sorted(small) == sorted(before)
    changed = [name for name in before if small[name] != before[name]]
    assert not changed, f"the generator no longer writes the demo's bytes: {changed}"


def test_coco_mpii_annotation_files_have_the_pinned_digest(tmp_path):
    root = generate_dataset(tmp_path, SMALL, progress=False).root
    assert _json_sha256(root) == SMALL_JSON_SHA256, (
        "COCO/MPII annotations changed: the demo's data and its published table would move")


def test_aic_and_crowdpose_leave_coco_and_mpii_untouched(small, tmp_path):
    more = replace(SMALL, aic_train=2, aic_val=1, crowdpose_train=1, crowdpose_val=2)
    assert more.skeleton == SMALL.skeleton  # they add no joint: still 21
    tree = _tree_bytes(generate_dataset(tmp_path, more, progress=False).root)
    for name, content in small.items():
        if name != "synthetic_config.json":
            assert tree[name] == content, name
    assert {n.split("/")[0] for n in tree} == {"coco", "mpii", "aic", "crowdpose",
                                               "synthetic_config.json"}


@pytest.mark.parametrize(("dataset", "index"), [("coco", 0), ("coco", 3), ("mpii", 3)])
def test_halpe26_puts_feet_on_the_same_people(dataset, index):
    """A run with Halpe-26 draws the same COCO/MPII scenes; only the feet are new pixels."""
    with_feet = replace(SMALL, halpe26_train=1)
    image, labels = render_sample(SMALL, dataset, "train", index)
    image_feet, labels_feet = render_sample(with_feet, dataset, "train", index)
    assert len(labels) == len(labels_feet)
    k = UNIFIED.num_keypoints
    for plain, feet in zip(labels, labels_feet, strict=True):
        np.testing.assert_array_equal(feet.keypoints[:k], plain.keypoints)
        assert feet.keypoints.shape == (k + 6, 2)
    changed = np.argwhere(np.abs(image.astype(int) - image_feet).max(axis=2) > 0)[:, ::-1]
    assert len(changed) > 0
    # every changed pixel lies near a foot: within a foot length (< 0.17 of the person's
    # height, here the box height) of its ankle, toes or heel
    near = np.zeros(len(changed), dtype=bool)
    for label in labels_feet:
        points = label.keypoints[[15, 16, *range(k, k + 6)]]
        reach = 0.2 * label.bbox[3] + 3
        distance = np.linalg.norm(changed[:, None, :] - points[None], axis=2).min(axis=1)
        near |= distance <= reach
    assert near.mean() > 0.99, f"{(~near).sum()} changed pixels far from every foot"
