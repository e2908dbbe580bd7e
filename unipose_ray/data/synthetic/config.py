"""What to generate (:class:`SyntheticConfig`) and where its files go (:func:`dataset_paths`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from unipose_ray.skeleton import KeypointSet, unified_skeleton
from unipose_ray.skeleton.keypoints import FEET

DATASETS = ("coco", "mpii", "aic", "crowdpose", "halpe26")
"""Every format the generator writes, in the order it writes them."""
ALWAYS_WRITTEN = ("coco", "mpii")
"""Written by every run, also with zero images (the product's two datasets); the others
only when they have images."""
SPLITS = ("train", "val")


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. The same config always produces byte-identical files.

    Attributes:
        seed: base seed; image ``i`` of a dataset/split draws from ``(seed, dataset, split, i)``,
            so an image does not depend on how many images are generated.
        coco_train, coco_val, mpii_train, mpii_val: number of images per dataset and split.
        aic_train, aic_val, crowdpose_train, crowdpose_val, halpe26_train, halpe26_val:
            the same for AI Challenger, CrowdPose and Halpe-26; 0 (the default) for both
            splits of a dataset: nothing of it is written or drawn. Halpe-26 images put feet
            on every figure of the run (see :attr:`draws_feet`).
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
    aic_train: int = 0
    aic_val: int = 0
    crowdpose_train: int = 0
    crowdpose_val: int = 0
    halpe26_train: int = 0
    halpe26_val: int = 0
    image_size: tuple[int, int] = (320, 480)
    min_person_height: int = 80
    max_people: int = 4
    occluder_prob: float = 0.4
    truncation_prob: float = 0.25
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        for name in (f"{d}_{s}" for d in DATASETS for s in SPLITS):
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

    @property
    def datasets(self) -> tuple[str, ...]:
        """The datasets this config writes: COCO and MPII always, the others when they
        have images, in :data:`DATASETS` order."""
        return tuple(d for d in DATASETS if d in ALWAYS_WRITTEN
                     or any(self.num_images(d, s) for s in SPLITS))

    @property
    def skeleton(self) -> KeypointSet:
        """The run's unified skeleton: the union of :attr:`datasets` (COCO + MPII: the 21
        joints; with Halpe-26: 27, the feet last). People's labels and the unified
        validation files carry these joints."""
        return unified_skeleton(self.datasets)

    @property
    def draws_feet(self) -> bool:
        """Whether figures get feet: when the skeleton has foot joints (a run with
        Halpe-26), on every image of the run, as every image shows every unified joint."""
        return set(FEET) <= set(self.skeleton.names)

    def record(self) -> dict:
        """What ``synthetic_config.json`` holds: the fields, without the counts of
        datasets that are not written (so a COCO + MPII config records what it always
        did). Compare a generated folder's record with this to know whether it is current."""
        unwritten = {f"{d}_{s}" for d in DATASETS if d not in self.datasets for s in SPLITS}
        return {k: v for k, v in asdict(self).items() if k not in unwritten}


_ANNOTATION_FILES = {
    "coco": "person_keypoints_{split}.json",
    "mpii": "mpii_{split}.json",
    "aic": "aic_{split}.json",
    "crowdpose": "mmpose_crowdpose_{split}.json",
    "halpe26": "halpe26_{split}.json",
}
_RAW_FILES = {"aic": "keypoint_{split}_annotations.json"}


