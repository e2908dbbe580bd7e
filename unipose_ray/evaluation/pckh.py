"""MPII PCKh exactly as MMPose's ``MpiiPCKAccuracy`` computes it.

What ``MpiiPCKAccuracy.compute_metrics`` (mmpose 1.3.2) does, and :func:`compute_pckh`
replicates:

- it adds 1.0 to every *prediction* (MATLAB's 1-based pixels). MMPose's ``MpiiDataset``
  keeps the annotated joints as written (1-based) and only shifts the box centre by -1, so
  the +1 belongs to the evaluation of 0-based predictions against the file's joints;
- distance / head size (``0.6 x`` head-box diagonal) per visible joint, in float32; a joint
  is correct when that normalised distance is ``< thr`` (strict);
- head sizes must be positive here. MMPose treats a head size of 0 inconsistently: at the
  main threshold such an instance counts in the joint totals but never as correct, while
  the first call overwrites its head size with 1e6 in place, so in the 0.1 sweep all its
  visible joints count as correct. :func:`compute_pckh` rejects such inputs instead, so
  whatever it accepts gives MMPose's numbers;
- per-joint PCKh in percent; the mean weights each joint by its number of visible
  instances and leaves pelvis (6) and thorax (7) out;
- PCKh@0.1 is read from a float32 sweep ``np.arange(0, 0.51, 0.01)`` at index 10;
- a joint with no visible instance has accuracy -1, i.e. PCKh -100 (weight 0 in the mean).
  :class:`PCKhResult` stores NaN there and gives MMPose's -100 back in :meth:`to_mmpose`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unipose_ray.skeleton import MPII, UNIFIED, mapping_for

EXCLUDED_FROM_MEAN = ("pelvis", "thorax")
_SWEEP = np.arange(0, 0.5 + 0.01, 0.01)  # MMPose's threshold sweep; index 10 is "0.1"


@dataclass(frozen=True)
class PCKhResult:
    """PCKh of a set of MPII instances, in percent.

    Attributes:
        per_joint: ``(16,)`` PCKh at ``thr`` per MPII joint; NaN where none is visible.
        per_joint_at_0_1: ``(16,)`` PCKh at 0.1 per joint; NaN where none is visible.
        mean: visible-count-weighted mean of ``per_joint`` without pelvis and thorax.
        mean_at_0_1: the same at 0.1.
        thr: the main threshold (0.5).
    """

    per_joint: np.ndarray
    per_joint_at_0_1: np.ndarray
    mean: float
    mean_at_0_1: float
    thr: float = 0.5

    def to_metrics(self, prefix: str = "mpii") -> dict[str, float]:
        """Flat names: ``mpii_PCKh``, ``mpii_PCKh@0.1``, ``mpii_PCKh/<joint>``."""
        metrics = {f"{prefix}_PCKh": self.mean, f"{prefix}_PCKh@0.1": self.mean_at_0_1}
        for name, value in zip(MPII.names, self.per_joint):
            metrics[f"{prefix}_PCKh/{name}"] = float(value)
        return metrics

    def to_mmpose(self) -> dict[str, float]:
        """MMPose's names and values (``Head PCK``, ..., ``PCK``, ``PCK@0.1``)."""
        pck = np.where(np.isnan(self.per_joint), -100.0, self.per_joint)
        j = MPII.index

        def pair(side_joint: str) -> float:
            return 0.5 * (pck[j(f"left_{side_joint}")] + pck[j(f"right_{side_joint}")])

        return {
            "Head PCK": pck[j("head_top")],
            "Shoulder PCK": pair("shoulder"),
            "Elbow PCK": pair("elbow"),
            "Wrist PCK": pair("wrist"),
            "Hip PCK": pair("hip"),
            "Knee PCK": pair("knee"),
            "Ankle PCK": pair("ankle"),
            "PCK": self.mean,
            "PCK@0.1": self.mean_at_0_1,
        }


