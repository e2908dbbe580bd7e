"""The flat metric names a validation reports, known before anything is evaluated.

``coco_AP``, ``coco_AP50``, ... (``aic_AP``, ``crowdpose_AP_easy``... for the other
datasets: :func:`~unipose_ray.evaluation.dataset_metrics.dataset_metric_names`),
``unified_AP``, ..., ``mpii_PCKh``, ``mpii_PCKh@0.1``,
``mpii_PCKh/<joint>``: a sweep checks its metric against them before any data is read.
Imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterable

from unipose_ray.evaluation.dataset_metrics import STABLE_SUFFIXES, dataset_metric_names
from unipose_ray.skeleton import MPII

__all__ = ["STABLE_SUFFIXES", "metric_names"]

def metric_names(eval_sets: Iterable) -> set[str]:
    """The names ``cross_dataset.evaluate_model`` returns on ``eval_sets`` (without
    evaluating): anything with an ``EvalSet``'s ``name``, ``ann_file``, ``unified_ann_file``
    and ``bbox_file``."""
    names = {"score"}
    for eval_set in eval_sets:
        if eval_set.name == "mpii":
            names |= {"mpii_PCKh", "mpii_PCKh@0.1", *(f"mpii_PCKh/{j}" for j in MPII.names)}
        elif eval_set.ann_file:
            names |= set(dataset_metric_names(eval_set.name))
        if eval_set.unified_ann_file:
            names |= {"unified_AP", f"unified_AP_{eval_set.name}_domain"}
            if eval_set.bbox_file is None:
                names |= {"transfer_PCK", f"transfer_PCK_{eval_set.name}_domain"}
    return names
