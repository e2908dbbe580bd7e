"""The crop stage of the training stream (run here as a plain callable, without Ray)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers import DEMO_CODEC

from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset
from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.records import RecordTable, read_records, table_to_records, write_records
from unipose_ray.data.transforms import AugmentConfig
from unipose_ray.train.data import (
    DATASET_CODES,
    CropStage,
    IdleBackoff,
    StepPlan,
    StreamSpec,
    epoch_order,
    inline_batches,
)

CODEC = DEMO_CODEC
TEACHER_SIZE = (64, 64)


@pytest.fixture(scope="module")
def spec(real_samples, tmp_path_factory):
    records = (read_coco(real_samples / "coco" / "test_coco.json", real_samples / "coco")
               + read_mpii(real_samples / "mpii" / "test_mpii.json", real_samples / "mpii"))
    path = write_records(records, tmp_path_factory.mktemp("stream") / "train.parquet")
    return StreamSpec(str(path), PipelineConfig(CODEC, AugmentConfig(), seed=3), (TEACHER_SIZE,))


def test_rows_replay_the_seeded_samples_of_each_epoch(spec):
    dataset = TopdownDataset(read_records(spec.records_path), spec.pipeline)
    n = len(dataset)
    rows = np.arange(n - 2, n + 3)  # crosses from epoch 0 into epoch 1
    out = CropStage(spec)({"id": rows})
    for i, row in enumerate(rows):
        epoch = int(row) // n
        index = int(epoch_order(n, spec.pipeline.seed, epoch)[row % n])
        expected = dataset.sample(index, epoch)
        assert (out["epoch"][i], out["index"][i]) == (epoch, index)
        assert out["dataset"][i] == DATASET_CODES[dataset.records[index].dataset]
        np.testing.assert_array_equal(out["image"][i], expected.image)
        np.testing.assert_array_equal(out["target_x"][i], expected.target_x)
        np.testing.assert_array_equal(out["weights"][i], expected.weights)
    assert out["image"].shape == (len(rows), 3, 96, 64)


def test_teacher_crops_cover_the_same_box_at_the_teacher_size(spec):
    dataset = TopdownDataset(read_records(spec.records_path), spec.pipeline)
    out = CropStage(spec)({"id": np.arange(4)})
    assert out["teacher_image_64x64"].shape == (4, 3, 64, 64)
    for i in range(4):
        index, epoch = int(out["index"][i]), int(out["epoch"][i])
        view = dataset.teacher_view(index, dataset.params(index, epoch), TEACHER_SIZE)
        np.testing.assert_array_equal(out["teacher_image_64x64"][i], view.image)
        np.testing.assert_allclose(out["teacher_a_64x64"][i], view.a, rtol=1e-6)
        np.testing.assert_allclose(out["teacher_b_64x64"][i], view.b, rtol=1e-6, atol=1e-5)


def test_idle_backoff_sleeps_only_after_steps_that_returned_at_once(monkeypatch):
    import unipose_ray.train.data as data

    class Clock:  # the module's time: read and slept on here, not on a loaded machine's
        def __init__(self):
            self.now, self.slept = 100.0, []

        def perf_counter(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            self.slept.append(seconds)
            self.now += seconds

    clock = Clock()
    monkeypatch.setattr(data, "time", clock)
    backoff = IdleBackoff()
    backoff.on_execution_step(None)  # a step right after construction counts as idle
    assert clock.slept == [IdleBackoff.SLEEP_S]
    clock.now += IdleBackoff.QUICK_S / 2  # another step that found nothing to do
    backoff.on_execution_step(None)
    assert clock.slept == [IdleBackoff.SLEEP_S] * 2
    clock.now += 0.05  # a step that waited (as ray.wait does while crop tasks run)
    backoff.on_execution_step(None)
    assert clock.slept == [IdleBackoff.SLEEP_S] * 2  # left alone


def _plan_rows(plan: StepPlan) -> np.ndarray:
    """``(steps, batch)`` rows a worker trains, from its stream's ids."""
    return plan.rows(np.arange(plan.num_rows)).reshape(-1, plan.batch_size)


