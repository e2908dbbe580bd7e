"""The teacher-logit cache end to end on the shared Ray, with the released demo teachers
(MMPose config + checkpoint files) on the tiny dataset, two caches: top-8 (built here by
``jobs/build_cache.py`` as a user runs it) and the basis format (the shared
``basis_cache``). The Ray Data build writes every shard and resumes an interrupted one; the
training stream's replayed crops, fed to the live teachers, give the cached targets (both
formats); a cache that does not fit the run, or whose basis is gone, is refused, naming
what is wrong. (Training from a cache without a teacher: the sweep, ``test_sweep.py``.)
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import in_repo

from unipose_ray.config import load_config
from unipose_ray.data.pipeline import PipelineConfig
from unipose_ray.data.records import read_records
from unipose_ray.data.transforms import size_key
from unipose_ray.kd.topk import TopK
from unipose_ray.teacher_cache.build import build_cache
from unipose_ray.teacher_cache.format import CacheStore
from unipose_ray.teacher_cache.source import ViewTargets, batch_targets, open_cache, shard_layout
from unipose_ray.teachers.service import StudentGrid, TeacherService
from unipose_ray.train.data import CropStage, StepPlan, StreamSpec
from unipose_ray.workflows.training import check_teachers, prepare_data, resolve_teachers

pytestmark = pytest.mark.ci


@pytest.fixture(scope="module")
def topk(ray_cluster, cache_overrides, load_job, tmp_path_factory):
    """The top-8 cache of two views, built by ``jobs/build_cache.py`` (in this process, on
    the shared Ray): ``(config, data, specs, records path, printed, argv)``."""
    out = tmp_path_factory.mktemp("topk")
    argv = ["--config", "demo", "--views", "2", "--topk", "8", "--out", str(out / "cache"),
            "--output-dir", str(out), *cache_overrides]
    printed = io.StringIO()
    with in_repo(), contextlib.redirect_stdout(printed):
        load_job("build_cache").main(argv)
        config = load_config("demo", [*cache_overrides, "teacher_cache.views=2",
                                      "teacher_cache.components=0", "teacher_cache.topk=8",
                                      f"teacher_cache.uri={out / 'cache'}"])
        config, data = prepare_data(config, out)
        config = resolve_teachers(config)
    specs = check_teachers(config)
    records_path = data.train_records(sorted(data.train), out / "records")
    return config, data, specs, records_path, printed.getvalue(), argv


def _live_teachers(config, specs, records_path, source):
    """``(batch, teacher, live logits)`` of the training stream's first and last batch of 8
    (epoch 0 and 1: views 0 and 1), each teacher run live on the batch's replayed crops."""
    records = read_records(records_path)
    sizes = tuple(sorted({tuple(s.input_size) for s in specs.values()}))
    stream = StreamSpec(records_path, PipelineConfig(config.student.codec, config.augment,
                                                     config.run.seed),
                        sizes, cache=source)
    n = records.num_rows
    plan = StepPlan(n, 8, total_steps=2 * (n // 8))  # both epochs: views 0 and 1
    stage = CropStage(stream, plan)
    grid = StudentGrid(config.student.codec.num_bins, config.student.codec.split_ratio)
    for ids in (np.arange(8), np.arange(plan.num_rows - 8, plan.num_rows)):
        batch = stage({"id": ids})
        assert set(batch["epoch"]) == ({0} if ids[0] == 0 else {1})
        for teacher in config.teachers:
            key = size_key(tuple(specs[teacher.name].input_size))
            live = TeacherService(teacher, grid, device="cpu").logits(
                batch[f"teacher_image_{key}"], batch[f"teacher_a_{key}"],
                batch[f"teacher_b_{key}"])
            yield batch, teacher, live


def test_the_build_job_takes_its_flags_and_a_second_run_finds_the_cache_complete(
        topk, load_job, capsys):
    config, _, _, records_path, printed, argv = topk
    n = read_records(records_path).num_rows
    manifest = CacheStore(config.teacher_cache.uri).read_manifest()
    assert manifest.views == 2 and manifest.compression["k"] == 8  # --views, --topk
    done = re.search(r"\[cache\] done: (\d+) instance-views .*, (\d+) teacher passes\)", printed)
    assert done and (int(done[1]), int(done[2])) == (2 * n, 2 * 2 * n), printed[-2000:]
    assert "teacher mass outside the kept bins" in printed
    with in_repo():
        load_job("build_cache").main(argv)
    assert f"{config.teacher_cache.uri} is complete" in capsys.readouterr().out


def test_the_build_writes_every_shard_and_resumes_an_interrupted_one(topk):
    config, _, specs, records_path, _, _ = topk
    n = read_records(records_path).num_rows
    layout = shard_layout(n, 2, 10)
    store = CacheStore(config.teacher_cache.uri)
    assert sorted(store.read_manifest().shards) == sorted(s.name for s in layout)

    # an interrupted build: one shard never written, a half-written file left behind
    victim = layout[-2]
    before = {s.name: store.read_shard(s.name) for s in layout}
    stamps = {s.name: os.stat(store.path(s.name)).st_mtime_ns for s in layout}
    os.remove(store.path(victim.name))
    (Path(config.teacher_cache.uri) / f".{victim.name}.partial").write_bytes(b"PAR1 half")
    again = build_cache(config, records_path, specs)
    assert again.computed == victim.stop - victim.start
    for shard in layout:
        table = store.read_shard(shard.name)
        assert table.equals(before[shard.name]), shard.name
        if shard != victim:  # finished shards are kept as they were
            assert os.stat(store.path(shard.name)).st_mtime_ns == stamps[shard.name]
    assert build_cache(config, records_path, specs).computed == 0


def test_replayed_crops_fed_to_the_live_teachers_give_the_cached_targets(topk):
    config, _, specs, records_path, _, _ = topk
    source = open_cache(config, read_records(records_path), specs)
    beta = config.loss.beta
    for batch, teacher, live in _live_teachers(config, specs, records_path, source):
        for axis, logits in zip("xy", live, strict=True):
            probs = torch.softmax(torch.from_numpy(logits) * beta, dim=-1)
            values = torch.from_numpy(batch[f"kd_{teacher.name}_{axis}_values"]).float()
            indices = torch.from_numpy(batch[f"kd_{teacher.name}_{axis}_indices"]
                                       .astype(np.int64))
            rest = torch.from_numpy(batch[f"kd_{teacher.name}_{axis}_rest"])
            # the cached bins hold the live teacher's probabilities (fp16) ...
            torch.testing.assert_close(probs.gather(-1, indices), values,
                                       atol=2e-3, rtol=2e-3)
            # ... they are its largest, and the rest is the mass outside them
            kth = probs.topk(values.shape[-1], dim=-1).values[..., -1]
            assert (values.min(-1).values >= kth - 2e-3).all()
            torch.testing.assert_close(1 - probs.gather(-1, indices).sum(-1), rest,
                                       atol=3e-3, rtol=0)


def test_the_basis_cache_decodes_to_the_live_teachers_logits(basis_cache):
    config, _, specs, records_path, report, _ = basis_cache
    records = read_records(records_path)
    source = open_cache(config, records, specs)
    assert source.basis and source.compression["components"] == 512
    bases = source.load_bases()
    # every instance-view was a calibration sample: the basis holds them all
    assert {b.num_components for b in bases.values()} == {2 * records.num_rows}
    assert report.computed == 2 * records.num_rows
    # each teacher: every instance-view, and each once more to fit its basis
    assert report.teacher_passes == 2 * (2 * records.num_rows + 2 * records.num_rows)
    grid = StudentGrid(config.student.codec.num_bins, config.student.codec.split_ratio)
    for batch, teacher, live in _live_teachers(config, specs, records_path, source):
        key = size_key(tuple(specs[teacher.name].input_size))
        assert np.array_equal(batch[f"kd_{teacher.name}_a"], batch[f"teacher_a_{key}"])
        cached = batch_targets(batch, teacher.name, grid, bases[teacher.name])
        coef = torch.from_numpy(batch[f"kd_{teacher.name}_coef"]).float()
        # fp16 coefficients: each off by at most |c| 2^-11
        bound = float(torch.einsum("bkm,kmd->bkd", coef.abs() * 2.0 ** -11,
                                   bases[teacher.name].components.abs()).amax()) + 1e-3
        for got, want in zip(cached, live, strict=True):
            inside = torch.from_numpy(want > -1e3)
            assert torch.equal(inside, got > -1e3)
            assert (got[inside] - torch.from_numpy(want)[inside]).abs().max() <= bound


def test_a_basis_cache_without_its_basis_is_refused(basis_cache, tmp_path):
    config, _, specs, records_path, _, _ = basis_cache
    copy = tmp_path / "copy"
    shutil.copytree(config.teacher_cache.uri, copy)
    at_copy = replace(config, teacher_cache=replace(config.teacher_cache, uri=str(copy)))
    os.remove(copy / "basis-mpii.npz")
    with pytest.raises(FileNotFoundError, match=r"lacks 1 of .*first: basis-mpii\.npz"):
        open_cache(at_copy, read_records(records_path), specs)
    # the build does not re-fit a basis under shards coded in the old one
    with pytest.raises(ValueError, match="shards hold coefficients in basis-mpii.npz"):
        build_cache(at_copy, records_path, specs)


def test_a_cache_that_does_not_fit_the_run_is_refused(topk, tmp_path):
    config, _, specs, records_path, _, _ = topk
    records = read_records(records_path)

    def refused(changed, match, error=ValueError):
        with pytest.raises(error, match=match):
            open_cache(changed, records, specs)

    refused(replace(config, augment=replace(config.augment, flip_prob=0.0)),
            r"pipeline\.augment\.flip_prob: cache 0\.5, run 0\.0")
    refused(replace(config, run=replace(config.run, seed=7)), r"pipeline\.seed")
    refused(replace(config, loss=replace(config.loss, beta=5.0)), r"student_grid\.beta")
    codec = replace(config.student.codec, input_size=(48, 64))
    refused(replace(config, student=replace(config.student, codec=codec)),
            r"student_grid\.bins.*\n.*student_grid\.input_size")
    # other teacher weights: a copy of the checkpoint with one byte changed
    teacher = config.teachers[0]
    other = tmp_path / "other.pth"
    shutil.copyfile(teacher.checkpoint, other)
    with open(other, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    changed = replace(config, teachers=(replace(teacher, checkpoint=str(other)),
                                        *config.teachers[1:]))
    refused(changed, r"teachers\.coco\.checkpoint_sha256")
    # other records
    with pytest.raises(ValueError, match="records_sha256"):
        open_cache(config, records.slice(0, records.num_rows - 1), specs)

    # missing and corrupt shards, and a folder never built
    copy = tmp_path / "copy"
    shutil.copytree(config.teacher_cache.uri, copy)
    at_copy = replace(config, teacher_cache=replace(config.teacher_cache, uri=str(copy)))
    source = open_cache(at_copy, records, specs)
    (copy / source.shards[1].name).write_bytes(b"PAR1 truncated")
    with pytest.raises(ValueError, match=f"cache shard .*{source.shards[1].name} is corrupt"):
        ViewTargets(source, 0, records.num_rows)
    os.remove(copy / source.shards[0].name)
    refused(at_copy, rf"lacks 1 of {len(source.shards)} shards \(first: {source.shards[0].name}\)",
            FileNotFoundError)
    empty = replace(config, teacher_cache=replace(config.teacher_cache, uri=str(tmp_path / "e")))
    refused(empty, "has no manifest.json: it was never built", FileNotFoundError)


def test_cached_targets_load_as_topk_pairs(topk):
    config, _, specs, records_path, _, _ = topk
    records = read_records(records_path)
    source = open_cache(config, records, specs)
    view = ViewTargets(source, 1, records.num_rows)
    rows = [view.columns(i) for i in (0, 5)]
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    grid = StudentGrid(config.student.codec.num_bins, config.student.codec.split_ratio)
    x, y = batch_targets(batch, "mpii", grid)
    assert isinstance(x, TopK) and x.values.shape == (2, 16, config.teacher_cache.topk)
    assert (x.bins, y.bins) == config.student.codec.num_bins
