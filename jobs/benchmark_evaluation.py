"""Benchmark a model's evaluation: on the driver (``evaluate_model``) against Ray tasks.

One run, side by side, the same model and boxes (generated COCO- and MPII-format
validation sets, flip test on, batch 32): people/s of

- driver: ``evaluate_model`` in this process, as ``jobs/distill.py`` evaluated every model
  before ``run.eval_workers`` (``cold``: the process's first evaluation, ``warm``: a second);
- remote xN: ``workflows.evaluation.submit_evaluation`` on N Ray tasks (the boxes split in
  whole batches), predictions gathered and scored on the driver; ``cold`` includes starting
  the tasks' worker processes (what a comparison pays per model on a fresh Ray), ``warm``
  a second evaluation on the same Ray.

Each remote row's metrics are compared with the driver's (``equal`` or the largest
difference). The model is a released demo teacher (``released/demo``) or, with
``--paper-sizes``, a random-weight RTMPose-m at 192x256 (speed does not depend on the
weights).

    python jobs/benchmark_evaluation.py                       # demo teacher, 60 + 60 images
    python jobs/benchmark_evaluation.py --images 30 --paper-sizes
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.records import write_records
from unipose_ray.data.synthetic import SyntheticConfig, generate_dataset
from unipose_ray.evaluation.cross_dataset import EvalSet, eval_inputs, evaluate_model
from unipose_ray.models import build_from_config, build_rtmpose
from unipose_ray.runtime.distributed import start_local_ray
from unipose_ray.workflows.evaluation import EvalWorkers, submit_evaluation

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_TEACHER = REPO_ROOT / "released/demo/rtmpose-t_demo-coco_96x128"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60,
                        help="validation images per dataset (the demo's 60; at most 2 people)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="remote task counts to measure")
    parser.add_argument("--paper-sizes", action="store_true",
                        help="a random-weight RTMPose-m at 192x256 instead of the demo teacher")
    parser.add_argument("--cpus", type=int, default=2, help="the local Ray's logical CPUs")
    return parser.parse_args(argv)


def eval_sets(images: int, out: Path) -> tuple[EvalSet, ...]:
    """Generated COCO and MPII validation sets (at most two people per image) as record
    files, with their 21-joint files (every metric of the demo's table)."""
    config = SyntheticConfig(coco_train=0, coco_val=images, mpii_train=0, mpii_val=images,
                             max_people=2)
    data = generate_dataset(out / "data", config, progress=False)
    coco = write_records(read_coco(data.coco_val_ann, data.coco_val_images), out / "c.parquet")
    mpii = write_records(read_mpii(data.mpii_val_ann, data.mpii_val_images), out / "m.parquet")
    return (EvalSet("coco", str(coco), str(data.coco_val_ann), str(data.coco_val_unified)),
            EvalSet("mpii", str(mpii), None, str(data.mpii_val_unified)))


def build_model(paper_sizes: bool) -> torch.nn.Module:
    if paper_sizes:
        torch.manual_seed(0)
        return build_rtmpose("m", 17, (192, 256), (4.9, 5.66))
    return build_from_config(f"{DEMO_TEACHER}.py", f"{DEMO_TEACHER}.pth")


def difference(metrics: dict[str, float], reference: dict[str, float]) -> str:
    """``equal``, or the largest absolute difference and its metric."""
    if metrics.keys() != reference.keys():
        return f"other metrics: {sorted(metrics.keys() ^ reference.keys())}"
    gaps = {k: abs(v - reference[k]) for k, v in metrics.items()
            if not (math.isnan(v) and math.isnan(reference[k]))}
    worst = max(gaps, key=gaps.get, default=None)
    return "equal" if worst is None or gaps[worst] == 0 else f"{worst} off by {gaps[worst]:.3g}"


def remote_rows(model, dataset: str, sets, count: int, cpus: int, people: int,
                reference: dict[str, float]) -> list[tuple[str, float, str]]:
    """Two evaluations on ``count`` tasks of a new local Ray (or the running one: the CI
    tier's smoke runs on its shared Ray): cold, then warm."""
    import ray  # noqa: PLC0415

    started = not ray.is_initialized()
    if started:
        start_local_ray(num_cpus=cpus, include_dashboard=False)
    rows = []
    try:
        for phase in ("cold", "warm"):
            start = time.perf_counter()
            inputs = eval_inputs(sets)  # read by the driver in both paths
            metrics = submit_evaluation(model, dataset, model.spec.codec, inputs,
                                        EvalWorkers(count)).result()
            rows.append((f"remote x{count} ({phase})", people / (time.perf_counter() - start),
                         difference(metrics, reference)))
    finally:
        if started:
            ray.shutdown()
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, float, str]]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        sets = eval_sets(args.images, Path(tmp))
        model = build_model(args.paper_sizes)
        dataset = "coco"
        people = sum(len(s.boxes) for s in eval_inputs(sets))
        print(f"{people} people (flip test), model input {model.spec.input_size}, "
              f"{torch.get_num_threads()} driver threads")

        rows, reference = [], None
        for phase in ("cold", "warm"):  # cold: this process's first evaluation
            start = time.perf_counter()
            metrics = evaluate_model(model, dataset, model.spec.codec, sets)
            rate = people / (time.perf_counter() - start)
            rows.append((f"driver ({phase})", rate,
                         "reference" if reference is None else difference(metrics, reference)))
            reference = reference or metrics

        for count in args.workers:  # a fresh Ray each: "cold" starts its worker processes
            rows += remote_rows(model, dataset, sets, count, args.cpus, people, reference)
    print(f"\n{'evaluation':24}{'people/s':>10}  metrics vs driver")
    for name, rate, check in rows:
        print(f"{name:24}{rate:10.1f}  {check}")
    return rows


if __name__ == "__main__":
    main()
