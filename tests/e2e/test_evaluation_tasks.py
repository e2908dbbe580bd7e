"""Evaluation on Ray tasks (``unipose_ray.workflows.evaluation``) gives the driver's metrics.

A released demo teacher (trained weights: its AP and PCKh are far from 0, so equal numbers
mean equal predictions) on the suite's tiny validation sets, split among two tasks of the
shared Ray, against ``evaluate_model`` in this process; then ``jobs/evaluate.py --workers``.
"""

from __future__ import annotations

import json
import math

import pytest
from helpers import REPO

from unipose_ray.evaluation.cross_dataset import EvalSet, eval_inputs, evaluate_model
from unipose_ray.models import build_from_config
from unipose_ray.workflows.evaluation import EvalWorkers, submit_evaluation

pytestmark = pytest.mark.ci

TEACHER = REPO / "released/demo/rtmpose-t_demo-coco_96x128"


@pytest.fixture(scope="module")
def sets(tiny_eval_sets) -> list[EvalSet]:
    return tiny_eval_sets


def _assert_equal(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == value or (math.isnan(value) and math.isnan(got[name])), name


def test_two_tasks_give_the_drivers_metrics(ray_cluster, sets):
    model = build_from_config(f"{TEACHER}.py", f"{TEACHER}.pth")
    expected = evaluate_model(model, "coco", model.spec.codec, sets, batch_size=4)
    assert expected["coco_AP"] > 0.1 and expected["mpii_PCKh"] > 10  # a model that finds people

    pending = submit_evaluation(model, "coco", model.spec.codec, eval_inputs(sets),
                                EvalWorkers(2, num_cpus=1), batch_size=4)
    assert len(pending.shards) == 2  # the boxes really were split
    _assert_equal(pending.result(), expected)


def test_the_job_on_ray_tasks_writes_what_it_writes_in_process(ray_cluster, tiny_dataset,
                                                                 load_job, tmp_path):
    d = tiny_dataset
    argv = ["--model-config", f"{TEACHER}.py", "--checkpoint", f"{TEACHER}.pth",
            "--coco-ann", str(d.coco_val_ann), "--coco-img-dir", str(d.coco_val_images),
            "--coco-unified-ann", str(d.coco_val_unified), "--mpii-ann", str(d.mpii_val_ann),
            "--mpii-img-dir", str(d.mpii_val_images), "--batch-size", "4", "--device", "cpu"]
    job = load_job("evaluate")
    job.main([*argv, "--output", str(tmp_path / "here.json")])
    job.main([*argv, "--workers", "2", "--output", str(tmp_path / "ray.json")])
    here = json.loads((tmp_path / "here.json").read_text())
    assert here["coco_AP"] > 10  # written in %
    assert json.loads((tmp_path / "ray.json").read_text()) == here
