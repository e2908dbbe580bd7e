"""Building the teacher-logit cache: teacher inference paid once for every run and trial.

A Ray Data pipeline over (view, instance) rows of the missing shards:

1. :class:`~unipose_ray.teacher_cache.crops.ViewCrops` (a pool of CPU actors) replays
   each row's crop with the training pipeline's own code (:meth:`TopdownDataset.params` of
   epoch ``view``) and cuts every teacher's input from the same box;
2. one :class:`TeacherTargets` actor pool per teacher (``map_batches`` with
   ``ActorPoolStrategy``; ``num_gpus``/``num_cpus`` from the teacher's config, the CPU
   when no GPU is there) turns its logits into the cache's format: coefficients in the
   teacher's basis (fitted first, :mod:`unipose_ray.teacher_cache.bases`), or top-k
   bins on the student's grid;
3. the driver gathers each shard's rows and writes the shard atomically, then the
   manifest; an interrupted build started again skips the shards it finished.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace

import numpy as np

from unipose_ray.config import DistillConfig, TeacherConfig
from unipose_ray.data.pipeline import PipelineConfig
from unipose_ray.data.records import read_records
from unipose_ray.data.transforms import size_key
from unipose_ray.kd.basis import Basis
from unipose_ray.models import PoseModelSpec
from unipose_ray.runtime.distributed import print0
from unipose_ray.runtime.output import quiet_ray_data
from unipose_ray.skeleton import KEYPOINT_SETS
from unipose_ray.teacher_cache.bases import ensure_bases, teacher_on_cluster
from unipose_ray.teacher_cache.crops import CropPlan, ViewCrops
from unipose_ray.teacher_cache.format import (
    CacheManifest,
    CacheStore,
    describe,
    mismatches,
    rows_to_table,
    uses_basis,
)
from unipose_ray.teacher_cache.source import (
    AXES,
    CacheSource,
    Shard,
    open_cache,
    shard_layout,
    wanted_manifest,
)
from unipose_ray.teachers.service import StudentGrid


class TeacherTargets:
    """Ray Data callable class: one teacher's targets of a batch of crops, as the cache's
    ``<teacher>_<column>`` columns: with a ``basis``, ``coef`` ``(B, K, M)`` fp16 and the
    crops' ``a``, ``b``; else ``<axis>_values`` ``(B, K, k)`` fp16, ``_indices`` uint16 and
    ``_rest`` ``(B, K)`` float32 on the student's grid
    (:mod:`unipose_ray.kd.topk`).

    Every teacher pass sees exactly ``batch_size`` crops, a short batch padded with copies
    of its last crop: CPU kernels round differently for other batch shapes (by ~1e-7,
    enough to flip an fp16 value), and Ray Data cuts batches wherever its blocks fall, so
    without it a resumed build would not write the shard an uninterrupted one writes.
    """

    def __init__(self, teacher: TeacherConfig, grid: StudentGrid, input_size: tuple[int, int],
                 k: int | None, beta: float, basis: Basis | None, batch_size: int):
        from unipose_ray.teachers.service import TeacherService  # noqa: PLC0415

        device = "cuda" if teacher.num_gpus > 0 else "cpu"
        self.service = TeacherService(teacher, grid, device=device,
                                      threads=max(1, round(teacher.num_cpus)))
        self.name, self.key, self.k, self.beta = teacher.name, size_key(input_size), k, beta
        self.basis, self.batch_size = basis, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch  # noqa: PLC0415

        from unipose_ray.kd.topk import compress  # noqa: PLC0415

        crops = [batch[f"{part}_{self.key}"] for part in ("image", "a", "b")]
        n = len(crops[0])
        if n > self.batch_size:
            raise ValueError(f"a batch of {n} crops, more than batch_size={self.batch_size}")
        images, a, b = (_padded(part, self.batch_size) for part in crops)
        if self.basis is not None:
            x, y = self.service.raw_logits(images)
            batch[f"{self.name}_coef"] = self.basis.encode(x.cpu(), y.cpu()).numpy()[:n]
            batch[f"{self.name}_a"], batch[f"{self.name}_b"] = crops[1], crops[2]
            return batch
        logits = self.service.logits(images, a, b)
        for axis, values in zip(AXES, logits, strict=True):
            target = compress(torch.from_numpy(values[:n]), self.beta, self.k)
            batch[f"{self.name}_{axis}_values"] = target.values.numpy()
            batch[f"{self.name}_{axis}_indices"] = target.indices.numpy().astype(np.uint16)
            batch[f"{self.name}_{axis}_rest"] = target.rest.numpy().astype(np.float32)
        return batch


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows`` followed by copies of its last row, ``size`` rows in all."""
    missing = size - len(rows)
    return rows if missing <= 0 else np.concatenate([rows, np.repeat(rows[-1:], missing, 0)])


