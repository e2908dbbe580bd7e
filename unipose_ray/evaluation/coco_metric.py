"""COCO keypoint AP/AR: MMPose's own ``CocoMetric`` (xtcocotools COCOeval) on our predictions.

:func:`evaluate_coco` builds ``mmpose.evaluation.metrics.CocoMetric`` (mmpose 1.3.2; its
defaults ``score_mode='bbox_keypoint'``, ``keypoint_score_thr=0.2``, ``nms_mode='oks_nms'``,
``nms_thr=0.9``), gives it the keypoint set's ``dataset_meta`` (float32 sigmas, number of
joints, flip indices) and the GT as an xtcocotools ``COCO``, ``process``-es one data sample
per prediction as MMPose's top-down models emit them and returns ``compute_metrics``. So
the metric is MMPose's by construction, the unified-21 AP too (``UNIFIED.sigmas``). What
``CocoMetric`` does with the samples, for a reader:

1. groups them by image, sorts each image's by ``id`` and drops repeated ids (first wins);
2. instance score = box score x mean of the keypoint scores ``> 0.2``
   (:func:`bbox_keypoint_score`);
3. OKS-NMS per image at 0.9 with the sigmas -- *always*, with GT boxes too; its OKS area is
   the product of the crop box scale (here :attr:`KeypointPrediction.area`), else the
   keypoints' extent;
4. writes COCO results with the input box as ``bbox`` (xtcocotools' ``loadRes`` takes the
   detection area from it: the medium/large split of unmatched detections) and runs
   ``COCOeval(gt, dt, 'keypoints', sigmas, use_area)``.

What is ours: :class:`KeypointPrediction`, the gather of the evaluated joints from
unified-21 predictions, :func:`bbox_keypoint_score` (MMPose has it inline only; the
deploy path scores its output with it) and the flat metric names.

Cost, against the copy of these steps this module held before (equal results, ``==``; a
loaded 2-core machine): 5,000 GT-box people 1.9 s vs 1.4 s; 100,000 detections 32 s vs
18 s, ~15 s of it the results file CocoMetric writes as indented JSON and reads back
(MMPose's own test loop pays it too; predicting 100k crops takes far longer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xtcocotools.coco import COCO as CocoApi

from unipose_ray.evaluation.names import STABLE_SUFFIXES
from unipose_ray.runtime.distributed import quiet
from unipose_ray.skeleton import COCO, KEYPOINT_SETS, UNIFIED, KeypointSet, mapping_for


@dataclass(frozen=True)
class KeypointPrediction:
    """One predicted person instance in image pixels (one top-down crop).

    Attributes:
        image_id: the image's id in the GT file.
        instance_id: id of the input box, unique per box: the annotation id with GT boxes,
            the detection's index with detector boxes. Repeats within an image are dropped.
        keypoints: ``(K, 2)`` image pixels; ``K`` is the evaluated set's size or 21
            (unified predictions; the evaluated joints are gathered from them).
        keypoint_scores: ``(K,)`` keypoint scores (SimCC: min of the two axis maxima).
        bbox_score: the input box's score (1 for GT boxes); float32, as MMPose holds it.
        bbox: ``(4,)`` input box ``x, y, w, h`` or ``None``; becomes the result's ``bbox``.
        area: OKS-NMS area (MMPose: ``w * h`` of the crop box scale), or ``None`` for the
            keypoints' extent.
        category_id: COCO category (1 = person).
    """

    image_id: int
    instance_id: int
    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    bbox_score: float = 1.0
    bbox: np.ndarray | None = None
    area: float | None = None
    category_id: int = 1


def load_coco_gt(gt: str | Path | dict | CocoApi) -> CocoApi:
    """An xtcocotools ``COCO`` from a GT file path, a GT dict, or an existing ``COCO``."""
    if isinstance(gt, CocoApi):
        return gt
    with quiet():
        if isinstance(gt, dict):
            return CocoApi("<in-memory>", ann_data=gt)
        path = Path(gt)
        if not path.is_file():
            raise FileNotFoundError(f"COCO ground-truth file {path} does not exist")
        return CocoApi(str(path))


def bbox_keypoint_score(
    keypoint_scores: np.ndarray, bbox_score: float, keypoint_score_thr: float = 0.2
) -> float:
    """``CocoMetric``'s ``bbox_keypoint`` rescoring: box score x mean of scores > thr.

    MMPose computes it inline in ``CocoMetric.compute_metrics``; this is that loop, for
    output that is scored without being evaluated (``deploy/predict.py``).

    Args:
        keypoint_scores: ``(K,)``; summed in order, as MMPose does (same rounding).
        bbox_score: the input box's score.
        keypoint_score_thr: strict lower bound for a keypoint score to count.
    """
    total, valid = 0, 0
    for score in keypoint_scores:
        if score > keypoint_score_thr:
            total += score
            valid += 1
    if valid != 0:
        total /= valid
    return bbox_score * total


def _select_joints(keypoints: np.ndarray, keypoint_set: KeypointSet) -> np.ndarray:
    """``(K_pred, ...)`` -> ``(K_set, ...)``: identity, or a gather from unified slots."""
    k = keypoint_set.num_keypoints
    if len(keypoints) == k:
        return keypoints
    if len(keypoints) == UNIFIED.num_keypoints and keypoint_set.name in KEYPOINT_SETS:
        return mapping_for(keypoint_set.name).keypoints_from_unified(keypoints)
    raise ValueError(
        f"a prediction has {len(keypoints)} joints; evaluating "
        f"'{keypoint_set.name}' needs {k} or {UNIFIED.num_keypoints} (unified)"
    )


def _data_sample(pred: KeypointPrediction, keypoint_set: KeypointSet) -> dict:
    """One prediction as ``CocoMetric.process`` takes a top-down model's output."""
    instances = {
        "keypoints": _select_joints(np.asarray(pred.keypoints), keypoint_set)[None],
        "keypoint_scores": _select_joints(np.asarray(pred.keypoint_scores), keypoint_set)[None],
        "bbox_scores": np.array([pred.bbox_score], dtype=np.float32),
    }
    if pred.bbox is not None:
        # CocoMetric takes x1y1x2y2 and subtracts back; in float64 that is exact for the
        # float32 boxes of the records.
        x, y, w, h = np.asarray(pred.bbox, dtype=np.float64)
        instances["bboxes"] = np.array([[x, y, x + w, y + h]])
    gt_instances = {}
    if pred.area is not None:
        # CocoMetric's area is the product of the crop box scale: (area, 1) gives the area
        # itself, in its own dtype (float32 areas stay float32 in OKS-NMS, as MMPose's).
        area = np.asarray(pred.area)
        gt_instances["bbox_scales"] = np.array([[area, 1]], dtype=area.dtype)
    return {
        "id": pred.instance_id,
        "img_id": pred.image_id,
        "category_id": pred.category_id,
        "pred_instances": instances,
        "gt_instances": gt_instances,
    }


