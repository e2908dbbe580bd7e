"""What to generate (:class:`SyntheticConfig`) and where its files go (:func:`dataset_paths`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATASETS = ("coco", "mpii")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. The same config always produces byte-identical files.

    Attributes:
        seed: base seed; image ``i`` of a dataset/split draws from ``(seed, dataset, split, i)``,
            so an image does not depend on how many images are generated.
        coco_train, coco_val, mpii_train, mpii_val: number of images per dataset and split.
        image_size: ``(min, max)`` side length in pixels; width and height are drawn
            independently in this range.
        min_person_height: smallest person height (head top to ankles) in pixels.
        max_people: at most this many people per image (at least one).
        occluder_prob: probability that an image gets 1-2 occluder shapes over people.
        truncation_prob: probability that a person is placed partly outside the image.
        jpeg_quality: JPEG quality of the written images.
    """

    seed: int = 0
    coco_train: int = 1024
    coco_val: int = 256
    mpii_train: int = 1024
    mpii_val: int = 256
    image_size: tuple[int, int] = (320, 480)
    min_person_height: int = 80
    max_people: int = 4
    occluder_prob: float = 0.4
    truncation_prob: float = 0.25
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        for name in ("coco_train", "coco_val", "mpii_train", "mpii_val"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 images, got {getattr(self, name)}")
        if len(self.image_size) != 2 or not 64 <= self.image_size[0] <= self.image_size[1]:
            raise ValueError(f"image_size must be (min, max) with 64 <= min <= max, "
                             f"got {self.image_size}")
        if not 16 <= self.min_person_height <= 0.9 * self.image_size[0]:
            raise ValueError(f"min_person_height must be in [16, 0.9 * image_size[0] = "
                             f"{0.9 * self.image_size[0]:.0f}] px, got {self.min_person_height}; "
                             "lower it or raise the smallest image size")
        if not 1 <= self.max_people <= 8:
            raise ValueError(f"max_people must be in [1, 8], got {self.max_people}")
        for name in ("occluder_prob", "truncation_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    def num_images(self, dataset: str, split: str) -> int:
        return getattr(self, f"{dataset}_{split}")


@dataclass(frozen=True)
class SyntheticDataset:
    """Where the files of a generated dataset live (see :func:`dataset_paths`)."""

    root: Path
    coco_train_images: Path
    coco_val_images: Path
    coco_train_ann: Path
    coco_val_ann: Path
    coco_val_unified: Path
    mpii_train_images: Path
    mpii_val_images: Path
    mpii_train_ann: Path
    mpii_val_ann: Path
    mpii_val_unified: Path

    def images_dir(self, dataset: str, split: str) -> Path:
        return getattr(self, f"{dataset}_{split}_images")

    def annotation_file(self, dataset: str, split: str) -> Path:
        return getattr(self, f"{dataset}_{split}_ann")

    def unified_val_file(self, dataset: str) -> Path:
        return getattr(self, f"{dataset}_val_unified")


def dataset_paths(out_dir: str | Path) -> SyntheticDataset:
    """The file layout under ``out_dir``::

        coco/images/{train,val}/000001.jpg ...
        coco/annotations/person_keypoints_{train,val}.json   COCO, 17 keypoints
        coco/annotations/unified21_val.json                  COCO style, 21 unified keypoints
        mpii/images/{train,val}/000001.jpg ...
        mpii/annotations/mpii_{train,val}.json               MMPose MPII list, 16 joints
        mpii/annotations/unified21_val.json                  COCO style, 21 unified keypoints
        synthetic_config.json                                the SyntheticConfig used

    MPII ``image`` fields are bare file names (``000001.jpg``) relative to
    ``mpii/images/{split}``: MMPose parses the image id as ``int(image.split('.')[0])``.
    Image ids are the file numbers (from 1) in every file. Annotation ids in the unified
    files: the COCO file's ids for COCO; the MPII list index + 1 for MPII (COCOeval reads
    id 0 as "unmatched").
    """
    root = Path(out_dir)
    coco, mpii = root / "coco", root / "mpii"
    return SyntheticDataset(
        root=root,
        coco_train_images=coco / "images" / "train",
        coco_val_images=coco / "images" / "val",
        coco_train_ann=coco / "annotations" / "person_keypoints_train.json",
        coco_val_ann=coco / "annotations" / "person_keypoints_val.json",
        coco_val_unified=coco / "annotations" / "unified21_val.json",
        mpii_train_images=mpii / "images" / "train",
        mpii_val_images=mpii / "images" / "val",
        mpii_train_ann=mpii / "annotations" / "mpii_train.json",
        mpii_val_ann=mpii / "annotations" / "mpii_val.json",
        mpii_val_unified=mpii / "annotations" / "unified21_val.json",
    )