class Progress:
    """One line per finished shard: a bar, instance-views done, views/s and the ETA."""

    def __init__(self, total: int, done_before: int):
        self.total, self.done, self.start_done = total, done_before, done_before
        self.tic = time.perf_counter()

    def update(self, rows: int, shard: Shard) -> None:
        self.done += rows
        elapsed = time.perf_counter() - self.tic
        rate = (self.done - self.start_done) / max(elapsed, 1e-9)
        filled = int(30 * self.done / max(self.total, 1))
        eta = (self.total - self.done) / max(rate, 1e-9)
        print0(f"[cache] [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} "
               f"instance-views ({self.done / max(self.total, 1):.0%}), {rate:.1f} views/s, "
               f"ETA {eta:.0f} s  ({shard.name})")


@dataclass(frozen=True)
class BuildReport:
    """What a build did: the manifest, the views it computed now, its throughput, and the
    teacher forward passes (one per instance-view per teacher, and the bases' calibration
    views)."""

    manifest: CacheManifest
    computed: int
    seconds: float
    teacher_passes: int
    first_shard_s: float = 0.0  # start-up: actors up, the first shard's rows through

    @property
    def views_per_s(self) -> float:
        return self.computed / self.seconds if self.seconds else 0.0


def build_cache(config: DistillConfig, records_path: str, specs: dict[str, PoseModelSpec],
                crop_actors: int = 1) -> BuildReport:
    """Build (or complete) the cache ``config.teacher_cache.uri`` for the training records.

    Refuses a folder holding a cache of other settings, naming what differs. Expects Ray
    to be initialised and :func:`~unipose_ray.workflows.training.resolve_teachers`' absolute paths.
    """
    cache = config.teacher_cache
    if not config.teachers:
        raise ValueError("the config has no teachers: there is nothing to cache")
    if cache.uri is None:
        raise ValueError("no cache folder: pass --out (or set teacher_cache.uri)")
    records = read_records(records_path)
    wanted = wanted_manifest(config, records, specs)
    store = CacheStore(cache.uri)
    cached = store.read_manifest()
    if cached is not None:
        differ = mismatches(cached, wanted)
        if differ:
            raise ValueError(f"{cache.uri} holds a teacher cache built for other settings; it "
                             "differs in:\n  " + "\n  ".join(differ)
                             + "\nuse another --out, or delete that folder to rebuild it")
        wanted = replace(wanted, shards={name: rows for name, rows in cached.shards.items()
                                         if store.exists(name)}, bases=dict(cached.bases))
    layout = shard_layout(records.num_rows, cache.views, cache.shard_records)
    todo = [s for s in layout if s.name not in wanted.shards]
    store.write_manifest(wanted)
    start = time.perf_counter()
    bases, calibration_passes = (ensure_bases(config, records, specs, store, wanted)
                                 if uses_basis(wanted.compression) else ({}, 0))
    total = records.num_rows * cache.views
    if not todo:
        print0(f"[cache] {cache.uri} is complete ({len(layout)} shards, {total} instance-views)")
        return BuildReport(wanted, 0, 0.0, 0)
    print0(f"[cache] building {len(todo)} of {len(layout)} shards into {cache.uri}: "
           f"{len(config.teachers)} teacher(s), {cache.views} view(s), "
           + describe(cache.compression))

    rows = sum(s.stop - s.start for s in todo)
    writer = ShardWriter(store, wanted, todo, [t.name for t in config.teachers],
                         Progress(total, total - rows))
    for batch in target_pipeline(config, records, specs, todo, crop_actors, bases).iter_batches(
            batch_size=None, batch_format="numpy"):
        writer.add(batch)
    seconds = time.perf_counter() - start
    if cache.topk:
        joints = {t.name: KEYPOINT_SETS[t.dataset].num_keypoints for t in config.teachers}
        print0("[cache] teacher mass outside the kept bins (mean per joint and axis): "
               + ", ".join(f"{name} {mass / (2 * joints[name] * rows):.1%}"
                           for name, mass in writer.outside.items())
               + " (jobs/benchmark_kd.py measures what it does to the KD gradient)")
    report = BuildReport(wanted, rows, seconds,
                         rows * len(config.teachers) + calibration_passes,
                         (writer.first_at or start) - start)
    print0(f"[cache] done: {rows} instance-views in {seconds:.1f} s "
           f"({report.views_per_s:.1f} views/s, {report.teacher_passes} teacher passes)")
    return report


