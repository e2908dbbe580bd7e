"""Evaluate a model on every dataset's validation set: the paper's cross-dataset table.

A model predicting any keypoint set (a union skeleton, or one dataset's joints) is run
top-down as MMPose runs it (:func:`~unipose_ray.evaluation.topdown.predict`: unaugmented
crops, flip test by default) on ground-truth boxes, or on person detections from a
``bbox_file``; its joints are placed in the skeleton's slots (joints it does not have get
score 0 and count as misses), then each set is scored with its dataset's metric as MMPose
computes it: PCKh on MPII (``mpii_PCKh``, ``mpii_PCKh@0.1``), ``CocoMetric`` with the
dataset's settings on the others (``coco_AP``, ``aic_AP``, ``crowdpose_AP``...), and unified
AP where a file annotating the whole skeleton exists. ``score`` is the mean of the
datasets' headline figures (AP in %, PCKh). Where a whole-skeleton file exists, per image
domain: ``unified_AP_<domain>_domain`` and ``transfer_PCK_<domain>_domain``, the accuracy
on the joints the domain's own dataset does not annotate (:func:`transfer_pck`), and their
means ``unified_AP`` and ``transfer_PCK``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

from unipose_ray.config.settings import CodecConfig
from unipose_ray.data.records import InstanceRecord, read_records, table_to_records
from unipose_ray.evaluation.coco_gt import coco_gt_subset
from unipose_ray.evaluation.coco_metric import (
    KeypointPrediction,
    dataset_keypoint_metrics,
    evaluate_coco,
)
from unipose_ray.evaluation.dataset_metrics import stable_metric_names
from unipose_ray.evaluation.names import metric_names  # noqa: F401 (re-exported)
from unipose_ray.evaluation.pckh import evaluate_pckh
from unipose_ray.evaluation.topdown import (
    Predictions,
    as_keypoint_set,
    coco_images,
    predict,
    read_detections,
    to_unified,
)
from unipose_ray.skeleton import DATASET_SETS, UNIFIED, KeypointSet, mapping_for, set_mapping


def dataset_columns(dataset: str) -> tuple[str, ...]:
    """A dataset's headline metrics: MPII's PCKh at 0.5 and 0.1, the others' AP."""
    return ("mpii_PCKh", "mpii_PCKh@0.1") if dataset == "mpii" else (f"{dataset}_AP",)


def table_columns(datasets: Sequence[str], transfer: bool = True) -> tuple[str, ...]:
    """The cross-dataset table of ``datasets``: each dataset's metrics, unified AP, (with
    ``transfer``: unified AP per image domain and transfer PCK,) and ``score``."""
    per_domain = tuple(f"unified_AP_{d}_domain" for d in datasets) if transfer else ()
    return (*(c for d in datasets for c in dataset_columns(d)), "unified_AP", *per_domain,
            *(("transfer_PCK",) if transfer else ()), "score")


HEADLINE = table_columns(("coco", "mpii"), transfer=False)
TRANSFER_COLUMNS = table_columns(("coco", "mpii"))
"""The paper's table (COCO + MPII): the headline plus what shows the transfer."""


