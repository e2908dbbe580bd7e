"""Evaluate a model on COCO and MPII validation sets: the paper's cross-dataset table.

A model predicting any registered keypoint set (the unified 21, COCO's 17, MPII's 16) is
run top-down as MMPose runs it (:func:`~unipose_ray.evaluation.topdown.predict`: unaugmented
crops, flip test by default) on ground-truth boxes, or on COCO person detections from a
``bbox_file``; its joints are placed in unified slots (joints it does not have get score 0
and count as misses), then scored with COCO AP on the COCO file, PCKh on MPII, and
unified-21 AP where a 21-joint file exists. Metric names are
the product's flat names: ``coco_AP``, ``mpii_PCKh``, ``mpii_PCKh@0.1``, ``unified_AP``
and ``score`` = mean of COCO AP (in %) and PCKh. Where a 21-joint file exists, per image
domain: ``unified_AP_<domain>_domain`` and ``transfer_PCK_<domain>_domain``, the accuracy
on the joints the domain's own dataset does not annotate (:func:`transfer_pck`), and their
means ``unified_AP`` and ``transfer_PCK``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from unipose_ray.config.settings import CodecConfig
from unipose_ray.data.records import InstanceRecord, read_records, table_to_records
from unipose_ray.evaluation.coco_metric import (
    KeypointPrediction,
    coco_keypoint_metrics,
    unified_keypoint_metrics,
)
from unipose_ray.evaluation.names import metric_names  # noqa: F401 (re-exported)
from unipose_ray.evaluation.pckh import evaluate_pckh
from unipose_ray.evaluation.topdown import (
    Predictions,
    coco_images,
    predict,
    read_detections,
    to_unified,
)
from unipose_ray.skeleton import UNIFIED, mapping_for

HEADLINE = ("coco_AP", "mpii_PCKh", "mpii_PCKh@0.1", "unified_AP", "score")
TRANSFER_COLUMNS = ("coco_AP", "mpii_PCKh", "mpii_PCKh@0.1", "unified_AP", "unified_AP_coco_domain",
                    "unified_AP_mpii_domain", "transfer_PCK", "score")
"""The demo's table: the headline plus what shows the transfer between the datasets."""


@dataclass(frozen=True)
class EvalSet:
    """One validation set.

    Attributes:
        name: ``coco`` or ``mpii`` (decides the metric).
        records_path: its Parquet record set.
        ann_file: COCO: the GT keypoints file AP is computed against.
        unified_ann_file: optional 21-joint GT file of the same images (unified AP).
        max_samples: evaluate the first N instances only (0: all), completed to whole
            images; AP is then computed against the GT of those images alone.
        img_dir: the images' folder (needed with ``bbox_file``: detections may fall on
            images without annotated people).
        bbox_file: COCO only: person detections (COCO results JSON, MMPose's
            ``bbox_file``) to run on instead of the GT boxes, as published RTMPose numbers.
        bbox_score_thr: drop detections scoring below this (MMPose's ``bbox_score_thr``).
    """

    name: str
    records_path: str
    ann_file: str | None = None
    unified_ann_file: str | None = None
    max_samples: int = 0
    img_dir: str | None = None
    bbox_file: str | None = None
    bbox_score_thr: float = 0.0

    def __post_init__(self) -> None:
        if self.bbox_file is not None and (self.name != "coco" or None in (self.ann_file,
                                                                           self.img_dir)):
            raise ValueError("detector boxes (bbox_file) are for COCO AP and need the COCO "
                             "ann_file and img_dir; MPII PCKh is defined on its GT boxes")

    def records(self) -> list[InstanceRecord]:
        records = table_to_records(read_records(self.records_path))
        if not records:
            raise ValueError(f"{self.records_path} holds no instances to evaluate")
        if not self.max_samples or self.max_samples >= len(records):
            return records
        # Whole images only: a perfect model must still find every person of an image.
        images = {r.image_id for r in records[: self.max_samples]}
        return [r for r in records if r.image_id in images]

    def boxes(self, records: Sequence[InstanceRecord]
              ) -> tuple[list[InstanceRecord], np.ndarray]:
        """The boxes to run the model on and their scores: the GT boxes of ``records``
        (score 1), or the detections of ``bbox_file`` on the same images."""
        if self.bbox_file is None:
            return list(records), np.ones(len(records), dtype=np.float32)
        images = coco_images(self.ann_file, self.img_dir)
        detections = read_detections(self.bbox_file, images, self.bbox_score_thr)
        evaluated = {r.image_id for r in records}  # all images, or those of max_samples
        keep = [i for i, r in enumerate(detections.records)
                if not self.max_samples or r.image_id in evaluated]
        return [detections.records[i] for i in keep], detections.scores[keep]

    def ground_truth(self, ann_file: str, records: Sequence[InstanceRecord]) -> str | dict:
        """``ann_file``, restricted to the images of ``records`` when only some are evaluated.

        COCOeval counts every GT person of every image in the file, so without this an
        evaluation of the first N instances would count the rest as missed.
        """
        if not self.max_samples:
            return ann_file
        with open(ann_file) as f:
            gt = json.load(f)
        images = {r.image_id for r in records}
        gt["images"] = [im for im in gt["images"] if im["id"] in images]
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in images]
        return gt


