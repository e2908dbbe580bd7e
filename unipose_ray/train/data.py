"""The distributed input pipeline: Ray Data runs the seeded crop/augment stage on CPUs.

Every training worker reads its own stream, fixed by a :class:`StepPlan`: at global step
``s`` worker ``r`` of ``W`` trains rows ``s x W x B + r x B ... + B`` of the run, and row
``r`` is sample ``perm_e[r mod N]`` of epoch ``e = r div N`` (``perm_e`` the epoch's seeded
shuffle; each epoch drops its last partial global batch). A resumed worker starts its
stream at its checkpoint's step: nothing is replayed, and the data order is the one an
uninterrupted run sees. A :class:`CropStage` actor turns rows into student crops, SimCC
targets and, for each teacher input size, the teacher's crop of the same box with the
per-axis relation between the crops. Every crop is drawn from its sample seed, so any
sample can be replayed later whichever worker, actor or order produced it.

The record set travels through the object store (``StreamSpec.records_ref``, a columnar
:class:`RecordTable` that every stage of a node maps zero-copy), so crop actors on any node
can run; only the images themselves must be readable there. Cached teacher targets come the
same way: one ``ViewHub`` of the run reads view ``v`` once and shares it
(``StreamSpec.targets``), instead of every stage reading every shard of it. With
``run.data_actors = 0`` the same stage runs in a thread of the training worker instead
(:func:`inline_batches`): the same batches, without the start-up of Ray Data's actors.
"""

from __future__ import annotations

import queue
import re
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from unipose_ray.data.geometry import invert_affine
from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset, load_image
from unipose_ray.data.records import RecordTable, read_records
from unipose_ray.data.transforms import size_key
from unipose_ray.teacher_cache.shared import shared_view
from unipose_ray.teacher_cache.source import CacheSource, ViewTargets

DATASET_CODES = {"coco": 0, "mpii": 1, "aic": 2, "unified": 3, "crowdpose": 4, "halpe26": 5}


@dataclass(frozen=True)
class StreamSpec:
    """What the training stream carries.

    Attributes:
        records_path: Parquet record set of all training instances.
        pipeline: the student's codec, augmentation and seed.
        teacher_sizes: distinct teacher input sizes ``(w, h)`` other than the student's.
        records_ref: the :class:`RecordTable` in the object store (``ray.put`` once by
            the driver); crop actors map it instead of reading ``records_path``, which may
            be on another node.
        skip_bad_images: replace an unreadable image's sample by the next readable
            record's (``data.skip_bad_images``); off, raise naming the file.
        cache: the teacher-logit cache the run reads instead of teachers: epoch ``e``
            replays view ``e mod views`` of each sample and carries its cached targets.
        targets: the run's ``ViewHub`` actor (``teacher_cache/shared.py``; started by the
            driver with a cache): the stages take each view's targets from it; without one
            each stage reads them itself.
    """

    records_path: str
    pipeline: PipelineConfig
    teacher_sizes: tuple[tuple[int, int], ...] = ()
    records_ref: object = None
    skip_bad_images: bool = False
    cache: CacheSource | None = None
    targets: object = None

    def read_records(self) -> RecordTable:
        """The shared record table (or one read from ``records_path`` by this process)."""
        if self.records_ref is None:
            return RecordTable.from_arrow(read_records(self.records_path))
        import ray  # noqa: PLC0415

        records = ray.get(self.records_ref)
        return RecordTable.from_arrow(records) if isinstance(records, pa.Table) else records


@dataclass(frozen=True)
class StepPlan:
    """The rows one worker trains, step by step; the same after any number of restarts.

    Attributes:
        num_records: training instances ``N``.
        batch_size: samples per worker per step ``B``.
        world_size: training workers ``W``.
        rank: this worker.
        start_step: the first step of this stream (the checkpoint's step on resume).
        total_steps: the step the run ends at.
    """

    num_records: int
    batch_size: int
    world_size: int = 1
    rank: int = 0
    start_step: int = 0
    total_steps: int = 1

    @property
    def steps_per_epoch(self) -> int:
        return self.num_records // (self.batch_size * self.world_size)

    @property
    def num_rows(self) -> int:
        return max(self.total_steps - self.start_step, 0) * self.batch_size

    def steps(self, ids: np.ndarray) -> np.ndarray:
        """The global step of each of the stream's ``ids`` (``0 .. num_rows``)."""
        return self.start_step + np.asarray(ids) // self.batch_size

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The run's row of each of the stream's ``ids``."""
        ids = np.asarray(ids)
        step = self.steps(ids)
        per_epoch = self.steps_per_epoch
        position = ((step % per_epoch) * self.world_size + self.rank) * self.batch_size \
            + ids % self.batch_size
        return (step // per_epoch) * self.num_records + position


def epoch_order(num_records: int, seed: int, epoch: int) -> np.ndarray:
    """The seeded shuffle of one epoch (same on every process)."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(num_records)


