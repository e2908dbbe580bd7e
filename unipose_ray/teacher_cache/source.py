"""The teacher-logit cache seen by a run: what it must match, where its shards are, and the
cached targets of one augmentation view.

A cache holds, for every training instance and each of ``views`` augmentation views,
every teacher's compressed targets (built by :mod:`unipose_ray.teacher_cache.build`;
formats in :mod:`unipose_ray.teacher_cache.format`). View ``v`` of instance ``i`` is the crop the
training pipeline draws for ``i`` in epoch ``v`` (:meth:`TopdownDataset.params`), so a
run replays it exactly; epoch ``e`` of a run trains on view ``e mod views``.

Shards: one per view and block of ``shard_records`` instances, named
``view0003-part00012.parquet``; a shard holds that block's rows of every teacher.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from unipose_ray.config import DistillConfig
from unipose_ray.kd.basis import Basis
from unipose_ray.kd.topk import TopK
from unipose_ray.models import PoseModelSpec
from unipose_ray.models.release import sha256_of
from unipose_ray.skeleton import KEYPOINT_SETS
from unipose_ray.teacher_cache.format import (
    CacheManifest,
    CacheStore,
    basis_name,
    mismatches,
    shard_schema,
    table_columns,
    uses_basis,
)
from unipose_ray.teachers.service import StudentGrid

AXES = ("x", "y")


@dataclass(frozen=True)
class Shard:
    """One shard: the rows ``start:stop`` of the record set in view ``view``."""

    view: int
    start: int
    stop: int
    part: int

    @property
    def name(self) -> str:
        return f"view{self.view:04d}-part{self.part:05d}.parquet"


def shard_layout(num_records: int, views: int, shard_records: int) -> list[Shard]:
    """Every shard of a cache, view by view."""
    return [Shard(view, start, min(start + shard_records, num_records), start // shard_records)
            for view in range(views) for start in range(0, num_records, shard_records)]


_SHA_CACHE: dict[tuple[str, float, int], str] = {}


def file_sha256(path: str) -> str:
    """sha256 of a file (remembered per path, mtime and size: checkpoints are large)."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_mtime, stat.st_size)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_of(path)
    return _SHA_CACHE[key]


def records_fingerprint(records: pa.Table) -> str:
    """sha256 of what the rows' crops depend on: instance identity, image file name, box
    and keypoints (not the image folder, so a moved dataset keeps its cache)."""
    names = pa.array([os.path.basename(p) for p in records.column("image_path").to_pylist()],
                     pa.string())
    table = pa.table({"image": names, **{c: records.column(c) for c in (
        "dataset", "image_id", "instance_id", "bbox", "keypoints", "visible", "annotated")}})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def wanted_manifest(config: DistillConfig, records: pa.Table,
                    specs: dict[str, PoseModelSpec]) -> CacheManifest:
    """The manifest of the cache ``config`` needs: its teachers (file hashes, keypoints,
    input size), the student's grid and KD softmax, the crop pipeline (with the unified
    skeleton, whose halves and flip pairs place the crops) and the records."""
    codec = config.student.codec
    teachers = {}
    for teacher in config.teachers:
        keypoints = KEYPOINT_SETS[teacher.dataset]
        teachers[teacher.name] = {
            "dataset": teacher.dataset, "keypoints": list(keypoints.names),
            "input_size": list(specs[teacher.name].input_size),
            "config_sha256": file_sha256(teacher.config),
            "checkpoint_sha256": file_sha256(teacher.checkpoint)}
    cache = config.teacher_cache
    return CacheManifest(
        teachers=teachers,
        student_grid={"input_size": list(codec.input_size), "bins": list(codec.num_bins),
                      "split_ratio": codec.split_ratio, "beta": config.loss.beta},
        pipeline={"seed": config.run.seed, "augment": asdict(config.augment),
                  "skeleton": list(config.skeleton.names)},
        records_sha256=records_fingerprint(records), views=cache.views,
        compression=cache.compression)


def manifest_shards(manifest: CacheManifest, num_records: int) -> list[Shard]:
    return shard_layout(num_records, manifest.views, manifest.compression["shard_records"])


@dataclass(frozen=True)
class CacheSource:
    """A checked cache, as the training stream reads it.

    Attributes:
        uri: the cache folder.
        views: views per instance (epoch ``e`` reads view ``e mod views``).
        teachers: ``(name, joints)`` of each teacher.
        shards: the cache's shards.
        compression: the manifest's (``components``: the basis format, else top-``k``).
    """

    uri: str
    views: int
    teachers: tuple[tuple[str, int], ...]
    shards: tuple[Shard, ...]
    compression: dict

    @property
    def basis(self) -> bool:
        return uses_basis(self.compression)

    def teacher_passes(self, num_records: int) -> int:
        """Teacher forward passes the cache cost: one per instance-view and teacher, and
        the bases' calibration views."""
        views = self.views * num_records
        calibration = min(self.compression["calibration"], views) if self.basis else 0
        return len(self.teachers) * (views + calibration)

    def load_bases(self) -> dict[str, Basis]:
        """Each teacher's basis (the basis format; ``{}`` otherwise)."""
        if not self.basis:
            return {}
        store = CacheStore(self.uri)
        return {name: Basis.from_bytes(store.read_bytes(basis_name(name)))
                for name, _ in self.teachers}


