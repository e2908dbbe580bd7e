"""The worker's step loop, run in-process: non-finite losses and mixed precision.

A NaN or inf loss (a diverging run, a broken teacher output) skips its step, is counted,
and stops the run with a clear message after ``optim.max_nonfinite_steps`` in a row.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import DEMO_CODEC

from unipose_ray.config import (
    ConfigError,
    DistillConfig,
    OptimConfig,
    RunConfig,
    StudentConfig,
    TeacherConfig,
)
from unipose_ray.data.pipeline import PipelineConfig
from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.records import write_records
from unipose_ray.data.transforms import AugmentConfig
from unipose_ray.tracking.runs import NullTracker
from unipose_ray.train.checkpointing import Learner, TrainState
from unipose_ray.train.data import CropStage, StepPlan, StreamSpec
from unipose_ray.train.job import TrainJob, build_student
from unipose_ray.train.kd_step import TeacherClient
from unipose_ray.train.loop import Steps
from unipose_ray.train.optim import MixedPrecision, build_optimizer
from unipose_ray.train.timing import StartupMarks

CODEC = DEMO_CODEC
BATCH = 4


@pytest.fixture(scope="module")
def batches(real_samples, tmp_path_factory):
    records = (read_coco(real_samples / "coco" / "test_coco.json", real_samples / "coco")
               + read_mpii(real_samples / "mpii" / "test_mpii.json", real_samples / "mpii"))
    path = write_records(records, tmp_path_factory.mktemp("steps") / "train.parquet")
    spec = StreamSpec(str(path), PipelineConfig(CODEC, AugmentConfig.none(), seed=0))
    plan = StepPlan(len(records), BATCH, total_steps=8)
    out = CropStage(spec, plan)({"id": np.arange(plan.num_rows)})
    return str(path), [{k: v[i * BATCH:(i + 1) * BATCH] for k, v in out.items()} for i in range(8)]


def _steps(path: str, max_nonfinite: int = 3, epochs: int = 1, steps_per_epoch: int = 8,
           val_every_epochs: int = 10, max_steps: int = 0) -> Steps:
    config = DistillConfig(
        student=StudentConfig("t", codec=CODEC),
        teachers=(TeacherConfig("coco", "coco", weight=0.5),),
        optim=OptimConfig(epochs=epochs, batch_size=BATCH, warmup_steps=0, ema=False,
                          max_nonfinite_steps=max_nonfinite),
        run=RunConfig(val_every_epochs=val_every_epochs, max_steps=max_steps))
    job = TrainJob(config, path, (), steps_per_epoch=steps_per_epoch)
    torch.manual_seed(0)
    student = build_student(config)
    learner = Learner(student, student, build_optimizer(student, config.optim), None,
                      MixedPrecision(config.optim.amp, torch.device("cpu")))
    return Steps(job, learner, TrainState(), NullTracker(), TeacherClient(job, None),
                 StartupMarks(0.0))


def _teacher(batch: dict, value: float | None = None) -> dict:
    """COCO-teacher logits on the student's grid: random, or all ``value``."""
    shape = (len(batch["image"]), 17)
    x, y = torch.randn(*shape, CODEC.num_bins[0]), torch.randn(*shape, CODEC.num_bins[1])
    if value is not None:
        x.fill_(value)
    return {"coco": (x, y)}


def _weights(steps: Steps) -> dict[str, torch.Tensor]:
    """The trained parameters (BatchNorm's running statistics move in every forward)."""
    return {k: v.detach().clone() for k, v in steps.learner.student.named_parameters()}


def test_a_nan_loss_skips_its_step_and_training_goes_on(batches):
    path, data = batches
    steps = _steps(path)
    before = _weights(steps)
    steps.step(data[0], _teacher(data[0], float("nan")), epoch=0)
    assert steps.state.step == 1 and steps.state.nonfinite_steps == 1
    after = _weights(steps)
    assert all(torch.equal(before[k], after[k]) for k in before)  # no update from NaN
    steps.step(data[1], _teacher(data[1]), epoch=0)
    assert steps.state.step == 2 and steps.state.nonfinite_steps == 1
    assert not all(torch.equal(after[k], v) for k, v in _weights(steps).items())
    assert all(torch.isfinite(v).all() for v in _weights(steps).values())


