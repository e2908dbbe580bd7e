"""The teacher-logit cache on disk: Parquet shards of compressed targets and a manifest.

A shard holds rows ``(record, view, teacher)`` with the teacher's compressed targets on
the student's grid, in the teacher's joint order (:mod:`unipose_ray.teachers.compress`):
``x_values``/``y_values`` fp16 and ``x_indices``/``y_indices`` uint16 (``K x k`` each,
flattened), ``x_rest``/``y_rest`` float32 (``K``). Shards are written under a temporary
name and renamed, so a shard that exists is whole; an interrupted build keeps them.

The manifest (``manifest.json``) records everything the targets depend on. A run compares
it with what it would compute itself and refuses a cache that differs, naming the field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from unipose_ray.teachers.compress import TopK

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CacheManifest:
    """What cached targets depend on.

    Attributes:
        teachers: per teacher: its MMPose config and checkpoint sha256, keypoint set and
            joint count.
        student_grid: the student's input size, SimCC bins and split ratio.
        pipeline: crop, augmentation and seed settings (the views are replayed from them).
        records_sha256: the training record set the rows index.
        views: augmentation views per record (epoch ``e`` uses view ``e mod views``).
        compression: ``{"k": k or None (full fp16), "beta": beta}``.
        shards: file name -> rows, of every finished shard.
    """

    teachers: dict
    student_grid: dict
    pipeline: dict
    records_sha256: str
    views: int
    compression: dict
    shards: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CacheManifest:
        return cls(**json.loads(text))


def mismatches(cached: CacheManifest, wanted: CacheManifest) -> list[str]:
    """The fields (dotted paths) in which a cache differs from what a run needs; the
    shard list is not compared."""
    found: list[str] = []

    def walk(a, b, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{where}.{key}" if where else key)
        elif _plain(a) != _plain(b):
            found.append(f"{where}: cache {a!r}, run {b!r}")

    left, right = asdict(cached), asdict(wanted)
    left.pop("shards")
    right.pop("shards")
    walk(left, right, "")
    return found


def _plain(value):
    """JSON's view of a value (tuples and lists compare equal)."""
    return json.loads(json.dumps(value))


SCHEMA = pa.schema([
    ("record", pa.int32()), ("view", pa.int16()), ("teacher", pa.string()),
    ("x_values", pa.list_(pa.float16())), ("x_indices", pa.list_(pa.uint16())),
    ("x_rest", pa.list_(pa.float32())),
    ("y_values", pa.list_(pa.float16())), ("y_indices", pa.list_(pa.uint16())),
    ("y_rest", pa.list_(pa.float32())),
])


def targets_to_table(records: np.ndarray, views: np.ndarray, teacher: str,
                     x: TopK, y: TopK) -> pa.Table:
    """One teacher's compressed targets of a batch, ``(B, K, k)``, as shard rows."""
    b = len(records)

    def flat(t: torch.Tensor, dtype) -> list:
        return list(t.reshape(b, -1).numpy().astype(dtype))

    return pa.table({
        "record": pa.array(records, pa.int32()), "view": pa.array(views, pa.int16()),
        "teacher": pa.array([teacher] * b, pa.string()),
        "x_values": pa.array(flat(x.values, np.float16), pa.list_(pa.float16())),
        "x_indices": pa.array(flat(x.indices, np.uint16), pa.list_(pa.uint16())),
        "x_rest": pa.array(flat(x.rest, np.float32), pa.list_(pa.float32())),
        "y_values": pa.array(flat(y.values, np.float16), pa.list_(pa.float16())),
        "y_indices": pa.array(flat(y.indices, np.uint16), pa.list_(pa.uint16())),
        "y_rest": pa.array(flat(y.rest, np.float32), pa.list_(pa.float32())),
    }, schema=SCHEMA)


def table_to_targets(table: pa.Table, joints: int, bins: tuple[int, int]
                     ) -> tuple[TopK, TopK]:
    """Shard rows back to ``(B, K, k)`` targets (``bins``: the student's ``(Wx, Wy)``)."""
    b = table.num_rows

    def column(name: str, dtype) -> torch.Tensor:
        values = np.stack(table.column(name).to_numpy(zero_copy_only=False)).astype(dtype)
        return torch.from_numpy(values.reshape(b, joints, -1))

    out = []
    for axis, width in zip("xy", bins, strict=True):
        out.append(TopK(column(f"{axis}_values", np.float16),
                        column(f"{axis}_indices", np.int32),
                        column(f"{axis}_rest", np.float32)[..., 0], width))
    return out[0], out[1]


class CacheStore:
    """A cache folder: a local path or a URI (``s3://``, ``gs://``) through pyarrow's
    filesystems. Shards and the manifest are written under a temporary name and moved into
    place, so a file that exists is whole (on object stores the final object appears in
    one piece)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = pafs.FileSystem.from_uri(uri) if "://" in uri else (
            pafs.LocalFileSystem(), uri)

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type == pafs.FileType.File

    def _write(self, name: str, write) -> None:
        self.fs.create_dir(self.root, recursive=True)
        partial = self.path(f".{name}.partial")
        with self.fs.open_output_stream(partial) as stream:
            write(stream)
        self.fs.move(partial, self.path(name))

    def write_shard(self, table: pa.Table, name: str) -> None:
        self._write(name, lambda stream: pq.write_table(table, stream))

    def read_shard(self, name: str) -> pa.Table:
        """A shard, or an error naming it when it is not a readable shard of this format."""
        where = self.path(name)
        try:
            table = pq.read_table(where, filesystem=self.fs)
        except (OSError, pa.ArrowInvalid) as error:
            raise ValueError(f"cache shard {where} is corrupt ({error}); delete it and run "
                             "jobs/build_cache.py again: it rebuilds only missing shards") from None
        if not table.schema.equals(SCHEMA, check_metadata=False):
            raise ValueError(f"cache shard {where} does not have the cache's columns "
                             f"(found {table.schema.names})")
        return table

    def write_manifest(self, manifest: CacheManifest) -> None:
        self._write(MANIFEST_NAME, lambda stream: stream.write(manifest.to_json().encode()))

    def read_manifest(self) -> CacheManifest | None:
        """The manifest, ``None`` when the folder has none (nothing built yet)."""
        if not self.exists(MANIFEST_NAME):
            return None
        with self.fs.open_input_stream(self.path(MANIFEST_NAME)) as stream:
            text = stream.read().decode()
        try:
            return CacheManifest.from_json(text)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{self.path(MANIFEST_NAME)} is not a cache manifest ({error}); "
                             "delete the folder and build the cache again") from None

    def size_of(self, name: str) -> int:
        return self.fs.get_file_info(self.path(name)).size