class CropStage:
    """Ray Data callable class: ``{"id": (B,)}`` rows -> training arrays.

    Output columns: ``image (B, 3, H, W) uint8``, ``target_x``, ``target_y``, ``weights``,
    ``warp``, ``inverse_warp``, ``epoch``, ``index``, ``dataset`` (code, see
    ``DATASET_CODES``) and per teacher size ``S``: ``teacher_image_S``, ``teacher_a_S``,
    ``teacher_b_S``, and ``substituted`` (1 where an unreadable image's sample was replaced
    by the next readable record's). With a ``plan`` the ids are a worker's stream positions
    (mapped to rows by :meth:`StepPlan.rows`) and a ``step`` column says which step each
    belongs to. With a cache, the crop is the cached view's and the teachers' targets come
    as ``kd_<teacher>_<axis>_<part>`` columns (:meth:`ViewTargets.columns`).
    """

    def __init__(self, spec: StreamSpec, plan: StepPlan | None = None):
        import cv2  # noqa: PLC0415

        cv2.setNumThreads(1)  # one actor = one CPU; scale with more actors, not threads
        self.spec, self.plan = spec, plan
        self.dataset = TopdownDataset(spec.read_records(), spec.pipeline)
        self._orders: dict[int, np.ndarray] = {}
        self._unreadable: set[int] = set()
        self._view: ViewTargets | None = None

    def _cached(self, view: int) -> ViewTargets:
        """The cached targets of ``view`` (one view in memory: epochs change rarely), the
        run's shared copy where the driver started a ``ViewHub``."""
        if self._view is None or self._view.view != view:
            self._view = None  # the last view's arrays go before the next one's come
            self._view = (ViewTargets(self.spec.cache, view, len(self.dataset))
                          if self.spec.targets is None else shared_view(self.spec.targets, view))
        return self._view

    def _index(self, row: int) -> tuple[int, int]:
        n = len(self.dataset)
        epoch = row // n
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(n, self.spec.pipeline.seed, epoch)}
        return epoch, int(self._orders[epoch][row % n])

    def _readable(self, index: int) -> tuple[int, np.ndarray, bool]:
        """``(index, image, substituted)``: the record's image or, with ``skip_bad_images``,
        the next readable record's (deterministic, so replays agree)."""
        records = self.dataset.records
        for step in range(len(records)):
            candidate = (index + step) % len(records)
            try:
                return candidate, load_image(records[candidate].image_path), step > 0
            except FileNotFoundError as error:
                if not self.spec.skip_bad_images:
                    raise FileNotFoundError(f"{error} (set data.skip_bad_images=true to skip "
                                            "unreadable training images)") from None
                if candidate not in self._unreadable:
                    self._unreadable.add(candidate)
                    print(f"skipping unreadable training image {records[candidate].image_path}",
                          flush=True)
        raise FileNotFoundError(f"no training image of {self.spec.records_path} can be read")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {}
        ids = batch["id"]
        rows = ids if self.plan is None else self.plan.rows(ids)
        for row in rows:
            epoch, index = self._index(int(row))
            index, image, substituted = self._readable(index)
            record = self.dataset.records[index]
            cache = self.spec.cache
            view = epoch if cache is None else epoch % cache.views
            params = self.dataset.params(index, view)
            sample = self.dataset.replay(index, params, image=image)
            columns = {
                "image": sample.image, "keypoints": sample.keypoints, "target_x": sample.target_x,
                "target_y": sample.target_y, "weights": sample.weights,
                "warp": sample.warp.astype(np.float32),
                "inverse_warp": invert_affine(sample.warp).astype(np.float32),
                "epoch": epoch, "index": index,
                "dataset": DATASET_CODES[record.dataset], "substituted": substituted,
            }
            for size in self.spec.teacher_sizes:
                crop = self.dataset.teacher_view(index, params, size, image=image)
                key = size_key(size)
                columns[f"teacher_image_{key}"] = crop.image
                columns[f"teacher_a_{key}"] = crop.a.astype(np.float32)
                columns[f"teacher_b_{key}"] = crop.b.astype(np.float32)
            if cache is not None:
                columns |= self._cached(epoch % cache.views).columns(index)
            for name, value in columns.items():
                out.setdefault(name, []).append(value)
        columns = {name: np.stack(values) for name, values in out.items()}
        if self.plan is not None:
            columns["step"] = self.plan.steps(ids)
        return columns


