"""Where a run's data comes from: annotation paths -> Parquet record sets.

:class:`DataConfig` names the COCO and MPII files a user holds (the real datasets or the
generated ones); :func:`prepare_records` reads them once and writes one Parquet record set
per split, which every later stage (pipeline, Ray Data, teacher-logit cache) reads.
Paths are checked before any heavy work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import pyarrow as pa

from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.paths import resolve_path
from unipose_ray.data.records import (
    SCHEMA,
    read_records,
    records_to_table,
    records_version,
    write_records,
)


PATH_FIELDS = ("ann_file", "img_dir", "headbox_file", "unified_ann_file", "bbox_file")


@dataclass(frozen=True)
class DatasetFiles:
    """One split of one dataset.

    Attributes:
        ann_file: COCO person-keypoints JSON or MMPose-format MPII JSON.
        img_dir: folder the file's image names are relative to.
        headbox_file: MPII only: official ``mpii_gt_val.mat`` head boxes (optional when
            the JSON carries ``head_box`` fields).
        unified_ann_file: optional COCO-style file annotating all 21 unified joints of the
            same images (generated data), for unified AP.
        bbox_file: COCO validation only: person detections (COCO results JSON, MMPose's
            ``bbox_file``) to evaluate on instead of the GT boxes.
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

    def check(self, what: str) -> None:
        """Raise a clear error for any path that does not exist."""
        for name in PATH_FIELDS:
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise FileNotFoundError(f"{what}.{name} = {value} does not exist; pass the path "
                                        "of your copy of the dataset (or use the demo preset, "
                                        "which generates one)")


@dataclass(frozen=True)
class DataConfig:
    """The COCO and MPII splits of a run (any may be ``None``).

    Attributes:
        skip_bad_images: a training image that cannot be read (missing, corrupt) is
            replaced by the next readable record's and counted (``train/bad_images``);
            off, the run stops with an error naming the file.
    """

    coco_train: DatasetFiles | None = None
    coco_val: DatasetFiles | None = None
    mpii_train: DatasetFiles | None = None
    mpii_val: DatasetFiles | None = None
    skip_bad_images: bool = False

    def splits(self) -> dict[str, DatasetFiles]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), DatasetFiles)}

    def check(self) -> None:
        for name, files in self.splits().items():
            files.check(f"data.{name}")

    def resolved(self) -> DataConfig:
        """Every split's paths made absolute (see :meth:`DatasetFiles.resolved`)."""
        return replace(self, **{name: files.resolved() for name, files in self.splits().items()})


def read_split(name: str, files: DatasetFiles) -> pa.Table:
    """Read one split (``coco_*`` or ``mpii_*``) into a record table."""
    if name.startswith("mpii"):
        records = read_mpii(files.ann_file, files.img_dir, files.headbox_file)
    else:
        records = read_coco(files.ann_file, files.img_dir)
    return records_to_table(records)


def prepare_records(config: DataConfig, out_dir: str | Path, overwrite: bool = False
                    ) -> dict[str, Path]:
    """Write ``out_dir/<split>.parquet`` for every split.

    A record file newer than its annotation file is reused, so repeated runs and trials
    read annotations once.
    """
    config.check()
    out_dir = Path(out_dir)
    paths = {}
    for name, files in config.splits().items():
        path = out_dir / f"{name}.parquet"
        stale = (not path.exists() or path.stat().st_mtime < Path(files.ann_file).stat().st_mtime
                 or records_version(path) != SCHEMA.metadata[b"readers_version"].decode())
        if overwrite or stale:
            write_records(read_split(name, files), path)
        else:
            read_records(path)  # validates the schema of a file left by an earlier run
        paths[name] = path
    return paths
