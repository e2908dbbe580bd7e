"""MLflow tracking: flattened params, the work-dir SQLite default, a real server, resume."""

from __future__ import annotations

import inspect
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from unipose_ray.evaluation import viz
from unipose_ray.skeleton import UNIFIED
from unipose_ray.tracking import params, uris
from unipose_ray.tracking import runs as tracking

# --- flatten_config ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Loss:
    w_gt: float = 0.45
    w_kd: tuple[float, float] = (0.25, 0.45)


@dataclass(frozen=True)
class _Teacher:
    name: str
    checkpoint: Path | None


@dataclass(frozen=True)
class _Config:
    loss: _Loss = field(default_factory=_Loss)
    teachers: tuple[_Teacher, ...] = ()
    extra: dict = field(default_factory=dict)
    note: str = ""
    epochs: int = 3
    sync_bn: bool = False


def test_flatten_config_nested_dataclasses():
    cfg = _Config(
        teachers=(_Teacher("coco", Path("/ckpt/coco.pth")), _Teacher("mpii", None)),
        extra={"aug": {"flip": True, "scales": [0.75, 1.25]}, "empty": []},
        note="x" * (MAX_PARAM_VAL_LENGTH + 50),
    )
    flat = params.flatten_config(cfg)
    expected = {
        "loss.w_gt": 0.45,
        "loss.w_kd.0": 0.25,
        "loss.w_kd.1": 0.45,
        "teachers.0.name": "coco",
        "teachers.0.checkpoint": "/ckpt/coco.pth",
        "teachers.1.name": "mpii",
        "teachers.1.checkpoint": "None",
        "extra.aug.flip": True,
        "extra.aug.scales.0": 0.75,
        "extra.aug.scales.1": 1.25,
        "extra.empty": "[]",
        "epochs": 3,
        "sync_bn": False,
    }
    note = flat.pop("note")
    assert flat == expected
    assert len(note) == MAX_PARAM_VAL_LENGTH and note.endswith("...")
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())
    assert params.flatten_config(_Config(), prefix="cfg")["cfg.loss.w_gt"] == 0.45
    with pytest.raises(TypeError):
        params.flatten_config(3.0)


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    embedded = uris.resolve_tracking_uri(None, tmp_path / "work")
    assert embedded == f"sqlite:///{(tmp_path / 'work').resolve()}/mlflow.db"
    assert embedded == uris.default_tracking_uri(tmp_path / "work")
    assert uris.default_artifact_root(embedded) == (tmp_path / "work" / "mlartifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert uris.resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5999"
    assert uris.resolve_tracking_uri("http://h:1", tmp_path) == "http://h:1"
    assert uris.default_artifact_root("http://h:1") is None


# --- the embedded SQLite store -----------------------------------------------------------


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    """One work dir (one SQLite store) for the module: creating a store takes seconds."""
    return tmp_path_factory.mktemp("work")


def _figure() -> np.ndarray:
    kps = np.random.default_rng(0).uniform(20, 170, (UNIFIED.num_keypoints, 2))
    return viz.make_grid([viz.draw_skeleton(np.zeros((256, 192, 3), np.uint8), kps)] * 2, 2)


def _runs(uri: str, experiment: str) -> list[tuple[str, dict[str, float]]]:
    """``(run name, latest metrics)`` of each run of ``experiment``, oldest first."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    return [(run.info.run_name, dict(run.data.metrics)) for run in runs]


def _log_a_run(tracker: tracking.RunTracker, experiment: str, run_name: str) -> str:
    tracker.start(experiment, run_name, params.flatten_config(_Config()), {"stage": "test"})
    for step in (10, 20):
        tracker.log_metrics({"train/loss": 1.0 / step, "train/lr": 4e-3}, step=step)
    tracker.log_metrics({"val/coco_AP": float("nan"), "val/score": 0.5}, step=20)
    tracker.log_dict(_Config(teachers=(_Teacher("coco", Path("/c.pth")),)), "config.json")
    tracker.log_figure_png(_figure(), "figures/val_epoch1")
    return tracker.run_id


def _check_run(client: MlflowClient, run_id: str, run_name: str) -> None:
    run = client.get_run(run_id)
    assert run.info.run_name == run_name
    assert run.info.status == "FINISHED"
    assert run.data.params["loss.w_gt"] == "0.45"
    assert run.data.params["teachers"] == "[]"
    assert run.data.tags["stage"] == "test"
    assert run.data.tags[tracking.RUN_KEY_TAG] == run_name
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(10, 0.1), (20, 0.05)]
    assert run.data.metrics["val/score"] == 0.5
    assert "val/coco_AP" not in run.data.metrics  # NaN skipped, not logged, no crash

    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "figures"} <= artifacts
    local = Path(client.download_artifacts(run_id, "config.json"))
    assert json.loads(local.read_text())["teachers"][0]["checkpoint"] == "/c.pth"
    png = Path(client.download_artifacts(run_id, "figures/val_epoch1.png"))
    image = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(image, _figure())


def test_embedded_sqlite_default_keeps_everything_in_the_work_dir(work_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # artifacts must not follow the current directory
    uri = uris.default_tracking_uri(work_dir)
    with tracking.RunTracker(uri) as tracker:
        run_id = _log_a_run(tracker, "unipose-local", "student-s")
    _check_run(MlflowClient(uri), run_id, "student-s")
    assert (work_dir / "mlflow.db").is_file()
    assert list((work_dir / "mlartifacts").rglob("val_epoch1.png"))
    assert not list(tmp_path.iterdir()), "nothing may be written to the current directory"
    assert ("student-s", pytest.approx({"train/loss": 0.05, "train/lr": 4e-3, "val/score": 0.5})
            ) in _runs(uri, "unipose-local")  # fmt: skip


def _check_resume(uri: str, experiment: str) -> None:
    first = tracking.RunTracker(uri).start(experiment, "job 'a'", {"lr": 0.004})
    first.log_metrics({"train/loss": 2.0}, step=1)
    first.end("FAILED")  # the job died; Ray restarts it from its checkpoint

    with tracking.RunTracker(uri).start(experiment, "job 'a'", {"lr": 0.001, "new": 1}) as again:
        assert again.resumed
        again.log_metrics({"train/loss": 1.0}, step=2)
        run_id = again.run_id
    with tracking.RunTracker(uri).start(experiment, "job-b") as other:
        assert not other.resumed and other.run_id != run_id

    client = MlflowClient(uri)
    assert first.run_id is None and run_id == client.get_run(run_id).info.run_id
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 1.0)]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.004", "new": "1"}  # first value kept, new key added
    assert [name for name, _ in _runs(uri, experiment)] == ["job 'a'", "job-b"]


def test_resume_logs_into_the_same_run_sqlite(work_dir):
    _check_resume(uris.default_tracking_uri(work_dir), "unipose-resume")


def test_metric_names_mlflow_rejects_are_cleaned(work_dir):
    uri = uris.default_tracking_uri(work_dir)
    with tracking.RunTracker(uri).start("unipose-names", "names") as tracker:
        tracker.log_metrics({"val/mpii_PCKh@0.1": 80.0, "val/mpii_PCKh": 90.0}, step=0)
    ((_, metrics),) = _runs(uri, "unipose-names")
    assert metrics == {"val/mpii_PCKh_0.1": 80.0, "val/mpii_PCKh": 90.0}


def test_failure_inside_the_block_marks_the_run_failed(work_dir):
    uri = uris.default_tracking_uri(work_dir)
    with pytest.raises(ZeroDivisionError):
        with tracking.RunTracker(uri).start("unipose-fail", "boom") as tracker:
            run_id = tracker.run_id
            _ = 1 / 0
    assert MlflowClient(uri).get_run(run_id).info.status == "FAILED"


def test_null_tracker_has_the_same_interface():
    public = {n for n, v in vars(tracking.RunTracker).items()
              if callable(v) and not n.startswith("_")}  # fmt: skip
    null = tracking.NullTracker()
    for name in public:
        ours = inspect.signature(getattr(tracking.RunTracker, name)).parameters
        theirs = inspect.signature(getattr(tracking.NullTracker, name)).parameters
        assert list(ours) == list(theirs), name
    with null as t:  # never contacts a server
        assert t.start("e", "r", {"a": 1}) is t
        t.log_metrics({"train/loss": 1.0}, step=0)
        t.log_figure_png(np.zeros((4, 4, 3), np.uint8), "x")
    assert null.run_id is None


def test_logging_before_start_is_an_error(work_dir):
    with pytest.raises(RuntimeError, match="start"):
        tracking.RunTracker(uris.default_tracking_uri(work_dir)).log_metrics({"a": 1}, 0)


# --- unreachable servers -----------------------------------------------------------------


@pytest.mark.timeout(60)  # MLflow's own client would retry for minutes
def test_unreachable_server_fails_fast_with_a_clear_message(unused_port):
    uri = f"http://127.0.0.1:{unused_port}"  # nothing listens there
    with pytest.raises(uris.TrackingUnavailableError) as err:
        tracking.RunTracker(uri).start("e", "r")
    assert "Connection refused" in str(err.value)  # the connection's own answer, no retries
    assert uri in str(err.value) and "--tracking-uri" in str(err.value)
    assert "mlflow server" in str(err.value)


@pytest.mark.timeout(60)  # without the connect time-out the call would wait forever
def test_server_that_never_answers_times_out():
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(uris.TrackingUnavailableError, match=r"not reachable \(timed out\)"):
            tracking.RunTracker(uri, connect_timeout_s=1.0).start("e", "r")


# --- a real `mlflow server` --------------------------------------------------------------


def test_real_server_run_params_metrics_artifacts_and_resume(mlflow_server):
    uri, root = mlflow_server
    with tracking.RunTracker(uri) as tracker:
        run_id = _log_a_run(tracker, "unipose-server", "student-s")
    _check_run(MlflowClient(uri), run_id, "student-s")
    # Proxied artifacts land in the server's --artifacts-destination, not the client's cwd.
    assert list((root / "artifacts").rglob("val_epoch1.png"))
    _check_resume(uri, "unipose-server-resume")
