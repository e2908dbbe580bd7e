"""The array rescoring and OKS-NMS against MMPose's ``oks_nms`` / ``oks_iou`` and
``CocoMetric``'s rescoring loop, to the bit, on random and adversarial instances."""

from __future__ import annotations

import numpy as np
import pytest

from unipose_ray.evaluation.oks_nms import bbox_keypoint_score, oks_nms_per_image
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import COCO, UNIFIED

SIGMAS = COCO.dataset_meta()["sigmas"]


@pytest.fixture(scope="module")
def mmpose_nms():
    import_mmpose()
    from mmpose.evaluation.functional import oks_nms

    return oks_nms


def _cocometric_score(keypoint_scores: np.ndarray, bbox_score, thr: float = 0.2):
    """``CocoMetric.compute_metrics``' ``bbox_keypoint`` loop (mmpose 1.3.2), verbatim."""
    mean_kpt_score, valid_num = 0, 0
    for kpt_idx in range(len(keypoint_scores)):
        kpt_score = keypoint_scores[kpt_idx]
        if kpt_score > thr:
            mean_kpt_score += kpt_score
            valid_num += 1
    if valid_num != 0:
        mean_kpt_score /= valid_num
    return bbox_score * mean_kpt_score


def _image(rng, n: int, k: int = 17, kind: str = "random"):
    """``n`` instances of one image: keypoints (n, k, 2), scores (n, k), areas (n,)."""
    base = rng.uniform(0, 500, (k, 2))
    spread = rng.choice([0.3, 3.0, 30.0], size=(n, 1, 1))
    keypoints = (base + rng.normal(size=(n, k, 2)) * spread).astype(np.float32)
    scores = rng.uniform(0, 1, (n, k)).astype(np.float32)
    areas = rng.uniform(50, 5e4, n).astype(np.float32)
    if kind == "identical":  # the same box predicted again and again: OKS 1, score ties
        keypoints[:], scores[:], areas[:] = keypoints[0], scores[0], areas[0]
    elif kind == "ties":  # few distinct scores: argsort's tie order decides
        scores = np.round(scores, 1)
    elif kind == "threshold":  # scores at and next to the 0.2 threshold
        near = np.float32(0.2) + np.array([-1, 0, 1], np.float32) * np.spacing(np.float32(0.2))
        scores = rng.choice(np.r_[near, np.float32(0.2000001), np.float32(0.9)], (n, k))
        scores[::4] = rng.choice(near[:2], (len(scores[::4]), k))  # no joint counts
    return keypoints, scores.astype(np.float32), areas


@pytest.mark.parametrize("kind", ["random", "identical", "ties", "threshold"])
def test_rescoring_equals_cocometric_loop_to_the_bit(kind):
    rng = np.random.default_rng(len(kind))
    _, scores, _ = _image(rng, 500, kind=kind)
    bbox_scores = rng.uniform(0, 1, 500).astype(np.float32)
    ours = bbox_keypoint_score(scores, bbox_scores)
    expected = np.array([_cocometric_score(s, b) for s, b in zip(scores, bbox_scores)])
    assert ours.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)
    assert float(bbox_keypoint_score(scores[0], 0.7)) == float(_cocometric_score(scores[0], 0.7))
    if kind == "threshold":
        assert (ours == 0).any() and (ours > 0).any()  # some instances count no joint


def _mmpose_keep(oks_nms, keypoints, scores, areas, sigmas, thr=0.9):
    instances = [
        {"keypoints": np.concatenate([kp, ks[:, None]], axis=-1), "score": s, "area": a}
        for kp, ks, s, a in zip(keypoints, scores, bbox_keypoint_score(scores, np.float32(1)),
                                areas)
    ]
    return oks_nms(instances, thr, sigmas=sigmas)


@pytest.mark.parametrize("kind", ["random", "identical", "ties", "threshold"])
@pytest.mark.parametrize("area_dtype", [np.float32, np.float64])
def test_oks_nms_keeps_mmposes_indices_image_by_image(mmpose_nms, kind, area_dtype):
    rng = np.random.default_rng(7 + len(kind))
    counts = [1, 2, 5, 20, 1, 60, 3]
    images = [_image(rng, n, kind=kind) for n in counts]
    keypoints, scores, areas = (np.concatenate(parts) for parts in zip(*images))
    areas = areas.astype(area_dtype)
    starts = np.r_[0, np.cumsum(counts)]
    instance_scores = bbox_keypoint_score(scores, np.float32(1))
    for thr in (0.9, 0.5):
        ours = oks_nms_per_image(keypoints, areas, instance_scores, starts, SIGMAS, thr)
        expected = np.concatenate([
            lo + np.asarray(_mmpose_keep(mmpose_nms, keypoints[lo:hi], scores[lo:hi],
                                         areas[lo:hi], SIGMAS, thr), dtype=np.int64)
            for lo, hi in zip(starts[:-1], starts[1:])
        ])
        np.testing.assert_array_equal(ours, expected)
    if kind == "identical":
        assert len(ours) == len(counts)  # one survivor per image


def test_oks_nms_on_a_crowded_image_spanning_blocks(mmpose_nms, monkeypatch):
    # Many boxes in one image, and pair blocks smaller than an image: the block seams
    # must not change a value. Unified-21 joints, float64 coordinates.
    from unipose_ray.evaluation import oks_nms as module

    monkeypatch.setattr(module, "_PAIRS_PER_BLOCK", 1000)
    rng = np.random.default_rng(3)
    keypoints, scores, areas = _image(rng, 300, k=UNIFIED.num_keypoints)
    keypoints = keypoints.astype(np.float64)
    sigmas = UNIFIED.dataset_meta()["sigmas"]
    second = _image(rng, 40, k=UNIFIED.num_keypoints, kind="ties")
    keypoints = np.concatenate([keypoints, second[0]])
    scores, areas = np.concatenate([scores, second[1]]), np.concatenate([areas, second[2]])
    starts = np.array([0, 300, 340])
    ours = oks_nms_per_image(keypoints, areas, bbox_keypoint_score(scores, np.float32(1)),
                             starts, sigmas, 0.9)
    expected = np.r_[
        _mmpose_keep(mmpose_nms, keypoints[:300], scores[:300], areas[:300], sigmas),
        300 + np.asarray(_mmpose_keep(mmpose_nms, keypoints[300:], scores[300:], areas[300:],
                                      sigmas)),
    ]
    np.testing.assert_array_equal(ours, expected)
    assert 1 < len(ours) < len(keypoints)
