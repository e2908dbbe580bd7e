"""Unified instance records: one person instance, in the run's unified keypoint slots, as Arrow.

Every reader (COCO, MPII, generated data) produces :class:`InstanceRecord` objects; a record
set is stored as a Parquet file that later stages (the crop pipeline, Ray Data, the
teacher-logit cache) read directly.

``visible`` and ``annotated`` are different things: a COCO sample's pelvis is *not annotated*
(COCO has no pelvis), while a COCO ankle can be annotated yet invisible (``v=1`` occluded is
still visible to the loss, ``v=0`` is not labelled). The training weight of a joint is
``visible * annotated``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from unipose_ray.skeleton import UNIFIED, KeypointSet, skeleton_from_names

READERS_VERSION = "2"
"""Changes when the readers build records differently from the same annotations (2: boxes
that give back MMPose's float32 centre and size); a record file of another version is
rebuilt rather than reused."""


def schema_for(skeleton: KeypointSet) -> pa.Schema:
    """The Arrow schema of records in ``skeleton``'s slots; its joint names travel in the
    file's metadata (``keypoint_names``)."""
    k = skeleton.num_keypoints
    return pa.schema(
        [
            pa.field("image_path", pa.string(), nullable=False),
            pa.field("dataset", pa.string(), nullable=False),
            pa.field("image_id", pa.int64(), nullable=False),
            pa.field("instance_id", pa.int64(), nullable=False),
            pa.field("image_width", pa.int32(), nullable=False),
            pa.field("image_height", pa.int32(), nullable=False),
            pa.field("bbox", pa.list_(pa.float32(), 4), nullable=False),  # x, y, w, h (pixels)
            pa.field("keypoints", pa.list_(pa.float32(), 2 * k), nullable=False),  # x0 y0 ..
            pa.field("visible", pa.list_(pa.float32(), k), nullable=False),
            pa.field("annotated", pa.list_(pa.bool_(), k), nullable=False),
            pa.field("head_size", pa.float32(), nullable=True),  # PCKh normaliser (pixels)
            pa.field("area", pa.float32(), nullable=False),  # COCO segment area (OKS scale)
        ],
        metadata={"keypoint_names": ",".join(skeleton.names),
                  "readers_version": READERS_VERSION},
    )


SCHEMA = schema_for(UNIFIED)
"""The schema of records in the paper's 21 unified slots."""


def records_version(path: str | Path) -> str | None:
    """The ``readers_version`` a record file was written with (``None``: before versions)."""
    value = (pq.read_schema(path).metadata or {}).get(b"readers_version")
    return None if value is None else value.decode()


def records_joints(table_or_path: pa.Table | str | Path) -> tuple[str, ...]:
    """The unified joint names a record table (or file) holds, in slot order."""
    schema = (table_or_path.schema if isinstance(table_or_path, pa.Table)
              else pq.read_schema(table_or_path))
    return tuple((schema.metadata or {})[b"keypoint_names"].decode().split(","))


@dataclass(frozen=True)
class InstanceRecord:
    """One person instance in unified keypoint slots.

    Attributes:
        image_path: absolute path of the image file.
        dataset: source dataset name (``coco``, ``mpii``, ...).
        image_id: the image's id in its annotation file (MPII: index of the image).
        instance_id: the annotation's id (MPII: index of the annotation).
        image_width, image_height: image size in pixels.
        bbox: ``(4,)`` box ``x, y, w, h`` in pixels.
        keypoints: ``(K, 2)`` pixel coordinates in the unified skeleton's ``K`` slots (0
            where not annotated).
        visible: ``(K,)`` 1.0 where the joint is labelled and usable, else 0.0.
        annotated: ``(K,)`` True where the source dataset annotates this joint at all.
        head_size: PCKh head size in pixels, ``None`` where unknown.
        area: instance area for OKS (COCO ``area``; box area otherwise).
    """

    image_path: str
    dataset: str
    image_id: int
    instance_id: int
    image_width: int
    image_height: int
    bbox: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    annotated: np.ndarray
    head_size: float | None
    area: float

    def __post_init__(self) -> None:
        k = len(self.visible)
        for name, shape in (("bbox", (4,)), ("keypoints", (k, 2)), ("annotated", (k,))):
            value = getattr(self, name)
            if np.shape(value) != shape:
                raise ValueError(f"record {self.instance_id}: {name} has shape "
                                 f"{np.shape(value)}, expected {shape}")

    @property
    def weights(self) -> np.ndarray:
        """``(K,)`` float32 training weight per joint: visibility x annotated."""
        return (np.asarray(self.visible) * np.asarray(self.annotated)).astype(np.float32)


def records_to_table(records: Iterable[InstanceRecord], skeleton: KeypointSet = UNIFIED
                     ) -> pa.Table:
    """Pack records in ``skeleton``'s slots into an Arrow table (:func:`schema_for`)."""
    records = list(records)
    schema, K = schema_for(skeleton), skeleton.num_keypoints  # noqa: N806
    wrong = next((r for r in records if len(r.visible) != K), None)
    if wrong is not None:
        raise ValueError(f"record {wrong.instance_id} ({wrong.dataset}) has "
                         f"{len(wrong.visible)} joints; the skeleton has {K}")
    columns = {
        "image_path": [r.image_path for r in records],
        "dataset": [r.dataset for r in records],
        "image_id": [int(r.image_id) for r in records],
        "instance_id": [int(r.instance_id) for r in records],
        "image_width": [int(r.image_width) for r in records],
        "image_height": [int(r.image_height) for r in records],
        "bbox": _fixed_list([r.bbox for r in records], 4, pa.float32()),
        "keypoints": _fixed_list([r.keypoints for r in records], 2 * K, pa.float32()),
        "visible": _fixed_list([r.visible for r in records], K, pa.float32()),
        "annotated": _fixed_list([r.annotated for r in records], K, pa.bool_()),
        "head_size": [None if r.head_size is None else float(r.head_size) for r in records],
        "area": [float(r.area) for r in records],
    }
    return pa.table({n: columns[n] for n in schema.names}, schema=schema)


def _fixed_list(values: Sequence[np.ndarray], width: int, dtype: pa.DataType) -> pa.Array:
    flat = np.asarray(values, dtype=dtype.to_pandas_dtype()).reshape(len(values) * width)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=dtype), width)


