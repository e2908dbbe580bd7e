"""Benchmark what the training stream's crop stages cost before any crop, old vs new.

Side by side in one run, at COCO's size by default (172k training records, generated in
memory: no images), with ``--stages`` crop stages (the paper preset's 16):

- the record set per stage: old, ``ray.get`` of the Arrow table and a list of
  ``InstanceRecord`` built in each stage (``TopdownDataset(table)``); new, ``ray.get`` of
  the columnar ``RecordTable`` (zero-copy from the object store) used as it is;
- cached teacher targets per epoch: old, every stage reads every shard of the epoch's
  view (``ViewTargets``); new, the run's ``ViewHub`` reads it once and the stages
  ``ray.get`` the shared object. Bytes counted by a counting filesystem, on a cache of
  ``--cache-records`` records written by the real writer, then scaled to ``--records``;
- ``open_cache``'s storage requests: new, the function itself; old, a faithful copy of
  its former checks (the manifest's existence and read, one existence check per shard).

Old stage counts above ``--measured-stages`` are the measured per-stage figure times the
count (each stage did the same work).

    python jobs/benchmark_stream.py                 # COCO size, 16 stages
    python jobs/benchmark_stream.py --records 20000 --stages 4 --cache-records 5000
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from unipose_ray.config import load_config
from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset
from unipose_ray.data.records import SCHEMA, RecordTable
from unipose_ray.skeleton import UNIFIED
from unipose_ray.teacher_cache.counting import counting_cache_requests
from unipose_ray.teacher_cache.synthetic import fit_manifest, write_synthetic_cache
from unipose_ray.teacher_cache.format import CacheStore
from unipose_ray.teacher_cache.shared import ViewHub
from unipose_ray.teacher_cache.source import ViewTargets, open_cache

K = UNIFIED.num_keypoints
MB = 1e6


def fake_records(n: int, seed: int = 0) -> pa.Table:
    """``n`` records as a record file holds them (COCO-like paths and boxes), vectorised."""
    rng = np.random.default_rng(seed)

    def fixed(values: np.ndarray, width: int, kind: pa.DataType) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), kind), width)

    image_ids = rng.integers(0, 600_000, n)
    columns = {
        "image_path": pa.array([f"/data/coco/train2017/{i:012d}.jpg" for i in image_ids]),
        "dataset": pa.array(np.where(rng.random(n) < 0.85, "coco", "mpii")),
        "image_id": pa.array(image_ids), "instance_id": pa.array(np.arange(n)),
        "image_width": pa.array(np.full(n, 640, np.int32)),
        "image_height": pa.array(np.full(n, 480, np.int32)),
        "bbox": fixed(rng.uniform(0, 300, (n, 4)).astype(np.float32), 4, pa.float32()),
        "keypoints": fixed(rng.uniform(0, 400, (n, 2 * K)).astype(np.float32), 2 * K,
                           pa.float32()),
        "visible": fixed((rng.random((n, K)) < 0.7).astype(np.float32), K, pa.float32()),
        "annotated": fixed(rng.random((n, K)) < 0.9, K, pa.bool_()),
        "head_size": pa.array(np.where(rng.random(n) < 0.15, 30.0, np.nan).astype(np.float32),
                              from_pandas=True),
        "area": pa.array(rng.uniform(1e3, 1e5, n).astype(np.float32)),
    }
    return pa.table(columns, schema=SCHEMA)


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def measured(build) -> tuple[float, float, float, object]:
    """``(seconds, tracemalloc peak MB, RSS growth MB, value)`` of one ``build()``."""
    rss = rss_mb()
    tracemalloc.start()
    start = time.perf_counter()
    value = build()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / MB
    tracemalloc.stop()
    return seconds, peak, rss_mb() - rss, value


def bench_records(args, ray) -> None:
    table = fake_records(args.records)
    pipeline = PipelineConfig()
    old_ref = ray.put(table)  # the driver's put before: the Arrow table
    start = time.perf_counter()
    columns = RecordTable.from_arrow(table)
    to_columns = time.perf_counter() - start
    new_ref = ray.put(columns)
    print(f"\nrecord set: {args.records} records; RecordTable {columns.nbytes / MB:.0f} MB, "
          f"built by the driver in {to_columns:.2f} s")
    print(f"{'per stage':32s}{'old (list)':>14s}{'new (table)':>14s}")
    old = [measured(lambda: TopdownDataset(ray.get(old_ref), pipeline))
           for _ in range(min(args.measured_stages, args.stages))]
    new = [measured(lambda: TopdownDataset(ray.get(new_ref), pipeline))
           for _ in range(args.stages)]
    for row, i, unit in (("construction time", 0, "s"), ("tracemalloc peak", 1, "MB"),
                         ("RSS growth", 2, "MB")):
        o, n = np.median([m[i] for m in old]), np.median([m[i] for m in new])
        print(f"{row:32s}{o:>12.3f}{unit:>2s}{n:>12.4f}{unit:>2s}")
    o = np.median([m[1] for m in old]) * args.stages
    n = np.median([m[1] for m in new]) * args.stages + columns.nbytes / MB  # + one shared copy
    print(f"{f'heap for {args.stages} stages (MB)':32s}{o:>14.0f}{n:>14.0f}"
          "   (new: + the one shared copy per node)")
    first = old[0][3]
    for index in (0, args.records // 2, args.records - 1):  # the same rows either way
        a, b = first.records[index], new[0][3].records[index]
        assert a.image_path == b.image_path and np.array_equal(a.keypoints, b.keypoints)


def bench_targets(args, ray, folder: Path) -> None:
    teachers = {"coco": 17, "mpii": 16}
    start = time.perf_counter()
    source = write_synthetic_cache(str(folder / "cache"), args.cache_records, 2, args.shard_records,
                              teachers, k=args.topk)
    print(f"\ncached targets: a cache of {args.cache_records} records x 2 views "
          f"({len(source.shards)} shards of {args.shard_records}, top-{args.topk}, "
          f"teachers {teachers}) written in {time.perf_counter() - start:.0f} s")
    old_stages = min(args.measured_stages, args.stages)
    with counting_cache_requests() as old:
        start = time.perf_counter()
        for _ in range(old_stages):  # each stage, at the change to epoch 1
            ViewTargets(source, 1, args.cache_records)
        old_seconds = (time.perf_counter() - start) / old_stages
    hub = ViewHub(source, args.cache_records)
    with counting_cache_requests() as new:
        start = time.perf_counter()
        for _ in range(args.stages):  # every stage asks the hub, which reads once
            (ref,) = hub.view(1)
            shared = ray.get(ref)
        new_seconds = (time.perf_counter() - start) / args.stages
    assert hub.views_read() == 1 and shared.view == 1
    scale = args.records / args.cache_records
    old_bytes = old.bytes_read / old_stages * args.stages
    print(f"{'one epoch, ' + str(args.stages) + ' stages':32s}{'old':>14s}{'new':>14s}")
    print(f"{'bytes read (cache as written)':32s}{old_bytes / MB:>12.1f}MB"
          f"{new.bytes_read / MB:>12.1f}MB")
    print(f"{f'bytes read at {args.records} records':32s}{old_bytes * scale / MB:>12.0f}MB"
          f"{new.bytes_read * scale / MB:>12.0f}MB")
    print(f"{'read requests':32s}{old.total / old_stages * args.stages:>14.0f}"
          f"{new.total:>14d}")
    print(f"{'seconds a stage waits (mean)':32s}{old_seconds:>13.2f}s{new_seconds:>13.3f}s")


def bench_open(args, folder: Path) -> None:
    """``open_cache``'s requests on a cache with a manifest that fits a demo-like run."""
    config = load_config("demo")
    teachers = []
    for teacher in config.teachers:
        for kind in ("config", "checkpoint"):
            (folder / f"{teacher.name}.{kind}").write_bytes(teacher.name.encode())
        teachers.append(replace(teacher, config=str(folder / f"{teacher.name}.config"),
                                checkpoint=str(folder / f"{teacher.name}.checkpoint")))
    uri = str(folder / "open")
    config = replace(config, teachers=tuple(teachers), teacher_cache=replace(
        config.teacher_cache, uri=uri, components=0, topk=8))
    records = fake_records(args.open_records)
    specs = {t.name: SimpleNamespace(input_size=(96, 96)) for t in teachers}
    source = write_synthetic_cache(uri, args.open_records, args.views, args.shard_records,
                              {"coco": 17, "mpii": 16}, k=1, bins=(8, 8))
    fit_manifest(source, config, records, specs)
    with counting_cache_requests() as new:
        open_cache(config, records, specs)
    with counting_cache_requests() as old:  # the former checks, faithfully
        store = CacheStore(uri)
        store.read_manifest()
        for shard in source.shards:
            store.exists(shard.name)
    full = math.ceil(args.records / args.shard_records) * args.views
    print(f"\nopen_cache: {len(source.shards)} shards ({args.views} views of "
          f"{args.open_records} records)")
    print(f"{'storage requests':32s}{'old':>14s}{'new':>14s}")
    print(f"{'as written':32s}{old.total:>14d}{new.total:>14d}")
    print(f"{f'at {full} shards (old: 2 + shards)':32s}{2 + full:>14d}{new.total:>14d}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=172_000, help="training records")
    parser.add_argument("--stages", type=int, default=16, help="crop stages of the run")
    parser.add_argument("--measured-stages", type=int, default=3,
                        help="old stages measured (the rest: the same per-stage figure)")
    parser.add_argument("--cache-records", type=int, default=10_000,
                        help="records of the cache written (bytes are scaled to --records)")
    parser.add_argument("--shard-records", type=int, default=512)
    parser.add_argument("--topk", type=int, default=8)
    parser.add_argument("--views", type=int, default=10, help="views for open_cache")
    parser.add_argument("--open-records", type=int, default=5_000,
                        help="records of the open_cache cache (tiny shards)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import ray  # noqa: PLC0415

    from unipose_ray.runtime.distributed import start_local_ray  # noqa: PLC0415

    args = parse_args(argv)
    started = not ray.is_initialized()  # (the CI tier's smoke runs on its shared Ray)
    if started:
        start_local_ray(num_cpus=2, include_dashboard=False, object_store_memory=2 * 1024 ** 3)
    try:
        bench_records(args, ray)
        with tempfile.TemporaryDirectory() as folder:
            bench_targets(args, ray, Path(folder))
            bench_open(args, Path(folder))
    finally:
        if started:
            ray.shutdown()


if __name__ == "__main__":
    main()