@dataclass(frozen=True)
class EvalSet:
    """One validation set.

    Attributes:
        name: its dataset (``coco``, ``mpii``, ``aic``...: decides the metric).
        records_path: its Parquet record set.
        ann_file: COCO-style datasets: the GT keypoints file AP is computed against.
        unified_ann_file: optional GT file of the same images annotating every joint of
            the run's skeleton (unified AP).
        max_samples: evaluate the first N instances only (0: all), completed to whole
            images; AP is then computed against the GT of those images alone.
        img_dir: the images' folder (needed with ``bbox_file``: detections may fall on
            images without annotated people).
        bbox_file: COCO-style datasets only: person detections (COCO results JSON,
            MMPose's ``bbox_file``) to run on instead of the GT boxes, as published RTMPose
            numbers.
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
        if self.bbox_file is not None and (self.name == "mpii" or None in (self.ann_file,
                                                                           self.img_dir)):
            raise ValueError("detector boxes (bbox_file) are for AP and need the dataset's "
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

    def ground_truth(self, ann_file: str, records: Sequence[InstanceRecord],
                     num_keypoints: int | None = None) -> str | dict:
        """``ann_file``, restricted to the images of ``records`` when only some are evaluated
        (:func:`~unipose_ray.evaluation.coco_gt.coco_gt_subset`), and to each person's first
        ``num_keypoints`` joints when given (Halpe-FullBody's 136 -> Halpe-26).

        COCOeval counts every GT person of every image in the file, so without this an
        evaluation of the first N instances would count the rest as missed.
        """
        if not self.max_samples and num_keypoints is None:
            return ann_file
        with open(ann_file) as f:
            gt = json.load(f)
        images = ({r.image_id for r in records} if self.max_samples
                  else {im["id"] for im in gt["images"]})
        return coco_gt_subset(gt, images, num_keypoints=num_keypoints)


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


def evaluate_model(model: torch.nn.Module, dataset: str | KeypointSet, codec: CodecConfig,
                   eval_sets: Sequence[EvalSet], batch_size: int = 32,
                   device: str | torch.device = "cpu", flip_test: bool = True,
                   skeleton: KeypointSet = UNIFIED) -> dict[str, float]:
    """All metrics of one model on the given validation sets (flat names), run in this
    process (``workflows.evaluation`` runs the same prediction on Ray tasks).

    ``dataset``: what the model predicts; ``skeleton``: the slots of the sets' records.
    ``flip_test`` as RTMPose's ``test_cfg`` (on in every released RTMPose config).
    """
    inputs = eval_inputs(eval_sets)
    preds = [predict(model, s.boxes, dataset, codec, flip_test, batch_size, device)
             for s in inputs]
    return score_predictions(inputs, preds, dataset, skeleton)


def score_predictions(inputs: Sequence[SetInputs], preds: Sequence[Predictions],
                      dataset: str | KeypointSet, skeleton: KeypointSet = UNIFIED
                      ) -> dict[str, float]:
    """The metrics of a model's predictions on each set's boxes (flat names).

    Args:
        inputs: per set, from :func:`eval_inputs`.
        preds: per set, the model's own ``K`` joints of each box: ``(N_set, K, 2)``.
        dataset: the model's keypoint set (or its dataset name).
        skeleton: the unified skeleton the sets' records are in.
    """
    model_set = as_keypoint_set(dataset)
    metrics: dict[str, float] = {}
    for s, model_pred in zip(inputs, preds, strict=True):
        eval_set, records, boxes = s.eval_set, s.records, s.boxes
        pred = to_unified(model_pred, model_set, skeleton)
        if eval_set.name == "mpii":
            metrics.update(_pckh(eval_set, records, pred, skeleton))
        elif eval_set.ann_file:
            # Halpe-FullBody files hold 136 joints a person: scored on the 26 body joints
            joints = DATASET_SETS[eval_set.name].num_keypoints if eval_set.name == "halpe26" else None
            gt_file = eval_set.ground_truth(eval_set.ann_file, records, joints)
            own = _gather(pred, mapping_for(eval_set.name, skeleton).to_unified)
            metrics.update(dataset_keypoint_metrics(
                eval_set.name, gt_file, _instances(boxes, own, s.box_scores)))
        if eval_set.unified_ann_file:
            check_unified_joints(eval_set.unified_ann_file, skeleton)
            ids = _unified_ids(boxes, eval_set.name)
            gt_file = eval_set.ground_truth(eval_set.unified_ann_file, records)
            u = stable_metric_names(
                evaluate_coco(gt_file, _instances(ids, pred, s.box_scores), skeleton), "unified")
            metrics[f"unified_AP_{eval_set.name}_domain"] = u["unified_AP"]
            if eval_set.bbox_file is None:  # GT boxes: predictions match GT people by id
                metrics[f"transfer_PCK_{eval_set.name}_domain"] = transfer_pck(
                    eval_set.unified_ann_file, ids, pred, eval_set.name, model_set, skeleton)
    unified = [v for k, v in metrics.items() if k.startswith("unified_AP_")]
    if unified:
        metrics["unified_AP"] = float(np.mean(unified))
    transfer = [v for k, v in metrics.items()
                if k.startswith("transfer_PCK_") and not math.isnan(v)]
    if transfer:  # a domain whose images label no joint outside its dataset has none
        metrics["transfer_PCK"] = float(np.mean(transfer))
    metrics["score"] = cross_dataset_score(metrics)
    return metrics


@lru_cache(maxsize=32)
def _file_joints(path: str, mtime_ns: int) -> tuple[str, ...] | None:
    with open(path) as f:
        categories = json.load(f).get("categories") or [{}]
    names = categories[0].get("keypoints")
    return None if names is None else tuple(names)


def check_unified_joints(unified_ann_file: str, skeleton: KeypointSet) -> None:
    """Refuse a whole-skeleton file whose category names other joints, or these in another
    order, than ``skeleton`` (scored against it, every joint would be compared with another).

    Raises:
        ValueError: naming the file and both joint lists.
    """
    names = _file_joints(str(unified_ann_file), os.stat(unified_ann_file).st_mtime_ns)
    if names is not None and names != skeleton.names:
        raise ValueError(
            f"{unified_ann_file} annotates the joints {list(names)}, but the predictions are "
            f"in the skeleton {list(skeleton.names)}; give the whole-skeleton file of this "
            "run's datasets (generated data writes unified<K>_val.json per skeleton)")


def _gather(pred: Predictions, joints: np.ndarray) -> Predictions:
    """``pred``'s joints ``joints`` (unified indices), in that order."""
    return Predictions(pred.keypoints[:, joints], pred.scores[:, joints], pred.areas)


def _pckh(eval_set: EvalSet, records: Sequence[InstanceRecord], pred: Predictions,
          skeleton: KeypointSet) -> dict[str, float]:
    """PCKh of unified predictions on MPII's joints."""
    gt = np.stack([r.keypoints for r in records])
    visible = np.stack([r.visible for r in records])
    head = np.array([r.head_size for r in records], dtype=np.float64)
    if np.isnan(head).any() or (head <= 0).any():
        raise ValueError(f"{eval_set.records_path}: PCKh needs head sizes for every "
                         "instance (head_box fields or the mpii_gt_val.mat file)")
    joints = mapping_for("mpii", skeleton).to_unified  # indexed explicitly: N may equal K
    return evaluate_pckh(pred.keypoints[:, joints], gt[:, joints], visible[:, joints], head,
                         pred_offset=0.0)


TRANSFER_THRESHOLD = 0.1  # of the GT box diagonal


def transfer_pck(unified_ann_file: str, records: Sequence[InstanceRecord], pred: Predictions,
                 domain: str, model_set: str | KeypointSet, skeleton: KeypointSet = UNIFIED
                 ) -> float:
    """PCK (%) on the joints the image's own dataset does not annotate.

    With COCO + MPII, COCO images: pelvis, thorax, upper neck, head top; MPII images: nose,
    eyes, ears; with Halpe-26 too, the feet on both. A joint is correct within ``0.1`` of
    its person's GT box diagonal; joints labelled in the whole-skeleton file (``v > 0``)
    count. What a model knows there it learnt from the other datasets: the transfer the
    distillation is for. Joints the model does not predict count as misses. NaN when no
    such joint is labelled.

    Args:
        records: the evaluated instances, ``instance_id`` = the unified file's annotation id.
        pred: their predictions in ``skeleton``'s order.
        domain: the images' dataset.
        model_set: the model's keypoint set.
        skeleton: the unified skeleton of ``pred`` and of the file.
    """
    with open(unified_ann_file) as f:
        annotations = {a["id"]: a for a in json.load(f)["annotations"]}
    own = set(mapping_for(domain, skeleton).to_unified.tolist())
    joints = np.array([j for j in range(skeleton.num_keypoints) if j not in own], dtype=int)
    predicted = np.isin(joints, set_mapping(as_keypoint_set(model_set), skeleton).to_unified)
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
    """Mean of each dataset's headline figure, AP (as %) or MPII's PCKh@0.5: with COCO and
    MPII, the paper's cross-dataset figure."""
    parts = [as_percent(c, metrics[c]) for d in DATASET_SETS for c in dataset_columns(d)[:1]
             if c in metrics]
    return float(np.mean(parts)) if parts else math.nan


_AP_PREFIXES = tuple(f"{d}_A" for d in (*DATASET_SETS, "unified") if d != "mpii")


def as_percent(metric: str, value: float) -> float:
    """A metric as tables and ``jobs/evaluate.py --output`` show it: COCOeval's AP and AR
    (fractions, as MMPose reports them) in %, like PCKh."""
    name = metric.removeprefix("val/")
    return 100 * value if name.startswith(_AP_PREFIXES) else value


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