def table_to_records(table: pa.Table) -> list[InstanceRecord]:
    """Unpack an Arrow table (or a Ray Data batch converted to one) into records."""
    arrays = table_to_arrays(table)
    head = table.column("head_size").to_pylist()
    return [
        InstanceRecord(
            image_path=arrays["image_path"][i],
            dataset=arrays["dataset"][i],
            image_id=int(arrays["image_id"][i]),
            instance_id=int(arrays["instance_id"][i]),
            image_width=int(arrays["image_width"][i]),
            image_height=int(arrays["image_height"][i]),
            bbox=arrays["bbox"][i],
            keypoints=arrays["keypoints"][i],
            visible=arrays["visible"][i],
            annotated=arrays["annotated"][i],
            head_size=head[i],
            area=float(arrays["area"][i]),
        )
        for i in range(table.num_rows)
    ]


def table_to_arrays(table: pa.Table, strings: bool = True) -> dict[str, np.ndarray | list]:
    """Columns as numpy arrays of natural shape (``keypoints`` is ``(N, K, 2)``); the
    string columns as lists (left out with ``strings=False``)."""
    n, K = table.num_rows, table.schema.field("visible").type.list_size  # noqa: N806

    def fixed(name: str, *shape: int) -> np.ndarray:
        column = table.column(name).combine_chunks()
        return column.flatten().to_numpy(zero_copy_only=False).reshape(n, *shape)

    text = {name: table.column(name).to_pylist() for name in ("image_path", "dataset")
            if strings}
    return {
        **text,
        "image_id": table.column("image_id").to_numpy(),
        "instance_id": table.column("instance_id").to_numpy(),
        "image_width": table.column("image_width").to_numpy(),
        "image_height": table.column("image_height").to_numpy(),
        "bbox": fixed("bbox", 4),
        "keypoints": fixed("keypoints", K, 2),
        "visible": fixed("visible", K),
        "annotated": fixed("annotated", K).astype(bool),
        "head_size": table.column("head_size").to_numpy(zero_copy_only=False).astype(np.float32),
        "area": table.column("area").to_numpy(),
    }


