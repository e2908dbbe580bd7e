"""A teacher-logit cache of random targets, written by the real writer, for the tests and
``jobs/benchmark_stream.py`` (what reading a cache costs does not depend on the values)."""

from __future__ import annotations

import numpy as np

from unipose_ray.teacher_cache.format import CacheManifest, CacheStore, rows_to_table
from unipose_ray.teacher_cache.source import CacheSource, shard_layout


def write_synthetic_cache(uri: str, num_records: int, views: int, shard_records: int,
                     teachers: dict[str, int], k: int = 8, bins: tuple[int, int] = (384, 512),
                     seed: int = 0) -> CacheSource:
    """A top-``k`` cache of ``views`` views of ``num_records`` records (``teachers``: name
    -> joints) at ``uri``, with its manifest; the source a run would open."""
    compression = {"k": k, "shard_records": shard_records}
    store = CacheStore(uri)
    rng = np.random.default_rng(seed)
    shards = shard_layout(num_records, views, shard_records)
    for shard in shards:
        n = shard.stop - shard.start
        rows = {"record": np.arange(shard.start, shard.stop), "view": np.full(n, shard.view)}
        for name, joints in teachers.items():
            for axis, width in zip("xy", bins, strict=True):
                rows[f"{name}_{axis}_values"] = rng.standard_normal((n, joints, k), np.float32
                                                                    ).astype(np.float16)
                rows[f"{name}_{axis}_indices"] = rng.integers(0, width, (n, joints, k), np.uint16)
                rows[f"{name}_{axis}_rest"] = rng.random((n, joints), np.float32)
        store.write_shard(rows_to_table(rows, list(teachers), compression), shard.name)
    store.write_manifest(CacheManifest(
        teachers={name: {"joints": joints} for name, joints in teachers.items()},
        student_grid={"bins": list(bins)}, pipeline={"seed": seed}, records_sha256="fake",
        views=views, compression=compression,
        shards={s.name: s.stop - s.start for s in shards}))
    return CacheSource(uri, views, tuple(teachers.items()), tuple(shards), compression)


def fit_manifest(source: CacheSource, config, records, specs) -> None:
    """Rewrite a fake cache's manifest as the one ``config``'s run wants, so that
    :func:`open_cache` accepts it (``config.teachers``' files must exist)."""
    from dataclasses import replace  # noqa: PLC0415

    from unipose_ray.teacher_cache.source import wanted_manifest  # noqa: PLC0415

    store = CacheStore(source.uri)
    written = store.read_manifest()
    store.write_manifest(replace(wanted_manifest(config, records, specs), views=written.views,
                                 compression=written.compression, shards=written.shards))
