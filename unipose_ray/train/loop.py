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

import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from unipose_ray import distributed as dist
from unipose_ray.config import DistillConfig
from unipose_ray.data.pipeline import PipelineConfig
from unipose_ray.evaluation.cross_dataset import EvalSet
from unipose_ray.losses import (
    SimCCTargets,
    distillation_loss,
    kd_decay,
    udp_heatmap_targets,
)
from unipose_ray.checkpoints import load_backbone
from unipose_ray.models import (
    HEATMAP_SIGMA,
    PoseModel,
    PoseModelSpec,
    build_rtmpose,
    heatmap_size,
)
from unipose_ray.skeleton import KEYPOINT_SETS, mapping_for
from unipose_ray.teachers.service import TeacherPool
from unipose_ray.tracking import NullTracker
from unipose_ray.train.data import StreamSpec, build_stream, num_records
from unipose_ray.train.kd import TeacherClient, kd_joint_weights, one_ahead, teacher_terms
from unipose_ray.train.optim import EMA, build_optimizer, lr_at, set_lr
from unipose_ray.train.report import (
    StartupMarks,
    Stopwatch,
    Throughput,
    report,
    restore,
    start_tracker,
    validate_and_report,
)


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
        tracking_name: the MLflow run's name (default ``run.name``), e.g. its row in
            the demo's table.
        parent_run_id: nest the MLflow run under this one.
        submitted_at: ``time.time()`` when the driver called ``fit()`` (start-up figure).
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
    tracking_name: str | None = None
    parent_run_id: str | None = None
    submitted_at: float = 0.0

    @property
    def total_steps(self) -> int:
        full = self.steps_per_epoch * self.config.optim.epochs
        return min(full, self.max_steps) if self.max_steps else full


def build_student(config: DistillConfig) -> PoseModel:
    """The model this run trains: RTMPose of the configured size on its keypoint set."""
    student = config.student
    return build_rtmpose(student.size, KEYPOINT_SETS[student.dataset].num_keypoints,
                         student.codec.input_size, student.codec.sigma, student.head)


# --- the worker -------------------------------------------------------------------------


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


def _kd_joint_weights(batch: dict, config: DistillConfig, device: torch.device):
    if config.loss.kd_mask == "none":
        return None
    return kd_joint_weights(_tensor(batch["dataset"], device), _tensor(batch["weights"], device),
                            config.loss.kd_mask, config.student.dataset)


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


def train_fn_per_worker(loop_config: dict) -> None:
    """The Ray Train worker loop (also runs in a plain process with ``world_size() == 1``)."""
    import ray.train  # noqa: PLC0415

    job: TrainJob = loop_config["job"]
    config = job.config
    marks = StartupMarks(job.submitted_at)
    marks.mark("worker up")
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
    state = restore(checkpoint, student, optimizer, ema)
    marks.mark("model")
    terms = teacher_terms(config)
    teachers = TeacherClient(job, loop_config.get("pools"))
    amp = config.optim.amp and device.type == "cuda"

    tracker = start_tracker(job) if dist.is_rank_zero() else NullTracker()
    marks.mark("MLflow")
    shard = ray.train.get_dataset_shard("train")
    batches = shard.iter_batches(batch_size=config.optim.batch_size, batch_format="numpy",
                                 drop_last=True, prefetch_batches=2)
    skip = state.step  # rows of steps already trained (resume); the stream restarts at 0
    batches = (b for i, b in enumerate(batches) if i >= skip)
    val_every = config.run.val_every_epochs * job.steps_per_epoch
    window: list[dict[str, float]] = []
    tic = time.perf_counter()
    throughput = Throughput(config.optim.batch_size * dist.world_size())
    extra: dict[str, float] = {}  # reported with every validation
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
        if state.step == state.start_step:
            marks.mark("first batch")
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
                kd_joint_weights=_kd_joint_weights(batch, config, device), beta=config.loss.beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(student.parameters(), config.optim.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(student)
        state.step += 1
        throughput.tick()
        if state.step == state.start_step + 1 and job.submitted_at:
            marks.mark("first step")
            extra |= marks.metrics()
            tracker.log_metrics(marks.metrics(), state.step)
            dist.print0(f"[{config.run.name}] {marks}")
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
            validate_and_report(job, student, ema, optimizer, state, tracker, epoch,
                                 {"train/throughput": throughput.value, **extra})
        elif config.run.checkpoint_every_steps and state.step % config.run.checkpoint_every_steps == 0:
            report(job, student, ema, optimizer, state, {"train/step": state.step})
        if done:
            break
    tracker.end()


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
    job = replace(job, steps_per_epoch=n // global_batch, submitted_at=time.time())
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