class _Logged(NullTracker):
    """What the loop logs to MLflow."""

    def __init__(self):
        self.metrics: list[tuple[int, dict]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.metrics.append((step, dict(metrics)))


def test_non_finite_losses_in_a_row_stop_the_run_with_a_clear_message(batches):
    path, data = batches
    steps = _steps(path, max_nonfinite=3)
    steps.tracker = logged = _Logged()
    steps.step(data[0], _teacher(data[0], float("inf")), epoch=0)
    steps.step(data[1], _teacher(data[1]), epoch=0)  # a good step resets the count
    steps.step(data[2], _teacher(data[2], float("nan")), epoch=0)
    steps.step(data[3], _teacher(data[3], float("nan")), epoch=0)
    with pytest.raises(FloatingPointError, match=r"NaN or inf for 3 steps in a row \(steps 3..5\)"):
        steps.step(data[4], _teacher(data[4], float("nan")), epoch=0)
    assert steps.state.nonfinite_steps == 4
    # each skipped step is counted in MLflow as it happens (a run that then fails keeps it)
    counted = [(step, m["train/nonfinite_steps"]) for step, m in logged.metrics
               if "train/nonfinite_steps" in m]
    assert counted == [(1, 1), (3, 2), (4, 3), (5, 4)]


def test_mixed_precision_is_off_on_the_cpu_and_checked_in_the_config():
    from unipose_ray.config.loading import ConfigError

    for mode in ("bf16", "fp16", "off"):
        precision = MixedPrecision(mode, torch.device("cpu"))
        assert precision.mode == "off" and precision.dtype is None and precision.label == ""
        assert not precision.scaler.is_enabled()
    with pytest.raises(ConfigError, match="optim.amp must be one of"):
        OptimConfig(amp="fp8")


def test_a_fresh_run_starts_from_the_pretrained_backbone_a_resumed_one_does_not(tmp_path):
    """A worker's student: the configured pretrained backbone (a whole MMPose HeatmapHead
    model, as the demo's pretraining run writes it) in a fresh run; not in a resumed one,
    whose checkpoint holds every weight."""
    from unipose_ray.models import build_rtmpose
    from unipose_ray.models.checkpoints import save_checkpoint
    from unipose_ray.train.loop import initial_student

    torch.manual_seed(1)
    pretrained = build_rtmpose("t", 17, CODEC.input_size, CODEC.sigma, head="heatmap")
    path = save_checkpoint(pretrained, tmp_path / "pretrained.pth")
    config = DistillConfig(student=StudentConfig("t", codec=CODEC, backbone_checkpoint=str(path)))
    wanted = dict(pretrained.estimator.backbone.named_parameters())
    for resuming in (False, True):
        torch.manual_seed(0)
        backbone = dict(initial_student(config, resuming).estimator.backbone.named_parameters())
        same = {name: torch.equal(backbone[name], weight) for name, weight in wanted.items()}
        if resuming:  # a fresh initialisation: no convolution equals the pretrained one
            assert not any(v for k, v in same.items() if wanted[k].ndim > 1)
        else:
            assert all(same.values())


def test_the_loss_curve_reaches_every_validation_however_short_the_epoch(batches, monkeypatch):
    """Progress is logged every 10 steps; an epoch of 3 steps still has its loss in MLflow
    when it validates (a sweep trial that ASHA stops after one short epoch has a curve)."""
    path, data = batches
    steps = _steps(path, epochs=2, steps_per_epoch=3, val_every_epochs=1)
    steps.tracker = logged = _Logged()
    validated = []
    monkeypatch.setattr("unipose_ray.train.loop.validate_and_report",
                        lambda job, learner, state, *args: validated.append(state.step))
    steps._train(iter([(data[i], _teacher(data[i])) for i in range(6)]))
    assert validated == [3, 6]
    assert [step for step, m in logged.metrics if "train/loss" in m] == validated


def test_run_max_steps_ends_a_run_early_and_validates_its_last_step(batches, monkeypatch):
    """``run.max_steps`` (a smoke run at real size) stops the loop there, validates that
    step, and its learning rate reaches the schedule's end (the schedule spans the steps
    run); a job's own ``max_steps`` (benchmarks) wins over the config's."""
    path, data = batches
    steps = _steps(path, epochs=2, steps_per_epoch=4, max_steps=5)
    assert steps.job.total_steps == 5
    assert replace(steps.job, max_steps=3).total_steps == 3
    validated = []
    monkeypatch.setattr("unipose_ray.train.loop.validate_and_report",
                        lambda job, learner, state, *args: validated.append(state.step))
    steps._train(iter([(data[i], _teacher(data[i])) for i in range(8)]))
    assert steps.state.step == 5 and validated == [5]
    with pytest.raises(ConfigError, match="run.max_steps"):
        RunConfig(max_steps=-1)
