"""A training worker's validation and what it reports: MLflow metrics and pictures, the
best model, the checkpoint (:mod:`.checkpointing`)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unipose_ray.evaluation.cross_dataset import evaluate_model, table_columns
from unipose_ray.evaluation.pictures import validation_picture
from unipose_ray.models import PoseModel
from unipose_ray.runtime import distributed as dist
from unipose_ray.tracking.params import run_params
from unipose_ray.tracking.runs import PARENT_TAG, NullTracker, RunTracker, child_key
from unipose_ray.train.checkpointing import (
    CHECKPOINT_SCORE,
    UNSCORED,
    Learner,
    TrainState,
    report,
    save_best,
)

if TYPE_CHECKING:
    from unipose_ray.train.job import TrainJob


def start_tracker(job: TrainJob) -> RunTracker | NullTracker:
    if job.tracking_uri is None:
        return NullTracker()
    tracker = RunTracker(job.tracking_uri)
    tags = {"unipose_ray.kind": "distill" if job.config.teachers else "train",
            "unipose_ray.run_name": job.config.run.name, **job.tracking_tags}
    if job.parent_run_id:
        tags[PARENT_TAG] = job.parent_run_id
    name = job.tracking_name or job.config.run.name
    params = run_params(job.config) | job.tracking_params
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
        values = evaluate_model(model, config.student_keypoints, config.student.codec,
                                job.eval_sets, device=dist.device(),
                                flip_test=config.run.val_flip_test, skeleton=config.skeleton)
        metrics |= {f"val/{k}": v for k, v in values.items()}
        tracker.log_metrics({k: v for k, v in metrics.items() if k.startswith("val/")}, state.step)
        picture = val_picture(model, job)
        tracker.log_figure_png(picture, f"val/skeletons_step{state.step:06d}")
        dist.print0(f"[{config.run.name}] validation at step {state.step}: "
                    + " ".join(f"{k}={values[k]:.4g}" for k in table_columns(config.datasets)
                               if k in values))
        score = metrics.get("val/score", math.nan)
        metrics[CHECKPOINT_SCORE] = UNSCORED if math.isnan(score) else score
        if not math.isnan(score) and score > state.best_score:
            state.best_score = score
            with tempfile.TemporaryDirectory() as tmp:
                tracker.log_artifact(save_best(job, model, Path(tmp), state.step, score),
                                     "checkpoints")
    report(job, learner, state, metrics, picture)


def val_picture(model: PoseModel, job: TrainJob) -> np.ndarray:
    """The validation picture: whole validation images with the predicted skeletons."""
    config = job.config
    return validation_picture(model, config.student_keypoints, config.student.codec,
                              job.eval_sets, config.tracking.images_per_set,
                              config.run.val_flip_test, dist.device(), skeleton=config.skeleton)
