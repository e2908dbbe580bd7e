"""Where a run's data comes from: annotation paths -> Parquet record sets.

:class:`~unipose_ray.config.files.DataConfig` names the COCO and MPII files a user holds;
:func:`prepare_records` reads them once and writes one Parquet record set per split, which
every later stage (pipeline, Ray Data, teacher-logit cache) reads.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from unipose_ray.config.files import PATH_FIELDS, DataConfig, DatasetFiles
from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.records import (
    SCHEMA,
    read_records,
    records_to_table,
    records_version,
    write_records,
)

__all__ = ["PATH_FIELDS", "DataConfig", "DatasetFiles", "prepare_records", "read_split"]


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
