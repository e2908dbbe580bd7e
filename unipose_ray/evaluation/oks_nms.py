"""MMPose's instance rescoring and OKS-NMS, over arrays: same numbers, no per-box loops.

``CocoMetric`` (mmpose 1.3.2) scores each instance in a Python loop over its joints and
runs ``mmpose.evaluation.functional.oks_nms`` per image, whose ``oks_iou`` loops in Python
over the other boxes: with 100k detector boxes that is seconds of interpreter time per
validation. The functions here do the same arithmetic on whole arrays, operation for
operation and in the same dtypes (NumPy 2 promotes scalars and arrays alike, so a float32
instance stays float32 where MMPose's stays float32), so the scores, the OKS values and
the kept indices are MMPose's exactly (``tests/evaluation/test_oks_nms.py`` checks them
against ``oks_nms`` and ``CocoMetric``). Numpy only.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_PAIRS_PER_BLOCK = 1 << 18  # (pairs, K) float64 temporaries of ~36 MB at K = 17


def bbox_keypoint_score(
    keypoint_scores: np.ndarray, bbox_score: float | np.ndarray, keypoint_score_thr: float = 0.2
) -> np.ndarray:
    """``CocoMetric``'s ``bbox_keypoint`` rescoring: box score x mean of the scores > thr.

    The mean is MMPose's loop: scores over the threshold added in joint order in their own
    dtype, divided by their count; 0 where none counts.

    Args:
        keypoint_scores: ``(..., K)``.
        bbox_score: the input boxes' scores, scalar or ``(...)``; float32 as MMPose holds
            them for the evaluated samples.
        keypoint_score_thr: strict lower bound for a keypoint score to count.

    Returns:
        ``(...)`` instance scores (a 0-d array for one instance).
    """
    scores = np.asarray(keypoint_scores)
    counted = scores > keypoint_score_thr
    total = np.zeros(scores.shape[:-1], dtype=scores.dtype)
    for k in range(scores.shape[-1]):  # K steps over all instances: MMPose's summation order
        total = total + np.where(counted[..., k], scores[..., k], 0)
    count = np.maximum(counted.sum(axis=-1), 1)  # none counted: the total 0 stays 0
    mean = total / count.astype(total.dtype)  # float32 / float32(n): MMPose's `/= valid_num`
    return bbox_score * mean


def oks_nms_per_image(
    keypoints: np.ndarray,
    areas: np.ndarray,
    scores: np.ndarray,
    starts: np.ndarray,
    sigmas: np.ndarray,
    thr: float,
) -> np.ndarray:
    """``oks_nms(instances, thr, sigmas)`` of every image, as MMPose runs it per image.

    Args:
        keypoints: ``(N, K, 2)`` instances grouped by image (an image's are contiguous);
            the dtype ``oks_nms`` sees (coordinates concatenated with the scores).
        areas: ``(N,)`` OKS-NMS areas.
        scores: ``(N,)`` instance scores (:func:`bbox_keypoint_score`).
        starts: ``(I + 1,)`` each image's first row, then ``N``.
        sigmas: ``(K,)`` OKS sigmas, the dtype ``dataset_meta`` holds (float32).
        thr: an instance is dropped when its OKS with a kept one is ``> thr``.

    Returns:
        Kept rows: image by image, each image's in ``oks_nms``'s order (by falling score).
    """
    variances = (sigmas * 2) ** 2
    kept = []
    counts = np.diff(starts)
    for batch in _image_batches(counts):
        first, last = starts[batch[0]], starts[batch[-1] + 1]
        g, d = _pairs(starts[batch] - first, counts[batch])
        oks = _pair_oks(keypoints[first:last], areas[first:last], variances, g, d)
        offset = 0
        for image in batch:
            lo, n = starts[image], starts[image + 1] - starts[image]
            pairs = n * (n - 1) // 2
            matrix = _symmetric(oks[offset:offset + pairs], n)
            kept.extend(lo + _greedy(matrix, scores[lo:lo + n], thr))
            offset += pairs
    return np.asarray(kept, dtype=np.int64)


def _image_batches(counts: np.ndarray) -> list[np.ndarray]:
    """Consecutive images whose OKS pairs fit one block (a larger image alone)."""
    batches, current, pairs = [], [], 0
    for image, n in enumerate(counts.tolist()):
        if current and pairs + n * (n - 1) // 2 > _PAIRS_PER_BLOCK:
            batches.append(np.asarray(current))
            current, pairs = [], 0
        current.append(image)
        pairs += n * (n - 1) // 2
    if current:
        batches.append(np.asarray(current))
    return batches


def _pairs(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(g, d)``, ``g < d``, of every pair within each image, image by image and
    row-major within one (``g`` is ``oks_iou``'s reference instance). OKS is symmetric to
    the bit (squared differences, a sum of two areas), so the other half is a mirror."""
    upper = [_upper(n) for n in counts.tolist()]
    g = [s + i for s, (i, _) in zip(starts.tolist(), upper)]
    d = [s + j for s, (_, j) in zip(starts.tolist(), upper)]
    return np.concatenate(g), np.concatenate(d)


def _pair_oks(
    keypoints: np.ndarray, areas: np.ndarray, variances: np.ndarray, g: np.ndarray, d: np.ndarray
) -> np.ndarray:
    """``(P,)`` float32 OKS of instance ``g[p]`` with ``d[p]``: ``oks_iou``'s expression,
    operation for operation (its float64 area term, its sum over the K joints of a row)."""
    out = np.empty(len(g), dtype=np.float32)
    for lo in range(0, len(g), _PAIRS_PER_BLOCK):
        gi, di = g[lo:lo + _PAIRS_PER_BLOCK], d[lo:lo + _PAIRS_PER_BLOCK]
        dx = keypoints[di, :, 0] - keypoints[gi, :, 0]
        dy = keypoints[di, :, 1] - keypoints[gi, :, 1]
        scale = (areas[gi] + areas[di]) / 2 + np.spacing(1)
        e = (dx**2 + dy**2) / variances / scale[:, None] / 2
        out[lo:lo + len(gi)] = np.sum(np.exp(-e), axis=-1) / e.shape[-1]
    return out


@lru_cache(maxsize=256)
def _upper(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.triu_indices(n, 1)``, kept: most images have one of a few instance counts."""
    return np.triu_indices(n, 1)


def _symmetric(upper: np.ndarray, n: int) -> np.ndarray:
    """``(n, n)`` matrix from its strict upper triangle, row-major (diagonal unused: 0)."""
    matrix = np.zeros((n, n), dtype=upper.dtype)
    i, j = _upper(n)
    matrix[i, j] = upper
    matrix[j, i] = upper
    return matrix


def _greedy(oks: np.ndarray, scores: np.ndarray, thr: float) -> np.ndarray:
    """``oks_nms``'s loop on one image's ``(n, n)`` OKS matrix: take the best remaining
    instance, drop those overlapping it by more than ``thr``."""
    order = scores.argsort()[::-1]  # MMPose's (unstable) argsort: the same ties, same order
    keep = []
    while len(order) > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        order = rest[oks[best, rest] <= thr]
    return np.asarray(keep, dtype=np.int64)
