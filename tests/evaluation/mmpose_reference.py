"""MMPose's ``CocoMetric`` as its own test loop runs it: the reference the COCO AP tests use.

Deliberately not the package's route: the metric loads the GT *file* (``ann_file``), is fed
the data samples in dataloader-sized batches and answers through ``BaseMetric.evaluate``.
Importable from the tests of this folder (pytest puts it on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import KeypointSet


def mmpose_coco_metric(ann_file: Path, samples: list[dict], keypoint_set: KeypointSet,
                       nms_mode: str = "oks_nms") -> dict[str, float]:
    """``CocoMetric(ann_file)`` on top-down data samples (``id``, ``img_id``,
    ``pred_instances``, ``gt_instances``); its stat names without the ``coco/`` prefix."""
    import_mmpose()
    from mmpose.evaluation.metrics import CocoMetric

    metric = CocoMetric(ann_file=str(ann_file), nms_mode=nms_mode)
    metric.dataset_meta = keypoint_set.dataset_meta()
    for start in range(0, len(samples), 8):  # a few batches, like a dataloader
        metric.process([], samples[start : start + 8])
    results = metric.evaluate(size=len(samples))
    return {name.split("/", 1)[1]: value for name, value in results.items()}
