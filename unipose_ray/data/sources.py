"""Where a run's data comes from: annotation paths -> Parquet record sets.

:class:`~unipose_ray.config.files.DataConfig` names the dataset files a user holds;
:func:`prepare_records` reads them once, in the run's unified skeleton's slots, and writes
one Parquet record set per split, which every later stage (pipeline, Ray Data, teacher-logit
cache) reads.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from unipose_ray.config.files import PATH_FIELDS, DataConfig, DatasetFiles, split_dataset
from unipose_ray.data.aic import read_aic
from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.records import (
    READERS_VERSION,
    read_records,
    records_joints,
    records_to_table,
    records_version,
    write_records,
)
from unipose_ray.skeleton import UNIFIED, KeypointSet

__all__ = ["PATH_FIELDS", "DataConfig", "DatasetFiles", "prepare_records", "read_split"]


def read_split(name: str, files: DatasetFiles, skeleton: KeypointSet = UNIFIED) -> pa.Table:
    """Read one split (``<dataset>_train`` / ``_val``) into a record table in ``skeleton``'s
    slots."""
    dataset = split_dataset(name)
    if dataset == "mpii":
        records = read_mpii(files.ann_file, files.img_dir, files.headbox_file, skeleton=skeleton)
    elif dataset == "aic":  # MMPose's COCO-style file or AI Challenger's own list
        records = read_aic(files.ann_file, files.img_dir, skeleton=skeleton)
    else:  # COCO-style: COCO, CrowdPose, Halpe-26
        records = read_coco(files.ann_file, files.img_dir, dataset, skeleton=skeleton)
    return records_to_table(records, skeleton)


def prepare_records(config: DataConfig, out_dir: str | Path, skeleton: KeypointSet = UNIFIED,
                    overwrite: bool = False) -> dict[str, Path]:
    """Write ``out_dir/<split>.parquet`` for every split, in ``skeleton``'s slots.

    A record file newer than its annotation file, of these readers and this skeleton, is
    reused, so repeated runs and trials read annotations once.
    """
    config.check()
    out_dir = Path(out_dir)
    paths = {}
    for name, files in config.splits().items():
        path = out_dir / f"{name}.parquet"
        stale = (not path.exists() or path.stat().st_mtime < Path(files.ann_file).stat().st_mtime
                 or records_version(path) != READERS_VERSION
                 or records_joints(path) != skeleton.names)
        if overwrite or stale:
            write_records(read_split(name, files, skeleton), path)
        else:
            read_records(path, skeleton)  # validates a file left by an earlier run
        paths[name] = path
    return paths
