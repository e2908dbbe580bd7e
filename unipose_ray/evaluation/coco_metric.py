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
   JSON file, reads it back and runs ``COCOeval(gt, dt, iou_type, sigmas, use_area)``.

:func:`evaluate_coco` does steps 1-3 on arrays of all predictions at once
(:mod:`~unipose_ray.evaluation.coco_predictions`, :mod:`~unipose_ray.evaluation.oks_nms`:
the same arithmetic in the same dtypes, so the same scores and kept instances), builds the
very results list the JSON file would hold once read back, and hands it to the same
xtcocotools ``COCOeval`` in memory. Why not a ``CocoMetric`` subclass: its slow steps (the
per-instance loops, ``oks_nms``, the file) sit inside one ``compute_metrics``, so
overriding them means copying it anyway. The class itself stays as
:func:`evaluate_coco_cocometric`: the reference the tests and ``jobs/benchmark_metrics.py``
compare with (``==`` on every stat), and the route for predictions of mixed dtypes, which
MMPose computes each in its own.

CrowdPose (``iou_type='keypoints_crowd'``): xtcocotools reports AP and AR, then re-runs the
evaluation on the easy, medium and hard images, which it finds by re-reading the GT *file*
for each image's ``crowdIndex``; here they come from the loaded GT instead (the same
images: the same stats, for GT held in memory too). Each dataset's settings and flat names:
:mod:`~unipose_ray.evaluation.dataset_metrics`.

Cost, measured by ``jobs/benchmark_metrics.py`` (a 2-core machine loaded by other jobs):
100,000 detections over 5,000 images 67.7 s through ``CocoMetric`` vs 18.3 s here, equal
stats; 5,000 GT-box people 23.9 s vs 12.8 s. What remains is xtcocotools' ``COCOeval``
(``evaluate`` + ``accumulate``), which both pay; the scoring and OKS-NMS take ~1 s and the
indented results file (~15 s of the 100k case) is gone.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from xtcocotools.coco import COCO as CocoApi
from xtcocotools.cocoeval import COCOeval

from unipose_ray.evaluation.coco_predictions import (
    KeypointPrediction,
    coco_results,
    cocometric_data_sample,
    sorted_unique,
    stack_predictions,
)
from unipose_ray.evaluation.dataset_metrics import (
    MMPOSE_STAT_NAMES,
    metric_settings,
    stable_metric_names,
)
from unipose_ray.evaluation.oks_nms import bbox_keypoint_score, oks_nms_per_image
from unipose_ray.runtime.distributed import quiet
from unipose_ray.skeleton import COCO, UNIFIED, KeypointSet

__all__ = [  # some defined in the modules they now live in, importable here as before
    "KeypointPrediction", "bbox_keypoint_score", "coco_keypoint_metrics", "evaluate_coco",
    "evaluate_coco_cocometric", "load_coco_gt", "stable_metric_names",
    "unified_keypoint_metrics",
]