def _instances(records: Sequence[InstanceRecord], pred: Predictions,
               box_scores: np.ndarray | None = None) -> list[KeypointPrediction]:
    scores = np.ones(len(records)) if box_scores is None else box_scores
    return [
        KeypointPrediction(image_id=r.image_id, instance_id=r.instance_id,
                           keypoints=pred.keypoints[i], keypoint_scores=pred.scores[i],
                           bbox_score=float(scores[i]), bbox=np.asarray(r.bbox),
                           area=float(pred.areas[i]))
        for i, r in enumerate(records)
    ]


def _unified_ids(records: Sequence[InstanceRecord], name: str) -> list[InstanceRecord]:
    """MPII's unified file numbers instances by list index + 1 (COCOeval skips id 0)."""
    if name != "mpii":
        return list(records)
    return [replace(r, instance_id=r.instance_id + 1) for r in records]


@dataclass(frozen=True)
class SetInputs:
    """What a model runs on for one validation set, and what its predictions are scored
    against.

    Attributes:
        eval_set: the set.
        records: its evaluated GT instances (``max_samples`` applied).
        boxes: the boxes the model runs on: ``records`` or the set's detections.
        box_scores: ``(len(boxes),)`` their scores (1 for GT boxes).
    """

    eval_set: EvalSet
    records: list[InstanceRecord]
    boxes: list[InstanceRecord]
    box_scores: np.ndarray


def eval_inputs(eval_sets: Sequence[EvalSet]) -> list[SetInputs]:
    """Each set's records and boxes, read once (the same for every model)."""
    inputs = []
    for eval_set in eval_sets:
        records = eval_set.records()
        boxes, box_scores = eval_set.boxes(records)
        inputs.append(SetInputs(eval_set, records, boxes, box_scores))
    return inputs


def evaluate_model(model: torch.nn.Module, dataset: str, codec: CodecConfig,
                   eval_sets: Sequence[EvalSet], batch_size: int = 32,
                   device: str | torch.device = "cpu", flip_test: bool = True
                   ) -> dict[str, float]:
    """All metrics of one model on the given validation sets (flat names), run in this
    process (``workflows.evaluation`` runs the same prediction on Ray tasks).

    ``flip_test`` as RTMPose's ``test_cfg`` (on in every released RTMPose config).
    """
    inputs = eval_inputs(eval_sets)
    preds = [predict(model, s.boxes, dataset, codec, flip_test, batch_size, device)
             for s in inputs]
    return score_predictions(inputs, preds, dataset)


def score_predictions(inputs: Sequence[SetInputs], preds: Sequence[Predictions],
                      dataset: str) -> dict[str, float]:
    """The metrics of a model's predictions on each set's boxes (flat names).

    Args:
        inputs: per set, from :func:`eval_inputs`.
        preds: per set, the model's own ``K`` joints of each box: ``(N_set, K, 2)``.
        dataset: the model's keypoint set.
    """
    metrics: dict[str, float] = {}
    unified = []
    for s, model_pred in zip(inputs, preds, strict=True):
        eval_set, records, boxes = s.eval_set, s.records, s.boxes
        pred = to_unified(model_pred, dataset)
        if eval_set.name == "mpii":
            metrics.update(_pckh(eval_set, records, pred))
        elif eval_set.ann_file:
            gt_file = eval_set.ground_truth(eval_set.ann_file, records)
            metrics.update(coco_keypoint_metrics(gt_file, _instances(boxes, pred, s.box_scores)))
        if eval_set.unified_ann_file:
            ids = _unified_ids(boxes, eval_set.name)
            gt_file = eval_set.ground_truth(eval_set.unified_ann_file, records)
            u = unified_keypoint_metrics(gt_file, _instances(ids, pred, s.box_scores))
            metrics[f"unified_AP_{eval_set.name}_domain"] = u["unified_AP"]
            unified.append(u["unified_AP"])
            if eval_set.bbox_file is None:  # GT boxes: predictions match GT people by id
                metrics[f"transfer_PCK_{eval_set.name}_domain"] = transfer_pck(
                    eval_set.unified_ann_file, ids, pred, eval_set.name, dataset)
    if unified:
        metrics["unified_AP"] = float(np.mean(unified))
    transfer = [metrics[k] for k in TRANSFER_KEYS if not math.isnan(metrics.get(k, math.nan))]
    if transfer:
        metrics["transfer_PCK"] = float(np.mean(transfer))
    metrics["score"] = cross_dataset_score(metrics)
    return metrics


