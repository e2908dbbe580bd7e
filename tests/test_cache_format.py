"""The teacher-logit cache's files: shards round-trip, a corrupt one is named, a manifest
that does not fit the run names the field."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from unipose_ray.kd.topk import compress
from unipose_ray.teacher_cache.format import (
    CacheManifest,
    CacheStore,
    mismatches,
    table_columns,
    targets_to_table,
)
from unipose_ray.teacher_cache.source import batch_targets
from unipose_ray.teachers.service import StudentGrid


def _manifest() -> CacheManifest:
    return CacheManifest(
        teachers={"coco": {"config_sha256": "a" * 64, "checkpoint_sha256": "b" * 64,
                           "dataset": "coco", "num_keypoints": 17}},
        student_grid={"input_size": [64, 96], "bins": [128, 192], "split_ratio": 2.0},
        pipeline={"seed": 0, "flip_prob": 0.5}, records_sha256="c" * 64, views=4,
        compression={"k": 8, "beta": 10.0})


def test_a_shard_round_trips_the_compressed_targets(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = compress(torch.randn(6, 17, 128, generator=g), 10.0, 8)
    y = compress(torch.randn(6, 17, 192, generator=g), 10.0, 8)
    table = targets_to_table(np.arange(6), np.full(6, 2), "coco", x, y)
    store = CacheStore(str(tmp_path / "cache"))
    store.write_shard(table, "shard_00000.parquet")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["shard_00000.parquet"]
    # read back as a run does: a shard's columns, a batch's kd_<teacher>_* columns, targets
    columns = table_columns(store.read_shard("shard_00000.parquet"), 17, {"k": 8})
    batch = {f"kd_coco_{name}": array.copy() for name, array in columns.items()}  # writable
    rx, ry = batch_targets(batch, "coco", StudentGrid((128, 192), 2.0))
    for got, want in ((rx, x), (ry, y)):
        assert torch.equal(got.values, want.values) and torch.equal(got.indices, want.indices)
        torch.testing.assert_close(got.rest, want.rest)
        assert got.bins == want.bins
    # fp16 values + uint16 indices: 4 bytes a kept bin
    assert table.column("x_values").type.value_type.bit_width == 16


def test_a_corrupt_shard_is_named(tmp_path):
    (tmp_path / "shard_00003.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(ValueError, match="cache shard .*shard_00003.parquet is corrupt"):
        CacheStore(str(tmp_path)).read_shard("shard_00003.parquet")


def test_the_manifest_round_trips_through_a_file_uri(tmp_path):
    store = CacheStore(f"file://{tmp_path}/cache")
    assert store.read_manifest() is None
    store.write_manifest(_manifest())
    assert CacheStore(str(tmp_path / "cache")).read_manifest() == _manifest()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["manifest.json"]


def test_a_manifest_that_does_not_fit_names_each_field():
    cached = _manifest()
    assert mismatches(cached, replace(cached, shards={"s.parquet": 3})) == []
    other = replace(cached, views=2, student_grid={**cached.student_grid, "bins": [96, 128]},
                    teachers={"coco": {**cached.teachers["coco"], "checkpoint_sha256": "d" * 64}})
    found = mismatches(cached, other)
    assert [f.split(":")[0] for f in found] == ["student_grid.bins",
                                                "teachers.coco.checkpoint_sha256", "views"]
    assert CacheManifest.from_json(cached.to_json()) == cached
