"""A real Ray Tune sweep on the teacher-logit cache, tracked in the default store (SQLite
in the output folder behind the sweep's own ``mlflow server``), stopped with Ctrl+C and
resumed.

One small sweep runs once for the module, on the shared Ray and the shared basis cache:
three trials one at a time, the first with a working learning rate and two that cannot
learn (lr 1e-9), so ASHA stops those two at their first validation whatever the machine.
Once the first trial has finished, the sweep gets a SIGINT (Ctrl+C: Tune saves its state
and stops, leaving no trial's actor behind); started again with the same config and folder,
it resumes without training the finished trial again. The tests then read what a user reads: the summary files, the
cluster's state after the early stops, the MLflow parent and child runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
from pathlib import Path

import pytest
from helpers import in_repo
from ray import tune
from runs import leftovers

from unipose_ray.config import ConfigError, load_config
from unipose_ray.data.records import read_records
from unipose_ray.tracking.runs import PARENT_TAG

pytestmark = pytest.mark.ci

SWEEP = ["sweep.search=grid", "sweep.grid=[[0.45,0.25,0.45]]", "sweep.lr=[0.002,1e-9,1e-9]",
         "sweep.num_samples=1", "sweep.max_concurrent_trials=1", "sweep.sizes=[t]"]


WATCHED: dict[str, dict] = {}
"""What the callbacks saw, by watch name. A resumed sweep runs the callbacks Tune pickled
when the sweep started (``Tuner.restore`` takes no new ones): copies, which write here."""


class ClusterWatch(tune.Callback):
    """Notes, when each trial starts, the placement groups and actors still alive."""

    def __init__(self, name: str, address: str):
        self.name, self.address = name, address
        WATCHED[name] = {"at_start": {}, "started": []}

    def on_trial_start(self, iteration, trials, trial, **info):
        WATCHED[self.name]["at_start"][trial.trial_id] = alive(self.address)
        WATCHED[self.name]["started"].append(trial.trial_id)


class CtrlC(tune.Callback):
    """SIGINT to this process once, when the first trial has finished (Tune's handler in
    ``fit()`` takes it as a user's Ctrl+C: save the state, stop the trials). Once: the
    resumed sweep runs a copy of this callback, and ``marker`` says it was sent."""

    def __init__(self, marker: Path):
        self.marker = marker

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not self.marker.exists():
            self.marker.write_text(trial.trial_id)
            os.kill(os.getpid(), signal.SIGINT)


def alive(address: str) -> dict:
    from ray.util.state import list_actors, list_placement_groups

    return {"placement_groups": [p.placement_group_id for p in list_placement_groups(
                address=address, filters=[("state", "!=", "REMOVED")],
                raise_on_missing_output=False)],
            "actors": sorted(a.class_name for a in list_actors(
                address=address, filters=[("state", "=", "ALIVE")],
                raise_on_missing_output=False))}


def trial_results(out: Path) -> dict[str, str]:
    """Each trial's Tune ``result.json`` (one line per validation), by trial folder."""
    return {p.parent.name: p.read_text()
            for p in (out / "tune" / "demo_sweep_sweep").glob("run_trial_*/result.json")}


@pytest.fixture(scope="module")
def overrides(basis_cache) -> list[str]:
    """``demo_sweep`` on the shared basis cache (no trial runs a teacher), tracked in the
    default store: SQLite in the output folder, behind the sweep's own ``mlflow server``."""
    return [*basis_cache.overrides, *SWEEP]


@pytest.fixture(scope="module")
def sweep(ray_cluster, overrides, tmp_path_factory):
    from unipose_ray.workflows.sweep import SweepInterrupted, run_sweep

    out = tmp_path_factory.mktemp("sweep")
    watch = ClusterWatch("sweep", ray_cluster.dashboard)
    watched = WATCHED["sweep"]
    marker = out.parent / "ctrl_c_sent"
    printed = io.StringIO()
    with in_repo():
        config = load_config("demo_sweep", overrides)
        with pytest.raises(SweepInterrupted, match="run the same command again"):
            run_sweep(config, out, callbacks=(watch, CtrlC(marker)))
        interrupted = trial_results(out)
        left_by_ctrl_c = leftovers(ray_cluster.dashboard, wait_s=60)
        resumed_from = len(watched["started"])
        with contextlib.redirect_stdout(printed):
            rows = run_sweep(config, out)  # the callbacks it started with come back
    return {"config": config, "rows": rows, "out": out, "uri": f"sqlite:///{out}/mlflow.db",
            "at_start": watched["at_start"], "after": alive(ray_cluster.dashboard),
            "finished": marker.read_text(), "interrupted": interrupted,
            "left_by_ctrl_c": left_by_ctrl_c, "resumed": printed.getvalue(),
            "started_again": watched["started"][resumed_from:]}


def test_a_stopped_sweep_resumes_without_training_its_finished_trial_again(sweep):
    done, out = sweep["finished"], sweep["out"]
    assert sweep["left_by_ctrl_c"] == {}  # the stopped trial's workers and groups are gone
    assert "[sweep] resuming the sweep" in sweep["resumed"]
    assert sweep["started_again"] and done not in sweep["started_again"]
    [folder] = [name for name in sweep["interrupted"] if f"_{done}_" in name]
    assert sweep["interrupted"][folder].count("\n") == 2  # its two validations, then Ctrl+C
    assert trial_results(out)[folder] == sweep["interrupted"][folder]  # kept as it was
    rows = {row["trial"]: row for row in sweep["rows"]}
    last = json.loads(sweep["interrupted"][folder].splitlines()[-1])
    assert rows[done]["steps"] == last["train/step"] and rows[done]["validations"] == 2
    assert rows[done]["val/score"] == pytest.approx(max(
        json.loads(line)["val/score"] for line in sweep["interrupted"][folder].splitlines()))


def test_the_summary_ranks_every_trial_and_marks_the_stopped_ones(sweep):
    rows, out = sweep["rows"], sweep["out"]
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
    from unipose_ray.workflows.training import prepare_data

    config, rows, out = sweep["config"], sweep["rows"], sweep["out"]
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
    at_start, after = sweep["at_start"], sweep["after"]
    order = sorted(at_start)  # trial ids count up in start order
    assert len(order) == 3
    for trial_id in order[1:]:  # each started after an earlier trial ended
        seen = at_start[trial_id]
        assert "RayTrainWorker" not in seen["actors"], seen
        assert "TrainController" not in seen["actors"], seen
        assert len(seen["placement_groups"]) <= 1, seen  # the starting trial's own
    assert after["placement_groups"] == [] and "RayTrainWorker" not in after["actors"]
    every_actor = {name for seen in at_start.values() for name in seen["actors"]}
    assert not any("Teacher" in name for name in every_actor)  # the cache, no teachers


def test_mlflow_has_the_sweep_as_a_parent_run_and_each_trial_as_its_child(sweep):
    from mlflow.tracking import MlflowClient

    config, rows, out, uri = sweep["config"], sweep["rows"], sweep["out"], sweep["uri"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("unipose_ray.kind") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["unipose_ray.best_trial"] == rows[0]["trial"]
    records = read_records(str(next((out / "records").glob("*.parquet"))))
    views = json.loads((Path(config.teacher_cache.uri) / "manifest.json").read_text())["views"]
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
        assert client.get_metric_history(child.info.run_id, "train/loss")
        for name in ("train/loss_kd_coco", "train/loss_kd_mpii"):  # from the cache
            values = [m.value for m in client.get_metric_history(child.info.run_id, name)]
            assert values and all(math.isfinite(v) and v > 0 for v in values), name
    best = children[rows[0]["trial"]]
    assert "checkpoints" in {a.path for a in client.list_artifacts(best.info.run_id)}


def test_metric_names_are_what_validation_reports(sweep):
    from unipose_ray.evaluation.cross_dataset import evaluate_model, metric_names
    from unipose_ray.train.job import build_student
    from unipose_ray.workflows.training import prepare_data

    config, out = sweep["config"], sweep["out"]
    _, data = prepare_data(config, out)
    model = build_student(config)
    reported = evaluate_model(model, "unified", config.student.codec, data.eval_sets,
                              flip_test=False)
    assert set(reported) == metric_names(data.eval_sets)
    assert not math.isnan(reported["score"])


def test_a_cache_that_does_not_fit_is_refused_before_any_trial(sweep, overrides):
    from unipose_ray.workflows.sweep import run_sweep

    out = sweep["out"]
    with in_repo():
        other = load_config("demo_sweep", [*overrides, "augment.flip_prob=0.0", "run.name=misfit"])
        with pytest.raises(ValueError, match="flip_prob"):
            run_sweep(other, out)
    assert not (out / "tune" / "misfit_sweep").exists()


def test_a_metric_that_is_never_reported_is_refused_before_any_trial(sweep, overrides):
    from unipose_ray.workflows.sweep import run_sweep

    out = sweep["out"]
    for override, named in (("sweep.metric=val/coco_APP", "val/coco_AP,"),
                            ("run.val_every_epochs=3", "val_every_epochs=3")):
        with in_repo():
            config = load_config("demo_sweep", [*overrides, override, "run.name=never"])
            with pytest.raises(ConfigError, match=named):
                run_sweep(config, out)
    assert not (out / "tune" / "never_sweep").exists()
    assert os.listdir(out / "trials")  # the first sweep's trials are still there
