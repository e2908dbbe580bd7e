"""MPII PCKh: MMPose's own ``MpiiPCKAccuracy`` on our predictions.

:func:`compute_pckh` feeds ``mmpose.evaluation.metrics.MpiiPCKAccuracy`` (mmpose 1.3.2) one
data sample per instance, as ``MpiiDataset`` and a top-down model would, and takes its
``compute_metrics``: ``PCK`` (the mean at ``thr``), ``PCK@0.1`` and the paired joints under
MMPose's names. The per-joint values, which the class does not return, come from the
function it calls, ``mmpose.evaluation.functional.keypoint_pck_accuracy``, on the same
inputs. What MMPose does, for a reader:

- it adds 1.0 to every *prediction* (MATLAB's 1-based pixels). MMPose's ``MpiiDataset``
  keeps the annotated joints as written (1-based) and only shifts the box centre by -1, so
  the +1 belongs to the evaluation of 0-based predictions against the file's joints;
- distance / head size (``0.6 x`` head-box diagonal) per visible joint, in float32; a joint
  is correct when that normalised distance is ``< thr`` (strict);
- per-joint PCKh in percent; the mean weights each joint by its number of visible
  instances and leaves pelvis (6) and thorax (7) out;
- PCKh@0.1 is read from a float32 sweep ``np.arange(0, 0.51, 0.01)`` at index 10;
- a joint with no visible instance has accuracy -1, i.e. PCKh -100 (weight 0 in the mean).
  :class:`PCKhResult` stores NaN there; :meth:`~PCKhResult.to_mmpose` gives MMPose's dict.

What is ours: the checks. Head sizes must be positive here. MMPose treats a head size of 0
inconsistently: at the main threshold such an instance counts in the joint totals but never
as correct, while its first pass overwrites the head size with 1e6 in place, so in the 0.1
sweep all its visible joints count as correct. :func:`compute_pckh` rejects such inputs.

Cost, measured by ``jobs/benchmark_metrics.py`` at MPII val size (2,958 people, a loaded
2-core machine): 0.33 s, against 0.37 s for ``MpiiPCKAccuracy`` fed as its test loop feeds
it (equal stats); the class's 51-threshold sweep for ``PCK@0.1`` is most of either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unipose_ray.runtime.distributed import quiet
from unipose_ray.skeleton import MPII, UNIFIED, mapping_for

_THR_0_1 = np.arange(0, 0.5 + 0.01, 0.01)[10]  # MMPose's "0.1": its sweep's threshold


@dataclass(frozen=True)
class PCKhResult:
    """PCKh of a set of MPII instances, in percent.

    Attributes:
        per_joint: ``(16,)`` PCKh at ``thr`` per MPII joint; NaN where none is visible.
        per_joint_at_0_1: ``(16,)`` PCKh at 0.1 per joint (float32 values, as MMPose's
            sweep); NaN where none is visible.
        mean: visible-count-weighted mean of ``per_joint`` without pelvis and thorax.
        mean_at_0_1: the same at 0.1.
        thr: the main threshold (0.5).
        mmpose_stats: ``MpiiPCKAccuracy.compute_metrics`` as it returned them.
    """

    per_joint: np.ndarray
    per_joint_at_0_1: np.ndarray
    mean: float
    mean_at_0_1: float
    thr: float = 0.5
    mmpose_stats: dict[str, float] = field(default_factory=dict)

    def to_metrics(self, prefix: str = "mpii") -> dict[str, float]:
        """Flat names: ``mpii_PCKh``, ``mpii_PCKh@0.1``, ``mpii_PCKh/<joint>``."""
        metrics = {f"{prefix}_PCKh": self.mean, f"{prefix}_PCKh@0.1": self.mean_at_0_1}
        for name, value in zip(MPII.names, self.per_joint):
            metrics[f"{prefix}_PCKh/{name}"] = float(value)
        return metrics

    def to_mmpose(self) -> dict[str, float]:
        """MMPose's names and values (``Head PCK``, ..., ``PCK``, ``PCK@0.1``)."""
        return dict(self.mmpose_stats)


def _check(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_size: np.ndarray) -> None:
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


def compute_pckh(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    head_size: np.ndarray,
    *,
    thr: float = 0.5,
    pred_offset: float = 1.0,
) -> PCKhResult:
    """MPII PCKh@thr and PCKh@0.1 from MMPose's ``MpiiPCKAccuracy``.

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
    from unipose_ray.models.compat import import_mmpose  # noqa: PLC0415 (torch-heavy)

    import_mmpose()
    from mmpose.evaluation.functional import keypoint_pck_accuracy  # noqa: PLC0415
    from mmpose.evaluation.metrics import MpiiPCKAccuracy  # noqa: PLC0415

    pred = np.asarray(pred)
    if pred.ndim == 3 and pred.shape[1] == UNIFIED.num_keypoints:
        pred = mapping_for("mpii").keypoints_from_unified(pred)
    gt, visible = np.asarray(gt), np.asarray(visible)
    head_size = np.asarray(head_size).reshape(-1)
    _check(pred, gt, visible, head_size)
    if pred_offset != 1.0:
        # MpiiPCKAccuracy always adds 1; in float64 this shift and its +1 cancel exactly.
        pred = pred.astype(np.float64) + (pred_offset - 1.0)

    metric = MpiiPCKAccuracy(thr=thr, norm_item="head", prefix="mpii")
    metric.process([], [
        {"pred_instances": {"keypoints": p[None]},
         "gt_instances": {"keypoints": g[None], "keypoints_visible": v[None], "head_size": h}}
        for p, g, v, h in zip(pred, gt, visible, head_size)
    ])
    with quiet():
        stats = metric.compute_metrics(metric.results)

    def per_joint(threshold: float) -> np.ndarray:
        norm = np.repeat(head_size[:, None], 2, axis=1)
        # pred + 1: MpiiPCKAccuracy's own shift, so both see the same distances
        acc, _, _ = keypoint_pck_accuracy(pred + 1.0, gt, visible.astype(bool), threshold, norm)
        return np.where(acc < 0, np.nan, 100.0 * acc)  # -1: no visible instance

    return PCKhResult(
        per_joint=per_joint(thr),
        per_joint_at_0_1=per_joint(_THR_0_1).astype(np.float32).astype(np.float64),
        mean=float(stats["PCK"]),
        mean_at_0_1=float(stats["PCK@0.1"]),
        thr=thr,
        mmpose_stats={name: float(value) for name, value in stats.items()},
    )


def evaluate_pckh(
    pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_size: np.ndarray, **kwargs
) -> dict[str, float]:
    """:func:`compute_pckh` under flat names: ``mpii_PCKh``, ``mpii_PCKh@0.1``, per joint."""
    return compute_pckh(pred, gt, visible, head_size, **kwargs).to_metrics()
