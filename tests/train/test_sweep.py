"""A real Ray Tune sweep on the teacher-logit cache, tracked by a real ``mlflow server``.

One small sweep runs once for the module (its own local Ray, with the dashboard that
``ray.util.state`` reads): three trials one at a time, the first with a working learning
rate and two that cannot learn (lr 1e-9), so ASHA stops those two at their first
validation whatever the machine. The tests then read what a user reads: the summary files,
the cluster's state after the early stops, the MLflow parent and child runs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from ray import tune
from tiny_sweep import TINY

from unipose_ray.config import ConfigError, load_config
from unipose_ray.data.records import read_records
from unipose_ray.tracking import PARENT_TAG

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
class ClusterWatch(tune.Callback):
    """Notes, when each trial starts, the placement groups and actors still alive."""

    def __init__(self):
        self.at_start: dict[str, dict] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.at_start[trial.trial_id] = alive()


def alive() -> dict:
    from ray.util.state import list_actors, list_placement_groups

    return {"placement_groups": [p.placement_group_id for p in list_placement_groups(
                filters=[("state", "!=", "REMOVED")], raise_on_missing_output=False)],
            "actors": sorted(a.class_name for a in list_actors(
                filters=[("state", "=", "ALIVE")], raise_on_missing_output=False))}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mlflow_server):
    import ray

    from unipose_ray.distributed import start_local_ray
    from unipose_ray.sweep_run import run_sweep

    uri, _ = mlflow_server
    out = tmp_path_factory.mktemp("sweep")
    start_local_ray(num_cpus=8, include_dashboard=True, log_to_driver=False)
    watch = ClusterWatch()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(REPO)  # the preset's released/ paths
            config = load_config("demo_sweep", TINY + [f"tracking.tracking_uri={uri}"])
            rows = run_sweep(config, out, callbacks=(watch,))
        yield config, rows, out, uri, watch, alive()
    finally:
        ray.shutdown()


def test_the_summary_ranks_every_trial_and_marks_the_stopped_ones(sweep):
    config, rows, out, _, _, _ = sweep
    assert json.loads((out / "sweep_results.json").read_text()) == rows
    assert (out / "sweep_results.csv").read_text().count("\n") == 1 + len(rows)
    assert len(rows) == 3
    scores = [row["val/score"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    best, *stopped = rows
    assert best["lr"] == 0.002 and not best["stopped_early"] and best["validations"] == 2
    for row in stopped:  # the two that cannot learn, stopped at their first validation
        assert row["lr"] == 1e-9 and row["stopped_early"] and row["validations"] == 1
        assert row["steps"] == best["steps"] // 2 and row["val/score"] < best["val/score"]
    for row in rows:
        assert Path(row["checkpoint"]).is_file() and row["error"] == ""
        assert (row["w1_gt"], row["w_coco"], row["w_mpii"]) == (0.45, 0.25, 0.45)
    assert (out / "sweep_weights.png").stat().st_size > 10_000


def test_the_best_checkpoint_evaluates_to_its_validation_score(sweep):
    """The exported ``best.pth`` of the best trial, evaluated as ``jobs/evaluate.py`` does,
    gives back the score its trial validated (same model, same sets)."""
    from unipose_ray.models import build_from_config
    from unipose_ray.workflow import prepare_data

    config, rows, out, _, _, _ = sweep
    table = (out / "best_trial.txt").read_text()
    assert f"best_{rows[0]['trial']}" in table
    run_dir = Path(rows[0]["checkpoint"]).parent
    model = build_from_config(run_dir / "model_config.py", run_dir / "best.pth")
    _, data = prepare_data(config, out)
    from unipose_ray.evaluation.cross_dataset import evaluate_model

    metrics = evaluate_model(model, "unified", model.spec.codec, data.eval_sets,
                             flip_test=False)
    assert metrics["score"] == pytest.approx(rows[0]["val/score"], abs=1e-6)
    assert f"{metrics['score']:.2f}" in table


def test_stopped_trials_leave_no_placement_group_or_worker_behind(sweep):
    _, rows, _, _, watch, after = sweep
    order = sorted(watch.at_start)  # trial ids count up in start order
    assert len(order) == 3
    for trial_id in order[1:]:  # each started after an earlier trial ended
        seen = watch.at_start[trial_id]
        assert "RayTrainWorker" not in seen["actors"], seen
        assert "TrainController" not in seen["actors"], seen
        assert len(seen["placement_groups"]) <= 1, seen  # the starting trial's own
    assert after["placement_groups"] == [] and "RayTrainWorker" not in after["actors"]
    every_actor = {name for seen in watch.at_start.values() for name in seen["actors"]}
    assert not any("Teacher" in name for name in every_actor)  # the cache, no teachers


def test_mlflow_has_the_sweep_as_a_parent_run_and_each_trial_as_its_child(sweep):
    from mlflow.tracking import MlflowClient

    config, rows, out, uri, _, _ = sweep
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("unipose_ray.kind") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["unipose_ray.best_trial"] == rows[0]["trial"]
    records = read_records(str(next((out / "records").glob("*.parquet"))))
    views = json.loads((out / "teacher_cache" / "manifest.json").read_text())["views"]
    # every instance-view and the bases' calibration views, once per teacher
    calibration = min(config.teacher_cache.calibration, views * records.num_rows)
    assert parent.data.metrics["sweep/teacher_passes"] == (
        views * records.num_rows + calibration) * 2
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep_results.json", "sweep_results.csv", "best_trial.txt"} <= artifacts

    children = {r.data.tags["unipose_ray.trial_id"]: r for r in runs
                if r.data.tags.get(PARENT_TAG) == parent.info.run_id}
    assert set(children) == {row["trial"] for row in rows}
    for rank, row in enumerate(rows, 1):
        child = children[row["trial"]]
        params = child.data.params
        assert float(params["w1_gt"]) == row["w1_gt"] and float(params["lr"]) == row["lr"]
        assert float(params["optim.lr"]) == row["lr"] and params["size"] == row["size"]
        assert child.data.tags["unipose_ray.student_size"] == row["size"]
        assert child.data.tags["unipose_ray.stopped_early"] == str(row["stopped_early"]).lower()
        # a stopped trial ends KILLED, unless it finished its last steps before Tune's stop
        assert child.info.status == "FINISHED" or (row["stopped_early"]
                                                   and child.info.status == "KILLED")
        assert child.data.tags["unipose_ray.sweep_rank"] == str(rank)
        history = sorted(client.get_metric_history(child.info.run_id, "val/score"),
                         key=lambda m: m.step)
        # a stopped trial may validate once more before Tune's stop reaches its workers
        reported = history[:row["validations"]]
        assert len(reported) == row["validations"]
        assert max(m.value for m in reported) == pytest.approx(row["val/score"])
        assert any(m.key == "train/loss" for m in [*client.get_metric_history(
            child.info.run_id, "train/loss")])
    best = children[rows[0]["trial"]]
    assert "checkpoints" in {a.path for a in client.list_artifacts(best.info.run_id)}


def test_metric_names_are_what_validation_reports(sweep):
    from unipose_ray.evaluation.cross_dataset import evaluate_model, metric_names
    from unipose_ray.train.job import build_student
    from unipose_ray.workflow import prepare_data

    config, _, out, _, _, _ = sweep
    _, data = prepare_data(config, out)
    model = build_student(config)
    reported = evaluate_model(model, "unified", config.student.codec, data.eval_sets,
                              flip_test=False)
    assert set(reported) == metric_names(data.eval_sets)
    assert not math.isnan(reported["score"])


def test_a_cache_that_does_not_fit_is_refused_before_any_trial(sweep):
    from unipose_ray.sweep_run import run_sweep

    config, _, out, uri, _, _ = sweep
    other = load_config("demo_sweep", TINY + [f"tracking.tracking_uri={uri}",
                                              f"teacher_cache.uri={out / 'teacher_cache'}",
                                              "augment.flip_prob=0.0", "run.name=misfit"])
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        with pytest.raises(ValueError, match="flip_prob"):
            run_sweep(other, out)
    assert not (out / "tune" / "misfit_sweep").exists()


def test_a_metric_that_is_never_reported_is_refused_before_any_trial(sweep):
    from unipose_ray.sweep_run import run_sweep

    _, _, out, uri, _, _ = sweep
    for override, named in (("sweep.metric=val/coco_APP", "val/coco_AP,"),
                            ("run.val_every_epochs=3", "val_every_epochs=3")):
        config = load_config("demo_sweep", TINY + [f"tracking.tracking_uri={uri}", override,
                                                   "run.name=never"])
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(REPO)
            with pytest.raises(ConfigError, match=named):
                run_sweep(config, out)
    assert not (out / "tune" / "never_sweep").exists()
    assert os.listdir(out / "trials")  # the first sweep's trials are still there
