"""Start-up cost of the demo's training phase: what runs before the first step.

    python jobs/benchmark_startup.py                 # the demo preset, 5 steps a run
    python jobs/benchmark_startup.py --data-actors 0,1   # crops in the worker vs Ray Data
    python jobs/benchmark_startup.py --trainer lean,ray  # without Ray Train's unused actors

Runs the demo's student phase as the demo does (one Ray session; the joint student and
the distilled student side by side; the released teachers as services for the distilled
one) for a few steps on a small generated set, and prints the fixed costs: Ray's start,
the teacher services' start, and for each training the seconds from ``fit()`` to its
first trained step (Ray Train's controller and worker processes, Ray Data's crop actors,
imports, the first crops), and the phase's wall time. Training time is what is left of
the demo's budget; these figures are what is not. With ``--data-actors`` (values of
``run.data_actors``) and ``--trainer`` (``lean``: ``LeanTorchTrainer``, what the jobs use;
``ray``: Ray's ``TorchTrainer`` with every helper actor) the phase runs once per
combination, in the same Ray session, and the figures are printed side by side. First,
before Ray starts, it times the imports a training worker pays (each in a fresh Python
process on the idle machine).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from unipose_ray.config import PRESETS, load_config
from unipose_ray.runtime.distributed import init_ray
from unipose_ray.teachers.service import StudentGrid, TeacherPool
from unipose_ray.train.driver import run_training
from unipose_ray.train.job import TrainJob
from unipose_ray.workflows.training import (
    check_teachers,
    ensure_backbone,
    prepare_data,
    resolve_teachers,
)

# what a Ray Train worker imports: Ray Train's own module, then the training loop's stack
# (MMPose's registry as the student build imports it, through the project's mmcv shim)
WORKER_IMPORTS = {
    "torch": "import torch",
    "ray.train.torch": "import ray.train.torch",
    "mlflow": "import mlflow",
    "mmpose.models": "from unipose_ray.models.compat import import_mmpose; import_mmpose(); "
                     "import mmpose.models",
    "unipose_ray.train.loop": "import unipose_ray.train.loop",
}
SMALL_DATA = ["generate.coco_train=64", "generate.mpii_train=64", "generate.coco_val=2",
              "generate.mpii_val=2"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo", help=f"a preset ({', '.join(PRESETS)}) or YAML")
    parser.add_argument("--steps", type=int, default=5, help="training steps per run")
    parser.add_argument("--data-actors", default=None,
                        help="comma-separated run.data_actors values to compare (default: "
                        "the config's)")
    parser.add_argument("--trainer", default="lean",
                        help="comma-separated trainers to compare: lean (the jobs' "
                        "LeanTorchTrainer), ray (Ray's TorchTrainer, every helper actor)")
    parser.add_argument("overrides", nargs="*", help="config overrides")
    args = parser.parse_args(argv)
    args.trainers = args.trainer.split(",")
    if not set(args.trainers) <= {"lean", "ray"}:
        parser.error(f"--trainer takes lean and/or ray, not {args.trainer}")
    return args


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    config = load_config(args.config, [*SMALL_DATA, *args.overrides])
    actors = ([int(v) for v in args.data_actors.split(",")] if args.data_actors
              else [config.run.data_actors])
    trainers = args.trainers

    imports = {name: import_seconds(code) for name, code in WORKER_IMPORTS.items()}
    print("\nimport in a fresh Python process, machine idle:")
    for name, seconds in imports.items():
        print(f"  {name:<40}{seconds:7.1f} s")
    tic = time.perf_counter()
    init_ray()
    ray_start = time.perf_counter() - tic
    columns = {f"data_actors={n} {trainer}": phase_figures(
        replace(config, run=replace(config.run, data_actors=n)), args.steps, trainer == "lean")
        for n in actors for trainer in trainers}

    print(f"\nstart-up of the '{args.config}' training phase ({args.steps} steps a run; "
          f"ray start {ray_start:.1f} s):")
    print(f"  {'':<40}" + "".join(f"{name:>22}" for name in columns))
    for figure in next(iter(columns.values())):
        print(f"  {figure:<40}" + "".join(f"{c[figure]:20.1f} s" for c in columns.values()))
    if len(columns) > 1:
        first, *rest = columns
        wall = "phase wall time"
        print("  phase wall time ratio: " + ", ".join(
            f"{name} / {first}: {columns[name][wall] / columns[first][wall]:.2f}x"
            for name in rest))
    return columns


def import_seconds(code: str) -> float:
    """Seconds a fresh interpreter takes to start and run ``code`` (imports)."""
    tic = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - tic


def phase_figures(config, steps: int, lean: bool) -> dict[str, float]:
    """Runs the phase once: teacher services, then both trainings side by side."""
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="unipose_startup_") as tmp:
        out = Path(tmp)
        config, data = prepare_data(config, out)
        config = resolve_teachers(ensure_backbone(config, data, out))
        config = replace(config, run=replace(config.run, storage_path=str(out / "ray_results")))
        specs = check_teachers(config)
        records = data.train_records(sorted(data.train), out)
        distilled = TrainJob(config, records, (), specs, str(out / "distilled"), max_steps=steps)
        joint = TrainJob(replace(config, teachers=(),
                                 run=replace(config.run, name=f"{config.run.name}_joint")),
                         records, (), {}, str(out / "joint"), max_steps=steps)
        phase = time.perf_counter()
        grid = StudentGrid(config.student.codec.num_bins, config.student.codec.split_ratio)
        pools = {t.name: TeacherPool(t, grid) for t in config.teachers}
        for pool in pools.values():
            pool.wait_ready()
        figures["teacher services ready"] = time.perf_counter() - phase
        with ThreadPoolExecutor(2) as executor:
            results = {"joint student": executor.submit(run_training, joint, lean=lean),
                       "distilled student": executor.submit(run_training, distilled, pools,
                                                            lean=lean)}
            for name, future in results.items():
                figures[f"{name}: fit() to first step"] = future.result().metrics["train/startup_s"]
        figures["phase wall time"] = time.perf_counter() - phase
        for pool in pools.values():
            pool.shutdown()
    return figures


if __name__ == "__main__":
    main()
