"""The teacher-logit cache on disk: Parquet shards of compressed targets and a manifest.

A shard holds rows ``(record, view, teacher)`` with the teacher's targets in its joint
order, in one of two formats (lists flattened row by row):

- basis (:mod:`unipose_ray.kd.basis`): ``coef`` fp16 (``K x M``), the coefficients
  of the teacher-grid logits in the teacher's per-joint basis (``basis-<teacher>.npz``
  beside the shards), and ``a``, ``b`` float32 (2 each), the crop relation that maps them
  onto the student's grid;
- top-k / full fp16 (:mod:`unipose_ray.kd.topk`), on the student's grid:
  ``x_values``/``y_values`` fp16 and ``x_indices``/``y_indices`` uint16 (``K x k``),
  ``x_rest``/``y_rest`` float32 (``K``).

Shards and bases are written under a temporary name and renamed, so a file that exists is
whole; an interrupted build keeps them.

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

from unipose_ray.kd.topk import TopK

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CacheManifest:
    """What cached targets depend on.

    Attributes:
        teachers: per teacher: its MMPose config and checkpoint sha256, keypoint set and
            joint count.
        student_grid: the student's input size, SimCC bins and split ratio.
        pipeline: crop, augmentation and seed settings and the unified skeleton's joint
            names (the views are replayed from them).
        records_sha256: the training record set the rows index.
        views: augmentation views per record (epoch ``e`` uses view ``e mod views``).
        compression: ``{"components": M or None, "calibration": N, "k": k or None,
            "shard_records": n}``: a basis of ``M`` components fitted on ``N``
            instance-views, else top-``k`` (``None``: every bin in fp16).
        shards: file name -> rows, of every finished shard.
        bases: teacher -> sha256 of its basis file (the basis format).
    """

    teachers: dict
    student_grid: dict
    pipeline: dict
    records_sha256: str
    views: int
    compression: dict
    shards: dict = field(default_factory=dict)
    bases: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CacheManifest:
        return cls(**json.loads(text))


def mismatches(cached: CacheManifest, wanted: CacheManifest) -> list[str]:
    """The fields (dotted paths) in which a cache differs from what a run needs; the
    shard list and the bases (made by the build) are not compared."""
    found: list[str] = []

    def walk(a, b, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{where}.{key}" if where else key)
        elif _plain(a) != _plain(b):
            found.append(f"{where}: cache {a!r}, run {b!r}")

    left, right = asdict(cached), asdict(wanted)
    for made in ("shards", "bases"):
        left.pop(made)
        right.pop(made)
    walk(left, right, "")
    return found


def _plain(value):
    """JSON's view of a value (tuples and lists compare equal)."""
    return json.loads(json.dumps(value))


KEY_COLUMNS = (("record", pa.int32()), ("view", pa.int16()), ("teacher", pa.string()))
# target columns: name -> (type, layout): "joint" (K x n per row), "per_joint" (K), "row" (n)
TOPK_COLUMNS = {f"{axis}_{part}": spec for axis in "xy" for part, spec in (
    ("values", (pa.float16(), "joint")), ("indices", (pa.uint16(), "joint")),
    ("rest", (pa.float32(), "per_joint")))}
BASIS_COLUMNS = {"coef": (pa.float16(), "joint"), "a": (pa.float32(), "row"),
                 "b": (pa.float32(), "row")}


def uses_basis(compression: dict) -> bool:
    return bool(compression.get("components"))


def describe(compression: dict) -> str:
    """The format in words, for progress lines."""
    if uses_basis(compression):
        return f"a {compression['components']}-component basis per joint (fp16 coefficients)"
    k = compression.get("k")
    return f"top-{k} bins per axis" if k else "every bin (fp16)"


def target_columns(compression: dict) -> dict:
    """The target columns of a cache of this compression."""
    return BASIS_COLUMNS if uses_basis(compression) else TOPK_COLUMNS


def shard_schema(compression: dict) -> pa.Schema:
    return pa.schema([*KEY_COLUMNS, *((name, pa.list_(kind)) for name, (kind, _)
                                      in target_columns(compression).items())])


SCHEMA = shard_schema({"k": 8})  # the top-k / full-fp16 shards


def targets_to_table(records: np.ndarray, views: np.ndarray, teacher: str,
                     x: TopK, y: TopK) -> pa.Table:
    """One teacher's top-k targets of a batch, ``(B, K, k)``, as shard rows."""
    rows = {"record": np.asarray(records), "view": np.asarray(views)}
    for axis, target in (("x", x), ("y", y)):
        rows[f"{teacher}_{axis}_values"] = target.values.numpy().astype(np.float16)
        rows[f"{teacher}_{axis}_indices"] = target.indices.numpy().astype(np.uint16)
        rows[f"{teacher}_{axis}_rest"] = target.rest.numpy().astype(np.float32)
    return rows_to_table(rows, [teacher], {"k": x.k})


