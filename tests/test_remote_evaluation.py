"""``unipose_ray.workflows.evaluation`` without Ray: the shards, their predictions and the
resources each model's tasks take (the Ray path itself: ``tests/e2e/test_evaluation_tasks.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unipose_ray.config import RunConfig, TeacherConfig
from unipose_ray.evaluation.cross_dataset import EvalSet, eval_inputs, evaluate_model
from unipose_ray.evaluation.topdown import predict
from unipose_ray.models import build_rtmpose
from unipose_ray.skeleton import UNIFIED
from unipose_ray.workflows.evaluation import (
    EvalWorkers,
    concat_predictions,
    predict_shard,
    shard_bounds,
    student_workers,
    submit_evaluation,
    teacher_workers,
)


@pytest.mark.parametrize(("n", "shards", "batch"), [(100, 2, 32), (100, 3, 8), (5, 4, 2),
                                                    (3, 4, 8), (0, 2, 8), (64, 2, 32)])
def test_shards_are_contiguous_runs_of_whole_batches(n, shards, batch):
    bounds = shard_bounds(n, shards, batch)
    assert len(bounds) == shards
    assert bounds[0][0] == 0 or n == 0
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(n))  # in order, each box once
    for start, stop in bounds:
        assert start % batch == 0 or start == n  # the driver's batch boundaries
    sizes = [-(-(stop - start) // batch) for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1  # as even as whole batches allow


@pytest.fixture(scope="module")
def sets(tiny_eval_sets) -> list[EvalSet]:
    return tiny_eval_sets


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_rtmpose("t", UNIFIED.num_keypoints, input_size=(64, 96), sigma=(1.63, 2.12))


def test_sharded_predictions_equal_the_whole_run(model, sets):
    """What the tasks compute, shard by shard in this process, is bit-identical to one
    pass over each set (the same batches)."""
    inputs, batch = eval_inputs(sets), 2
    bounds = [shard_bounds(len(s.boxes), 3, batch) for s in inputs]
    parts = [predict_shard(model, "unified", model.spec.codec,
                           [s.boxes[b[i][0]:b[i][1]] for s, b in zip(inputs, bounds, strict=True)],
                           True, batch, False, torch.get_num_threads()) for i in range(3)]
    for k, s in enumerate(inputs):
        whole = predict(model, s.boxes, "unified", model.spec.codec, True, batch)
        sharded = concat_predictions([p[k] for p in parts])
        for field in ("keypoints", "scores", "areas"):
            np.testing.assert_array_equal(getattr(sharded, field), getattr(whole, field))


def test_no_workers_evaluates_on_the_driver_as_evaluate_model(model, sets):
    expected = evaluate_model(model, "unified", model.spec.codec, sets, batch_size=4)
    pending = submit_evaluation(model, "unified", model.spec.codec, eval_inputs(sets),
                                EvalWorkers(0), batch_size=4)
    got = pending.result()
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == value or (math.isnan(value) and math.isnan(got[name])), name


def test_tasks_take_the_resources_the_model_runs_with():
    teacher = TeacherConfig(name="coco", dataset="coco", num_cpus=2, num_gpus=0.5,
                            resources={"teacher": 1})
    assert teacher_workers(teacher, 3) == EvalWorkers(3, 2, 0.5, {"teacher": 1})
    run = RunConfig(eval_workers=4, use_gpu=True, cpus_per_worker=3,
                    worker_resources={"student": 1})
    assert student_workers(run) == EvalWorkers(4, 3, 1.0, {"student": 1})
    assert student_workers(RunConfig(eval_workers=2)).options() == {
        "num_cpus": 1.0, "num_gpus": 0.0, "resources": None}


def test_negative_eval_workers_is_refused():
    with pytest.raises(ValueError, match="run.eval_workers must be >= 0"):
        RunConfig(eval_workers=-1)
