"""Keypoint sets as data, and the unified skeleton of a run as the union of its datasets.

:mod:`~unipose_ray.skeleton.keypoints` holds each dataset's joint table (COCO, MPII, AIC,
CrowdPose, Halpe-26); :mod:`~unipose_ray.skeleton.union` joins any of them through name
tables into one skeleton, and derives the index maps between a dataset and a skeleton.
"""

from unipose_ray.skeleton.keypoints import (
    AIC,
    COCO,
    CROWDPOSE,
    DATASET_SETS,
    HALPE26,
    MPII,
    KeypointSet,
)
from unipose_ray.skeleton.union import (
    KEYPOINT_SETS,
    NAME_MAPS,
    UNANNOTATED,
    UNIFIED,
    UNIFIED_NAME,
    DatasetMapping,
    build_mapping,
    covering_skeleton,
    keypoint_set_for,
    keypoint_set_named,
    keypoint_set_of,
    mapping_for,
    set_mapping,
    skeleton_from_names,
    unified_skeleton,
    union_names,
)

__all__ = [
    "AIC", "COCO", "CROWDPOSE", "DATASET_SETS", "HALPE26", "KEYPOINT_SETS", "MPII", "NAME_MAPS",
    "UNANNOTATED", "UNIFIED", "UNIFIED_NAME", "DatasetMapping", "KeypointSet", "build_mapping", "covering_skeleton",
    "keypoint_set_for", "keypoint_set_named", "keypoint_set_of", "mapping_for", "set_mapping",
    "skeleton_from_names", "union_names", "unified_skeleton",
]