def open_cache(config: DistillConfig, records: pa.Table,
               specs: dict[str, PoseModelSpec]) -> CacheSource:
    """The run's cache, checked before any training: refused, naming what differs, when it
    was built for other teachers, grid, keypoints, augmentation or records, or when a shard
    is missing. The number of views and the compression are the cache's own."""
    uri = config.teacher_cache.uri
    store = CacheStore(uri)
    files = store.files()  # one listing: a request per shard is thousands on s3://
    cached = store.read_manifest(files)
    fix = (f"build it with `python jobs/build_cache.py --config <this run's config> --out {uri}`"
           " (it adds only the missing shards)")
    if cached is None:
        raise FileNotFoundError(f"teacher cache {uri} has no manifest.json: it was never "
                                f"built; {fix}")
    wanted = replace(wanted_manifest(config, records, specs), views=cached.views,
                     compression=cached.compression)
    differ = mismatches(cached, wanted)
    if differ:
        raise ValueError(f"teacher cache {uri} was built for another run; it differs in:\n  "
                         + "\n  ".join(differ)
                         + "\nbuild a cache for this run under another --out (or rebuild it)")
    shards = manifest_shards(cached, records.num_rows)
    missing = [s.name for s in shards if s.name not in cached.shards or s.name not in files]
    if uses_basis(cached.compression):
        missing += [basis_name(t.name) for t in config.teachers
                    if t.name not in cached.bases or basis_name(t.name) not in files]
    if missing:
        raise FileNotFoundError(f"teacher cache {uri} lacks {len(missing)} of {len(shards)} "
                                f"shards (first: {missing[0]}), an interrupted build; {fix}")
    teachers = tuple((t.name, KEYPOINT_SETS[t.dataset].num_keypoints) for t in config.teachers)
    return CacheSource(uri, cached.views, teachers, tuple(shards), cached.compression)


class ViewTargets:
    """Every teacher's cached targets of one view, indexed by record: per teacher, the
    target columns of the cache's format (:func:`table_columns`), ``N`` records first."""

    def __init__(self, source: CacheSource, view: int, num_records: int):
        self.view = view
        store = CacheStore(source.uri)
        schema = shard_schema(source.compression)
        self.arrays: dict[str, dict[str, np.ndarray]] = {}
        filled = {name: np.zeros(num_records, bool) for name, _ in source.teachers}
        for shard in (s for s in source.shards if s.view == view):
            table = store.read_shard(shard.name, schema)
            for name, joints in source.teachers:
                rows = table.filter(pc.equal(table.column("teacher"), name))
                records = rows.column("record").to_numpy()
                if len(records) != shard.stop - shard.start or (rows.column("view").to_numpy()
                                                                 != view).any():
                    raise ValueError(f"cache shard {store.path(shard.name)} lacks teacher "
                                     f"'{name}' rows of records {shard.start}..{shard.stop}")
                out = self.arrays.setdefault(name, {})
                for key, per_row in table_columns(rows, joints, source.compression).items():
                    if key not in out:
                        out[key] = np.zeros((num_records, *per_row.shape[1:]), per_row.dtype)
                    out[key][records] = per_row
                filled[name][records] = True
        for name, done in filled.items():
            if not done.all():
                raise ValueError(f"teacher cache {source.uri}: view {view} has no '{name}' "
                                 f"targets for {int((~done).sum())} records")

    def columns(self, index: int) -> dict[str, np.ndarray]:
        """The ``kd_<teacher>_<column>`` columns of one record."""
        return {f"kd_{name}_{key}": array[index] for name, arrays in self.arrays.items()
                for key, array in arrays.items()}


def batch_targets(batch: dict, name: str, grid: StudentGrid, basis: Basis | None = None
                  ) -> tuple[Tensor, Tensor] | tuple[TopK, TopK]:
    """A training batch's cached targets of one teacher (:meth:`ViewTargets.columns`):
    logits on the student's grid decoded from the teacher's ``basis``, or top-k pairs."""
    def column(key: str, dtype=None) -> Tensor:
        return torch.from_numpy(np.asarray(batch[f"kd_{name}_{key}"], dtype))

    if basis is not None:
        return basis.decode(column("coef"), column("a", np.float32), column("b", np.float32),
                            grid.bins, grid.split_ratio)
    if f"kd_{name}_coef" in batch:
        raise ValueError(f"teacher '{name}': the batch carries basis coefficients; pass its "
                         "basis (CacheSource.load_bases)")
    out = []
    for axis, width in zip(AXES, grid.bins, strict=True):
        out.append(TopK(column(f"{axis}_values"), column(f"{axis}_indices", np.int32),
                        column(f"{axis}_rest", np.float32), width))
    return out[0], out[1]