def _pckh(eval_set: EvalSet, records: Sequence[InstanceRecord], pred: Predictions
          ) -> dict[str, float]:
    """PCKh of unified predictions on MPII's joints."""
    gt = np.stack([r.keypoints for r in records])
    visible = np.stack([r.visible for r in records])
    head = np.array([r.head_size for r in records], dtype=np.float64)
    if np.isnan(head).any() or (head <= 0).any():
        raise ValueError(f"{eval_set.records_path}: PCKh needs head sizes for every "
                         "instance (head_box fields or the mpii_gt_val.mat file)")
    joints = mapping_for("mpii").to_unified  # indexed explicitly: N may equal 21
    return evaluate_pckh(pred.keypoints[:, joints], gt[:, joints], visible[:, joints], head,
                         pred_offset=0.0)


TRANSFER_KEYS = ("transfer_PCK_coco_domain", "transfer_PCK_mpii_domain")


TRANSFER_THRESHOLD = 0.1  # of the GT box diagonal


def transfer_pck(unified_ann_file: str, records: Sequence[InstanceRecord], pred: Predictions,
                 domain: str, model_set: str) -> float:
    """PCK (%) on the joints the image's own dataset does not annotate.

    COCO images: pelvis, thorax, upper neck, head top; MPII images: nose, eyes, ears. A
    joint is correct within ``0.1`` of its person's GT box diagonal; joints labelled in the
    21-joint file (``v > 0``) count. What a model knows there it learnt from the other
    dataset: the transfer the distillation is for. Joints the model does not predict
    count as misses. NaN when no such joint is labelled.

    Args:
        records: the evaluated instances, ``instance_id`` = the unified file's annotation id.
        pred: their predictions in unified order.
        domain: ``coco`` or ``mpii``, the images' dataset.
        model_set: the model's keypoint set.
    """
    with open(unified_ann_file) as f:
        annotations = {a["id"]: a for a in json.load(f)["annotations"]}
    own = set(mapping_for(domain).to_unified.tolist())
    joints = np.array([j for j in range(UNIFIED.num_keypoints) if j not in own])
    predicted = np.isin(joints, mapping_for(model_set).to_unified)
    hits, total = 0, 0
    for i, record in enumerate(records):
        ann = annotations[record.instance_id]
        gt = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)[joints]
        labelled = gt[:, 2] > 0
        _, _, w, h = ann["bbox"]
        dist = np.linalg.norm(pred.keypoints[i, joints] - gt[:, :2], axis=1)
        hits += int((labelled & predicted & (dist <= TRANSFER_THRESHOLD * math.hypot(w, h))).sum())
        total += int(labelled.sum())
    return 100.0 * hits / total if total else math.nan


def cross_dataset_score(metrics: dict[str, float]) -> float:
    """Mean of COCO AP (as %) and MPII PCKh@0.5: the paper's cross-dataset figure."""
    parts = []
    if "coco_AP" in metrics:
        parts.append(100.0 * metrics["coco_AP"])
    if "mpii_PCKh" in metrics:
        parts.append(metrics["mpii_PCKh"])
    return float(np.mean(parts)) if parts else math.nan


def as_percent(metric: str, value: float) -> float:
    """A metric as tables and ``jobs/evaluate.py --output`` show it: COCOeval's AP and AR
    (fractions, as MMPose reports them) in %, like PCKh."""
    name = metric.removeprefix("val/")
    return 100 * value if name.startswith(("coco_A", "unified_A")) else value


def format_table(rows: dict[str, dict[str, float]], columns: Sequence[str] = HEADLINE) -> str:
    """A plain-text table: one row per model, one column per metric."""
    width = max([len("model"), *map(len, rows)]) + 2
    widths = [max(len(c) + 2, 10) for c in columns]
    lines = ["model".ljust(width) + "".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    for name, metrics in rows.items():
        cells = []
        for column, w in zip(columns, widths, strict=True):
            cells.append(f"{as_percent(column, metrics.get(column, math.nan)):{w}.2f}")
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)
