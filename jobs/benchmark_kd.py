"""Benchmark the teacher-logit cache against teachers that run during training.

One run, side by side, same student, batch and steps on Ray Train:

- cached: the student reads compressed teacher targets from a cache built first by
  ``jobs/build_cache.py``'s pipeline (its build throughput is measured too);
- online: teacher actors answer batch i+1 while batch i trains (this product's default);
- in-process: the training worker runs the teachers itself (the paper authors' approach).

Then the cache's bytes per instance-view against fp32 full logits, and the KD-loss
deviation of each cache format from full fp32 logits: the basis format with M = 16..48
components (fitted on ``--calibration`` other instance-views, as a build fits it) and
top-k targets (k = 4, 8, 16, 32, full-fp16). Measured with the released demo teachers
(trained models: random weights have no structure to keep) on generated images, each
teacher standing as the "student" of the other on the 12 joints both datasets annotate.

    python jobs/benchmark_kd.py                                  # demo sizes
    python jobs/benchmark_kd.py --paper-sizes                    # RTMPose-s 192x256 student,
                                                                 # RTMPose-m teachers (CPU: slow)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from bench_common import measure, paper_sizes, write_random_teacher

from unipose_ray.config import DistillConfig, load_config
from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset
from unipose_ray.data.records import read_records
from unipose_ray.kd.basis import fit_basis
from unipose_ray.kd.grid import map_teacher_logits
from unipose_ray.kd.losses import simcc_kd_loss
from unipose_ray.kd.topk import compress, kd_loss_topk
from unipose_ray.runtime.distributed import init_ray
from unipose_ray.skeleton import mapping_for
from unipose_ray.teacher_cache.build import build_cache
from unipose_ray.teacher_cache.format import (
    CacheStore,
    basis_name,
    rows_to_table,
    targets_to_table,
    write_parquet,
)
from unipose_ray.teachers.service import StudentGrid, TeacherService
from unipose_ray.train.job import TrainJob
from unipose_ray.workflows.training import check_teachers, prepare_data, resolve_teachers

KS = (4, 8, 16, 32, None)  # None: every bin, fp16
COMPONENTS = (16, 24, 28, 32, 48)
REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper-sizes", action="store_true",
                        help="RTMPose-s student 192x256, RTMPose-m teachers 192x256 / 256x256")
    parser.add_argument("--steps", type=int, help="training steps per variant (> 5: the "
                        "first 5 are warm-up; default 30, 12 with --paper-sizes)")
    parser.add_argument("--batch-size", type=int, help="default 16, 8 with --paper-sizes")
    parser.add_argument("--components", type=int, default=28,
                        help="the cache's basis components per joint (0: --topk)")
    parser.add_argument("--topk", type=int, default=0, help="with --components 0: the "
                        "cache's top-k bins per axis (0: every bin in fp16)")
    parser.add_argument("--deviation-views", type=int, default=64,
                        help="instance-views in the KD-loss deviation table")
    parser.add_argument("--calibration", type=int, default=512,
                        help="instance-views the deviation table's bases are fitted on")
    return parser.parse_args(argv)


def demo_config(overrides: list[str]) -> DistillConfig:
    """The demo preset (its released teachers), paths read from the repository root."""
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        return resolve_teachers(load_config("demo", overrides))
    finally:
        os.chdir(cwd)


def benchmark_config(args, out: Path) -> DistillConfig:
    """The compared runs' config: demo sizes (the released teachers) or the paper's sizes
    (random-weight RTMPose-m teachers); one epoch of generated data covers the steps."""
    images = (args.steps * args.batch_size) // 2 + 8  # ~1.5 instances an image, both sets
    config = demo_config([
        f"optim.batch_size={args.batch_size}", "optim.epochs=1000", "baseline=false",
        f"generate.coco_train={images}", f"generate.mpii_train={images}",
        "generate.coco_val=2", "generate.mpii_val=2", "teacher_cache.views=1",
        f"teacher_cache.components={args.components}", f"teacher_cache.topk={args.topk}",
        "teacher_cache.shard_records=64"])
    # speed does not depend on the weights: the student starts from scratch
    config = replace(config, student=replace(config.student, backbone_checkpoint=None))
    if args.paper_sizes:
        config = replace(paper_sizes(config), pretrain=None)
        config = replace(config, teachers=tuple(
            write_random_teacher(t, config.student.codec, out / "teachers")
            for t in config.teachers))
    return replace(config, run=replace(config.run, storage_path=str(out / "ray_results")))


def live_logits(config: DistillConfig, records_path: str, views: int) -> dict:
    """Both demo teachers on ``views`` training crops: per dataset, ``raw`` teacher-grid
    logits, the crop relations ``a``, ``b``, the ``mapped`` student-grid logits, and the
    teacher's SimCC split ratio."""
    records = read_records(records_path)
    dataset = TopdownDataset(records, PipelineConfig(config.student.codec, config.augment,
                                                     config.run.seed))
    grid = StudentGrid(config.student.codec.num_bins, config.student.codec.split_ratio)
    specs = check_teachers(config)
    out = {}
    for teacher in config.teachers:
        crops = [dataset.teacher_view(i, dataset.params(i, 0), specs[teacher.name].input_size)
                 for i in range(min(views, len(dataset)))]
        service = TeacherService(teacher, grid, device="cpu")
        chunks = [service.raw_logits(np.stack([c.image for c in crops[i:i + 64]]))
                  for i in range(0, len(crops), 64)]
        raw = tuple(torch.cat(axis) for axis in zip(*chunks, strict=True))
        a, b = (torch.from_numpy(np.stack([getattr(c, k) for c in crops])).float()
                for k in "ab")
        mapped = map_teacher_logits(*raw, a, b, student_bins=grid.bins,
                                    split_ratio=grid.split_ratio,
                                    teacher_split_ratio=specs[teacher.name].simcc_split_ratio)
        out[teacher.dataset] = {"raw": raw, "a": a, "b": b, "mapped": mapped,
                                "split_ratio": specs[teacher.name].simcc_split_ratio}
    return out


