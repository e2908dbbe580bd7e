"""MPII PCKh against MMPose's ``MpiiPCKAccuracy`` run as its test loop runs it, and against a
plain numpy reference per joint and for the mean (real samples and a generated set)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unipose_ray.evaluation.pckh import compute_pckh, evaluate_pckh
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import MPII, mapping_for

REAL_MPII = Path(__file__).resolve().parents[2] / "../shared/data/real_samples/mpii/test_mpii.json"


def _mmpose_pckh(pred, gt, visible, head_size) -> dict:
    """MMPose's MpiiPCKAccuracy fed per sample through process + evaluate."""
    import_mmpose()
    from mmpose.evaluation import MpiiPCKAccuracy

    metric = MpiiPCKAccuracy(norm_item="head")
    samples = [
        {
            "pred_instances": {"keypoints": p[None].copy()},
            "gt_instances": {
                "keypoints": g[None].copy(),
                "keypoints_visible": v[None, :, None].copy(),
                "head_size": np.array([[h]]),
            },
        }
        for p, g, v, h in zip(pred, gt, visible, head_size)
    ]
    for start in range(0, len(samples), 16):
        metric.process([], samples[start : start + 16])
    results = metric.evaluate(size=len(samples))
    return {name.split("/")[-1]: value for name, value in results.items()}


def _reference_per_joint(pred, gt, visible, head_size, thr) -> np.ndarray:
    """Plain numpy, not MMPose's code: % of visible joints with |pred + 1 - gt| / head < thr
    (MATLAB's 1-based GT), NaN where none is visible."""
    distance = np.linalg.norm(pred + 1.0 - gt, axis=-1) / np.asarray(head_size)[:, None]
    seen = visible.astype(bool)
    hits, count = ((distance < thr) & seen).sum(axis=0), seen.sum(axis=0)
    return np.where(count > 0, 100.0 * hits / np.maximum(count, 1), np.nan)


def _reference_mean(per_joint, visible) -> float:
    """Visible-count-weighted mean without pelvis and thorax."""
    weights = visible.astype(bool).sum(axis=0).astype(np.float64)
    weights[[MPII.index("pelvis"), MPII.index("thorax")]] = 0
    return float(np.sum(np.nan_to_num(per_joint) * weights) / weights.sum())


def _assert_same(pred, gt, visible, head_size) -> dict:
    result = compute_pckh(pred, gt, visible, head_size)
    ref = _mmpose_pckh(pred, gt, visible, head_size)
    ours = result.to_mmpose()
    assert list(ours) == list(ref)
    for name in ref:
        assert ours[name] == pytest.approx(ref[name], abs=1e-4), name
    for thr, per_joint, mean in ((0.5, result.per_joint, result.mean),
                                 (0.1, result.per_joint_at_0_1, result.mean_at_0_1)):
        expected = _reference_per_joint(pred, gt, visible, head_size, thr)
        np.testing.assert_allclose(per_joint, expected, atol=1e-4)
        assert mean == pytest.approx(_reference_mean(expected, visible), abs=1e-4)
    return ours


def _noisy(rng, gt, head_size, scale, wrong_fraction=0.0) -> np.ndarray:
    pred = gt - 1.0 + rng.normal(size=gt.shape) * scale * head_size[:, None, None]
    wrong = rng.random(gt.shape[:2]) < wrong_fraction
    pred[wrong] += 3.0 * head_size[:, None].repeat(16, 1)[wrong, None]
    return pred.astype(np.float32)


@pytest.fixture(scope="module")
def real_mpii():
    if not REAL_MPII.is_file():
        pytest.skip(f"real MPII samples not found at {REAL_MPII.resolve()}")
    anns = json.loads(REAL_MPII.read_text())
    gt = np.array([a["joints"] for a in anns], dtype=np.float32)
    visible = np.array([a["joints_vis"] for a in anns])
    # The file has no head boxes: a square head box on the neck -> head-top segment, and
    # MMPose's head size 0.6 x its diagonal (the same values go to both implementations).
    top, neck = gt[:, MPII.index("head_top")], gt[:, MPII.index("upper_neck")]
    head_size = 0.6 * np.sqrt(2.0) * np.linalg.norm(top - neck, axis=1)
    return gt, visible, head_size