@dataclass(frozen=True)
class SyntheticDataset:
    """Where the files of a generated dataset live (see :func:`dataset_paths`).

    Attributes:
        root: the output folder.
        datasets: the datasets written (:attr:`SyntheticConfig.datasets`).
        skeleton: the joints of the unified validation files (:attr:`SyntheticConfig.skeleton`).
    """

    root: Path
    datasets: tuple[str, ...]
    skeleton: KeypointSet

    def _folder(self, dataset: str) -> Path:
        if dataset not in self.datasets:
            raise KeyError(f"no synthetic '{dataset}' data under {self.root}: this run "
                           f"writes {list(self.datasets)}; give it {dataset}_train/_val images")
        return self.root / dataset

    def images_dir(self, dataset: str, split: str) -> Path:
        return self._folder(dataset) / "images" / split

    def annotation_file(self, dataset: str, split: str) -> Path:
        """The dataset's own file (COCO style, or MMPose's MPII list)."""
        name = _ANNOTATION_FILES[dataset].format(split=split)
        return self._folder(dataset) / "annotations" / name

    def raw_annotation_file(self, dataset: str, split: str) -> Path:
        """The dataset's original format where it has one besides MMPose's (AIC's list)."""
        if dataset not in _RAW_FILES:
            raise KeyError(f"'{dataset}' is written in one format only; raw files exist for "
                           f"{list(_RAW_FILES)}")
        return self._folder(dataset) / "annotations" / _RAW_FILES[dataset].format(split=split)

    def unified_val_file(self, dataset: str) -> Path:
        """COCO style, the validation images annotated with every joint of :attr:`skeleton`."""
        name = f"unified{self.skeleton.num_keypoints}_val.json"
        return self._folder(dataset) / "annotations" / name

    # The files callers name directly (the demo, the tests, the benchmarks).
    coco_train_images = property(lambda self: self.images_dir("coco", "train"))
    coco_val_images = property(lambda self: self.images_dir("coco", "val"))
    coco_train_ann = property(lambda self: self.annotation_file("coco", "train"))
    coco_val_ann = property(lambda self: self.annotation_file("coco", "val"))
    coco_val_unified = property(lambda self: self.unified_val_file("coco"))
    mpii_train_images = property(lambda self: self.images_dir("mpii", "train"))
    mpii_val_images = property(lambda self: self.images_dir("mpii", "val"))
    mpii_train_ann = property(lambda self: self.annotation_file("mpii", "train"))
    mpii_val_ann = property(lambda self: self.annotation_file("mpii", "val"))
    mpii_val_unified = property(lambda self: self.unified_val_file("mpii"))


def dataset_paths(out_dir: str | Path, config: SyntheticConfig | None = None) -> SyntheticDataset:
    """The file layout under ``out_dir`` of the data ``config`` generates (``None``: COCO
    and MPII only, ``K`` = 21)::

        coco/images/{train,val}/000001.jpg ...
        coco/annotations/person_keypoints_{train,val}.json   COCO, 17 keypoints
        coco/annotations/unified{K}_val.json                 COCO style, the K unified keypoints
        mpii/images/{train,val}/000001.jpg ...
        mpii/annotations/mpii_{train,val}.json               MMPose MPII list, 16 joints
        mpii/annotations/unified{K}_val.json
        aic/annotations/aic_{train,val}.json                 MMPose's COCO-style AIC, 14 joints
        aic/annotations/keypoint_{train,val}_annotations.json   AI Challenger's own list
        crowdpose/annotations/mmpose_crowdpose_{train,val}.json  COCO style, 14, crowdIndex
        halpe26/annotations/halpe26_{train,val}.json         COCO style, 26 Halpe joints
        {aic,crowdpose,halpe26}/images/..., .../unified{K}_val.json   as for COCO
        synthetic_config.json                                :meth:`SyntheticConfig.record`

    ``K`` is the size of the run's unified skeleton: 21 for COCO + MPII (+ AIC and
    CrowdPose, which add no joint), 27 with Halpe-26. AIC, CrowdPose and Halpe-26 folders
    exist only when the config gives them images.

    MPII ``image`` fields are bare file names (``000001.jpg``) relative to
    ``mpii/images/{split}``: MMPose parses the image id as ``int(image.split('.')[0])``.
    Image ids are the file numbers (from 1) in every file. Annotation ids in the unified
    files: the dataset file's ids for the COCO-style datasets; the MPII list index + 1 for
    MPII (COCOeval reads id 0 as "unmatched").
    """
    config = SyntheticConfig() if config is None else config
    return SyntheticDataset(root=Path(out_dir), datasets=config.datasets, skeleton=config.skeleton)
