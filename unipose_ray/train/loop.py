"""Student training on Ray Train V2: ``train_fn_per_worker``, what every worker runs.

Each worker builds the RTMPose student, reads its own Ray Data stream (its rows of every
step, crops made by :mod:`unipose_ray.train.data`), asks the teacher services for logits
one batch ahead (the request for batch i+1 is in flight while batch i trains), and minimises
:func:`unipose_ray.kd.losses.distillation_loss`. Rank 0 validates, logs to MLflow and writes
checkpoints through ``ray.train.report``; a run started again with the same name, or
restarted after a worker failure, resumes from its latest checkpoint at the data position
and RNG state it had. With no teachers the same loop trains a single-dataset model
(the paper's self-trained teacher) or the joint no-KD baseline; with ``student.head ==
"heatmap"`` it pretrains a backbone on UDP heatmaps (MMPose's CSPNeXt recipe). The
driver's side is :mod:`unipose_ray.train.driver`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import torch

from unipose_ray.config import DistillConfig
from unipose_ray.kd.losses import (
    SimCCTargets,
    distillation_loss,
    kd_decay,
    udp_heatmap_targets,
)
from unipose_ray.models import HEATMAP_SIGMA, PoseModel, heatmap_size, use_channels_last
from unipose_ray.models.checkpoints import load_backbone
from unipose_ray.runtime import distributed as dist
from unipose_ray.skeleton import mapping_for
from unipose_ray.tracking.runs import NullTracker
from unipose_ray.train.checkpointing import Learner, TrainState, report, restore
from unipose_ray.train.data import StepPlan, batches_naming_failures, stream_batches
from unipose_ray.train.job import TrainJob, build_student
from unipose_ray.train.kd_step import TeacherClient, kd_joint_weights, one_ahead, teacher_terms
from unipose_ray.train.optim import EMA, MixedPrecision, build_optimizer, lr_at, set_lr
from unipose_ray.train.report import start_tracker, validate_and_report
from unipose_ray.train.timing import StartupMarks, Stopwatch, Throughput


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A copy on ``device``: Ray Data hands out read-only arrays, which torch cannot wrap."""
    return torch.tensor(array, device=device)


def _targets(batch: dict, config: DistillConfig, device: torch.device) -> SimCCTargets:
    """The batch's unified targets gathered to the student's own keypoint set."""
    idx = torch.as_tensor(mapping_for(config.student.dataset, config.skeleton).to_unified)
    return SimCCTargets(
        _tensor(batch["target_x"], device)[:, idx],
        _tensor(batch["target_y"], device)[:, idx],
        _tensor(batch["weights"], device)[:, idx])


def _kd_joint_weights(batch: dict, config: DistillConfig, device: torch.device):
    if config.loss.kd_mask == "none":
        return None
    return kd_joint_weights(_tensor(batch["dataset"], device), _tensor(batch["weights"], device),
                            config.loss.kd_mask, config.student.dataset, config.skeleton)


def _heatmap_loss(student: PoseModel, heatmaps: torch.Tensor, batch: dict,
                  config: DistillConfig, device: torch.device) -> torch.Tensor:
    """Backbone pretraining: MMPose's ``KeypointMSELoss`` on UDP heatmap targets.

    Joints weigh as in the SimCC loss (visible, annotated, inside the crop); MMPose would
    also train a joint just outside the crop on its partial Gaussian.
    """
    idx = torch.as_tensor(mapping_for(config.student.dataset, config.skeleton).to_unified)
    input_size = config.student.codec.input_size
    targets, weights = udp_heatmap_targets(
        _tensor(batch["keypoints"], device)[:, idx], _tensor(batch["weights"], device)[:, idx],
        input_size, heatmap_size(input_size), HEATMAP_SIGMA)
    return student.estimator.head.loss_module(heatmaps, targets, weights)


