"""Top-down predictions as MMPose's ``CocoMetric`` takes them, and as arrays.

:class:`KeypointPrediction` is one predicted person (one input box). For the fast route of
:mod:`~unipose_ray.evaluation.coco_metric` they are stacked into arrays in the dtypes
``CocoMetric`` computes in (:func:`stack_predictions`), grouped as it groups them
(:func:`sorted_unique`) and written as the COCO results its JSON file holds once read back
(:func:`coco_results`); for its reference route each becomes the data sample a top-down
model hands ``CocoMetric.process`` (:func:`cocometric_data_sample`). Numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unipose_ray.skeleton import KEYPOINT_SETS, UNIFIED, KeypointSet, mapping_for


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


@dataclass(frozen=True)
class StackedPredictions:
    """Predictions as arrays, in input order (``N`` instances, ``K`` evaluated joints).

    Attributes:
        image_ids, instance_ids, category_ids: ``(N,)`` as given.
        xys: ``(N, K, 3)`` x, y, keypoint score: ``CocoMetric``'s concatenation, in its
            promoted dtype (what its OKS-NMS and results file see).
        keypoint_scores: ``(N, K)`` in their own dtype (what its rescoring sees).
        bbox_scores: ``(N,)`` float32.
        areas: ``(N,)`` OKS-NMS areas (given, or the keypoints' extent).
        bboxes: ``(N, 4)`` float64 ``x, y, w, h`` as CocoMetric writes them; NaN rows where
            ``has_bbox`` is False.
        has_bbox: ``(N,)`` bool.
    """

    image_ids: np.ndarray
    instance_ids: np.ndarray
    category_ids: np.ndarray
    xys: np.ndarray
    keypoint_scores: np.ndarray
    bbox_scores: np.ndarray
    areas: np.ndarray
    bboxes: np.ndarray
    has_bbox: np.ndarray


def stack_predictions(predictions: Sequence[KeypointPrediction], keypoint_set: KeypointSet
                      ) -> StackedPredictions | None:
    """Stack predictions; ``None`` when their dtypes differ (keypoints, scores, areas),
    where one array would change the arithmetic CocoMetric does per instance."""
    dtypes = {_dtypes(p) for p in predictions}
    if len(dtypes) > 1:
        return None
    keypoints = _stack_joints([p.keypoints for p in predictions], keypoint_set)
    keypoint_scores = _stack_joints([p.keypoint_scores for p in predictions], keypoint_set)
    no_area = np.array([p.area is None for p in predictions])
    areas = np.array([0 if p.area is None else p.area for p in predictions],
                     dtype=dtypes.pop()[2])
    if no_area.any():  # CocoMetric's fallback: the keypoints' extent, in their dtype
        span = keypoints[no_area].max(axis=1) - keypoints[no_area].min(axis=1)
        areas[no_area] = span[:, 0] * span[:, 1]
    has_bbox = np.array([p.bbox is not None for p in predictions])
    bboxes = np.full((len(predictions), 4), np.nan)
    if has_bbox.any():
        bboxes[has_bbox] = _xywh_as_cocometric([p.bbox for p in predictions if p.bbox is not None])
    return StackedPredictions(
        image_ids=np.array([p.image_id for p in predictions]),
        instance_ids=np.array([p.instance_id for p in predictions]),
        category_ids=np.array([p.category_id for p in predictions]),
        xys=np.concatenate([keypoints, keypoint_scores[..., None]], axis=-1),
        keypoint_scores=keypoint_scores,
        bbox_scores=np.array([p.bbox_score for p in predictions], dtype=np.float32),
        areas=areas,
        bboxes=bboxes,
        has_bbox=has_bbox,
    )


def _dtypes(pred: KeypointPrediction) -> tuple[np.dtype, np.dtype, np.dtype]:
    """Keypoint, keypoint-score and area dtypes (no area: the keypoints' extent's)."""
    keypoints = np.asarray(pred.keypoints).dtype
    area = keypoints if pred.area is None else np.asarray(pred.area).dtype
    return keypoints, np.asarray(pred.keypoint_scores).dtype, area


def _stack_joints(values: list[np.ndarray], keypoint_set: KeypointSet) -> np.ndarray:
    """``N x (K_pred, ...)`` -> ``(N, K_set, ...)``: one gather when all have one length."""
    if len({np.shape(v) for v in values}) == 1:
        return select_joints(np.stack(values), keypoint_set)
    return np.stack([select_joints(np.asarray(v)[None], keypoint_set)[0] for v in values])


def select_joints(values: np.ndarray, keypoint_set: KeypointSet) -> np.ndarray:
    """``(N, K_pred, ...)`` -> ``(N, K_set, ...)``: identity, or a gather from unified slots."""
    k, found = keypoint_set.num_keypoints, values.shape[1]
    if found == k:
        return values
    if found == UNIFIED.num_keypoints and keypoint_set.name in KEYPOINT_SETS:
        return mapping_for(keypoint_set.name).keypoints_from_unified(values)
    raise ValueError(
        f"a prediction has {found} joints; evaluating "
        f"'{keypoint_set.name}' needs {k} or {UNIFIED.num_keypoints} (unified)"
    )


def _xywh_as_cocometric(boxes: list[np.ndarray]) -> np.ndarray:
    """``(M, 4)`` float64 boxes as CocoMetric writes them: it takes ``x1, y1, x2, y2`` and
    subtracts back (float64; exact for the float32 boxes of the records)."""
    x, y, w, h = np.asarray(boxes, dtype=np.float64).T
    x2, y2 = x + w, y + h
    return np.stack([x, y, x2 - x, y2 - y], axis=1)


def sorted_unique(instances: StackedPredictions) -> tuple[np.ndarray, np.ndarray]:
    """CocoMetric's grouping: images in order of first appearance, each image's instances
    by id (stable), a repeated id dropped (first wins).

    Returns:
        ``rows (M,)`` into the stacked predictions and ``starts (I + 1,)`` of each image.
    """
    _, first, inverse = np.unique(instances.image_ids, return_index=True, return_inverse=True)
    rank = np.empty_like(first)
    rank[np.argsort(first)] = np.arange(len(first))
    image = rank[inverse.reshape(-1)]
    rows = np.lexsort((instances.instance_ids, image))
    image, ids = image[rows], instances.instance_ids[rows]
    new = np.r_[True, (image[1:] != image[:-1]) | (ids[1:] != ids[:-1])]
    rows, image = rows[new], image[new]
    starts = np.r_[np.flatnonzero(np.r_[True, image[1:] != image[:-1]]), len(rows)]
    return rows, starts


def coco_results(instances: StackedPredictions, rows: np.ndarray, scores: np.ndarray
                 ) -> list[dict]:
    """The kept instances as the COCO results CocoMetric writes to its JSON file (the same
    Python numbers its file holds once read back: floats round-trip through JSON)."""
    keypoints = instances.xys[rows].reshape(len(rows), -1).tolist()
    columns = zip(instances.image_ids[rows].tolist(), instances.category_ids[rows].tolist(),
                  keypoints, scores.tolist(), instances.has_bbox[rows].tolist(),
                  instances.bboxes[rows].tolist())
    results = []
    for image_id, category_id, kpts, score, has_bbox, bbox in columns:
        result = {"image_id": image_id, "category_id": category_id, "keypoints": kpts,
                  "score": score}
        if has_bbox:
            result["bbox"] = bbox
        results.append(result)
    return results


def cocometric_data_sample(pred: KeypointPrediction, keypoint_set: KeypointSet) -> dict:
    """One prediction as ``CocoMetric.process`` takes a top-down model's output."""
    instances = {
        "keypoints": select_joints(np.asarray(pred.keypoints)[None], keypoint_set),
        "keypoint_scores": select_joints(np.asarray(pred.keypoint_scores)[None], keypoint_set),
        "bbox_scores": np.array([pred.bbox_score], dtype=np.float32),
    }
    if pred.bbox is not None:
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