def rows_to_table(rows: dict[str, np.ndarray], teachers: list[str], compression: dict
                  ) -> pa.Table:
    """A shard's table from the build's columns: ``record``, ``view`` and per teacher
    ``<teacher>_<column>`` arrays with the batch first; teacher after teacher."""
    columns = target_columns(compression)
    n = len(rows["record"])
    tables = []
    for name in teachers:
        table = {"record": pa.array(rows["record"], pa.int32()),
                 "view": pa.array(rows["view"], pa.int16()),
                 "teacher": pa.array([name] * n, pa.string())}
        for column, (kind, _) in columns.items():
            flat = rows[f"{name}_{column}"].reshape(n, -1)
            table[column] = pa.FixedSizeListArray.from_arrays(
                pa.array(flat.reshape(-1), kind), flat.shape[1]).cast(pa.list_(kind))
        tables.append(pa.table(table, schema=shard_schema(compression)))
    return pa.concat_tables(tables)


def table_columns(table: pa.Table, joints: int, compression: dict) -> dict[str, np.ndarray]:
    """One teacher's shard rows as arrays, batch first: ``(N, K, n)`` per-joint lists,
    ``(N, K)`` one number per joint, ``(N, n)`` per-row lists."""
    out = {}
    n = table.num_rows
    for column, (_, layout) in target_columns(compression).items():
        flat = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        out[column] = (flat.reshape(n, -1) if layout == "row"
                       else flat.reshape(n, joints, -1)[..., 0] if layout == "per_joint"
                       else flat.reshape(n, joints, -1))
    return out


def write_parquet(table: pa.Table, sink) -> None:
    """A shard as the cache writes it: zstd (5% smaller than snappy on fp16 coefficients),
    no dictionaries (the values hardly repeat)."""
    pq.write_table(table, sink, compression="zstd", use_dictionary=["teacher"])


def basis_name(teacher: str) -> str:
    return f"basis-{teacher}.npz"


def filesystem_of(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, root)`` of a cache folder: a local path or a URI."""
    return pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)


class CacheStore:
    """A cache folder: a local path or a URI (``s3://``, ``gs://``) through pyarrow's
    filesystems. Shards and the manifest are written under a temporary name and moved into
    place, so a file that exists is whole (on object stores the final object appears in
    one piece)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = filesystem_of(uri)

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type == pafs.FileType.File

    def files(self) -> set[str]:
        """The names of the folder's files, in one listing (one request on an object
        store, however many shards; none when the folder does not exist)."""
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        return {info.base_name for info in self.fs.get_file_info(selector)
                if info.type == pafs.FileType.File}

    def _write(self, name: str, write) -> None:
        self.fs.create_dir(self.root, recursive=True)
        partial = self.path(f".{name}.partial")
        with self.fs.open_output_stream(partial) as stream:
            write(stream)
        self.fs.move(partial, self.path(name))

    def write_shard(self, table: pa.Table, name: str) -> None:
        self._write(name, lambda stream: write_parquet(table, stream))

    def write_bytes(self, name: str, data: bytes) -> None:
        self._write(name, lambda stream: stream.write(data))

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(name)) as stream:
            return stream.read()

    def read_shard(self, name: str, schema: pa.Schema = SCHEMA) -> pa.Table:
        """A shard, or an error naming it when it is not a readable shard of this format."""
        where = self.path(name)
        try:
            table = pq.read_table(where, filesystem=self.fs)
        except (OSError, pa.ArrowInvalid) as error:
            raise ValueError(f"cache shard {where} is corrupt ({error}); delete it and run "
                             "jobs/build_cache.py again: it rebuilds only missing shards") from None
        if not table.schema.equals(schema, check_metadata=False):
            raise ValueError(f"cache shard {where} does not have the cache's columns "
                             f"(found {table.schema.names})")
        return table

    def write_manifest(self, manifest: CacheManifest) -> None:
        self._write(MANIFEST_NAME, lambda stream: stream.write(manifest.to_json().encode()))

    def read_manifest(self, files: set[str] | None = None) -> CacheManifest | None:
        """The manifest, ``None`` when the folder has none (nothing built yet); ``files``:
        the folder's listing (:meth:`files`), when the caller has it."""
        found = self.exists(MANIFEST_NAME) if files is None else MANIFEST_NAME in files
        if not found:
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
