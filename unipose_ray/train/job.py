"""What the driver decides for one training run, handed to every Ray Train worker."""

from __future__ import annotations

from dataclasses import dataclass, field

from unipose_ray.config import DistillConfig
from unipose_ray.evaluation.cross_dataset import EvalSet
from unipose_ray.models import PoseModel, PoseModelSpec, build_rtmpose
from unipose_ray.train.data import StreamSpec


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
        max_steps: stop after this many steps (0: ``run.max_steps``, whose 0 trains all
            epochs); benchmarks set it here, users in the config.
        steps_per_epoch: optimiser steps per epoch (set by :func:`run_training`).
        tracking_name: the MLflow run's name (default ``run.name``), e.g. its row in
            the demo's table.
        parent_run_id: nest the MLflow run under this one.
        tracking_tags, tracking_params: more tags and params for the MLflow run (a sweep
            trial's id, size and weights under short names).
        submitted_at: ``time.time()`` when the driver called ``fit()`` (start-up figure).
        stream: the training stream's records and crop settings (set by
            :func:`run_training`).
        num_records: training instances.
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
    tracking_tags: dict[str, str] = field(default_factory=dict)
    tracking_params: dict[str, str | float] = field(default_factory=dict)
    submitted_at: float = 0.0
    stream: StreamSpec | None = None
    num_records: int = 0

    @property
    def total_steps(self) -> int:
        full = self.steps_per_epoch * self.config.optim.epochs
        limit = self.max_steps or self.config.run.max_steps
        return min(full, limit) if limit else full


def build_student(config: DistillConfig) -> PoseModel:
    """The model this run trains: RTMPose of the configured size on its keypoint set."""
    student = config.student
    return build_rtmpose(student.size, config.student_keypoints.num_keypoints,
                         student.codec.input_size, student.codec.sigma, student.head)
