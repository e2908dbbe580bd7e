"""COCO keypoint AP/AR exactly as MMPose's ``CocoMetric`` computes it (xtcocotools COCOeval).

What ``CocoMetric`` (mmpose 1.3.2, defaults ``score_mode='bbox_keypoint'``,
``keypoint_score_thr=0.2``, ``nms_mode='oks_nms'``, ``nms_thr=0.9``) does, step by step,
and what :func:`evaluate_coco` replicates:

1. group the instances by image (in the order they arrive), sort each image's instances by
   their ``id`` and drop repeated ids (the first one wins);
2. instance score = box score x mean of the keypoint scores ``> 0.2`` (0 if none is);
3. OKS-NMS per image at 0.9 with the dataset sigmas -- *always*, with GT boxes too. Its
   OKS uses each instance's ``area``: the product of the crop box scale (the padded,
   aspect-fixed box) in top-down inference, else the keypoints' extent;
4. results in COCO format, keypoint "visibility" = keypoint score, plus the input box as
   ``bbox`` (xtcocotools' ``loadRes`` then takes the detection area from that box, which
   decides the medium/large split of unmatched detections);
5. xtcocotools ``COCOeval(gt, dt, 'keypoints', sigmas, use_area=True)``.

Sigmas are float32, as MMPose's ``dataset_meta`` holds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xtcocotools.coco import COCO as CocoApi
from xtcocotools.cocoeval import COCOeval

from unipose_ray.evaluation.names import STABLE_SUFFIXES
from unipose_ray.runtime.distributed import quiet
from unipose_ray.skeleton import COCO, KEYPOINT_SETS, UNIFIED, KeypointSet, mapping_for

MMPOSE_STAT_NAMES = tuple(STABLE_SUFFIXES)


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
        bbox_score: the input box's score (1 for GT boxes).
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


def oks_iou(
    g: np.ndarray, d: np.ndarray, a_g: float, a_d: np.ndarray, sigmas: np.ndarray
) -> np.ndarray:
    """OKS of one instance against others, as MMPose's ``oks_iou`` (no visibility filter).

    Args:
        g: ``(K * 3,)`` flattened ``x, y, score`` of one instance.
        d: ``(N, K * 3)`` the other instances.
        a_g: area of ``g``; a_d: ``(N,)`` areas of ``d``.
        sigmas: ``(K,)`` OKS sigmas.

    Returns:
        ``(N,)`` float32 OKS values.
    """
    variances = (sigmas * 2) ** 2
    ious = np.zeros(len(d), dtype=np.float32)
    for n in range(len(d)):
        dx, dy = d[n, 0::3] - g[0::3], d[n, 1::3] - g[1::3]
        e = (dx**2 + dy**2) / variances / ((a_g + a_d[n]) / 2 + np.spacing(1)) / 2
        ious[n] = np.sum(np.exp(-e)) / len(e) if len(e) != 0 else 0.0
    return ious


def oks_nms(
    keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, thr: float, sigmas: np.ndarray
) -> np.ndarray:
    """Greedy OKS-NMS, as MMPose's ``oks_nms``: keep an instance unless OKS > thr with a kept one.

    Args:
        keypoints: ``(N, K, 3)`` ``x, y, score`` of one image's instances.
        scores: ``(N,)`` instance scores; areas: ``(N,)`` OKS areas.
        thr: OKS threshold (0.9).
        sigmas: ``(K,)`` OKS sigmas.

    Returns:
        Indices kept, highest score first (ties broken as numpy's default argsort does).
    """
    if len(keypoints) == 0:
        return np.zeros(0, dtype=np.int64)
    flat = keypoints.reshape(len(keypoints), -1)
    order = np.asarray(scores).argsort()[::-1]
    keep = []
    while len(order) > 0:
        i = order[0]
        keep.append(i)
        overlap = oks_iou(flat[i], flat[order[1:]], areas[i], areas[order[1:]], sigmas)
        order = order[np.where(overlap <= thr)[0] + 1]
    return np.array(keep)


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


def _group_by_image(predictions: Iterable[KeypointPrediction]) -> dict[int, list]:
    """Group per image (first-seen order), sort by instance id, drop repeated ids."""
    groups: dict[int, list[KeypointPrediction]] = {}
    for pred in predictions:
        groups.setdefault(pred.image_id, []).append(pred)
    for image_id, preds in groups.items():
        preds = sorted(preds, key=lambda p: p.instance_id)
        groups[image_id] = [
            p for i, p in enumerate(preds) if i == 0 or p.instance_id != preds[i - 1].instance_id
        ]
    return groups


def coco_results(
    predictions: Iterable[KeypointPrediction],
    keypoint_set: KeypointSet = COCO,
    *,
    keypoint_score_thr: float = 0.2,
    nms_thr: float | None = 0.9,
) -> list[dict]:
    """Rescore, OKS-NMS and format predictions as COCO keypoint results (MMPose's steps 1-4).

    Args:
        predictions: the instances; see :class:`KeypointPrediction`.
        keypoint_set: the evaluated joints (``COCO``, or ``UNIFIED`` for unified-21 AP).
        keypoint_score_thr: rescoring threshold.
        nms_thr: OKS-NMS threshold; ``None`` disables NMS (MMPose's ``nms_mode='none'``).

    Returns:
        COCO results dicts (``image_id``, ``category_id``, ``keypoints``, ``score``,
        ``bbox`` when given).
    """
    sigmas = np.asarray(keypoint_set.sigmas, dtype=np.float32)
    results = []
    for preds in _group_by_image(predictions).values():
        kpt_scores = [_select_joints(np.asarray(p.keypoint_scores), keypoint_set) for p in preds]
        xy = [_select_joints(np.asarray(p.keypoints), keypoint_set) for p in preds]
        kpts = np.stack([np.concatenate([k, s[:, None]], axis=-1) for k, s in zip(xy, kpt_scores)])
        scores = [
            bbox_keypoint_score(s, p.bbox_score, keypoint_score_thr)
            for s, p in zip(kpt_scores, preds)
        ]
        areas = np.array(
            [p.area if p.area is not None else _extent_area(k) for k, p in zip(kpts, preds)]
        )
        keep = (
            np.arange(len(preds))
            if nms_thr is None
            else oks_nms(kpts, np.array(scores), areas, nms_thr, sigmas)
        )
        for i in keep:
            result = {
                "image_id": preds[i].image_id,
                "category_id": preds[i].category_id,
                "keypoints": kpts[i].reshape(-1).tolist(),
                "score": float(scores[i]),
            }
            if preds[i].bbox is not None:
                result["bbox"] = np.asarray(preds[i].bbox).tolist()
            results.append(result)
    return results


def _extent_area(kpts: np.ndarray) -> float:
    """MMPose's fallback OKS area: the keypoints' bounding-box area."""
    return (np.max(kpts[:, 0]) - np.min(kpts[:, 0])) * (np.max(kpts[:, 1]) - np.min(kpts[:, 1]))


def evaluate_coco(
    gt: str | Path | dict | CocoApi,
    predictions: Sequence[KeypointPrediction],
    keypoint_set: KeypointSet = COCO,
    *,
    keypoint_score_thr: float = 0.2,
    nms_thr: float | None = 0.9,
    use_area: bool = True,
) -> dict[str, float]:
    """COCO keypoint AP/AR with MMPose's ``CocoMetric`` semantics and names.

    Args:
        gt: GT annotation file (COCO keypoints format, ``keypoint_set`` joints per
            annotation), its dict, or a loaded ``COCO``.
        predictions: one per input box, image pixels; ``(17, 2)`` or ``(21, 2)`` keypoints
            for ``COCO``, ``(21, 2)`` for ``UNIFIED``.
        keypoint_set: joints and OKS sigmas to evaluate.
        keypoint_score_thr, nms_thr: see :func:`coco_results`.
        use_area: use the GT ``area`` as OKS scale (xtcocotools; COCO has it).

    Returns:
        ``{'AP': .., 'AP .5': .., 'AP .75': .., 'AP (M)': .., 'AP (L)': .., 'AR': .., ...}``
        (``-1`` where COCOeval has nothing to measure, e.g. no medium instances).
    """
    coco_gt = load_coco_gt(gt)
    results = coco_results(
        predictions, keypoint_set, keypoint_score_thr=keypoint_score_thr, nms_thr=nms_thr
    )
    sigmas = np.asarray(keypoint_set.sigmas, dtype=np.float32)
    with quiet():
        coco_dt = coco_gt.loadRes(results)
        coco_eval = COCOeval(coco_gt, coco_dt, "keypoints", sigmas, use_area)
        coco_eval.params.useSegm = None
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {name: float(value) for name, value in zip(MMPOSE_STAT_NAMES, coco_eval.stats)}


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
