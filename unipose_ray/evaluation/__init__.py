"""Metrics as MMPose computes them: SimCC decoding, COCO keypoint AP/AR, MPII PCKh.

Framework-free (numpy, xtcocotools). Flat metric names for tracking: ``coco_AP``,
``coco_AP50``, ..., ``unified_AP``, ..., ``mpii_PCKh``, ``mpii_PCKh@0.1``,
``mpii_PCKh/<joint>``.
"""

from unipose_ray.evaluation.coco_gt import coco_gt_from_records
from unipose_ray.evaluation.coco_metric import (
    KeypointPrediction,
    coco_keypoint_metrics,
    coco_results,
    evaluate_coco,
    load_coco_gt,
    oks_nms,
    stable_metric_names,
    unified_keypoint_metrics,
)
from unipose_ray.evaluation.decode import crop_to_image_affine, decode_simcc, to_image_coords
from unipose_ray.evaluation.pckh import PCKhResult, compute_pckh, evaluate_pckh

__all__ = [
    "KeypointPrediction",
    "PCKhResult",
    "coco_gt_from_records",
    "coco_keypoint_metrics",
    "coco_results",
    "compute_pckh",
    "crop_to_image_affine",
    "decode_simcc",
    "evaluate_coco",
    "evaluate_pckh",
    "load_coco_gt",
    "oks_nms",
    "stable_metric_names",
    "to_image_coords",
    "unified_keypoint_metrics",
]
