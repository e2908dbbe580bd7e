"""COCO keypoint AP/AR exactly as MMPose's ``CocoMetric`` computes them, without its loops.

MMPose's ``mmpose.evaluation.metrics.CocoMetric`` (mmpose 1.3.2; its defaults
``score_mode='bbox_keypoint'``, ``keypoint_score_thr=0.2``, ``nms_mode='oks_nms'``,
``nms_thr=0.9``), for a reader, does this with one top-down data sample per prediction:

1. groups them by image, sorts each image's by ``id`` and drops repeated ids (first wins);
2. instance score = box score x mean of the keypoint scores ``> 0.2``
   (:func:`~unipose_ray.evaluation.oks_nms.bbox_keypoint_score`);
3. OKS-NMS per image at 0.9 with the sigmas -- *always*, with GT boxes too; its OKS area is
   the product of the crop box scale (here :attr:`KeypointPrediction.area`), else the
   keypoints' extent;
4. writes COCO results with the input box as ``bbox`` (xtcocotools' ``loadRes`` takes the
   detection area from it: the medium/large split of unmatched detections) to an indented
   JSON file, reads it back and runs ``COCOeval(gt, dt, 'keypoints', sigmas, use_area)``.

:func:`evaluate_coco` does steps 1-3 on arrays of all predictions at once
(:mod:`unipose_ray.evaluation.oks_nms`: the same arithmetic in the same dtypes, so the same
scores and kept instances), builds the very results list the JSON file would hold once read
back, and hands it to the same xtcocotools ``COCOeval`` in memory. Why not a ``CocoMetric``
subclass: its slow steps (the per-instance loops, ``oks_nms``, the file) sit inside one
``compute_metrics``, so overriding them means copying it anyway. The class itself stays
as :func:`evaluate_coco_cocometric`: the reference the tests and
``jobs/benchmark_metrics.py`` compare with (``==`` on every stat), and the route for
predictions of mixed dtypes, which MMPose computes each in its own.

What is ours: :class:`KeypointPrediction`, the gather of the evaluated joints from
unified-21 predictions and the flat metric names.

Cost, measured by ``jobs/benchmark_metrics.py`` (a 2-core machine loaded by other jobs):
100,000 detections over 5,000 images 67.7 s through ``CocoMetric`` vs 18.3 s here, equal
stats; 5,000 GT-box people 23.9 s vs 12.8 s. What remains is xtcocotools' ``COCOeval``
(``evaluate`` + ``accumulate``), which both pay; the scoring and OKS-NMS take ~1 s and the
indented results file (~15 s of the 100k case) is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xtcocotools.coco import COCO as CocoApi
from xtcocotools.cocoeval import COCOeval

from unipose_ray.evaluation.names import STABLE_SUFFIXES
from unipose_ray.evaluation.oks_nms import bbox_keypoint_score, oks_nms_per_image
from unipose_ray.runtime.distributed import quiet
from unipose_ray.skeleton import COCO, KEYPOINT_SETS, UNIFIED, KeypointSet, mapping_for

STAT_NAMES = ('AP', 'AP .5', 'AP .75', 'AP (M)', 'AP (L)', 'AR', 'AR .5', 'AR .75', 'AR (M)',
              'AR (L)')  # CocoMetric's, in COCOeval's stats order


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


def evaluate_coco(
    gt: str | Path | dict | CocoApi,
    predictions: Sequence[KeypointPrediction],
    keypoint_set: KeypointSet = COCO,
    *,
    keypoint_score_thr: float = 0.2,
    nms_thr: float | None = 0.9,
    use_area: bool = True,
) -> dict[str, float]:
    """COCO keypoint AP/AR as MMPose's ``CocoMetric`` computes them, under its names.

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
    if not predictions:
        raise ValueError("no predictions to evaluate: COCO AP needs at least one instance")
    instances = stack_predictions(predictions, keypoint_set)
    if instances is None:  # mixed dtypes: MMPose computes each in its own, so it decides
        return evaluate_coco_cocometric(gt, predictions, keypoint_set,
                                        keypoint_score_thr=keypoint_score_thr,
                                        nms_thr=nms_thr, use_area=use_area)
    rows, starts = _sorted_unique(instances)
    scores = bbox_keypoint_score(instances.keypoint_scores[rows], instances.bbox_scores[rows],
                                 keypoint_score_thr)
    sigmas = keypoint_set.dataset_meta()["sigmas"]
    if nms_thr is None:
        kept = np.arange(len(rows))
    else:
        kept = oks_nms_per_image(instances.xys[rows, :, :2], instances.areas[rows], scores,
                                 starts, sigmas, nms_thr)
    results = _coco_results(instances, rows[kept], scores[kept])
    return _cocoeval(load_coco_gt(gt), results, sigmas, use_area)


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
        return _select_joints(np.stack(values), keypoint_set)
    return np.stack([_select_joints(np.asarray(v)[None], keypoint_set)[0] for v in values])


def _select_joints(values: np.ndarray, keypoint_set: KeypointSet) -> np.ndarray:
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


def _sorted_unique(instances: StackedPredictions) -> tuple[np.ndarray, np.ndarray]:
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


def _coco_results(instances: StackedPredictions, rows: np.ndarray, scores: np.ndarray
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


def _cocoeval(coco: CocoApi, results: list[dict], sigmas: np.ndarray, use_area: bool
              ) -> dict[str, float]:
    """xtcocotools' ``COCOeval`` as ``CocoMetric._do_python_keypoint_eval`` runs it."""
    with quiet():
        # resData: the results in memory, not CocoMetric's indented file written and re-read
        detections = coco.loadRes("unipose_ray results", resData=results)
        cocoeval = COCOeval(coco, detections, "keypoints", sigmas, use_area)
        cocoeval.params.useSegm = None
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, cocoeval.stats)}


def _data_sample(pred: KeypointPrediction, keypoint_set: KeypointSet) -> dict:
    """One prediction as ``CocoMetric.process`` takes a top-down model's output."""
    instances = {
        "keypoints": _select_joints(np.asarray(pred.keypoints)[None], keypoint_set),
        "keypoint_scores": _select_joints(np.asarray(pred.keypoint_scores)[None], keypoint_set),
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


def evaluate_coco_cocometric(
    gt: str | Path | dict | CocoApi,
    predictions: Sequence[KeypointPrediction],
    keypoint_set: KeypointSet = COCO,
    *,
    keypoint_score_thr: float = 0.2,
    nms_thr: float | None = 0.9,
    use_area: bool = True,
) -> dict[str, float]:
    """:func:`evaluate_coco` through MMPose's ``CocoMetric`` class itself: the reference
    the fast path is checked and benchmarked against, and its route for predictions of
    mixed dtypes. Same arguments and result."""
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
