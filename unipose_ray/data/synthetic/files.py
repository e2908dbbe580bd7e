"""The annotation files: COCO (17 keypoints), MMPose's MPII list (16 joints) and the
unified-21 validation files, written with the images by :func:`generate_dataset`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from unipose_ray.data.synthetic.config import (
    DATASETS,
    SPLITS,
    SyntheticConfig,
    SyntheticDataset,
    dataset_paths,
)
from unipose_ray.data.synthetic.scene import PersonLabel, render_sample
from unipose_ray.skeleton import COCO, UNIFIED, mapping_for

_MIN_MPII_VISIBLE = 3  # MPII annotates only people with at least this many visible joints


def _r(values) -> list[float]:
    return [round(float(v), 2) for v in np.ravel(values)]


def _coco_annotation(label: PersonLabel, ann_id: int, image_id: int, joints: np.ndarray) -> dict:
    v = label.visibility[joints]
    xy = np.where(v[:, None] > 0, label.keypoints[joints], 0.0)  # COCO: x = y = 0 when v = 0
    keypoints = []
    for (x, y), vis in zip(xy, v, strict=True):
        keypoints += [round(float(x), 2), round(float(y), 2), int(vis)]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": _r(label.bbox),
            "area": round(label.area, 2), "iscrowd": 0, "num_keypoints": int((v > 0).sum()),
            "keypoints": keypoints}


def _coco_file(keypoint_set, images: list[dict], annotations: list[dict]) -> dict:
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


def _mpii_entry(label: PersonLabel, file_name: str) -> dict:
    joints = mapping_for("mpii").to_unified
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


def _write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")))


def generate_dataset(
    out_dir: str | Path, config: SyntheticConfig, progress: bool | None = None
) -> SyntheticDataset:
    """Draw both datasets and write images and annotation files under ``out_dir``.

    Args:
        out_dir: root folder; see :func:`dataset_paths` for the layout.
        config: what to generate.
        progress: show a tqdm bar; by default only for 500 images or more.
    """
    paths = dataset_paths(out_dir)
    total = sum(config.num_images(d, s) for d in DATASETS for s in SPLITS)
    bar = tqdm(total=total, desc="synthetic images", unit="img",
               disable=not (total >= 500 if progress is None else progress))
    for dataset in DATASETS:
        for split in SPLITS:
            _generate_split(paths, config, dataset, split, bar)
    bar.close()
    _write_json(asdict(config), paths.root / "synthetic_config.json")
    return paths


def _generate_split(paths: SyntheticDataset, config: SyntheticConfig, dataset: str,
                    split: str, bar: tqdm) -> None:
    image_dir = paths.images_dir(dataset, split)
    image_dir.mkdir(parents=True, exist_ok=True)
    coco_joints, all_joints = np.arange(COCO.num_keypoints), np.arange(UNIFIED.num_keypoints)
    images, coco_anns, unified_anns, mpii_entries = [], [], [], []
    for index in range(config.num_images(dataset, split)):
        image, labels = render_sample(config, dataset, split, index)
        image_id, file_name = index + 1, f"{index + 1:06d}.jpg"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
        if not ok:
            raise RuntimeError(f"cv2 could not encode {image_dir / file_name} as JPEG")
        (image_dir / file_name).write_bytes(encoded.tobytes())
        images.append({"id": image_id, "file_name": file_name,
                       "width": image.shape[1], "height": image.shape[0]})
        for label in labels:
            if dataset == "coco" and (label.visibility[coco_joints] > 0).any():
                ann_id = len(coco_anns) + 1
                coco_anns.append(_coco_annotation(label, ann_id, image_id, coco_joints))
                unified_anns.append(_coco_annotation(label, ann_id, image_id, all_joints))
            mpii_visible = (label.visibility[mapping_for("mpii").to_unified] == 2).sum()
            if dataset == "mpii" and mpii_visible >= _MIN_MPII_VISIBLE:
                mpii_entries.append(_mpii_entry(label, file_name))
                # ids from 1 (COCOeval treats id 0 as "unmatched"): MMPose's index + 1
                ann_id = len(mpii_entries)
                unified_anns.append(_coco_annotation(label, ann_id, image_id, all_joints))
        bar.update()
    if dataset == "coco":
        _write_json(_coco_file(COCO, images, coco_anns), paths.annotation_file(dataset, split))
    else:
        _write_json(mpii_entries, paths.annotation_file(dataset, split))
    if split == "val":
        _write_json(_coco_file(UNIFIED, images, unified_anns), paths.unified_val_file(dataset))
