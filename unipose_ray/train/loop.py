"""Student training on Ray Train V2: ``train_fn_per_worker`` and ``run_training``.

Each worker builds the RTMPose student, reads its shard of the Ray Data stream (crops made
by :mod:`unipose_ray.train.data`), asks the teacher services for logits one batch ahead
(the request for batch i+1 is in flight while batch i trains), and minimises
:func:`unipose_ray.losses.distillation_loss`. Rank 0 validates, logs to MLflow and writes
checkpoints through ``ray.train.report``; a run started again with the same name resumes
from its latest checkpoint. With no teachers the same loop trains a single-dataset model
(the paper's self-trained teacher) or the joint no-KD baseline; with ``student.head ==
"heatmap"`` it pretrains a backbone on UDP heatmaps (MMPose's CSPNeXt recipe).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from unipose_ray import distributed as dist
from unipose_ray.config import DistillConfig
from unipose_ray.data.pipeline import PipelineConfig
from unipose_ray.evaluation.cross_dataset import EvalSet, evaluate_model
from unipose_ray.evaluation.topdown import eval_mode
from unipose_ray.losses import (
    SimCCTargets,
    TeacherTerm,
    distillation_loss,
    kd_decay,
    udp_heatmap_targets,
)
from unipose_ray.checkpoints import MODEL_CONFIG_NAME, load_backbone, save_checkpoint
from unipose_ray.models import (
    HEATMAP_SIGMA,
    PoseModel,
    PoseModelSpec,
    build_rtmpose,
    heatmap_size,
)
from unipose_ray.skeleton import KEYPOINT_SETS, mapping_for
from unipose_ray.teachers.service import StudentGrid, TeacherPool, TeacherService
from unipose_ray.tracking import NullTracker, RunTracker, flatten_config
from unipose_ray.train.data import DATASET_CODES, StreamSpec, build_stream, num_records, size_key
from unipose_ray.train.optim import EMA, build_optimizer, lr_at, set_lr
from unipose_ray.viz import draw_skeleton, make_grid


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs, decided by the driver.

    Attributes:
        config: the run's config.
        train_records: Parquet record set of the training instances.
        eval_sets: validation sets (rank 0 evaluates them).
        teacher_specs: ``name -> spec`` of each teacher (input size, keypoints).
        output_dir: where rank 0 writes ``best.pth`` and the MMPose config.
        tracking_uri: resolved MLflow URI.
        teachers_online: teachers as Ray actors (True) or inside the worker (the paper
            authors' approach; for benchmarks).
        max_steps: stop after this many steps (0: train all epochs).
        steps_per_epoch: optimiser steps per epoch (set by :func:`run_training`).
    """

    config: DistillConfig
    train_records: str
    eval_sets: tuple[EvalSet, ...]
    teacher_specs: dict[str, PoseModelSpec] = field(default_factory=dict)
    output_dir: str = "."
    tracking_uri: str | None = None
    teachers_online: bool = True
    max_steps: int = 0
    steps_per_epoch: int = 1

    @property
    def total_steps(self) -> int:
        full = self.steps_per_epoch * self.config.optim.epochs
        return min(full, self.max_steps) if self.max_steps else full


def build_student(config: DistillConfig) -> PoseModel:
    """The model this run trains: RTMPose of the configured size on its keypoint set."""
    student = config.student
    return build_rtmpose(student.size, KEYPOINT_SETS[student.dataset].num_keypoints,
                         student.codec.input_size, student.codec.sigma, student.head)


def teacher_terms(config: DistillConfig) -> list[TeacherTerm]:
    """One KD term per teacher: its weight and the student channels of its joints."""
    student = mapping_for(config.student.dataset)
    terms = []
    for teacher in config.teachers:
        uni = mapping_for(teacher.dataset).to_unified
        missing = [int(i) for i in uni if student.from_unified[i] < 0]
        if missing:
            raise ValueError(f"teacher '{teacher.name}' predicts joints the student does not have")
        terms.append(TeacherTerm(
            teacher.name, teacher.weight, tuple(int(student.from_unified[i]) for i in uni),
            own_samples_only=config.loss.kd_own_dataset_only,
            mask_joints=config.loss.kd_mask_unlabelled))
    return terms


# --- teacher requests, one batch ahead ------------------------------------------------------


