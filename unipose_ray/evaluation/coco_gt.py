"""COCO-format ground truth from unified instance records (for unified-21 AP).

COCO's own files annotate 17 joints; a unified-21 AP needs GT that carries all 21 (e.g. a
generated set, or MPII instances with their spine/head joints). This writes any record set
as a COCO keypoints GT dict: a joint is labelled (``v=2``) where it is visible *and*
annotated, else ``v=0`` (ignored by OKS).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from unipose_ray.data.records import InstanceRecord
from unipose_ray.skeleton import UNIFIED, KeypointSet, mapping_for


def coco_gt_from_records(
    records: Iterable[InstanceRecord], keypoint_set: KeypointSet = UNIFIED
) -> dict:
    """A COCO keypoints GT dict (``images``, ``annotations``, ``categories``).

    Args:
        records: instances in unified slots; ``instance_id`` becomes the annotation id
            (must be unique), ``image_id`` the image id, ``area`` the OKS scale.
        keypoint_set: ``UNIFIED`` (21 joints) or a registered dataset set (gathered from
            the unified slots).
    """
    images: dict[int, dict] = {}
    annotations = []
    for r in records:
        images.setdefault(
            int(r.image_id),
            {
                "id": int(r.image_id),
                "file_name": r.image_path,
                "width": int(r.image_width),
                "height": int(r.image_height),
            },
        )
        keypoints, labelled = np.asarray(r.keypoints, dtype=np.float64), r.weights > 0
        if keypoint_set is not UNIFIED:
            mapping = mapping_for(keypoint_set.name)
            keypoints = mapping.keypoints_from_unified(keypoints)
            labelled = mapping.keypoints_from_unified(labelled)
        v = np.where(labelled, 2.0, 0.0)
        xyv = np.concatenate([np.where(labelled[:, None], keypoints, 0.0), v[:, None]], axis=1)
        annotations.append(
            {
                "id": int(r.instance_id),
                "image_id": int(r.image_id),
                "category_id": 1,
                "bbox": [float(x) for x in r.bbox],
                "area": float(r.area),
                "iscrowd": 0,
                "keypoints": xyv.reshape(-1).tolist(),
                "num_keypoints": int(labelled.sum()),
            }
        )
    return {
        "images": list(images.values()),
        "annotations": annotations,
        "categories": [
            {
                "id": 1,
                "name": "person",
                "supercategory": "person",
                "keypoints": list(keypoint_set.names),
                "skeleton": [[a + 1, b + 1] for a, b in keypoint_set.links],
            }
        ],
    }