def shared_channels() -> tuple[list[int], list[int]]:
    """COCO and MPII channels of the joints both annotate."""
    coco, mpii = (list(mapping_for(d).to_unified) for d in ("coco", "mpii"))
    shared = [u for u in coco if u in mpii]
    return [coco.index(u) for u in shared], [mpii.index(u) for u in shared]


def deviation_table(logits: dict, calibration: dict, beta: float, grid: StudentGrid) -> dict:
    """``format -> (bytes per joint, loss deviation %, gradient deviation %)`` for the
    basis format (``("basis", M)``, fitted on ``calibration``'s crops) and top-k
    (``("top-k", k)``): each teacher is the other's student on the shared joints; the
    larger deviation of the two. The gradient deviation is ``|g_c - g| / |g|`` of the
    loss' gradient in the student's logits (what training follows)."""
    channels = dict(zip(("coco", "mpii"), shared_channels(), strict=True))
    formats = [("basis", m) for m in COMPONENTS] + [("top-k", k) for k in KS]
    rows = {}
    for kind, size in formats:
        loss_dev, grad_dev, nbytes = 0.0, 0.0, 0.0
        for student, teacher in (("coco", "mpii"), ("mpii", "coco")):
            sx, sy = (t[:, channels[student]].clone().requires_grad_()
                      for t in logits[student]["mapped"])
            tx, ty = (t[:, channels[teacher]] for t in logits[teacher]["mapped"])
            full = simcc_kd_loss(sx, sy, tx, ty, beta)
            if kind == "basis":
                t = logits[teacher]
                basis = fit_basis(*calibration[teacher]["raw"], size, t["split_ratio"])
                coef = basis.encode(*t["raw"])
                cx, cy = (v[:, channels[teacher]] for v in basis.decode(
                    coef, t["a"], t["b"], grid.bins, grid.split_ratio))
                approx = simcc_kd_loss(sx, sy, cx, cy, beta)
                nbytes = basis_bytes(coef, t["a"], t["b"])
            else:
                cx, cy = compress(tx, beta, size), compress(ty, beta, size)
                approx = kd_loss_topk(sx, sy, cx, cy, beta)
                nbytes = parquet_bytes(cx, cy)
            exact = torch.autograd.grad(full, (sx, sy))
            cached = torch.autograd.grad(approx, (sx, sy))
            diff = torch.cat([(a - b).flatten() for a, b in zip(cached, exact, strict=True)])
            norm = torch.cat([b.flatten() for b in exact]).norm()
            loss_dev = max(loss_dev, abs(approx.item() - full.item()) / full.item() * 100)
            grad_dev = max(grad_dev, (diff.norm() / norm).item() * 100)
        rows[(kind, size)] = (nbytes, loss_dev, grad_dev)
    return rows


def _tail(value, n: int):
    """The last ``n`` crops of an array or a pair of them."""
    return tuple(v[-n:] for v in value) if isinstance(value, tuple) else value[-n:]


def format_name(kind: str, size: int | None) -> str:
    if kind == "basis":
        return f"basis M={size}"
    return f"top-{size}" if size else "full-fp16"


def parquet_bytes(x, y) -> float:
    """Bytes of one (instance-view, joint) in a top-k cache shard of these targets."""
    b, joints = x.values.shape[:2]
    return _shard_size(targets_to_table(np.arange(b), np.zeros(b, np.int16), "t", x, y),
                       b * joints)