class TeacherClient:
    """Sends a batch to every teacher and later collects the logits.

    Online: ``request`` puts each distinct teacher input once in the object store and
    submits to all teachers without waiting; ``collect`` does one ``ray.get`` for all.
    In-process: ``request`` runs the teachers right away (no overlap).
    """

    def __init__(self, job: TrainJob, pools: dict[str, TeacherPool] | None):
        self.job, self.pools = job, pools or {}
        grid = StudentGrid(job.config.student.codec.num_bins, job.config.student.codec.split_ratio)
        self.local = {}
        if not job.teachers_online:
            self.local = {t.name: TeacherService(t, grid, device=str(dist.device()))
                          for t in job.config.teachers}

    def _inputs(self, batch: dict, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        size = tuple(self.job.teacher_specs[name].input_size)
        if size == tuple(self.job.config.student.codec.input_size):
            n = len(batch["image"])
            return batch["image"], np.ones((n, 2), np.float32), np.zeros((n, 2), np.float32), "student"
        key = size_key(size)
        return batch[f"teacher_image_{key}"], batch[f"teacher_a_{key}"], batch[f"teacher_b_{key}"], key

    def request(self, batch: dict) -> dict:
        if not self.job.config.teachers:
            return {}
        if self.local:
            return {name: service.logits(*self._inputs(batch, name)[:3])
                    for name, service in self.local.items()}
        import ray  # noqa: PLC0415

        shared: dict[str, object] = {}
        refs = {}
        for name, pool in self.pools.items():
            images, a, b, key = self._inputs(batch, name)
            if key not in shared:
                shared[key] = ray.put(images)
            refs[name] = pool.submit(shared[key], a, b)
        return refs

    def collect(self, handle: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not handle or self.local:
            values = handle
        else:
            import ray  # noqa: PLC0415

            values = dict(zip(handle, ray.get(list(handle.values())), strict=True))
        return {name: (torch.tensor(x), torch.tensor(y)) for name, (x, y) in values.items()}


def one_ahead(batches: Iterable[dict], request: Callable[[dict], object],
              collect: Callable[[object], dict]) -> Iterator[tuple[dict, dict]]:
    """Yield ``(batch_i, teacher_outputs_i)`` with batch i+1's request already sent."""
    pending = None
    for batch in batches:
        handle = request(batch)
        if pending is not None:
            yield pending[0], collect(pending[1])
        pending = (batch, handle)
    if pending is not None:
        yield pending[0], collect(pending[1])


# --- the worker -------------------------------------------------------------------------


@dataclass
class TrainState:
    step: int = 0
    best_score: float = -math.inf
    start_step: int = 0  # where this attempt began (> 0 after a resume)


WARMUP_STEPS = 5  # steps excluded from the throughput figure (start-up, first crops)


class Stopwatch:
    """Accumulates seconds spent in named waits (data, teachers) between log lines."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def timed(self, name: str, iterable: Iterable) -> Iterator:
        iterator = iter(iterable)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                self.add(name, time.perf_counter() - start)
            yield item

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def pop(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


class Throughput:
    """Samples/s over the steps after the first few (start-up excluded)."""

    def __init__(self, samples_per_step: int):
        self.samples_per_step, self.steps, self.start = samples_per_step, 0, None

    def tick(self) -> None:
        self.steps += 1
        if self.steps == WARMUP_STEPS:
            self.start = time.perf_counter()

    @property
    def value(self) -> float:
        if self.start is None or self.steps <= WARMUP_STEPS:
            return math.nan
        return (self.steps - WARMUP_STEPS) * self.samples_per_step / (time.perf_counter() - self.start)


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A copy on ``device``: Ray Data hands out read-only arrays, which torch cannot wrap."""
    return torch.tensor(array, device=device)


def _targets(batch: dict, config: DistillConfig, device: torch.device) -> SimCCTargets:
    """The batch's unified targets gathered to the student's own keypoint set."""
    idx = torch.as_tensor(mapping_for(config.student.dataset).to_unified)
    return SimCCTargets(
        _tensor(batch["target_x"], device)[:, idx],
        _tensor(batch["target_y"], device)[:, idx],
        _tensor(batch["weights"], device)[:, idx])


def _heatmap_loss(student: PoseModel, heatmaps: torch.Tensor, batch: dict,
                  config: DistillConfig, device: torch.device) -> torch.Tensor:
    """Backbone pretraining: MMPose's ``KeypointMSELoss`` on UDP heatmap targets.

    Joints weigh as in the SimCC loss (visible, annotated, inside the crop); MMPose would
    also train a joint just outside the crop on its partial Gaussian.
    """
    idx = torch.as_tensor(mapping_for(config.student.dataset).to_unified)
    input_size = config.student.codec.input_size
    targets, weights = udp_heatmap_targets(
        _tensor(batch["keypoints"], device)[:, idx], _tensor(batch["weights"], device)[:, idx],
        input_size, heatmap_size(input_size), HEATMAP_SIGMA)
    return student.estimator.head.loss_module(heatmaps, targets, weights)


def _sample_masks(batch: dict, config: DistillConfig, device: torch.device) -> dict:
    codes = _tensor(batch["dataset"], device)
    return {t.name: codes == DATASET_CODES[t.dataset] for t in config.teachers}


def train_fn_per_worker(loop_config: dict) -> None:
    """The Ray Train worker loop (also runs in a plain process with ``world_size() == 1``)."""
    import ray.train  # noqa: PLC0415

    job: TrainJob = loop_config["job"]
    config = job.config
    device = dist.device()
    if device.type == "cpu":  # Ray pins OMP to 1 thread unless told; use the CPUs we reserved
        torch.set_num_threads(max(1, int(config.run.cpus_per_worker)))
    torch.manual_seed(config.run.seed)
    student = build_student(config)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and config.student.backbone_checkpoint:
        load_backbone(student, config.student.backbone_checkpoint)
        dist.print0(f"[{config.run.name}] backbone from {config.student.backbone_checkpoint}")
    student = student.to(device)
    model = ray.train.torch.prepare_model(student) if dist.world_size() > 1 else student
    optimizer = build_optimizer(student, config.optim)
    ema = EMA(student, config.optim.ema_momentum) if config.optim.ema else None
    state = _restore(checkpoint, student, optimizer, ema)
    terms = teacher_terms(config)
    teachers = TeacherClient(job, loop_config.get("pools"))
    amp = config.optim.amp and device.type == "cuda"

    tracker = _start_tracker(job) if dist.is_rank_zero() else NullTracker()
    shard = ray.train.get_dataset_shard("train")
    batches = shard.iter_batches(batch_size=config.optim.batch_size, batch_format="numpy",
                                 drop_last=True, prefetch_batches=2)
    skip = state.step  # rows of steps already trained (resume); the stream restarts at 0
    batches = (b for i, b in enumerate(batches) if i >= skip)
    val_every = config.run.val_every_epochs * job.steps_per_epoch
    window: list[dict[str, float]] = []
    tic = time.perf_counter()
    throughput = Throughput(config.optim.batch_size * dist.world_size())
    dist.print0(f"training {config.run.name}: {job.total_steps} steps "
                f"({job.steps_per_epoch}/epoch, {dist.world_size()} worker(s), "
                f"{torch.get_num_threads()} threads), from step {state.step}")
    model.train()
    watch = Stopwatch()

    def collect(handle):
        start = time.perf_counter()
        out = teachers.collect(handle)
        watch.add("teachers", time.perf_counter() - start)
        return out

    def request(batch):
        start = time.perf_counter()
        out = teachers.request(batch)
        watch.add("teachers", time.perf_counter() - start)
        return out

    for batch, teacher_out in one_ahead(watch.timed("data", batches), request, collect):
        if state.step >= job.total_steps:
            break
        epoch = state.step // job.steps_per_epoch
        lr = lr_at(state.step, job.total_steps, config.optim)
        set_lr(optimizer, lr)
        images = _tensor(batch["image"], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(images)
        if config.student.head == "heatmap":
            loss = _heatmap_loss(student, out.float(), batch, config, device)
            parts = {"loss_heatmap": loss, "loss": loss}
        else:
            kd_scale = kd_decay(epoch + 1, config.optim.epochs) if config.loss.kd_decay else 1.0
            loss, parts = distillation_loss(
                (out[0].float(), out[1].float()), _targets(batch, config, device),
                {k: (x.to(device), y.to(device)) for k, (x, y) in teacher_out.items()},
                config.loss.w_gt, terms, kd_scale=kd_scale,
                sample_masks=_sample_masks(batch, config, device), beta=config.loss.beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(student.parameters(), config.optim.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(student)
        state.step += 1
        throughput.tick()
        window.append({f"train/{k}": v.item() for k, v in parts.items()} | {"train/lr": lr})

        if state.step % 10 == 0 or state.step == job.total_steps:
            elapsed = time.perf_counter() - tic
            rate = len(window) * config.optim.batch_size * dist.world_size() / elapsed
            means = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            waits = {f"train/wait_{k}_fraction": v / elapsed for k, v in watch.pop().items()}
            tracker.log_metrics(means | waits | {"train/samples_per_s": rate, "train/epoch": epoch},
                                state.step)
            dist.print0(f"[{config.run.name}] step {state.step}/{job.total_steps} epoch {epoch} "
                        + " ".join(f"{k[6:]}={v:.4g}" for k, v in means.items())
                        + f" | {rate:.1f} samples/s, waiting "
                        + ", ".join(f"{k[11:-9]} {v:.0%}" for k, v in waits.items()))
            window, tic = [], time.perf_counter()

        done = state.step >= job.total_steps
        if done or state.step % val_every == 0:
            _validate_and_report(job, student, ema, optimizer, state, tracker, epoch,
                                 {"train/throughput": throughput.value})
        elif config.run.checkpoint_every_steps and state.step % config.run.checkpoint_every_steps == 0:
            _report(job, student, ema, optimizer, state, {"train/step": state.step})
        if done:
            break
    tracker.end()


def _start_tracker(job: TrainJob) -> RunTracker | NullTracker:
    if job.tracking_uri is None:
        return NullTracker()
    tracker = RunTracker(job.tracking_uri)
    tracker.start(job.config.tracking.experiment, job.config.run.name,
                  params=flatten_config(job.config),
                  tags={"unipose_ray.kind": "distill" if job.config.teachers else "train"})
    tracker.log_dict(job.config, "config.yaml")
    return tracker


def _validate_and_report(job, student, ema, optimizer, state, tracker, epoch, extra) -> None:
    metrics: dict[str, float] = {"train/step": state.step, "train/epoch": epoch,
                                 "train/start_step": state.start_step, **extra}
    if dist.is_rank_zero() and job.eval_sets:
        model = ema.module if ema is not None else student
        config = job.config
        values = evaluate_model(model, config.student.dataset, config.student.codec,
                                job.eval_sets, device=dist.device(),
                                flip_test=config.run.val_flip_test)
        metrics |= {f"val/{k}": v for k, v in values.items()}
        tracker.log_metrics({k: v for k, v in metrics.items() if k.startswith("val/")}, state.step)
        tracker.log_figure_png(_val_picture(model, job), f"val/skeletons_step{state.step:06d}")
        dist.print0(f"[{config.run.name}] validation at step {state.step}: "
                    + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                               if k.startswith("val/") and "/" not in k[4:]))
        score = metrics.get("val/score", math.nan)
        if not math.isnan(score) and score > state.best_score:
            state.best_score = score
            best = save_best(job, model, state.step, score)
            tracker.log_artifact(best, "checkpoints")
    _report(job, student, ema, optimizer, state, metrics)


def save_best(job: TrainJob, model: PoseModel, step: int, score: float) -> Path:
    """Write ``<output_dir>/best.pth`` (MMPose layout) and its MMPose config beside it."""
    from unipose_ray.models import write_mmpose_config  # noqa: PLC0415

    out = Path(job.output_dir)
    meta = KEYPOINT_SETS[job.config.student.dataset].dataset_meta()
    write_mmpose_config(model, job.config.student.size, out / MODEL_CONFIG_NAME, meta)
    return save_checkpoint(model, out / "best.pth", dataset_meta=meta,
                           extra_meta={"step": step, "val/score": score})


def _report(job, student, ema, optimizer, state: TrainState, metrics: dict) -> None:
    """``ray.train.report`` on every worker; rank 0 attaches the checkpoint."""
    import ray.train  # noqa: PLC0415

    if not dist.is_rank_zero():
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"model": student.state_dict(), "optimizer": optimizer.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "step": state.step, "best_score": state.best_score}, Path(tmp) / "state.pt")
        save_checkpoint(ema.module if ema is not None else student, Path(tmp) / "student.pth",
                        dataset_meta=KEYPOINT_SETS[job.config.student.dataset].dataset_meta())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _restore(checkpoint, student, optimizer, ema) -> TrainState:
    if checkpoint is None:
        return TrainState()
    with checkpoint.as_directory() as path:
        saved = torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=True)
    student.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if ema is not None and saved["ema"] is not None:
        ema.load_state_dict(saved["ema"])
    dist.print0(f"resumed from the checkpoint at step {saved['step']}")
    return TrainState(step=saved["step"], best_score=saved["best_score"], start_step=saved["step"])


def _val_picture(model: PoseModel, job: TrainJob) -> np.ndarray:
    """Predicted skeletons on the first few validation crops of each set, as one grid."""
    from unipose_ray.data.pipeline import BatchLoader, TopdownDataset  # noqa: PLC0415
    from unipose_ray.data.transforms import AugmentConfig  # noqa: PLC0415
    from unipose_ray.evaluation.decode import decode_simcc  # noqa: PLC0415

    codec = job.config.student.codec
    per_set = max(1, job.config.tracking.num_images // max(len(job.eval_sets), 1))
    tiles = []
    mapping = mapping_for(job.config.student.dataset)
    for eval_set in job.eval_sets:
        records = eval_set.records()[:per_set]
        data = TopdownDataset(records, PipelineConfig(codec=codec, augment=AugmentConfig.none()))
        batch = next(BatchLoader(data, per_set, shuffle=False).epoch(0))
        with torch.no_grad(), eval_mode(model):
            x, y = model(torch.from_numpy(batch["images"]).to(dist.device()))
        keypoints, scores = decode_simcc(x.float().cpu(), y.float().cpu(), codec.split_ratio)
        for image, kp, sc in zip(batch["images"], keypoints, scores, strict=True):
            tiles.append(draw_skeleton(np.ascontiguousarray(image.transpose(1, 2, 0)),
                                       mapping.keypoints_to_unified(kp),
                                       mapping.keypoints_to_unified(sc, fill=0.0)))
    return make_grid(tiles, cols=min(len(tiles), 6))


# --- the driver ---------------------------------------------------------------------------


def check_resources(config: DistillConfig) -> None:
    """Fail early when the run asks for more GPUs than the cluster has."""
    import ray  # noqa: PLC0415

    have = ray.cluster_resources().get("GPU", 0)
    want = (config.run.num_workers if config.run.use_gpu else 0) + sum(
        t.num_gpus * t.replicas for t in config.teachers)
    if want > have:
        raise RuntimeError(
            f"the run asks for {want:g} GPU(s) ({config.run.num_workers} worker(s) with "
            f"use_gpu={config.run.use_gpu}, teachers {[(t.name, t.replicas, t.num_gpus) for t in config.teachers]}) "
            f"but the Ray cluster has {have:g}; lower run.num_workers / teachers.N.num_gpus "
            "or set run.use_gpu=false")


def run_training(job: TrainJob, pools: dict[str, TeacherPool] | None = None):
    """Build and fit the ``TorchTrainer`` for ``job``; returns the Ray ``Result``.

    Expects Ray to be initialised (the job scripts do that). Teacher pools, when given,
    are the online teacher services; ``job.teacher_specs`` must describe them.
    """
    import ray.train  # noqa: PLC0415
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    config = job.config
    check_resources(config)
    n = num_records(job.train_records)
    global_batch = config.optim.batch_size * config.run.num_workers
    if n < global_batch:
        raise ValueError(f"{job.train_records} has {n} training instances, fewer than one "
                         f"global batch ({global_batch}); lower optim.batch_size")
    job = replace(job, steps_per_epoch=n // global_batch)
    teacher_sizes = tuple(sorted({tuple(s.input_size) for s in job.teacher_specs.values()}
                                 - {tuple(config.student.codec.input_size)}))
    spec = StreamSpec(job.train_records, PipelineConfig(config.student.codec, config.augment,
                                                        config.run.seed),
                      teacher_sizes, config.optim.epochs)
    stream = build_stream(spec, config.run.data_actors, batch_size=config.optim.batch_size)
    storage = config.run.storage_path or str(Path(job.output_dir).resolve() / "ray_results")
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"job": job, "pools": pools},
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.run.num_workers, use_gpu=config.run.use_gpu,
            resources_per_worker={"CPU": config.run.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=config.run.name, storage_path=str(Path(storage).resolve()),
            failure_config=ray.train.FailureConfig(max_failures=config.run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
        # No object-store bound of our own on the crop stage: the stream runs ahead under
        # Ray Data's own memory limits (a tight bound kept its scheduling loop polling;
        # see data.IdleBackoff).
        datasets={"train": stream},
    )
    return trainer.fit()


def remove_run(storage_path: str, name: str) -> None:
    """Delete a run's Ray Train storage (start over instead of resuming)."""
    shutil.rmtree(Path(storage_path) / name, ignore_errors=True)