def train_fn_per_worker(loop_config: dict) -> None:
    """The Ray Train worker loop (also runs in a plain process with ``world_size() == 1``)."""
    import ray.train  # noqa: PLC0415

    job: TrainJob = ray.get(loop_config["job"])  # by reference (see run_training)
    config = job.config
    marks = StartupMarks(job.submitted_at)
    marks.mark("worker up")
    device = dist.device()
    if device.type == "cpu":  # Ray pins OMP to 1 thread unless told; use the CPUs we reserved
        torch.set_num_threads(max(1, int(config.run.cpus_per_worker)))
    torch.manual_seed(config.run.seed)
    checkpoint = ray.train.get_checkpoint()
    student = use_channels_last(initial_student(config, resuming=checkpoint is not None)
                                .to(device))
    learner = Learner(
        student, ray.train.torch.prepare_model(student) if dist.world_size() > 1 else student,
        build_optimizer(student, config.optim),
        EMA(student, config.optim.ema_momentum) if config.optim.ema else None,
        MixedPrecision(config.optim.amp, device))
    state = restore(checkpoint, learner)
    marks.mark("model")
    teachers = TeacherClient(job, ray.get(loop_config["pools"]))

    # A crash marks the MLflow run FAILED; a restarted worker reopens it.
    with start_tracker(job) if dist.is_rank_zero() else NullTracker() as tracker:
        marks.mark("MLflow")
        plan = StepPlan(job.num_records, config.optim.batch_size, dist.world_size(),
                        dist.rank(), state.step, job.total_steps)
        batches = stream_batches(job.stream, plan, config.run.data_actors)
        dist.print0(f"training {config.run.name}: {job.total_steps} steps "
                    f"({job.steps_per_epoch}/epoch, {dist.world_size()} worker(s), "
                    f"{torch.get_num_threads()} threads{learner.precision.label}), "
                    f"from step {state.step}")
        Steps(job, learner, state, tracker, teachers, marks).run(batches)


def initial_student(config: DistillConfig, resuming: bool) -> PoseModel:
    """The student a worker starts from: a fresh build with the configured pretrained
    backbone (``student.backbone_checkpoint``), or without it when the run resumes from a
    checkpoint, which holds every weight."""
    student = build_student(config)
    if not resuming and config.student.backbone_checkpoint:
        load_backbone(student, config.student.backbone_checkpoint)
        dist.print0(f"[{config.run.name}] backbone from {config.student.backbone_checkpoint}")
    return student


