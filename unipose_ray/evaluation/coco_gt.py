"""COCO-format ground truth for the evaluated instances: from records, or a file's subset.

COCO's own files annotate 17 joints; a unified-21 AP needs GT that carries all 21 (e.g. a
generated set, or MPII instances with their spine/head joints).
:func:`coco_gt_from_records` writes any record set as a COCO keypoints GT dict: a joint is
labelled (``v=2``) where it is visible *and* annotated, else ``v=0`` (ignored by OKS).
What records do not carry (CrowdPose's ``crowdIndex``, crowd regions, people without
labelled joints) stays in the dataset's own file: :func:`coco_gt_subset` keeps it for the
images a capped validation set evaluates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

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


def coco_gt_subset(
    gt: str | Path | dict, image_ids: Iterable[int], *, num_keypoints: int | None = None
) -> dict:
    """A COCO keypoints GT restricted to some images, with every field the file has.

    COCOeval counts every GT person of every image in the file, so a validation capped to
    some images (``EvalSet.max_samples``, completed to whole images) is scored against
    those images alone. All their annotations stay, not only the records' instances: the
    readers skip crowd regions and people without labelled joints, which COCOeval ignores
    rather than drops (a detection matched to one is neither right nor wrong), so keeping
    them is what keeps AP equal to MMPose's on the same images. Fields records do not carry
    stay too: CrowdPose's per-image ``crowdIndex`` (its AP(E/M/H)) and ``num_keypoints``
    (visible joints only), the GT ``area``.

    Args:
        gt: the dataset's COCO-style annotation file or its dict (left unchanged).
        image_ids: the images to keep, e.g. ``{r.image_id for r in records}``.
        num_keypoints: keep only each annotation's first ``num_keypoints`` joints and count
            its labelled ones (``v > 0``) again: Halpe-FullBody's 136 -> Halpe-26's 26, as
            MMPose's Body8 recipe converts them. ``None``: as the file has them.

    Returns:
        The GT dict: its ``images`` and ``annotations`` of those images, in the file's
        order; every other top-level key as the file has it.

    Raises:
        ValueError: an image the file does not have (predictions on it could not be scored).
    """
    if not isinstance(gt, dict):
        with open(gt) as f:
            gt = json.load(f)
    wanted = set(image_ids)
    missing = wanted - {image["id"] for image in gt["images"]}
    if missing:
        raise ValueError(f"{len(missing)} image ids are not in the GT file (e.g. "
                         f"{sorted(missing)[:5]}): the records were not read from it")
    subset = {**gt,
              "images": [image for image in gt["images"] if image["id"] in wanted],
              "annotations": [a for a in gt["annotations"] if a["image_id"] in wanted]}
    if num_keypoints is not None:
        subset["annotations"] = [_first_joints(a, num_keypoints) for a in subset["annotations"]]
        subset["categories"] = [_first_joint_names(c, num_keypoints) for c in gt["categories"]]
    return subset


def _first_joints(annotation: dict, k: int) -> dict:
    """An annotation (a copy) with its first ``k`` joints, ``num_keypoints`` recounted."""
    xyv = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)
    if len(xyv) < k:
        raise ValueError(f"annotation {annotation.get('id')} has {len(xyv)} keypoints, "
                         f"fewer than the {k} to keep")
    return {**annotation, "keypoints": annotation["keypoints"][: 3 * k],
            "num_keypoints": int(np.count_nonzero(xyv[:k, 2] > 0))}


def _first_joint_names(category: dict, k: int) -> dict:
    """A category (a copy) naming its first ``k`` joints and the links between them."""
    out = dict(category)
    if "keypoints" in out:
        out["keypoints"] = list(out["keypoints"][:k])
    if "skeleton" in out:  # 1-based joint indices
        out["skeleton"] = [link for link in out["skeleton"] if max(link) <= k]
    return out