def basis_bytes(coef: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """Bytes of one (instance-view, joint) in a basis cache shard of these coefficients."""
    n, joints, m = coef.shape
    rows = {"record": np.arange(n), "view": np.zeros(n, np.int16), "t_coef": coef.numpy(),
            "t_a": a.numpy(), "t_b": b.numpy()}
    compression = {"components": m, "k": None}
    return _shard_size(rows_to_table(rows, ["t"], compression), n * joints)


def _shard_size(table: pa.Table, per: int) -> float:
    sink = pa.BufferOutputStream()
    write_parquet(table, sink)
    return sink.getvalue().size / per


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.steps = args.steps or (12 if args.paper_sizes else 30)
    args.batch_size = args.batch_size or (8 if args.paper_sizes else 16)
    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        config, data = prepare_data(benchmark_config(args, out), out)
        records_path = data.train_records(["coco", "mpii"], out / "records")
        specs = check_teachers(config)
        cache_uri = str(out / "cache")
        built = build_cache(replace(config, teacher_cache=replace(config.teacher_cache,
                                                                  uri=cache_uri)),
                            records_path, specs, crop_actors=max(1, config.run.data_actors))
        job = TrainJob(config=config, train_records=records_path, eval_sets=(),
                       teacher_specs=specs, output_dir=str(out / "runs"), max_steps=args.steps)
        rates = {"cached targets": measure(job, "bench_cached", cache_uri=cache_uri),
                 "online teacher actors": measure(job, "bench_online", online=True),
                 "in-process teachers": measure(job, "bench_inprocess", online=False)}

        store = CacheStore(cache_uri)
        cache_bytes = sum(store.size_of(name) for name in built.manifest.shards)
        basis_files = sum(store.size_of(basis_name(name)) for name in built.manifest.bases)
        views = sum(built.manifest.shards.values())
        bins = sum(config.student.codec.num_bins)
        fp32 = sum(spec.num_keypoints for spec in specs.values()) * bins * 4
        # the table's crops: --calibration ones to fit bases on, then the measured ones
        images = -(-(args.calibration + args.deviation_views) // 2)
        demo = demo_config([f"generate.coco_train={images}", f"generate.mpii_train={images}",
                            "generate.coco_val=2", "generate.mpii_val=2"])
        demo, demo_data = prepare_data(demo, out / "deviation")
        demo_records = demo_data.train_records(["coco", "mpii"], out / "deviation")
        crops = live_logits(demo, demo_records, args.calibration + args.deviation_views)
        calibration = {d: {"raw": tuple(v[:args.calibration] for v in t["raw"])}
                       for d, t in crops.items()}
        measured = {d: {**t, **{k: _tail(t[k], args.deviation_views)
                                for k in ("raw", "a", "b", "mapped")}}
                    for d, t in crops.items()}
        grid = StudentGrid(demo.student.codec.num_bins, demo.student.codec.split_ratio)
        table = deviation_table(measured, calibration, demo.loss.beta, grid)

    student = config.student
    print(f"\nstudent RTMPose-{student.size} {tuple(student.codec.input_size)}, teachers "
          + ", ".join(f"{n}: RTMPose {tuple(s.input_size)}" for n, s in specs.items())
          + f", batch {args.batch_size}, {args.steps} steps, 1 worker ({os.cpu_count()} cores)")
    for name, rate in rates.items():
        print(f"  {name:<24}{rate:8.2f} samples/s")
    print(f"cache build: {built.computed} instance-views in {built.seconds:.1f} s "
          f"({built.views_per_s:.1f} views/s, start-up included: {built.first_shard_s:.1f} s to "
          f"the first shard), {built.teacher_passes} teacher passes")
    chosen = ("basis", args.components) if args.components else ("top-k", args.topk or None)
    print(f"cache bytes per instance-view: {cache_bytes / views:,.0f} "
          f"({format_name(*chosen)}, Parquet) vs {fp32:,} fp32 full logits"
          + (f"; the bases: {basis_files:,} bytes once per cache" if basis_files else ""))
    if basis_files and cache_bytes / views < fp32 / 20:
        print(f"  shards and bases together are <= 1/20 of fp32 from "
              f"{basis_files / (fp32 / 20 - cache_bytes / views):,.0f} instance-views on "
              f"(this one: {views}; the demo's cache: 6 views x ~1,700 instances)")
    demo_bins = sum(demo.student.codec.num_bins)
    print(f"\nKD-loss deviation from fp32 logits (released demo teachers, {args.deviation_views}"
          f" instance-views measured, bases fitted on {args.calibration} others, student grid "
          f"{demo_bins} bins x+y):")
    print(f"  {'format':<14}{'bytes/joint':>12}{'fp32/joint':>12}{'ratio':>8}{'loss dev':>11}"
          f"{'grad dev':>11}")
    for (kind, size), (nbytes, dev, grad) in table.items():
        print(f"  {format_name(kind, size):<14}{nbytes:12.1f}{demo_bins * 4:12d}"
              f"{demo_bins * 4 / nbytes:7.1f}x{dev:10.2f}%{grad:10.2f}%")
    ratio = rates["cached targets"] / rates["in-process teachers"]
    deviation = table.get(chosen, (0, float("nan"), 0))[1]
    print(f"\ncached/in-process: {ratio:.2f}x  bytes: 1/{fp32 / (cache_bytes / views):.0f} of "
          f"fp32  kd-loss deviation: {deviation:.2f}%")


if __name__ == "__main__":
    main()