class IdleBackoff:
    """Ray Data execution callback: a short sleep after a scheduling step that did nothing.

    While backpressure leaves no crop task in flight, Ray Data's scheduling loop returns at
    once and polls again without sleeping; on a 2-core machine that loop (then in the
    ``SplitCoordinator``, now in the training worker) burned ~90% of a CPU for the whole
    run (measured), which the student needed.
    Steps that waited for a task (up to 0.1 s in ``ray.wait``) are left alone.
    """

    QUICK_S = 0.002  # a step this short found nothing to wait for
    SLEEP_S = 0.02

    def __init__(self):
        self._last = time.perf_counter()

    def on_execution_step(self, executor) -> None:
        del executor
        if time.perf_counter() - self._last < self.QUICK_S:
            time.sleep(self.SLEEP_S)
        self._last = time.perf_counter()

    # The rest of Ray Data's ExecutionCallback interface.
    def before_execution_starts(self, executor) -> None: ...
    def after_execution_succeeds(self, executor) -> None: ...
    def after_execution_fails(self, executor, error: Exception) -> None: ...


def batches_naming_failures(batches: Iterable[dict]) -> Iterator[dict]:
    """``batches``, re-raising a failure of the crop stage with its root cause in front.

    Ray Data reports a crop actor's exception as "UDF failed to process a data block" and
    Ray Train's error snippet cuts the middle of the traceback, where the cause (say,
    which image could not be read) was.
    """
    try:
        yield from batches
    except Exception as error:
        causes = [line for line in str(error).splitlines() if _CAUSE_LINE.match(line)]
        if not causes:
            raise
        raise RuntimeError(f"the training data stream failed: {causes[0]}") from error


# "FileNotFoundError: cannot read image ...": an exception line of the remote traceback
# that Ray's error text carries, other than Ray's own wrappers
_CAUSE_LINE = re.compile(r"^(?!ray\.exceptions\.)[A-Za-z_][\w.]*(Error|Exception): \S")


def build_stream(spec: StreamSpec, plan: StepPlan, num_actors: int,
                 cpus_per_actor: float = 1.0):
    """The lazy Ray Dataset of one worker's training rows, in step order.

    Called inside the training worker: its crop actors belong to it (and go with it), and
    a restarted worker starts at ``plan.start_step`` instead of replaying the stream.
    """
    import ray.data  # noqa: PLC0415

    # The training loop prints per-step progress (with the time spent waiting for data);
    # Ray Data's own bars would interleave with those lines.
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True  # batch k is step start_step + k
    if IdleBackoff not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.append(IdleBackoff)
    return ray.data.range(plan.num_rows).map_batches(
        CropStage,
        fn_constructor_kwargs={"spec": spec, "plan": plan},
        batch_size=plan.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=cpus_per_actor,
    )


def stream_batches(spec: StreamSpec, plan: StepPlan, data_actors: int,
                   prefetch: int = 2) -> Iterator[dict]:
    """One worker's training batches, in step order: made by ``data_actors`` Ray Data
    crop actors, or with 0 by a thread of this process. The batches are the same."""
    if data_actors == 0:
        return inline_batches(spec, plan, prefetch)
    return iter(build_stream(spec, plan, data_actors).iter_batches(
        batch_size=plan.batch_size, batch_format="numpy", drop_last=True,
        prefetch_batches=prefetch))


_END = object()


def inline_batches(spec: StreamSpec, plan: StepPlan, prefetch: int = 2) -> Iterator[dict]:
    """The batches of :func:`build_stream`, made by a :class:`CropStage` in a background
    thread of this process, up to ``prefetch`` ahead of the consumer.

    For one machine's few cores, where Ray Data's processes (its coordinator, stats and
    crop actors, read tasks) cost more start-up than the crops themselves: the crop work
    (OpenCV, NumPy) mostly runs outside the GIL, beside the training step. The thread
    starts at once; a crop failure is raised, whole, by the consumer's next batch; closing
    the iterator stops the thread.
    """
    stage = CropStage(spec, plan)
    ready: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for start in range(0, plan.num_rows - plan.batch_size + 1, plan.batch_size):
                if not put(stage({"id": np.arange(start, start + plan.batch_size)})):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            put(error)
            return
        put(_END)

    thread = threading.Thread(target=produce, name="crop-stage", daemon=True)
    thread.start()

    def drain() -> Iterator[dict]:
        try:
            while (item := ready.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=5)

    batches = drain()
    weakref.finalize(batches, stop.set)  # dropped before its first batch, `finally` never runs
    return batches
