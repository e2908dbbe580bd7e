"""The crop stage of the training stream (run here as a plain callable, without Ray)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset
from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.records import read_records, write_records
from unipose_ray.data.transforms import AugmentConfig, CodecConfig
from unipose_ray.train.data import DATASET_CODES, CropStage, IdleBackoff, StreamSpec, epoch_order

CODEC = CodecConfig((64, 96), (1.63, 2.12), 2.0)
TEACHER_SIZE = (64, 64)


@pytest.fixture(scope="module")
def spec(real_samples, tmp_path_factory):
    records = (read_coco(real_samples / "coco" / "test_coco.json", real_samples / "coco")
               + read_mpii(real_samples / "mpii" / "test_mpii.json", real_samples / "mpii"))
    path = write_records(records, tmp_path_factory.mktemp("stream") / "train.parquet")
    return StreamSpec(str(path), PipelineConfig(CODEC, AugmentConfig(), seed=3), (TEACHER_SIZE,),
                      epochs=2)


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


def test_idle_backoff_sleeps_only_after_steps_that_returned_at_once():
    backoff = IdleBackoff()
    backoff.on_execution_step(None)  # a step right after construction counts as idle
    start = time.perf_counter()
    backoff.on_execution_step(None)
    assert time.perf_counter() - start >= IdleBackoff.SLEEP_S

    time.sleep(0.05)  # a step that waited (as ray.wait does while crop tasks run)
    start = time.perf_counter()
    backoff.on_execution_step(None)
    assert time.perf_counter() - start < IdleBackoff.SLEEP_S
