"""The sweep's single writer: a SQLite store behind a local ``mlflow server``."""

from __future__ import annotations

import multiprocessing

from mlflow.tracking import MlflowClient

from unipose_ray.tracking.runs import RunTracker
from unipose_ray.tracking.server import served

WRITERS, STEPS = 4, 40


def log_steps(uri: str, run_id: str, writer: int) -> None:
    client = MlflowClient(uri)
    for step in range(STEPS):
        client.log_metric(run_id, f"writer{writer}/loss", float(step), step=step)
        client.set_tag(run_id, f"writer{writer}", str(step))


def test_many_processes_log_to_a_sqlite_store_through_its_server(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = RunTracker(store).start("sweep", "parent")  # made on the store: file artifacts
    with served(store, host="127.0.0.1") as uri:
        assert uri.startswith("http://127.0.0.1:")
        child = RunTracker(uri).start("sweep", "child", tags={"mlflow.parentRunId": run.run_id})
        context = multiprocessing.get_context("spawn")
        writers = [context.Process(target=log_steps, args=(uri, child.run_id, w))
                   for w in range(WRITERS)]
        for process in writers:
            process.start()
        for process in writers:
            process.join(timeout=120)
        assert [p.exitcode for p in writers] == [0] * WRITERS
        child.log_text("hello", "note.txt")
        child_id = child.run_id
        child.end()
    # the server is gone; everything is in the SQLite file, artifacts beside it
    client = MlflowClient(store)
    logged = client.get_run(child_id)
    assert logged.data.tags["mlflow.parentRunId"] == run.run_id
    for w in range(WRITERS):
        history = client.get_metric_history(child_id, f"writer{w}/loss")
        assert sorted(m.step for m in history) == list(range(STEPS))
        assert logged.data.tags[f"writer{w}"] == str(STEPS - 1)
    assert (tmp_path / "mlartifacts").is_dir()
    assert any(p.name == "note.txt" for p in (tmp_path / "mlartifacts").rglob("*"))


def test_other_tracking_uris_pass_through(tmp_path):
    for uri in ("http://mlflow.example:5000", "databricks"):
        with served(uri) as given:
            assert given == uri
