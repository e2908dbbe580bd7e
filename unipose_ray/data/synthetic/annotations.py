"""The records of each annotation format, from the drawn people (:class:`PersonLabel`):
COCO-style files (COCO, MMPose's AIC and CrowdPose conversions, Halpe-26, the unified
validation files), MMPose's MPII list, AI Challenger's own list, and CrowdPose's crowd index.

``joints`` arguments are indices into a label's joints (the run's skeleton), in the
written dataset's order: ``mapping_for(dataset, skeleton).to_unified``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unipose_ray.data.synthetic.scene import PersonLabel
from unipose_ray.skeleton import KeypointSet

_AIC_FLAGS = {2: 1, 1: 2, 0: 3}  # COCO v -> AI Challenger: 1 visible, 2 occluded, 3 unlabelled


def _r(values) -> list[float]:
    return [round(float(v), 2) for v in np.ravel(values)]


def coco_annotation(label: PersonLabel, ann_id: int, image_id: int, joints: np.ndarray) -> dict:
    """One person of a COCO-style file (``x = y = 0`` where ``v = 0``, as COCO writes)."""
    v = label.visibility[joints]
    xy = np.where(v[:, None] > 0, label.keypoints[joints], 0.0)
    keypoints = []
    for (x, y), vis in zip(xy, v, strict=True):
        keypoints += [round(float(x), 2), round(float(y), 2), int(vis)]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": _r(label.bbox),
            "area": round(label.area, 2), "iscrowd": 0, "num_keypoints": int((v > 0).sum()),
            "keypoints": keypoints}


def coco_file(keypoint_set: KeypointSet, images: list[dict], annotations: list[dict]) -> dict:
    """A COCO-style file with one ``person`` category carrying ``keypoint_set``'s joints."""
    return {
        "info": {"description": f"unipose_ray synthetic people ({keypoint_set.name} keypoints)"},
        "images": images,
        "annotations": annotations,
        "categories": [{
            "id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(keypoint_set.names),
            "skeleton": [[a + 1, b + 1] for a, b in keypoint_set.links],  # 1-based like COCO
        }],
    }  # fmt: skip


def mpii_entry(label: PersonLabel, file_name: str, joints: np.ndarray) -> dict:
    """One person of MMPose's MPII list (see :mod:`unipose_ray.data.synthetic`)."""
    v = label.visibility[joints]
    # 1-based like the real files; unlabelled joints are [-1, -1]
    xy = np.where(v[:, None] > 0, label.keypoints[joints] + 1, -1.0)
    x, y, w, h = label.bbox
    scale = max(w, h) / 200.0
    return {
        "image": file_name,
        # 1-based centre minus MMPose's +15 px shift: MMPose then gets the box centre
        "center": _r([x + w / 2 + 1, y + h / 2 + 1 - 15.0 * scale]),
        "scale": round(scale, 6),
        "joints": [_r(p) for p in xy],
        "joints_vis": [int(vis == 2) for vis in v],
        "head_box": _r(np.asarray(label.head_box) + 1),
    }


def aic_raw_entry(people: Sequence[PersonLabel], image_id: str, joints: np.ndarray) -> dict:
    """One image of AI Challenger's own list: integer pixels, ``[0, 0, 3]`` for an unlabelled
    joint, boxes as ``[x1, y1, x2, y2]``, people named ``human1``, ``human2``, ..."""
    keypoints, boxes = {}, {}
    for number, label in enumerate(people, start=1):
        values = []
        for (x, y), v in zip(label.keypoints[joints], label.visibility[joints], strict=True):
            labelled = [round(float(x)), round(float(y)), _AIC_FLAGS[int(v)]]
            values += labelled if v > 0 else [0, 0, 3]
        x, y, w, h = (float(c) for c in label.bbox)
        keypoints[f"human{number}"] = values
        boxes[f"human{number}"] = [round(x), round(y), round(x + w), round(y + h)]
    return {"image_id": image_id, "keypoint_annotations": keypoints, "human_annotations": boxes}


def crowd_index(people: Sequence[PersonLabel], joints: np.ndarray) -> float:
    """CrowdPose's crowd index of an image (Li et al., CVPR 2019, eq. 1): the mean over its
    people of ``N_b / N_a``, ``N_a`` the person's labelled joints, ``N_b`` the other people's
    labelled joints inside the person's box; 0 for fewer than two people. Clipped to 1 (the
    paper's range; a person's box can hold more joints of others than its own)."""
    boxes = [np.asarray(p.bbox, dtype=float) for p in people]
    points = [p.keypoints[joints][p.visibility[joints] > 0] for p in people]
    ratios = []
    for i, (x, y, w, h) in enumerate(boxes):
        if len(points[i]) == 0:
            continue
        others = [q for j, q in enumerate(points) if j != i and len(q)]
        inside = sum(int(((q[:, 0] >= x) & (q[:, 0] <= x + w) & (q[:, 1] >= y)
                          & (q[:, 1] <= y + h)).sum()) for q in others)
        ratios.append(inside / len(points[i]))
    return round(min(1.0, float(np.mean(ratios))), 4) if ratios else 0.0
