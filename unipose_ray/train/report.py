"""A training worker's bookkeeping: timing, MLflow, validation, checkpoints, resume."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from unipose_ray.evaluation.cross_dataset import TRANSFER_COLUMNS, evaluate_model
from unipose_ray.evaluation.pictures import validation_picture
from unipose_ray.models import PoseModel
from unipose_ray.models.checkpoints import MODEL_CONFIG_NAME, save_checkpoint
from unipose_ray.runtime import distributed as dist
from unipose_ray.skeleton import KEYPOINT_SETS
from unipose_ray.tracking.params import flatten_config
from unipose_ray.tracking.runs import PARENT_TAG, NullTracker, RunTracker, child_key
from unipose_ray.train.optim import EMA, MixedPrecision

if TYPE_CHECKING:
    from unipose_ray.train.job import TrainJob


@dataclass
class TrainState:
    step: int = 0
    best_score: float = -math.inf
    start_step: int = 0  # where this attempt began (> 0 after a resume)
    nonfinite_steps: int = 0  # steps skipped for a NaN / inf loss, over the whole run
    bad_images: int = 0  # samples whose unreadable image was replaced (data.skip_bad_images)


@dataclass
class Learner:
    """What a worker trains and checkpoints.

    Attributes:
        student: the model; ``model`` is the same one as called (DDP-wrapped with several
            workers).
        optimizer, ema, precision: its optimiser, weight EMA (or ``None``) and AMP state.
    """

    student: PoseModel
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    precision: MixedPrecision

    @property
    def evaluated(self) -> PoseModel:
        """The weights validated and saved: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.student


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


class StartupMarks:
    """Seconds from the driver's ``fit()`` to each start-up milestone of a worker.

    The start-up figure of a training phase: worker process up (Ray Train's controller and
    worker group, imports), model built, MLflow run started, first batch (Ray Data's crop
    actors), first step. Wall-clock times; the driver's and the worker's clocks are the
    same machine's in a local run.
    """

    def __init__(self, submitted_at: float):
        self.submitted_at = submitted_at
        self.seconds: dict[str, float] = {}

    def mark(self, name: str) -> None:
        if self.submitted_at:
            self.seconds[name] = time.time() - self.submitted_at

    def metrics(self) -> dict[str, float]:
        out = {f"startup/{k.replace(' ', '_')}_s": v for k, v in self.seconds.items()}
        if "first step" in self.seconds:
            out["train/startup_s"] = self.seconds["first step"]
        return out

    def __str__(self) -> str:
        first = self.seconds.get("first step", float("nan"))
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items() if k != "first step")
        return f"first step {first:.1f} s after fit() ({parts})"


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


def start_tracker(job: TrainJob) -> RunTracker | NullTracker:
    if job.tracking_uri is None:
        return NullTracker()
    tracker = RunTracker(job.tracking_uri)
    tags = {"unipose_ray.kind": "distill" if job.config.teachers else "train",
            "unipose_ray.run_name": job.config.run.name, **job.tracking_tags}
    if job.parent_run_id:
        tags[PARENT_TAG] = job.parent_run_id
    name = job.tracking_name or job.config.run.name
    params = flatten_config(job.config) | job.tracking_params
    tracker.start(job.config.tracking.experiment, name, params=params, tags=tags,
                  key=child_key(job.parent_run_id, name))
    tracker.log_dict(job.config, "config.yaml")
    return tracker


def validate_and_report(job: TrainJob, learner: Learner, state: TrainState, tracker,
                        epoch: int, extra: dict) -> None:
    metrics: dict[str, float] = {"train/step": state.step, "train/epoch": epoch,
                                 "train/start_step": state.start_step,
                                 "train/nonfinite_steps": state.nonfinite_steps,
                                 "train/bad_images": state.bad_images, **extra}
    picture = None
    if dist.is_rank_zero() and job.eval_sets:
        model = learner.evaluated
        config = job.config
        values = evaluate_model(model, config.student.dataset, config.student.codec,
                                job.eval_sets, device=dist.device(),
                                flip_test=config.run.val_flip_test)
        metrics |= {f"val/{k}": v for k, v in values.items()}
        tracker.log_metrics({k: v for k, v in metrics.items() if k.startswith("val/")}, state.step)
        picture = val_picture(model, job)
        tracker.log_figure_png(picture, f"val/skeletons_step{state.step:06d}")
        dist.print0(f"[{config.run.name}] validation at step {state.step}: "
                    + " ".join(f"{k}={values[k]:.4g}" for k in TRANSFER_COLUMNS if k in values))
        score = metrics.get("val/score", math.nan)
        metrics[CHECKPOINT_SCORE] = UNSCORED if math.isnan(score) else score
        if not math.isnan(score) and score > state.best_score:
            state.best_score = score
            with tempfile.TemporaryDirectory() as tmp:
                tracker.log_artifact(save_best(job, model, Path(tmp), state.step, score),
                                     "checkpoints")
    report(job, learner, state, metrics, picture)