def normalized_distances(
    pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_size: np.ndarray
) -> np.ndarray:
    """``(N, K)`` float32 distance / head size; -1 where the joint is not visible.

    Args:
        pred: ``(N, K, 2)`` predictions (already in the GT's coordinate convention).
        gt: ``(N, K, 2)``; visible: ``(N, K)``; head_size: ``(N,)`` pixels.
    """
    mask = visible.astype(bool)
    distances = np.full(mask.shape, -1, dtype=np.float32)
    distances[mask] = np.linalg.norm(((pred - gt) / head_size[:, None, None])[mask], axis=-1)
    return distances


def _accuracy(distances: np.ndarray, thr: float) -> np.ndarray:
    """``(K,)`` fraction of valid distances ``< thr`` per joint; NaN where none is valid."""
    valid = distances != -1
    correct = ((distances < thr) & valid).sum(axis=0)
    count = valid.sum(axis=0)
    return np.where(count > 0, correct / np.maximum(count, 1), np.nan)


def compute_pckh(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    head_size: np.ndarray,
    *,
    thr: float = 0.5,
    pred_offset: float = 1.0,
) -> PCKhResult:
    """MPII PCKh@thr and PCKh@0.1 with MMPose's joint selection and weighting.

    Args:
        pred: ``(N, 16, 2)`` MPII-order or ``(N, 21, 2)`` unified predictions, 0-based
            image pixels.
        gt: ``(N, 16, 2)`` MPII joints as annotated (1-based MATLAB pixels).
        visible: ``(N, 16)`` joint visibility (``joints_vis``).
        head_size: ``(N,)`` head size (0.6 x head-box diagonal), pixels, > 0.
        thr: the main threshold.
        pred_offset: added to ``pred`` first; MMPose's +1 (0-based -> 1-based). Use 0 when
            predictions and GT share a convention.

    Raises:
        ValueError: on mismatched shapes or a head size that is not positive.
    """
    pred = np.asarray(pred)
    if pred.ndim == 3 and pred.shape[1] == UNIFIED.num_keypoints:
        pred = mapping_for("mpii").keypoints_from_unified(pred)
    gt, visible = np.asarray(gt), np.asarray(visible)
    head_size = np.asarray(head_size).reshape(-1)
    k = MPII.num_keypoints
    if (
        pred.shape != gt.shape
        or gt.shape[1:] != (k, 2)
        or visible.shape != gt.shape[:2]
        or head_size.shape != gt.shape[:1]
    ):
        raise ValueError(
            f"expected pred (N, {k}|21, 2), gt (N, {k}, 2), visible (N, {k}), "
            f"head_size (N,); got {pred.shape}, {gt.shape}, {visible.shape}, "
            f"{head_size.shape}"
        )
    if not np.all(np.isfinite(head_size) & (head_size > 0)):
        bad = np.flatnonzero(~(np.isfinite(head_size) & (head_size > 0)))
        raise ValueError(
            f"head sizes must be positive and finite; instances {bad[:10].tolist()} "
            "are not (drop instances without a head box before PCKh)"
        )
    distances = normalized_distances(pred + pred_offset, gt, visible, head_size)
    pck = 100.0 * _accuracy(distances, thr)
    pck_01 = (100.0 * _accuracy(distances, _SWEEP[10])).astype(np.float32)

    counts = visible.astype(bool).sum(axis=0).astype(np.float64)
    counts[[MPII.index(n) for n in EXCLUDED_FROM_MEAN]] = 0
    weights = counts / counts.sum()
    # A NaN joint has no visible instance, hence weight 0 (MMPose's -100 x 0).
    mean = float(np.sum(np.nan_to_num(pck) * weights))
    mean_01 = float(np.sum(np.nan_to_num(pck_01) * weights))
    return PCKhResult(pck, pck_01.astype(np.float64), mean, mean_01, thr)


def evaluate_pckh(
    pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_size: np.ndarray, **kwargs
) -> dict[str, float]:
    """:func:`compute_pckh` under flat names: ``mpii_PCKh``, ``mpii_PCKh@0.1``, per joint."""
    return compute_pckh(pred, gt, visible, head_size, **kwargs).to_metrics()