def test_workers_split_every_epoch_into_disjoint_batches():
    n, batch, world, steps = 50, 4, 3, 12  # 4 steps an epoch; 2 rows an epoch left out
    plans = [StepPlan(n, batch, world, rank, 0, steps) for rank in range(world)]
    rows = np.stack([_plan_rows(p) for p in plans], axis=1)  # (steps, world, batch)
    assert plans[0].steps_per_epoch == 4
    for step in range(steps):
        epoch = step // 4
        flat = rows[step].ravel()
        assert len(set(flat)) == world * batch
        assert ((flat // n) == epoch).all()  # a step never crosses into the next epoch
    for epoch in range(3):
        seen = rows[4 * epoch:4 * epoch + 4].ravel() % n
        assert len(set(seen)) == 48  # each sample at most once an epoch


def test_a_resumed_stream_continues_where_the_stopped_one_was():
    n, batch, world = 50, 4, 2
    for rank in range(world):
        whole = _plan_rows(StepPlan(n, batch, world, rank, 0, 20))
        resumed = StepPlan(n, batch, world, rank, 7, 20)
        np.testing.assert_array_equal(_plan_rows(resumed), whole[7:])
        assert resumed.steps(np.arange(resumed.num_rows))[::batch].tolist() == list(range(7, 20))


def test_the_crop_stage_marks_each_row_with_its_step(spec):
    n = len(TopdownDataset(read_records(spec.records_path), spec.pipeline))
    plan = StepPlan(n, 2, 1, 0, start_step=1, total_steps=3)
    out = CropStage(spec, plan)({"id": np.arange(plan.num_rows)})
    assert out["step"].tolist() == [1, 1, 2, 2]
    rows = plan.rows(np.arange(plan.num_rows))
    assert out["index"].tolist() == [int(epoch_order(n, spec.pipeline.seed, r // n)[r % n])
                                     for r in rows]


def test_the_inline_stream_gives_the_crop_stages_batches_in_step_order(spec):
    n = len(TopdownDataset(read_records(spec.records_path), spec.pipeline))
    plan = StepPlan(n, 3, 1, 0, start_step=2, total_steps=2 + 2 * n // 3)  # two epochs on
    whole = CropStage(spec, plan)({"id": np.arange(plan.num_rows)})
    batches = list(inline_batches(spec, plan, prefetch=1))
    assert [b["step"].tolist() for b in batches] == [[s] * 3 for s in range(2, plan.total_steps)]
    for name, column in whole.items():
        np.testing.assert_array_equal(np.concatenate([b[name] for b in batches]), column,
                                      strict=True)


def test_the_inline_stream_raises_the_crop_failure_and_stops_when_closed(spec, real_samples,
                                                                         tmp_path):
    import threading

    records, bad_spec, _ = _coco_with_a_bad_image(real_samples, tmp_path)
    with pytest.raises(FileNotFoundError, match="data.skip_bad_images=true"):
        list(inline_batches(bad_spec, StepPlan(len(records), len(records), total_steps=1)))

    def crop_threads_stop() -> bool:
        for thread in [t for t in threading.enumerate() if t.name == "crop-stage"]:
            thread.join(timeout=120)  # a stopped stream's thread ends; a leaked one never
        return not any(t.name == "crop-stage" for t in threading.enumerate())

    n = len(TopdownDataset(read_records(spec.records_path), spec.pipeline))
    stream = inline_batches(spec, StepPlan(n, 2, total_steps=50), prefetch=1)
    next(stream)
    stream.close()
    assert crop_threads_stop()
    stream = inline_batches(spec, StepPlan(n, 2, total_steps=50), prefetch=1)
    del stream  # dropped before its first batch
    assert crop_threads_stop()


def _coco_with_a_bad_image(real_samples, tmp_path) -> tuple[list, StreamSpec, str]:
    """The real COCO samples in a copy whose first image was corrupted after the records
    were written: ``(records, spec, bad image path)``."""
    import shutil

    folder = tmp_path / "coco"
    shutil.copytree(real_samples / "coco", folder)
    records = read_coco(folder / "test_coco.json", folder)
    path = write_records(records, tmp_path / "train.parquet")
    bad = records[0].image_path
    Path(bad).write_bytes(b"not a jpeg")
    return records, StreamSpec(str(path), PipelineConfig(CODEC, AugmentConfig.none(), seed=0)), bad


def test_an_unreadable_image_is_named_or_replaced_by_the_next_record(real_samples, tmp_path):
    import dataclasses

    records, spec, bad = _coco_with_a_bad_image(real_samples, tmp_path)
    plan = StepPlan(len(records), len(records), total_steps=1)
    with pytest.raises(FileNotFoundError, match=f"{re.escape(bad)}.*data.skip_bad_images=true"):
        CropStage(spec, plan)({"id": np.arange(plan.num_rows)})

    skip = dataclasses.replace(spec, skip_bad_images=True)
    out = CropStage(skip, plan)({"id": np.arange(plan.num_rows)})
    # each record of the bad image (one per person in it) was replaced once this epoch
    assert out["substituted"].sum() == sum(r.image_path == bad for r in records) > 0
    assert all(records[i].image_path != bad for i in out["index"])


def test_the_record_table_gives_the_records_of_the_file_and_pickles_its_buffers_apart(spec):
    import pickle

    table = read_records(spec.records_path)
    # two chunks, the second sliced: offsets into the shared string buffer must hold
    chunked = pa.concat_tables([table.slice(0, 3), table.slice(3)])
    records = RecordTable.from_arrow(chunked)
    assert len(records) == table.num_rows and records.datasets == ("coco", "mpii")
    expected = table_to_records(table)
    for got, want in zip(records, expected, strict=True):
        for name in want.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), strict=True)
    assert records[-1].instance_id == expected[-1].instance_id
    with pytest.raises(IndexError):
        records[len(records)]
    buffers = []  # what ray.put does: each array out of band, mapped by ray.get
    data = pickle.dumps(records, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == len(records.columns) and len(data) < 2000
    back = pickle.loads(data, buffers=buffers)
    assert np.shares_memory(back.columns["keypoints"], np.frombuffer(buffers[
        list(records.columns).index("keypoints")], np.uint8))


def test_a_stage_on_the_record_table_gives_the_batches_of_one_on_the_record_list(spec):
    plan = StepPlan(len(read_records(spec.records_path)), 3, 1, 0, start_step=0, total_steps=6)
    ids = {"id": np.arange(plan.num_rows)}  # two epochs and more
    on_table = CropStage(spec, plan)
    assert isinstance(on_table.dataset.records, RecordTable)
    on_list = CropStage(spec, plan)  # the stage as it was: every record built up front
    on_list.dataset = TopdownDataset(read_records(spec.records_path), spec.pipeline)
    assert isinstance(on_list.dataset.records, list)
    want = on_list(ids)
    got = on_table(ids)
    assert set(got) == set(want)
    for name, column in want.items():
        np.testing.assert_array_equal(got[name], column, strict=True, err_msg=name)