CROWD = "keypoints_crowd"  # xtcocotools' CrowdPose evaluation


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
    iou_type: str = "keypoints",
) -> dict[str, float]:
    """Keypoint AP/AR as MMPose's ``CocoMetric`` computes them, under its names.

    Args:
        gt: GT annotation file (COCO keypoints format, ``keypoint_set`` joints per
            annotation), its dict, or a loaded ``COCO``.
        predictions: one per input box, image pixels; ``(K, 2)`` keypoints of
            ``keypoint_set``, or ``(21, 2)`` unified ones for a dataset's set.
        keypoint_set: joints and OKS sigmas to evaluate.
        keypoint_score_thr: rescoring threshold (:func:`bbox_keypoint_score`).
        nms_thr: OKS-NMS threshold; ``None`` disables NMS (MMPose's ``nms_mode='none'``).
        use_area: use the GT ``area`` as OKS scale (xtcocotools), else ``0.53 w h`` of the
            GT box.
        iou_type: ``keypoints``, or ``keypoints_crowd`` (CrowdPose: the GT images need a
            ``crowdIndex``, the annotations a ``num_keypoints``).

    Returns:
        ``CocoMetric``'s stats by name, ``-1`` where COCOeval has nothing to measure (e.g.
        no medium instances). ``keypoints``: ``{'AP', 'AP .5', 'AP .75', 'AP (M)',
        'AP (L)', 'AR', ...}``; ``keypoints_crowd``: ``{'AP', 'AP .5', 'AP .75', 'AR',
        'AR .5', 'AR .75', 'AP(E)', 'AP(M)', 'AP(H)'}``, the last three rounded to 4
        decimals by xtcocotools and ``-1`` for a crowd level without people.

    Raises:
        ValueError: without predictions (CocoMetric has nothing to group), or for an
            unknown ``iou_type``.
    """
    _check(predictions, iou_type)
    instances = stack_predictions(predictions, keypoint_set)
    if instances is None:  # mixed dtypes: MMPose computes each in its own, so it decides
        return evaluate_coco_cocometric(gt, predictions, keypoint_set,
                                        keypoint_score_thr=keypoint_score_thr,
                                        nms_thr=nms_thr, use_area=use_area, iou_type=iou_type)
    rows, starts = sorted_unique(instances)
    scores = bbox_keypoint_score(instances.keypoint_scores[rows], instances.bbox_scores[rows],
                                 keypoint_score_thr)
    sigmas = keypoint_set.dataset_meta()["sigmas"]
    if nms_thr is None:
        kept = np.arange(len(rows))
    else:
        kept = oks_nms_per_image(instances.xys[rows, :, :2], instances.areas[rows], scores,
                                 starts, sigmas, nms_thr)
    results = coco_results(instances, rows[kept], scores[kept])
    return _cocoeval(load_coco_gt(gt), results, sigmas, use_area, iou_type)


def _check(predictions: Sequence[KeypointPrediction], iou_type: str) -> None:
    if not predictions:
        raise ValueError("no predictions to evaluate: COCO AP needs at least one instance")
    if iou_type not in MMPOSE_STAT_NAMES:
        raise ValueError(f"iou_type must be one of {sorted(MMPOSE_STAT_NAMES)} (CocoMetric's "
                         f"keypoint evaluations), got '{iou_type}'")


def _cocoeval(coco: CocoApi, results: list[dict], sigmas: np.ndarray, use_area: bool,
              iou_type: str) -> dict[str, float]:
    """xtcocotools' ``COCOeval`` as ``CocoMetric._do_python_keypoint_eval`` runs it."""
    evaluation = CrowdIndexCOCOeval if iou_type == CROWD else COCOeval
    with quiet():
        # resData: the results in memory, not CocoMetric's indented file written and re-read
        detections = coco.loadRes("unipose_ray results", resData=results)
        cocoeval = evaluation(coco, detections, iou_type, sigmas, use_area)
        cocoeval.params.useSegm = None
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return {name: float(value)
            for name, value in zip(MMPOSE_STAT_NAMES[iou_type], cocoeval.stats, strict=True)}


class CrowdIndexCOCOeval(COCOeval):
    """xtcocotools' ``COCOeval`` that reads each image's ``crowdIndex`` from the loaded GT.

    ``summarize`` with ``keypoints_crowd`` splits the images into easy, medium and hard
    (``get_type_result``) by re-reading the GT file from disk (``split``), which GT built in
    memory does not have. This is ``split`` over the same image list, in the same order and
    with the same comparisons, so the split, and every stat, is xtcocotools' own.
    """

    def split(self, gt_file, first=0.01, second=0.85):  # noqa: ARG002 (xtcocotools' signature)
        images = self.cocoGt.dataset["images"]
        missing = [image["id"] for image in images if "crowdIndex" not in image]
        if missing:
            raise ValueError(
                f"CrowdPose's AP(E/M/H) needs each GT image's crowdIndex; {len(missing)} "
                f"images have none (e.g. id {missing[0]}). Records do not carry it: build the "
                "GT from CrowdPose's annotation file (coco_gt.coco_gt_subset)")
        easy, mid, hard = [], [], []
        for image in images:
            if image["crowdIndex"] < first:
                easy.append(image["id"])
            elif image["crowdIndex"] < second:
                mid.append(image["id"])
            else:
                hard.append(image["id"])
        return easy, mid, hard