def evaluate_coco(
    gt: str | Path | dict | CocoApi,
    predictions: Sequence[KeypointPrediction],
    keypoint_set: KeypointSet = COCO,
    *,
    keypoint_score_thr: float = 0.2,
    nms_thr: float | None = 0.9,
    use_area: bool = True,
) -> dict[str, float]:
    """COCO keypoint AP/AR from MMPose's ``CocoMetric``, under its names.

    Args:
        gt: GT annotation file (COCO keypoints format, ``keypoint_set`` joints per
            annotation), its dict, or a loaded ``COCO``.
        predictions: one per input box, image pixels; ``(17, 2)`` or ``(21, 2)`` keypoints
            for ``COCO``, ``(21, 2)`` for ``UNIFIED``.
        keypoint_set: joints and OKS sigmas to evaluate.
        keypoint_score_thr: rescoring threshold (:func:`bbox_keypoint_score`).
        nms_thr: OKS-NMS threshold; ``None`` disables NMS (MMPose's ``nms_mode='none'``).
        use_area: use the GT ``area`` as OKS scale (xtcocotools; COCO has it).

    Returns:
        ``{'AP': .., 'AP .5': .., 'AP .75': .., 'AP (M)': .., 'AP (L)': .., 'AR': .., ...}``
        (``-1`` where COCOeval has nothing to measure, e.g. no medium instances).

    Raises:
        ValueError: without predictions (CocoMetric has nothing to group).
    """
    from unipose_ray.models.compat import import_mmpose  # noqa: PLC0415 (torch-heavy)

    import_mmpose()
    from mmpose.evaluation.metrics import CocoMetric  # noqa: PLC0415

    if not predictions:
        raise ValueError("no predictions to evaluate: COCO AP needs at least one instance")
    metric = CocoMetric(
        use_area=use_area,
        keypoint_score_thr=keypoint_score_thr,
        nms_mode="none" if nms_thr is None else "oks_nms",
        nms_thr=0.9 if nms_thr is None else nms_thr,
    )
    metric.coco = load_coco_gt(gt)  # before dataset_meta: no ann_file lookup by dataset name
    metric.dataset_meta = keypoint_set.dataset_meta()
    metric.process([], [_data_sample(p, keypoint_set) for p in predictions])
    with quiet():
        stats = metric.compute_metrics(metric.results)
    return {name: float(value) for name, value in stats.items()}


def stable_metric_names(mmpose_stats: dict[str, float], prefix: str = "coco") -> dict[str, float]:
    """MMPose's stat names -> the product's flat names: ``AP .5`` -> ``{prefix}_AP50``.

    ``prefix`` is ``coco`` for COCO AP and ``unified`` for unified-21 AP.
    """
    return {f"{prefix}_{STABLE_SUFFIXES[name]}": value for name, value in mmpose_stats.items()}


def coco_keypoint_metrics(
    gt: str | Path | dict | CocoApi, predictions: Sequence[KeypointPrediction], **kwargs
) -> dict[str, float]:
    """COCO-17 AP/AR under flat names (``coco_AP``, ``coco_AP50``, ..., ``coco_AR_L``)."""
    return stable_metric_names(evaluate_coco(gt, predictions, COCO, **kwargs), "coco")


def unified_keypoint_metrics(
    gt: str | Path | dict | CocoApi, predictions: Sequence[KeypointPrediction], **kwargs
) -> dict[str, float]:
    """Unified-21 AP/AR (all 21 joints, ``UNIFIED.sigmas``) as ``unified_AP``, ..."""
    return stable_metric_names(evaluate_coco(gt, predictions, UNIFIED, **kwargs), "unified")
