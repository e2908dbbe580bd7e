"""A training run's checkpoints: what a worker trains and saves, and how a run resumes.

Rank 0 attaches a checkpoint to each ``ray.train.report``; it holds all a resumed run needs
to continue as if never stopped, and the evaluated weights in MMPose's layout.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from unipose_ray.models import PoseModel
from unipose_ray.models.checkpoints import MODEL_CONFIG_NAME, save_checkpoint
from unipose_ray.runtime import distributed as dist
from unipose_ray.train.optim import EMA, MixedPrecision

if TYPE_CHECKING:
    from unipose_ray.train.job import TrainJob

VAL_PICTURE = "val_picture.png"


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


# Ray Train ranks checkpoints by this: a validation's val/score (0..100), else UNSCORED.
# Not NaN: Ray's checkpoint snapshot stores NaN as null and a resumed run fails on it.
CHECKPOINT_SCORE = "checkpoint_score"
UNSCORED = -1.0


def save_best(job: TrainJob, model: PoseModel, folder: Path, step: int, score: float) -> Path:
    """Write ``folder/best.pth`` (MMPose layout) and its MMPose config beside it."""
    from unipose_ray.models import write_mmpose_config  # noqa: PLC0415

    meta = job.config.student_keypoints.dataset_meta()
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
                        dataset_meta=job.config.student_keypoints.dataset_meta(),
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