def evaluate_coco_cocometric(
    gt: str | Path | dict | CocoApi,
    predictions: Sequence[KeypointPrediction],
    keypoint_set: KeypointSet = COCO,
    *,
    keypoint_score_thr: float = 0.2,
    nms_thr: float | None = 0.9,
    use_area: bool = True,
    iou_type: str = "keypoints",
) -> dict[str, float]:
    """:func:`evaluate_coco` through MMPose's ``CocoMetric`` class itself: the reference
    the fast path is checked and benchmarked against, and its route for predictions of
    mixed dtypes. Same arguments and result.

    With ``keypoints_crowd``, GT that is no file is written to a temporary one: xtcocotools
    reads the crowd indices from the GT file.
    """
    from unipose_ray.models.compat import import_mmpose  # noqa: PLC0415 (torch-heavy)

    import_mmpose()
    from mmpose.evaluation.metrics import CocoMetric  # noqa: PLC0415

    _check(predictions, iou_type)
    metric = CocoMetric(
        use_area=use_area,
        iou_type=iou_type,
        keypoint_score_thr=keypoint_score_thr,
        nms_mode="none" if nms_thr is None else "oks_nms",
        nms_thr=0.9 if nms_thr is None else nms_thr,
    )
    with tempfile.TemporaryDirectory() as tmp:
        if iou_type == CROWD and not isinstance(gt, (str, Path)):
            path = Path(tmp) / "gt.json"
            path.write_text(json.dumps(load_coco_gt(gt).dataset))
            gt = path
        metric.coco = load_coco_gt(gt)  # before dataset_meta: no ann_file lookup by name
        metric.dataset_meta = keypoint_set.dataset_meta()
        metric.process([], [cocometric_data_sample(p, keypoint_set) for p in predictions])
        with quiet():
            stats = metric.compute_metrics(metric.results)
    return {name: float(value) for name, value in stats.items()}


def dataset_keypoint_metrics(
    dataset: str,
    gt: str | Path | dict | CocoApi,
    predictions: Sequence[KeypointPrediction],
    *,
    keypoint_score_thr: float = 0.2,
    nms_thr: float | None = 0.9,
) -> dict[str, float]:
    """A dataset's AP/AR as its MMPose config's ``CocoMetric`` computes them, flat names.

    Args:
        dataset: ``coco``, ``aic``, ``crowdpose`` or ``halpe26``.
        gt: the dataset's GT (file, dict or loaded ``COCO``); CrowdPose's needs each
            image's ``crowdIndex``
            (:func:`~unipose_ray.evaluation.coco_gt.coco_gt_subset` keeps it).
        predictions: one per input box, the dataset's joints or the unified 21.
        keypoint_score_thr, nms_thr: as :func:`evaluate_coco` (MMPose's defaults, which
            every config keeps).

    Returns:
        ``{'<dataset>_AP': .., '<dataset>_AP50': .., ...}``
        (:meth:`~unipose_ray.evaluation.dataset_metrics.CocoMetricSettings.metric_names`).
    """
    settings = metric_settings(dataset)
    stats = evaluate_coco(gt, predictions, settings.keypoint_set,
                          keypoint_score_thr=keypoint_score_thr, nms_thr=nms_thr,
                          use_area=settings.use_area, iou_type=settings.iou_type)
    return stable_metric_names(stats, dataset)


def coco_keypoint_metrics(
    gt: str | Path | dict | CocoApi, predictions: Sequence[KeypointPrediction], **kwargs
) -> dict[str, float]:
    """COCO-17 AP/AR under flat names (``coco_AP``, ``coco_AP50``, ..., ``coco_AR_L``):
    :func:`dataset_keypoint_metrics` of ``coco``."""
    return dataset_keypoint_metrics("coco", gt, predictions, **kwargs)


def unified_keypoint_metrics(
    gt: str | Path | dict | CocoApi, predictions: Sequence[KeypointPrediction], **kwargs
) -> dict[str, float]:
    """Unified-21 AP/AR (all 21 joints, ``UNIFIED.sigmas``) as ``unified_AP``, ..."""
    return stable_metric_names(evaluate_coco(gt, predictions, UNIFIED, **kwargs), "unified")
