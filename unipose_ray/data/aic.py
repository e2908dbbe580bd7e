"""AI Challenger (AIC) keypoints -> :class:`InstanceRecord` lists, from either form people hold.

- MMPose's COCO-style ``aic_train.json`` / ``aic_val.json`` (``AicDataset``): read as any
  COCO-style file (:func:`~unipose_ray.data.readers.coco_records`, ``dataset="aic"``).
- AI Challenger's own ``keypoint_*_annotations_*.json``: a list of ``{"image_id": "<hash>",
  "keypoint_annotations": {"human1": [x, y, v] * 14, ...}, "human_annotations": {"human1":
  [x1, y1, x2, y2], ...}}``, images ``<image_id>.jpg``. Read here as MMPose's converter
  made its COCO-style files, then as ``AicDataset`` reads those: ``v`` = 1 visible, 2
  occluded, 3 not labelled becomes COCO's 2 / 1 / 0 (an unlabelled joint's ``x, y`` become
  0), the corner box becomes ``x, y, w, h``; then the COCO path's filters (no labelled
  joint, no positive coordinate, an empty box after clipping) and its clipped boxes and
  areas (:func:`~unipose_ray.data.readers.clipped_boxes`).

The raw file has no image sizes: each image with a person kept is opened for its header
(a few at a time), no pixel decoded. Ids are 1-based positions in the file (COCOeval reads
an id of 0 as "no match"): ``image_id`` the image's, ``instance_id`` the person's among all
the file's people, in file order, so they do not change with what is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from unipose_ray.data import formats
from unipose_ray.data.annotation_io import (
    image_sizes,
    load_json,
    number_rows,
    require_dir,
    require_file,
    require_format,
    require_images,
)
from unipose_ray.data.formats import AnnotationError
from unipose_ray.data.readers import clipped_boxes, coco_records
from unipose_ray.data.records import InstanceRecord
from unipose_ray.skeleton import UNIFIED, KeypointSet, mapping_for

__all__ = ["AIC_FIELDS", "COCO_VISIBILITY", "read_aic"]

AIC_FIELDS = ("image_id", "keypoint_annotations", "human_annotations")
COCO_VISIBILITY = np.array([np.nan, 2.0, 1.0, 0.0], dtype=np.float32)
"""COCO's ``v`` of AI Challenger's ``v`` (index): 1 visible -> 2, 2 occluded -> 1, 3 not
labelled -> 0."""


def read_aic(ann_file: str | Path, img_dir: str | Path, skeleton: KeypointSet = UNIFIED
             ) -> list[InstanceRecord]:
    """Read AIC keypoints from MMPose's COCO-style file or AI Challenger's raw list, told
    apart by content (a JSON object with ``images`` / a list of ``keypoint_annotations``).

    Args:
        ann_file: ``aic_train.json`` (MMPose) or ``keypoint_train_annotations_20170909.json``.
        img_dir: the images' folder (``keypoint_train_images_20170902``).
        skeleton: the joints the records hold; it must include AIC's (as the paper's 21 do:
            AIC's neck is the upper neck).
    """
    ann_file = require_file(ann_file, "AIC annotation file")
    img_dir = require_dir(img_dir, "AIC image folder")
    raw = load_json(ann_file, formats.AIC)
    if require_format(raw, ann_file, formats.AIC) == formats.COCO:
        return coco_records(raw, ann_file, img_dir, "aic", skeleton)
    return raw_aic_records(raw, ann_file, img_dir, skeleton)


def raw_aic_records(raw: list, ann_file: Path, img_dir: Path,
                    skeleton: KeypointSet = UNIFIED) -> list[InstanceRecord]:
    """:func:`read_aic` on the parsed content of a raw AI Challenger file."""
    mapping = mapping_for("aic", skeleton)
    k = mapping.source.num_keypoints
    people = _people(raw, ann_file)
    image_of, names = people["image"], people["name"]

    def where(field: str) -> Callable[[int], str]:
        return lambda i: (f"{ann_file}: image {raw[image_of[i]]['image_id']}, {names[i]}'s "
                          f"{field}")

    points = number_rows(people["keypoints"], 3 * k,
                         where("keypoint_annotations ([x, y, v] per joint)")).reshape(-1, k, 3)
    corners = number_rows(people["boxes"], 4, where("human_annotations box ([x1, y1, x2, y2])"))
    keypoints, visible = _coco_keypoints(points, where("keypoint_annotations visibility"))
    # AicDataset's tests on the converted file: a labelled joint, a positive coordinate
    keep = np.flatnonzero((visible > 0).any(axis=1) & (keypoints.max(axis=(1, 2), initial=0) > 0))
    paths = [img_dir / f"{raw[image_of[i]]['image_id']}.jpg" for i in keep]
    require_images(paths, ann_file)
    sizes = image_sizes(paths, ann_file)
    boxes, nonempty, areas = clipped_boxes(_xywh(corners[keep]), [sizes[p] for p in paths])
    kept = [(i, path) for i, path, ok in zip(keep, paths, nonempty) if ok]
    return [
        InstanceRecord(
            image_path=str(path),
            dataset="aic",
            image_id=int(image_of[i]) + 1,
            instance_id=int(i) + 1,
            image_width=int(sizes[path][0]),
            image_height=int(sizes[path][1]),
            bbox=bbox,
            keypoints=mapping.keypoints_to_unified(keypoints[i]),
            visible=mapping.keypoints_to_unified(np.minimum(1.0, visible[i])),
            annotated=mapping.annotated.copy(),
            head_size=None,
            area=float(area),
        )
        for (i, path), bbox, area in zip(kept, boxes, areas)
    ]


def _people(raw: list, ann_file: Path) -> dict[str, list]:
    """Every person of the file, in file order: the index of its image, its name
    (``human1``), its keypoint list and its box, checked for their presence only."""
    people: dict[str, list] = {"image": [], "name": [], "keypoints": [], "boxes": []}
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise AnnotationError(f"{ann_file}: entry {index} is {type(entry).__name__}, not "
                                  f"an object with {list(AIC_FIELDS)}")
        missing = [key for key in AIC_FIELDS if key not in entry]
        if missing:
            raise AnnotationError(f"{ann_file}: image {entry.get('image_id', f'#{index}')} "
                                  f"lacks {missing}")
        image_id, points, boxes = (entry[key] for key in AIC_FIELDS)
        if not isinstance(image_id, str) or not image_id:
            raise AnnotationError(f"{ann_file}: entry {index}'s image_id must be the image's "
                                  f"file name without .jpg, found {image_id!r}")
        for key, value in (("keypoint_annotations", points), ("human_annotations", boxes)):
            if not isinstance(value, dict):
                raise AnnotationError(f"{ann_file}: image {image_id}'s {key} must map human "
                                      f"names to lists, found {type(value).__name__}")
        for name, keypoints in points.items():
            if name not in boxes:
                raise AnnotationError(f"{ann_file}: image {image_id}: {name} in "
                                      "keypoint_annotations has no box in human_annotations")
            people["image"].append(index)
            people["name"].append(name)
            people["keypoints"].append(keypoints)
            people["boxes"].append(boxes[name])
    return people


def _xywh(corners: np.ndarray) -> np.ndarray:
    """``(N, 4)`` corners ``x1, y1, x2, y2`` (either corner first) -> ``x, y, w, h``."""
    lo = np.minimum(corners[:, :2], corners[:, 2:])
    return np.concatenate([lo, np.maximum(corners[:, :2], corners[:, 2:]) - lo], axis=1)


def _coco_keypoints(points: np.ndarray, where: Callable[[int], str]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(N, K, 3)`` AI Challenger ``x, y, v`` -> float32 ``(N, K, 2)`` coordinates (0 where
    not labelled) and ``(N, K)`` COCO ``v``."""
    v = points[..., 2]
    bad = ~np.isin(v, (1, 2, 3))
    if bad.any():
        person, joint = np.argwhere(bad)[0]
        raise AnnotationError(f"{where(person)} of joint {joint} is {v[person, joint]:g}; AI "
                              "Challenger's are 1 (visible), 2 (occluded), 3 (not labelled)")
    visible = COCO_VISIBILITY[v.astype(np.int64)]
    keypoints = np.where(visible[..., None] > 0, points[..., :2], 0).astype(np.float32)
    return keypoints, visible
