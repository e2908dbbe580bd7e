"""The files of a run, written with the images by :func:`generate_dataset`: each dataset's
own format (records in :mod:`~unipose_ray.data.synthetic.annotations`) and its unified
validation file, on the run's skeleton."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from unipose_ray.data.synthetic.annotations import (
    aic_raw_entry,
    coco_annotation,
    coco_file,
    crowd_index,
    mpii_entry,
)
from unipose_ray.data.synthetic.config import (
    SPLITS,
    SyntheticConfig,
    SyntheticDataset,
    dataset_paths,
)
from unipose_ray.data.synthetic.scene import PersonLabel, render_sample
from unipose_ray.skeleton import DATASET_SETS, mapping_for

_MIN_MPII_VISIBLE = 3  # MPII annotates only people with at least this many visible joints


def _write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")))


def generate_dataset(
    out_dir: str | Path, config: SyntheticConfig, progress: bool | None = None
) -> SyntheticDataset:
    """Draw the config's datasets and write images and annotation files under ``out_dir``.

    Args:
        out_dir: root folder; see :func:`dataset_paths` for the layout.
        config: what to generate.
        progress: show a tqdm bar; by default only for 500 images or more.
    """
    paths = dataset_paths(out_dir, config)
    total = sum(config.num_images(d, s) for d in config.datasets for s in SPLITS)
    bar = tqdm(total=total, desc="synthetic images", unit="img",
               disable=not (total >= 500 if progress is None else progress))
    for dataset in config.datasets:
        for split in SPLITS:
            _generate_split(paths, config, dataset, split, bar)
    bar.close()
    _write_json(config.record(), paths.root / "synthetic_config.json")
    return paths


class _SplitFiles:
    """The records of one dataset/split, gathered image by image."""

    def __init__(self, config: SyntheticConfig, dataset: str):
        self.dataset, self.skeleton = dataset, config.skeleton
        self.own = mapping_for(dataset, self.skeleton).to_unified  # the dataset's joints
        self.every = np.arange(self.skeleton.num_keypoints)
        self.images, self.annotations, self.unified, self.raw = [], [], [], []

    def add(self, image_id: int, file_name: str, shape: tuple[int, ...],
            labels: list[PersonLabel]) -> None:
        info = {"id": image_id, "file_name": file_name, "width": shape[1], "height": shape[0]}
        if self.dataset == "mpii":
            self.images.append(info)
            for label in labels:
                if (label.visibility[self.own] == 2).sum() >= _MIN_MPII_VISIBLE:
                    self.annotations.append(mpii_entry(label, file_name, self.own))
                    # ids from 1 (COCOeval treats id 0 as "unmatched"): MMPose's index + 1
                    self.unified.append(coco_annotation(label, len(self.annotations), image_id,
                                                        self.every))
            return
        people = [label for label in labels if (label.visibility[self.own] > 0).any()]
        if self.dataset == "crowdpose":
            info["crowdIndex"] = crowd_index(people, self.own)
        self.images.append(info)
        for label in people:
            ann_id = len(self.annotations) + 1
            self.annotations.append(coco_annotation(label, ann_id, image_id, self.own))
            self.unified.append(coco_annotation(label, ann_id, image_id, self.every))
        if self.dataset == "aic":
            self.raw.append(aic_raw_entry(people, Path(file_name).stem, self.own))

    def write(self, paths: SyntheticDataset, split: str) -> None:
        own = self.annotations if self.dataset == "mpii" else \
            coco_file(DATASET_SETS[self.dataset], self.images, self.annotations)
        _write_json(own, paths.annotation_file(self.dataset, split))
        if self.dataset == "aic":
            _write_json(self.raw, paths.raw_annotation_file(self.dataset, split))
        if split == "val":
            _write_json(coco_file(self.skeleton, self.images, self.unified),
                        paths.unified_val_file(self.dataset))


def _generate_split(paths: SyntheticDataset, config: SyntheticConfig, dataset: str,
                    split: str, bar: tqdm) -> None:
    image_dir = paths.images_dir(dataset, split)
    image_dir.mkdir(parents=True, exist_ok=True)
    files = _SplitFiles(config, dataset)
    for index in range(config.num_images(dataset, split)):
        image, labels = render_sample(config, dataset, split, index)
        image_id, file_name = index + 1, f"{index + 1:06d}.jpg"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
        if not ok:
            raise RuntimeError(f"cv2 could not encode {image_dir / file_name} as JPEG")
        (image_dir / file_name).write_bytes(encoded.tobytes())
        files.add(image_id, file_name, image.shape, labels)
        bar.update()
    files.write(paths, split)
