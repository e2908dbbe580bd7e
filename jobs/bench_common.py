"""Shared pieces of the training benchmarks (``jobs/benchmark_distill.py``,
``jobs/benchmark_kd.py``): random-weight teachers written as MMPose files, the paper's
model sizes, and one measured training run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from unipose_ray.config import DistillConfig, TeacherConfig
from unipose_ray.config.settings import CodecConfig
from unipose_ray.models import build_rtmpose, write_mmpose_config
from unipose_ray.models.checkpoints import save_checkpoint
from unipose_ray.skeleton import KEYPOINT_SETS
from unipose_ray.train.job import TrainJob


def write_random_teacher(teacher: TeacherConfig, default_codec: CodecConfig, out: Path
                         ) -> TeacherConfig:
    """An RTMPose teacher with random weights, as MMPose config + checkpoint files (speed
    does not depend on the weights)."""
    codec = teacher.train_codec or default_codec
    model = build_rtmpose(teacher.train_size, KEYPOINT_SETS[teacher.dataset].num_keypoints,
                          codec.input_size, codec.sigma)
    config = write_mmpose_config(model, teacher.train_size, out / f"{teacher.name}.py")
    checkpoint = save_checkpoint(model, out / f"{teacher.name}.pth")
    return replace(teacher, config=str(config), checkpoint=str(checkpoint))


def paper_sizes(config: DistillConfig) -> DistillConfig:
    """RTMPose-s student at 192x256, RTMPose-m teachers at 192x256 (COCO) / 256x256 (MPII)."""
    student = CodecConfig((192, 256), (4.9, 5.66))
    sizes = {"coco": student, "mpii": CodecConfig((256, 256), (5.66, 5.66))}
    teachers = tuple(replace(t, train_size="m", train_codec=sizes[t.dataset])
                     for t in config.teachers)
    return replace(config, student=replace(config.student, size="s", codec=student),
                   teachers=teachers)


def measure(job: TrainJob, name: str, online: bool = True, replicas: int = 1,
            cache_uri: str | None = None) -> float:
    """Student samples/s of one run (after its warm-up steps): teachers online (``replicas``
    each), in the worker (``online=False``), or read from the cache at ``cache_uri``."""
    from unipose_ray.workflows.training import fit_with_teachers  # noqa: PLC0415

    config = job.config
    teachers = tuple(replace(t, replicas=replicas) for t in config.teachers)
    config = replace(config, teachers=teachers, run=replace(config.run, name=name),
                     teacher_cache=replace(config.teacher_cache, uri=cache_uri))
    job = replace(job, teachers_online=online, config=config)
    return float(fit_with_teachers(job).metrics["train/throughput"])