class RecordTable(Sequence[InstanceRecord]):
    """A record set held column by column: ``len(table)``, ``table[i] -> InstanceRecord``.

    Every column is a NumPy array (strings as one ``uint8`` buffer with ``(N + 1,)``
    offsets; ``dataset`` as codes into :attr:`datasets`), so pickling it (``ray.put``)
    hands out buffers that ``ray.get`` maps zero-copy from the object store. Rows are
    the records :func:`table_to_records` gives, built on demand.
    """

    def __init__(self, columns: dict[str, np.ndarray], datasets: tuple[str, ...]):
        self.columns, self.datasets = columns, datasets

    @classmethod
    def from_arrow(cls, table: pa.Table) -> RecordTable:
        """The columns of a record table (:func:`schema_for`) in one vectorised pass."""
        columns = table_to_arrays(table, strings=False)
        columns["path_bytes"], columns["path_offsets"] = _string_buffer(
            table.column("image_path"))
        codes = table.column("dataset").combine_chunks().dictionary_encode()
        columns["dataset"] = codes.indices.to_numpy(zero_copy_only=False).astype(np.uint8)
        columns["head_known"] = table.column("head_size").is_valid().to_numpy(
            zero_copy_only=False)
        return cls(columns, tuple(codes.dictionary.to_pylist()))

    def __len__(self) -> int:
        return len(self.columns["image_id"])

    def image_path(self, index: int) -> str:
        offsets = self.columns["path_offsets"]
        return self.columns["path_bytes"][offsets[index]:offsets[index + 1]].tobytes().decode()

    def __getitem__(self, index: int) -> InstanceRecord:
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} of a table of {len(self)}")
        index = index % len(self)
        c = self.columns
        return InstanceRecord(
            image_path=self.image_path(index), dataset=self.datasets[c["dataset"][index]],
            image_id=int(c["image_id"][index]), instance_id=int(c["instance_id"][index]),
            image_width=int(c["image_width"][index]),
            image_height=int(c["image_height"][index]),
            bbox=c["bbox"][index], keypoints=c["keypoints"][index],
            visible=c["visible"][index], annotated=c["annotated"][index],
            head_size=float(c["head_size"][index]) if c["head_known"][index] else None,
            area=float(c["area"][index]))

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.columns.values())


def _string_buffer(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A string column as ``(bytes (uint8), offsets (N + 1,) int64)``: row ``i`` is
    ``bytes[offsets[i]:offsets[i + 1]]``."""
    strings = column.combine_chunks().cast(pa.large_string())
    _, offsets, data = strings.buffers()
    offsets = np.frombuffer(offsets, np.int64)[strings.offset:strings.offset + len(strings) + 1]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return data[offsets[0]:offsets[-1]].copy(), offsets - offsets[0]


def write_records(records: Iterable[InstanceRecord] | pa.Table, path: str | Path) -> Path:
    """Write a record set to a Parquet file (parent folders are created).

    Atomic: the file is written beside ``path`` and renamed, so a reader (another run of the
    same job, e.g. the joint and the distilled student starting together) never sees half
    a file.
    """
    table = records if isinstance(records, pa.Table) else records_to_table(records)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    pq.write_table(table, partial)
    os.replace(partial, path)
    return path


def read_records(path: str | Path, skeleton: KeypointSet | None = None) -> pa.Table:
    """Read a record set written by :func:`write_records`, checking its schema (and, given a
    ``skeleton``, that its records are in that skeleton's slots)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"record file {path} does not exist; build it with "
                                "`python jobs/make_dataset.py` or the dataset readers")
    table = pq.read_table(path)
    names = (table.schema.metadata or {}).get(b"keypoint_names")
    expected = schema_for((skeleton or UNIFIED) if names is None else
                          _named(names.decode().split(",")))
    if not table.schema.equals(expected, check_metadata=False):
        raise ValueError(f"{path} is not a unipose_ray record file: schema\n{table.schema}\n"
                         f"differs from the expected\n{expected}")
    if skeleton is not None and records_joints(table) != skeleton.names:
        raise ValueError(f"{path} holds records of the joints {list(records_joints(table))}, "
                         f"this run's skeleton is {list(skeleton.names)}; read the annotations "
                         "again for this skeleton")
    return table


def _named(names: list[str]) -> KeypointSet:
    try:
        return skeleton_from_names(tuple(names))
    except ValueError:  # unknown joints: compared on shape alone
        return UNIFIED