# Ray Train ranks checkpoints by this: a validation's val/score (0..100), else UNSCORED.
# Not NaN: Ray's checkpoint snapshot stores NaN as null and a resumed run fails on it.
CHECKPOINT_SCORE = "checkpoint_score"
UNSCORED = -1.0


def save_best(job: TrainJob, model: PoseModel, folder: Path, step: int, score: float) -> Path:
    """Write ``folder/best.pth`` (MMPose layout) and its MMPose config beside it."""
    from unipose_ray.models import write_mmpose_config  # noqa: PLC0415

    meta = KEYPOINT_SETS[job.config.student.dataset].dataset_meta()
    write_mmpose_config(model, job.config.student.size, folder / MODEL_CONFIG_NAME, meta)
    return save_checkpoint(model, folder / "best.pth", dataset_meta=meta,
                           extra_meta={"step": step, "val/score": score})


def report(job: TrainJob, learner: Learner, state: TrainState, metrics: dict,
           picture: np.ndarray | None = None) -> None:
    """``ray.train.report`` on every worker; rank 0 attaches the checkpoint.

    The checkpoint holds all a resumed run needs to continue as if never stopped: weights,
    optimiser, EMA, loss scaler, step (the data position: see ``StepPlan``), best score
    and the torch RNG state; ``student.pth``, the evaluated weights in MMPose layout; and
    the validation picture. It reaches the driver through the run's storage, whichever
    node rank 0 ran on (see ``driver.export_best``).
    """
    metrics = {CHECKPOINT_SCORE: UNSCORED, **metrics}
    import ray.train  # noqa: PLC0415

    if not dist.is_rank_zero():
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"model": learner.student.state_dict(),
                    "optimizer": learner.optimizer.state_dict(),
                    "ema": learner.ema.state_dict() if learner.ema is not None else None,
                    "scaler": learner.precision.state_dict(),
                    "rng": torch.get_rng_state(),
                    "step": state.step, "best_score": state.best_score,
                    "nonfinite_steps": state.nonfinite_steps, "bad_images": state.bad_images},
                   Path(tmp) / "state.pt")
        save_checkpoint(learner.evaluated, Path(tmp) / "student.pth",
                        dataset_meta=KEYPOINT_SETS[job.config.student.dataset].dataset_meta(),
                        extra_meta={"step": state.step, **{k: v for k, v in metrics.items()
                                                           if k == "val/score"}})
        if picture is not None:
            cv2.imwrite(str(Path(tmp) / VAL_PICTURE), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def restore(checkpoint, learner: Learner) -> TrainState:
    """The state a checkpoint was written at, loaded into ``learner``; a fresh one without."""
    if checkpoint is None:
        return TrainState()
    with checkpoint.as_directory() as path:
        saved = torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=True)
    learner.student.load_state_dict(saved["model"])
    learner.optimizer.load_state_dict(saved["optimizer"])
    if learner.ema is not None and saved["ema"] is not None:
        learner.ema.load_state_dict(saved["ema"])
    learner.precision.load_state_dict(saved.get("scaler"))
    if "rng" in saved:
        torch.set_rng_state(saved["rng"])
    dist.print0(f"resumed from the checkpoint at step {saved['step']}")
    return TrainState(step=saved["step"], best_score=saved["best_score"], start_step=saved["step"],
                      nonfinite_steps=saved.get("nonfinite_steps", 0),
                      bad_images=saved.get("bad_images", 0))


VAL_PICTURE = "val_picture.png"


def val_picture(model: PoseModel, job: TrainJob) -> np.ndarray:
    """The validation picture: whole validation images with the predicted skeletons."""
    config = job.config
    return validation_picture(model, config.student.dataset, config.student.codec,
                              job.eval_sets, config.tracking.images_per_set,
                              config.run.val_flip_test, dist.device())
