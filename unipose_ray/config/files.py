"""The dataset files a run reads, as plain config (imports nothing heavy).

:class:`DataConfig` names the COCO and MPII files a user holds (the real datasets or the
generated ones); :mod:`unipose_ray.data.sources` turns them into Parquet record sets. A job
reads and checks its config, these paths included, before it imports the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from unipose_ray.cli import InputError
from unipose_ray.paths import is_uri, resolve_path
from unipose_ray.skeleton import DATASET_SETS

PATH_FIELDS = ("ann_file", "img_dir", "headbox_file", "unified_ann_file", "bbox_file")


@dataclass(frozen=True)
class DatasetFiles:
    """One split of one dataset.

    Attributes:
        ann_file: the dataset's annotation file as MMPose users hold it: COCO
            person-keypoints JSON, MMPose's MPII JSON, AIC (MMPose's COCO-style
            ``aic_*.json`` or the raw AI Challenger JSON), CrowdPose
            (``mmpose_crowdpose_*.json``), Halpe-FullBody (``halpe_*_v1.json``).
        img_dir: folder the file's image names are relative to.
        headbox_file: MPII only: official ``mpii_gt_val.mat`` head boxes (optional when
            the JSON carries ``head_box`` fields).
        unified_ann_file: optional COCO-style file annotating every joint of the run's
            unified skeleton on the same images (generated data), for unified AP.
        bbox_file: validation of a COCO-style dataset only: person detections (COCO results
            JSON, MMPose's ``bbox_file``) to evaluate on instead of the GT boxes.
        bbox_score_thr: detections scoring below this are dropped.
    """

    ann_file: str
    img_dir: str
    headbox_file: str | None = None
    unified_ann_file: str | None = None
    bbox_file: str | None = None
    bbox_score_thr: float = 0.0

    def resolved(self) -> DatasetFiles:
        """The same files with absolute paths: validation reads them on Ray Train workers,
        which run in another folder. URIs (``s3://``...) pass through untouched."""
        return replace(self, **{f.name: resolve_path(getattr(self, f.name)) for f in fields(self)
                                if f.name in PATH_FIELDS and getattr(self, f.name) is not None})

    def missing(self, what: str) -> list[str]:
        """``<what>.<field> = <path>`` for each local path that does not exist."""
        return [f"{what}.{name} = {getattr(self, name)}" for name in PATH_FIELDS
                if getattr(self, name) is not None and not is_uri(getattr(self, name))
                and not Path(getattr(self, name)).exists()]


@dataclass(frozen=True)
class DataConfig:
    """The splits of a run, ``<dataset>_train`` and ``<dataset>_val`` (any may be ``None``).

    Attributes:
        skip_bad_images: a training image that cannot be read (missing, corrupt) is
            replaced by the next readable record's and counted (``train/bad_images``);
            off, the run stops with an error naming the file.
    """

    coco_train: DatasetFiles | None = None
    coco_val: DatasetFiles | None = None
    mpii_train: DatasetFiles | None = None
    mpii_val: DatasetFiles | None = None
    aic_train: DatasetFiles | None = None
    aic_val: DatasetFiles | None = None
    crowdpose_train: DatasetFiles | None = None
    crowdpose_val: DatasetFiles | None = None
    halpe26_train: DatasetFiles | None = None
    halpe26_val: DatasetFiles | None = None
    skip_bad_images: bool = False

    def splits(self) -> dict[str, DatasetFiles]:
        """``split name -> files`` of the splits given, datasets in registry order."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), DatasetFiles)}

    def datasets(self) -> tuple[str, ...]:
        """The datasets with a split given, in :data:`DATASET_SETS` order."""
        named = {split_dataset(name) for name in self.splits()}
        return tuple(d for d in DATASET_SETS if d in named)

    def check(self) -> None:
        """Every missing file and folder of every split, in one error."""
        missing = [line for name, files in self.splits().items()
                   for line in files.missing(f"data.{name}")]
        if missing:
            raise InputError(
                "these data paths do not exist:\n  " + "\n  ".join(missing) + "\nPoint them at "
                "your copy of the dataset (relative paths are read from the folder the job "
                "starts in), or use the demo preset, which generates its data")

    def resolved(self) -> DataConfig:
        """Every split's paths made absolute (see :meth:`DatasetFiles.resolved`)."""
        return replace(self, **{name: files.resolved() for name, files in self.splits().items()})


def split_dataset(split: str) -> str:
    """The dataset of a split name: ``coco_val`` -> ``coco``, ``halpe26_train`` -> ``halpe26``."""
    return split.rsplit("_", 1)[0]

