"""The cache build's teacher stage: a crop's targets do not depend on the batch it came in
(Ray Data cuts batches wherever its blocks fall, and a resumed build must write the bytes
an uninterrupted one wrote). CPU kernels round batches of other shapes differently (by
~1e-7, which flips an fp16 value now and then), so the teacher must only ever see full
batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unipose_ray.config import load_config
from unipose_ray.data.transforms import size_key
from unipose_ray.teacher_cache.build import TeacherTargets
from unipose_ray.teachers.service import StudentGrid
from unipose_ray.workflows.training import check_teachers, resolve_teachers


@pytest.mark.parametrize("name", ["coco", "mpii"])
def test_a_crops_targets_are_the_same_alone_and_in_a_full_batch(name, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the preset's released/ paths
    config = resolve_teachers(load_config("demo"))
    teacher = next(t for t in config.teachers if t.name == name)
    size = tuple(check_teachers(config)[name].input_size)
    codec = config.student.codec
    stage = TeacherTargets(teacher, StudentGrid(codec.num_bins, codec.split_ratio), size,
                           k=8, beta=config.loss.beta, basis=None, batch_size=8)
    rng = np.random.default_rng(0)
    key = size_key(size)
    full = {f"image_{key}": rng.integers(0, 256, (8, 3, size[1], size[0]), dtype=np.uint8),
            f"a_{key}": rng.uniform(0.9, 1.1, (8, 2)).astype(np.float32),
            f"b_{key}": rng.uniform(-2, 2, (8, 2)).astype(np.float32)}
    shapes = []
    raw_logits = stage.service.raw_logits
    stage.service.raw_logits = lambda images: shapes.append(images.shape) or raw_logits(images)
    whole = stage(dict(full))
    for rows in (slice(0, 1), slice(5, 8)):  # alone, and the short last batch of a block
        part = stage({column: values[rows] for column, values in full.items()})
        for column in (c for c in whole if c.startswith(f"{name}_")):
            np.testing.assert_array_equal(part[column], whole[column][rows], err_msg=column)
    assert [shape[0] for shape in shapes] == [8, 8, 8]