class Steps:
    """The step loop of one worker: loss, update, progress lines, validation, checkpoints."""

    def __init__(self, job: TrainJob, learner: Learner, state: TrainState, tracker,
                 teachers: TeacherClient, marks: StartupMarks):
        self.job, self.learner, self.state, self.tracker = job, learner, state, tracker
        self.teachers, self.marks = teachers, marks
        self.config, self.device = job.config, dist.device()
        self.terms = teacher_terms(job.config)
        self.watch = Stopwatch()
        self.throughput = Throughput(job.config.optim.batch_size * dist.world_size())
        self.window: list[dict[str, float]] = []
        self.tic = time.perf_counter()
        self.extra: dict[str, float] = {}  # reported with every validation
        self.nonfinite_run = 0  # NaN / inf losses in a row

    def _timed(self, name: str, fn):
        def call(arg):
            start = time.perf_counter()
            try:
                return fn(arg)
            finally:
                self.watch.add(name, time.perf_counter() - start)
        return call

    def run(self, batches) -> None:
        """Train on ``batches`` to the run's last step. The stream is closed however the
        loop ends (an inline stream's crop thread stops with it)."""
        pairs = one_ahead(self.watch.timed("data", batches_naming_failures(batches)),
                          self._timed("teachers", self.teachers.request),
                          self._timed("teachers", self.teachers.collect))
        with contextlib.closing(pairs):
            self._train(pairs)

    def _train(self, pairs: Iterator[tuple[dict, dict]]) -> None:
        job, state = self.job, self.state
        self.learner.model.train()
        val_every = self.config.run.val_every_epochs * job.steps_per_epoch
        every = self.config.run.checkpoint_every_steps
        for batch, teacher_out in pairs:
            if state.step >= job.total_steps:
                break
            if int(batch["step"][0]) != state.step:
                raise RuntimeError(f"the stream gave step {int(batch['step'][0])}'s batch at "
                                   f"step {state.step}: data order broken")
            if state.step == state.start_step:
                self.marks.mark("first batch")
            state.bad_images += int(batch["substituted"].sum())
            epoch = state.step // job.steps_per_epoch
            self.step(batch, teacher_out, epoch)
            done = state.step >= job.total_steps
            if done or state.step % val_every == 0:
                if self.window:  # the curve reaches every validation, however short the run
                    self._progress(epoch)
                validate_and_report(job, self.learner, state, self.tracker, epoch,
                                    {"train/throughput": self.throughput.value, **self.extra})
            elif every and state.step % every == 0:
                report(job, self.learner, state, {"train/step": state.step})
            if done:
                break

    def loss(self, batch: dict, teacher_out: dict, epoch: int):
        config, device, learner = self.config, self.device, self.learner
        with learner.precision.autocast():
            out = learner.model(_tensor(batch["image"], device))
        if config.student.head == "heatmap":
            loss = _heatmap_loss(learner.student, out.float(), batch, config, device)
            return loss, {"loss_heatmap": loss, "loss": loss}
        kd_scale = kd_decay(epoch + 1, config.optim.epochs) if config.loss.kd_decay else 1.0
        return distillation_loss(
            (out[0].float(), out[1].float()), _targets(batch, config, device),
            {k: (x.to(device), y.to(device)) for k, (x, y) in teacher_out.items()},
            config.loss.w_gt, self.terms, kd_scale=kd_scale,
            kd_joint_weights=_kd_joint_weights(batch, config, device), beta=config.loss.beta)

    def step(self, batch: dict, teacher_out: dict, epoch: int) -> None:
        config, state, learner = self.config, self.state, self.learner
        lr = lr_at(state.step, self.job.total_steps, config.optim)
        set_lr(learner.optimizer, lr)
        loss, parts = self.loss(batch, teacher_out, epoch)
        learner.optimizer.zero_grad(set_to_none=True)
        # every worker skips together: DDP's gradient all-reduce needs all of them
        finite = bool(dist.all_reduce_mean(torch.isfinite(loss).float()) == 1)
        if finite:
            learner.precision.step(loss, learner.optimizer, learner.student.parameters(),
                                   config.optim.grad_clip)
            if learner.ema is not None:
                learner.ema.update(learner.student)
            self.nonfinite_run = 0
        else:
            self._skip_nonfinite(parts)
        state.step += 1
        self.throughput.tick()
        if state.step == state.start_step + 1 and self.job.submitted_at:
            self.marks.mark("first step")
            self.extra |= self.marks.metrics()
            self.tracker.log_metrics(self.marks.metrics(), state.step)
            dist.print0(f"[{config.run.name}] {self.marks}")
        if finite:
            self.window.append({f"train/{k}": v.item() for k, v in parts.items()}
                               | {"train/lr": lr})
        if (state.step % 10 == 0 or state.step == self.job.total_steps) and self.window:
            self._progress(epoch)

    def _skip_nonfinite(self, parts: dict) -> None:
        state = self.state
        state.nonfinite_steps += 1
        self.nonfinite_run += 1
        number = state.step + 1  # counted from 1, as in the progress lines
        values = ", ".join(f"{k}={v.item():.4g}" for k, v in parts.items())
        dist.print0(f"[{self.config.run.name}] step {number}: non-finite loss ({values}); "
                    f"step skipped ({self.nonfinite_run} in a row, {state.nonfinite_steps} in "
                    "all)")
        self.tracker.log_metrics({"train/nonfinite_steps": state.nonfinite_steps}, number)
        limit = self.config.optim.max_nonfinite_steps
        if self.nonfinite_run >= limit:
            raise FloatingPointError(
                f"run '{self.config.run.name}': the loss was NaN or inf for {limit} steps in a "
                f"row (steps {number - limit + 1}..{number}); the run stops. Lower "
                "optim.lr, set optim.grad_clip, or use optim.amp=bf16/off; the last good "
                "checkpoint is kept and a restart resumes from it")

    def _progress(self, epoch: int) -> None:
        config, state = self.config, self.state
        elapsed = time.perf_counter() - self.tic
        rate = len(self.window) * config.optim.batch_size * dist.world_size() / elapsed
        means = {k: float(np.mean([w[k] for w in self.window])) for k in self.window[0]}
        waits = {f"train/wait_{k}_fraction": v / elapsed for k, v in self.watch.pop().items()}
        self.tracker.log_metrics(
            means | waits | {"train/samples_per_s": rate, "train/epoch": epoch,
                             "train/nonfinite_steps": state.nonfinite_steps,
                             "train/bad_images": state.bad_images}, state.step)
        dist.print0(f"[{config.run.name}] step {state.step}/{self.job.total_steps} epoch {epoch} "
                    + " ".join(f"{k[6:]}={v:.4g}" for k, v in means.items())
                    + f" | {rate:.1f} samples/s, waiting "
                    + ", ".join(f"{k[11:-9]} {v:.0%}" for k, v in waits.items()))
        self.window, self.tic = [], time.perf_counter()