@pytest.mark.parametrize("mode", ["perfect", "noisy", "partly_wrong"])
def test_real_mpii_samples_match_mmpose(real_mpii, mode):
    gt, visible, head_size = real_mpii
    rng = np.random.default_rng(len(mode))
    scale = {"perfect": 0.0, "noisy": 0.3, "partly_wrong": 0.2}[mode]
    pred = _noisy(rng, gt, head_size, scale, 0.4 if mode == "partly_wrong" else 0.0)
    ours = _assert_same(pred, gt, visible, head_size)
    if mode == "perfect":
        assert ours["PCK"] == ours["PCK@0.1"] == 100.0
    else:
        assert ours["PCK"] < 100.0


def test_generated_set_with_invisible_joints_matches_mmpose():
    rng = np.random.default_rng(0)
    n = 300
    gt = rng.uniform(0, 800, size=(n, 16, 2)).astype(np.float32)
    visible = (rng.random((n, 16)) < 0.8).astype(np.int64)
    visible[:, MPII.index("left_wrist")] = 0  # a joint nobody sees: MMPose's -100 branch
    head_size = rng.uniform(20, 80, size=n)
    pred = _noisy(rng, gt, head_size, 0.25, 0.1)
    result = compute_pckh(pred, gt, visible, head_size)
    _assert_same(pred, gt, visible, head_size)
    assert np.isnan(result.per_joint[MPII.index("left_wrist")])
    assert 0.0 < result.mean_at_0_1 < result.mean < 100.0


def test_zero_head_size_is_rejected():
    # MMPose scores such an instance as wrong at 0.5 and right at 0.1 (it overwrites the
    # head size with 1e6 in place between the two); we refuse instead of guessing.
    gt = np.zeros((3, 16, 2))
    with pytest.raises(ValueError, match="head sizes must be positive"):
        compute_pckh(gt, gt, np.ones((3, 16)), np.array([10.0, 0.0, 10.0]))


def test_unified_predictions_and_flat_names():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 500, size=(50, 16, 2)).astype(np.float32)
    visible = np.ones((50, 16))
    head_size = rng.uniform(30, 60, size=50)
    pred = _noisy(rng, gt, head_size, 0.3)
    unified = mapping_for("mpii").keypoints_to_unified(pred, fill=-1000.0)  # (50, 21, 2)
    assert unified.shape == (50, 21, 2)
    metrics = evaluate_pckh(unified, gt, visible, head_size)
    assert metrics == evaluate_pckh(pred, gt, visible, head_size)
    assert metrics["mpii_PCKh"] == pytest.approx(_mmpose_pckh(pred, gt, visible, head_size)["PCK"])
    assert {"mpii_PCKh", "mpii_PCKh@0.1"} | {f"mpii_PCKh/{n}" for n in MPII.names} == set(metrics)


def test_the_mmpose_plus_one_is_applied():
    rng = np.random.default_rng(2)
    gt = rng.uniform(0, 500, size=(20, 16, 2)).astype(np.float32)
    head_size = np.full(20, 10.0)
    # predicted exactly at the (1-based) GT: MMPose's +1 puts every joint 1.41 px off, i.e.
    # 0.141 head sizes: wrong at 0.1, right at 0.5
    result = compute_pckh(gt, gt, np.ones((20, 16)), head_size)
    assert result.mean == 100.0 and result.mean_at_0_1 == 0.0
    assert compute_pckh(gt, gt, np.ones((20, 16)), head_size, pred_offset=0.0).mean_at_0_1 == 100
    _assert_same(gt, gt, np.ones((20, 16)), head_size)


def test_a_joint_exactly_at_the_threshold_is_wrong():
    gt = np.random.default_rng(3).integers(0, 500, size=(10, 16, 2)).astype(np.float32)
    pred = gt - 1.0 + np.array([3.0, 4.0], np.float32)  # 5 px after the +1: exactly 0.5 x 10
    result = compute_pckh(pred, gt, np.ones((10, 16)), np.full(10, 10.0))
    assert result.mean == 0.0  # MMPose counts distance < thr, not <=
    _assert_same(pred, gt, np.ones((10, 16)), np.full(10, 10.0))