def target_pipeline(config: DistillConfig, records, specs: dict[str, PoseModelSpec],
                    todo: list[Shard], crop_actors: int, bases: dict[str, Basis]):
    """The lazy Ray Dataset of the ``todo`` shards' rows, in order, with every teacher's
    targets (the crops dropped): coefficients in its basis of ``bases``, else top-k."""
    import ray  # noqa: PLC0415
    import ray.data  # noqa: PLC0415

    cache = config.teacher_cache
    views = np.concatenate([np.full(s.stop - s.start, s.view) for s in todo])
    rows = np.concatenate([np.arange(s.start, s.stop) for s in todo])
    sizes = tuple(sorted({tuple(spec.input_size) for spec in specs.values()}))
    # No run length: every view is a stage-1 crop. A run with RTMPose's stage-2 switch
    # (augment.stage2_epochs) and a cache is refused by DistillConfig, never served these.
    pipeline = PipelineConfig(config.student.codec, config.augment, config.run.seed,
                              skeleton=config.skeleton)
    plan = CropPlan(ray.put(records), pipeline, sizes, views, rows, config.data.skip_bad_images)
    quiet_ray_data()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the shard lines say how far it is
    context.execution_options.preserve_order = True  # shards complete one after the other
    grid = StudentGrid(config.student.codec.num_bins, config.student.codec.split_ratio)
    gpus = ray.cluster_resources().get("GPU", 0)
    # No actor restarts (``max_restarts=0``, only a "deprecated" keyword in Ray 2.60): a
    # failed build is started again and keeps its shards; with restarts Ray prints an
    # error-level note for every actor whose constructor arguments are in the object store.
    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
    # blocks of a shard's size: rows stream through the stages a shard at a time
    blocks = -(-len(rows) // cache.shard_records)
    ds = ray.data.range(len(rows), override_num_blocks=blocks).map_batches(
        ViewCrops, fn_constructor_kwargs={"plan": plan}, batch_size=cache.batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=crop_actors), num_cpus=1,
        max_restarts=0)
    for teacher in config.teachers:
        teacher = teacher_on_cluster(teacher, gpus)
        size = tuple(specs[teacher.name].input_size)
        ds = ds.map_batches(
            TeacherTargets,
            fn_constructor_args=(teacher, grid, size, cache.topk or None, config.loss.beta,
                                 bases.get(teacher.name), cache.batch_size),
            batch_size=cache.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cache.actors),
            num_cpus=teacher.num_cpus, num_gpus=teacher.num_gpus, max_restarts=0)
    return ds.drop_columns([f"{p}_{size_key(s)}" for s in sizes for p in ("image", "a", "b")])


class ShardWriter:
    """Gathers the pipeline's rows into shards; writes each whole, then the manifest.

    Attributes:
        outside: per teacher, the summed mass outside the kept bins.
        first_at: ``perf_counter()`` when the first shard was written (start-up).
    """

    def __init__(self, store: CacheStore, manifest: CacheManifest, todo: list[Shard],
                 teachers: list[str], progress: Progress):
        self.store, self.manifest, self.queue = store, manifest, list(todo)
        self.teachers, self.progress = teachers, progress
        self.pending: dict[str, list[np.ndarray]] = {}
        self.outside = dict.fromkeys(teachers, 0.0)
        self.first_at: float | None = None

    def add(self, batch: dict[str, np.ndarray]) -> None:
        for column, values in batch.items():
            self.pending.setdefault(column, []).append(values)
        for name in self.teachers:
            for axis in AXES:
                if f"{name}_{axis}_rest" in batch:  # top-k targets
                    self.outside[name] += float(batch[f"{name}_{axis}_rest"].sum())
        while self.queue and self._rows() >= self.queue[0].stop - self.queue[0].start:
            self._write(self.queue.pop(0))

    def _rows(self) -> int:
        return sum(len(v) for v in self.pending.get("record", []))

    def _write(self, shard: Shard) -> None:
        n = shard.stop - shard.start
        merged = {c: np.concatenate(v) for c, v in self.pending.items()}
        head = {c: v[:n] for c, v in merged.items()}
        if not (np.array_equal(head["record"], np.arange(shard.start, shard.stop))
                and (head["view"] == shard.view).all()):
            raise RuntimeError(f"cache build: rows out of order at {shard.name}")
        self.store.write_shard(rows_to_table(head, self.teachers, self.manifest.compression),
                               shard.name)
        self.manifest.shards[shard.name] = n
        self.store.write_manifest(self.manifest)
        self.pending = {c: [v[n:]] for c, v in merged.items()}
        self.progress.update(n, shard)
        if self.first_at is None:
            self.first_at = time.perf_counter()


def ensure_cache(config: DistillConfig, records_path: str, specs: dict[str, PoseModelSpec]
                 ) -> CacheSource:
    """A complete cache at ``teacher_cache.uri`` for this run: an existing one is used as
    it is (whatever its views and compression), a missing or unfinished one is built."""
    records = read_records(records_path)
    try:
        return open_cache(config, records, specs)
    except FileNotFoundError as error:  # never built, or interrupted: build (the rest of) it
        print0(f"[cache] {error}".split("; build it")[0])
    build_cache(config, records_path, specs, crop_actors=max(1, config.run.data_actors))
    return open_cache(config, records, specs)
