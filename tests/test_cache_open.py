"""Opening and reading a teacher-logit cache costs a fixed number of storage requests: one
listing checks every shard (not a request per shard: thousands on ``s3://``), and the
cached targets of a view are the same whoever reads them."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from unipose_ray.config import load_config
from unipose_ray.data.records import InstanceRecord, records_to_table
from unipose_ray.skeleton import UNIFIED
from unipose_ray.teacher_cache.counting import counting_cache_requests
from unipose_ray.teacher_cache.synthetic import fit_manifest, write_synthetic_cache
from unipose_ray.teacher_cache.format import CacheStore
from unipose_ray.teacher_cache.shared import ViewHub
from unipose_ray.teacher_cache.source import ViewTargets, open_cache

K = UNIFIED.num_keypoints


def _records(n: int):
    rng = np.random.default_rng(0)
    return records_to_table([InstanceRecord(
        f"/images/{i}.jpg", "coco", i, i, 640, 480, np.array([10, 20, 100, 200], np.float32),
        rng.uniform(0, 300, (K, 2)).astype(np.float32), np.ones(K, np.float32),
        np.ones(K, bool), None, 2e4) for i in range(n)])


@pytest.fixture
def run(tmp_path):
    """``(config, records, specs)`` of a run whose cache (12 shards of fake targets and a
    manifest that fits the run) is at ``config.teacher_cache.uri``."""
    teachers = []
    for teacher in load_config("demo").teachers:
        for kind in ("config", "checkpoint"):
            (tmp_path / f"{teacher.name}.{kind}").write_bytes(teacher.name.encode() + b"weights")
        teachers.append(replace(teacher, config=str(tmp_path / f"{teacher.name}.config"),
                                checkpoint=str(tmp_path / f"{teacher.name}.checkpoint")))
    config = load_config("demo")
    config = replace(config, teachers=tuple(teachers), teacher_cache=replace(
        config.teacher_cache, uri=str(tmp_path / "cache"), components=0, topk=8))
    specs = {t.name: SimpleNamespace(input_size=(96, 96)) for t in teachers}
    records = _records(40)
    source = write_synthetic_cache(config.teacher_cache.uri, 40, views=3, shard_records=10,
                              teachers={"coco": 17, "mpii": 16})
    fit_manifest(source, config, records, specs)
    return config, records, specs


def _old_shard_checks(store: CacheStore, names: list[str]) -> None:
    """What open_cache did before the listing: a request per shard."""
    for name in names:
        store.exists(name)


def test_open_cache_checks_every_shard_in_one_listing(run):
    config, records, specs = run
    with counting_cache_requests() as counts:
        source = open_cache(config, records, specs)
    assert len(source.shards) == 12
    # one listing and the manifest's read, however many shards
    assert counts.requests == {"get_file_info": 1, "open_input_stream": 1}
    with counting_cache_requests() as old:
        _old_shard_checks(CacheStore(source.uri), [s.name for s in source.shards])
    assert old.total == len(source.shards) > counts.total


def test_a_missing_shard_or_manifest_is_refused_as_before(run):
    config, records, specs = run
    source = open_cache(config, records, specs)
    uri = config.teacher_cache.uri
    os.remove(os.path.join(uri, source.shards[4].name))
    with open(os.path.join(uri, "unrelated.txt"), "w") as extra:  # other files are no shards
        extra.write("x")
    with pytest.raises(FileNotFoundError,
                       match=rf"lacks 1 of 12 shards \(first: {source.shards[4].name}\)"):
        open_cache(config, records, specs)
    os.remove(os.path.join(uri, "manifest.json"))
    with pytest.raises(FileNotFoundError, match="has no manifest.json: it was never built"):
        open_cache(config, records, specs)
    gone = replace(config, teacher_cache=replace(config.teacher_cache, uri=uri + "-never"))
    with pytest.raises(FileNotFoundError, match="has no manifest.json: it was never built"):
        open_cache(gone, records, specs)


class _LocalRay:
    """``ray.put`` as pickling (protocol 5, buffers out of band), for the hub without Ray."""

    @staticmethod
    def put(value):
        buffers = []
        data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        return data, buffers


def test_the_hub_reads_a_view_once_for_every_stage_and_gives_the_same_targets(run, monkeypatch):
    config, records, specs = run
    source = open_cache(config, records, specs)
    import ray

    monkeypatch.setattr(ray, "put", _LocalRay.put)
    hub = ViewHub(source, 40, keep=2)
    asked = (0, 0, 1, 1, 0, 2, 0)  # stages across epoch changes, in short
    with counting_cache_requests() as counts:
        got = [pickle.loads(data, buffers=buffers) for (data, buffers), in map(hub.view, asked)]
    # read: 0, 1, then 2 (0 was asked for after 1: kept); each view's shards once
    assert hub.views_read() == 3
    assert counts.requests["open_input_file"] == 3 * 4 * 2  # views x shards x opens a shard
    for view, shared in zip(asked, got, strict=True):
        assert shared.view == view
        for name, arrays in ViewTargets(source, view, 40).arrays.items():
            for key, array in arrays.items():
                np.testing.assert_array_equal(shared.arrays[name][key], array, strict=True)
