"""Benchmark student training throughput: online teacher actors vs in-process teachers.

Runs the same distillation twice on Ray Train, side by side in one Ray session:

- online: each teacher is a ``TeacherService`` actor; the worker sends batch i+1 to both
  teachers before it trains on batch i (this product's design);
- in-process: the worker runs both teachers itself before each step (the paper authors'
  ``MultiTeacherDistiller``).

Teachers are RTMPose models with random weights (speed does not depend on the weights),
written as MMPose config + checkpoint files and loaded through the normal path. Prints
samples/s after a warm-up and the ratio.

With ``--replicas 1,2`` it measures instead the online teachers with 1 and then 2
replicas per teacher, for two DDP training workers (each worker starts its round-robin at
its own replica): with teachers that cost more than the student (``--teacher-bound``:
RTMPose-m teachers at 256x256 over an RTMPose-t student at 64x96), more replicas serve the
workers' lockstep requests in parallel, as long as there are cores (or GPUs) for them: on
2 cores, one teacher (``--teachers coco``) leaves room for a second replica, two do not.

    python jobs/benchmark_distill.py                       # demo sizes (64x96 student)
    python jobs/benchmark_distill.py --paper-sizes --steps 20   # 192x256 s student, m teachers
    python jobs/benchmark_distill.py --replicas 1,2 --teacher-bound --teachers coco
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import bench_common as bench
from bench_common import paper_sizes, write_random_teacher

from unipose_ray.config import DistillConfig, load_config
from unipose_ray.config.settings import CodecConfig
from unipose_ray.runtime.distributed import init_ray
from unipose_ray.train.job import TrainJob
from unipose_ray.workflows.training import check_teachers, prepare_data


def teacher_bound(config: DistillConfig) -> DistillConfig:
    """RTMPose-m teachers at 256x256 over the RTMPose-t 64x96 student: teachers dominate."""
    codec = CodecConfig((256, 256), (5.66, 5.66))
    return replace(config, teachers=tuple(replace(t, train_size="m", train_codec=codec)
                                          for t in config.teachers))


def measure(job: TrainJob, online: bool, replicas: int = 1) -> float:
    name = f"bench_{'online' if online else 'inprocess'}_{replicas}"
    return bench.measure(job, name, online, replicas)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per variant")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--paper-sizes", action="store_true",
                        help="RTMPose-s student 192x256 and RTMPose-m teachers (slow on CPU)")
    parser.add_argument("--replicas", help="compare online teachers with these replica "
                        "counts (e.g. 1,2) for two training workers, instead")
    parser.add_argument("--teacher-bound", action="store_true",
                        help="RTMPose-m 256x256 teachers over the 64x96 RTMPose-t student")
    parser.add_argument("--teachers", help="keep only these teachers (comma-separated names)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    config = load_config("demo_self_trained", [f"optim.batch_size={args.batch_size}", "optim.epochs=1000",
                                  "baseline=false", "generate.coco_val=2", "generate.mpii_val=2",
                                  "generate.coco_train=150", "generate.mpii_train=150"])
    # random teachers are written below; no backbone pretraining (teachers of any size)
    config = replace(config, pretrain=None)
    if args.paper_sizes:
        config = paper_sizes(config)
    if args.teachers:
        keep = args.teachers.split(",")
        config = replace(config, teachers=tuple(t for t in config.teachers if t.name in keep))
    if args.teacher_bound:
        config = teacher_bound(config)
    if args.replicas:
        config = replace(config, run=replace(config.run, num_workers=2))
    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        config, data = prepare_data(config, out)
        teachers = tuple(write_random_teacher(t, config.student.codec, out / "teachers")
                         for t in config.teachers)
        config = replace(config, teachers=teachers,
                         run=replace(config.run, storage_path=str(out / "ray_results")))
        job = TrainJob(config=config, train_records=data.train_records(["coco", "mpii"], out),
                       eval_sets=(), teacher_specs=check_teachers(config), output_dir=str(out),
                       max_steps=args.steps)
        if args.replicas:
            counts = [int(r) for r in args.replicas.split(",")]
            rates = {f"{r} replica(s) per teacher": measure(job, True, r) for r in counts}
        else:
            rates = {"online teacher actors": measure(job, online=True),
                     "in-process teachers": measure(job, online=False)}
    student = config.student
    print(f"\nstudent RTMPose-{student.size} {student.codec.input_size}, teachers "
          + ", ".join(f"{name}: RTMPose {spec.input_size}" for name, spec in job.teacher_specs.items())
          + f", batch {args.batch_size} x {config.run.num_workers} worker(s), {args.steps} "
          f"steps ({os.cpu_count()} cores)")
    for name, rate in rates.items():
        print(f"  {name:<28}{rate:8.1f} samples/s")
    (first, a), *_, (last, b) = rates.items()
    print(f"  {last} / {first}: {b / a:.2f}x")


if __name__ == "__main__":
    main()
