"""MLflow tracking for rank 0 of the training loop, and a no-op twin for the other ranks.

- :func:`flatten_config` turns a typed config tree into the flat ``{"loss.w_gt": 0.45}``
  params MLflow accepts (nested dicts break ``log_params``).
- :func:`resolve_tracking_uri`: ``--tracking-uri`` > ``MLFLOW_TRACKING_URI`` > a SQLite store
  in the work dir (:func:`default_tracking_uri`), whose artifacts also stay in the work dir.
- :class:`RunTracker` logs through an explicit ``MlflowClient`` (no global "active run"), and
  resumes the same MLflow run when a restarted job starts it again with the same run name.
  :class:`NullTracker` has the same interface, so the loop calls ``tracker.log_metrics``
  on every rank without ``if rank == 0``.

Metric names are the project's flat names (``train/loss``, ``val/coco_AP``). MLflow allows
only alphanumerics, ``_ - . / : `` and spaces in a name, so other characters are replaced
by ``_`` on the way in (``val/mpii_PCKh@0.1`` is stored as ``val/mpii_PCKh_0.1``).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# MLflow's usage telemetry thread adds and removes a variable of os.environ while requests
# iterates it for proxies; a sweep trial's log-batch failed on it (KeyError
# '_MLFLOW_TELEMETRY_SESSION_ID'). Off unless the user chose otherwise; Ray workers inherit it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Not two "View run ... at http://..." lines per finished run (a sweep ends dozens); the jobs
# say where their runs are.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH  # noqa: E402

logger = logging.getLogger(__name__)

RUN_KEY_TAG = "unipose_ray.run_id"
PARENT_TAG = "mlflow.parentRunId"  # nests a run under another in the MLflow UI
# Without this tag MLflow 3's UI opens an experiment on its GenAI view, not the runs.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
"""Tag holding the job's stable run name; a restarted job finds its MLflow run by it."""

ParamValue = str | int | float | bool
_INVALID_NAME_CHARS = re.compile(r"[^/\w.\- :]")
_BATCH = 100  # MLflow's limit on params/tags per log_batch request
_RENAMED: set[str] = set()  # metric names already reported as renamed (once per process)


class TrackingUnavailableError(RuntimeError):
    """The tracking server did not answer (raised at start, before any training work)."""


# --- config -> params --------------------------------------------------------------------


def flatten_config(obj: Any, prefix: str = "") -> dict[str, ParamValue]:
    """Flatten nested dataclasses / mappings / lists / tuples into dotted MLflow params.

    ``Config(loss=LossConfig(w_gt=0.45), teachers=(T(checkpoint=Path("a.pth")),))`` gives
    ``{"loss.w_gt": 0.45, "teachers.0.checkpoint": "a.pth"}``. Paths and other objects
    become strings, ``None`` becomes ``"None"``, empty containers ``"[]"`` / ``"{}"``, and
    strings longer than MLflow's param limit are truncated.

    Raises:
        TypeError: if ``obj`` is a scalar (there would be no key to put it under).
    """
    if not _is_container(obj):
        raise TypeError(f"flatten_config expects a dataclass, mapping or sequence, got {obj!r}")
    out: dict[str, ParamValue] = {}
    _flatten_into(obj, prefix, out)
    return out


def _is_container(obj: Any) -> bool:
    is_dataclass_instance = dataclasses.is_dataclass(obj) and not isinstance(obj, type)
    return is_dataclass_instance or isinstance(obj, (Mapping, list, tuple))


def _flatten_into(obj: Any, key: str, out: dict[str, ParamValue]) -> None:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    elif isinstance(obj, Mapping):
        items = [(str(k), v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(obj)]
    else:
        out[_clean_name(key)] = _param_value(obj)
        return
    if not items:
        out[_clean_name(key)] = "[]" if isinstance(obj, (list, tuple)) else "{}"
    for name, value in items:
        _flatten_into(value, f"{key}.{name}" if key else name, out)


def _param_value(value: Any) -> ParamValue:
    if value is None:
        return "None"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, enum.Enum):
        value = value.name
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (set, frozenset)):
        value = sorted(map(str, value))
    text = str(value)
    if len(text) > MAX_PARAM_VAL_LENGTH:
        text = text[: MAX_PARAM_VAL_LENGTH - 3] + "..."
    return text


def _clean_name(name: str) -> str:
    return _INVALID_NAME_CHARS.sub("_", name)


def to_plain(obj: Any) -> Any:
    """A JSON-serialisable copy of a config tree (dataclasses -> dicts, Paths -> str)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(map(str, obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, enum.Enum):
        return obj.name
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


# --- where to track ----------------------------------------------------------------------


def default_tracking_uri(work_dir: str | Path) -> str:
    """The embedded store: ``sqlite:///<abs work_dir>/mlflow.db`` (artifacts in ``mlartifacts``)."""
    return f"sqlite:///{Path(work_dir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(explicit: str | None, work_dir: str | Path) -> str:
    """``--tracking-uri`` if given, else ``MLFLOW_TRACKING_URI``, else the work-dir SQLite store."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(work_dir)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :]).resolve()


def default_artifact_root(tracking_uri: str) -> Path | None:
    """``mlartifacts`` beside a SQLite store; None for servers (the server decides).

    MLflow would otherwise put a SQLite store's artifacts under ``./mlruns`` of whatever
    directory the process happens to run in (a Ray worker's session dir, for instance).
    """
    db = sqlite_path(tracking_uri)
    return None if db is None else db.parent / "mlartifacts"


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast when an HTTP tracking server does not answer.

    MLflow's own client retries with exponential back-off for minutes before it gives up,
    so a typo in the URI would otherwise look like a hung job. Any HTTP answer (even 404 or
    401) counts as reachable; only connection errors and time-outs raise.

    Raises:
        TrackingUnavailableError: naming the URI and the ways to fix it.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingUnavailableError(
            f"MLflow tracking server {tracking_uri} is not reachable ({reason}). Start one "
            f"(`mlflow server --host 127.0.0.1 --port <port>`), pass the right address with "
            f"--tracking-uri (or MLFLOW_TRACKING_URI), or leave both unset to log to a local "
            f"SQLite store in the work dir."
        ) from err


# --- trackers ----------------------------------------------------------------------------


class RunTracker:
    """Logs one training run to MLflow; used by rank 0 only.

    Usage::

        with RunTracker(uri).start("unipose", "rtmpose-s-kd", flatten_config(cfg)) as tracker:
            tracker.log_metrics({"train/loss": 0.8}, step=100)

    Leaving the ``with`` block ends the run as FINISHED, or FAILED / KILLED on an exception.
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_root: str | Path | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        """
        Args:
            tracking_uri: MLflow tracking URI (see :func:`resolve_tracking_uri`).
            artifact_root: where new experiments keep artifacts; default: ``mlartifacts``
                beside a SQLite store, the server's choice for a server.
            connect_timeout_s: how long :meth:`start` waits for a server to answer.
        """
        self.tracking_uri = tracking_uri
        self.artifact_root = (
            Path(artifact_root) if artifact_root else default_artifact_root(tracking_uri)
        )
        self.connect_timeout_s = connect_timeout_s
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.resumed = False

    def start(
        self,
        experiment: str,
        run_name: str,
        params: Mapping[str, ParamValue] | None = None,
        tags: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> RunTracker:
        """Create the run, or resume the one a previous start with the same ``key`` made.

        ``key`` (default ``run_name``) identifies the run across restarts, e.g. a child
        run's parent id plus its name. On resume, params already logged keep their first
        value (MLflow params are immutable); a changed value is reported as a warning,
        new keys are added.
        """
        key = run_name if key is None else key
        experiment_id = self.prepare(experiment)
        existing = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = {_string_literal(key)}",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        all_tags = {**(tags or {}), RUN_KEY_TAG: key}
        if existing:
            self.run_id, self.resumed = existing[0].info.run_id, True
            self.client.update_run(self.run_id, status="RUNNING")
            logger.info("resuming MLflow run %s (%s)", run_name, self.run_id)
        else:
            run = self.client.create_run(experiment_id, run_name=run_name, tags=all_tags)
            self.run_id, self.resumed = run.info.run_id, False
        self._log_params(dict(params or {}))
        self.set_tags(all_tags)
        return self

    def prepare(self, experiment: str) -> str:
        """Reach the store, create it (SQLite) and the experiment if needed; returns its id.

        Call it once from the driver before runs start side by side: two processes creating
        the same SQLite store at once race in its schema migration.
        """
        check_reachable(self.tracking_uri, self.connect_timeout_s)
        db = sqlite_path(self.tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.tracking_uri)
        return self._experiment_id(experiment)

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG,
                                               EXPERIMENT_KIND)
            return found.experiment_id
        location = None
        if self.artifact_root is not None:
            location = (self.artifact_root.resolve() / _clean_name(name)).as_uri()
        return self.client.create_experiment(name, artifact_location=location,
                                             tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})

    def _log_params(self, params: dict[str, ParamValue]) -> None:
        params = {_clean_name(k): _param_value(v) for k, v in params.items()}
        if self.resumed:
            logged = self.client.get_run(self.run_id).data.params
            changed = {k: (logged[k], v) for k, v in params.items()
                       if k in logged and logged[k] != str(v)}  # fmt: skip
            if changed:
                logger.warning(
                    "resumed MLflow run %s keeps its first params; changed now: %s",
                    self.run_id, changed,
                )  # fmt: skip
            params = {k: v for k, v in params.items() if k not in logged}
        entries = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(entries), _BATCH):
            self.client.log_batch(self.run_id, params=entries[i : i + _BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._require_started()
        entries = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(entries), _BATCH):
            self.client.log_batch(self.run_id, tags=entries[i : i + _BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at ``step``; NaN / inf values are skipped with a warning."""
        self._require_started()
        now = int(time.time() * 1000)
        entries, skipped = [], []
        for name, value in metrics.items():
            value = float(value)
            if not math.isfinite(value):
                skipped.append(name)
                continue
            entries.append(Metric(self._metric_name(name), value, now, int(step)))
        if skipped:
            logger.warning("step %d: not logging non-finite metrics %s", step, skipped)
        for i in range(0, len(entries), 1000):
            self.client.log_batch(self.run_id, metrics=entries[i : i + 1000])

    def _metric_name(self, name: str) -> str:
        clean = _clean_name(name)
        if clean != name and not _RENAMED:
            _RENAMED.add(name)  # once per process: the rule, not every name
            logger.warning("MLflow does not allow %r as a metric name; logging it as %r "
                           "(and likewise for other names with '@')", name, clean)
        return clean

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._require_started()
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """A config (dataclass or dict) as ``.json`` or ``.yaml``, by the file's extension."""
        self._require_started()
        self.client.log_dict(self.run_id, to_plain(obj), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._require_started()
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure_png(self, image: np.ndarray, name: str) -> None:
        """Log an ``(H, W, 3)`` RGB uint8 image as ``<name>.png`` (``name`` may hold dirs)."""
        self._require_started()
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} "
                             f"{image.dtype}")  # fmt: skip
        name = name if name.endswith(".png") else f"{name}.png"
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"cv2 could not encode {name} as PNG")
        folder, _, filename = name.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / filename
            local.write_bytes(png.tobytes())
            self.client.log_artifact(self.run_id, str(local), folder or None)

    def _require_started(self) -> None:
        if self.run_id is None:
            raise RuntimeError("RunTracker.start(...) must be called before logging")

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run ``FINISHED`` / ``FAILED`` / ``KILLED`` (idempotent)."""
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)
            self.run_id = None

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
        else:
            self.end("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")


class NullTracker:
    """The tracker of non-zero ranks: the same interface, doing nothing."""

    run_id: str | None = None
    resumed = False

    def start(self, experiment: str, run_name: str, params=None, tags=None,
              key=None) -> NullTracker:
        return self

    def prepare(self, experiment: str) -> str:
        return ""

    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_dict(self, obj: Any, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_figure_png(self, image: np.ndarray, name: str) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None: ...


def make_tracker(rank: int, tracking_uri: str, **kwargs: Any) -> RunTracker | NullTracker:
    """A :class:`RunTracker` on rank 0, a :class:`NullTracker` everywhere else."""
    return RunTracker(tracking_uri, **kwargs) if rank == 0 else NullTracker()


def _string_literal(value: str) -> str:
    """``value`` quoted for an MLflow search filter (which has no escape sequences)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"run name {value!r} holds both quote characters; use at most one kind")


# --- reading back ------------------------------------------------------------------------


def find_runs(tracking_uri: str, experiment: str) -> list[tuple[str, dict[str, float]]]:
    """``(run_name, latest metrics)`` of every run in ``experiment``, oldest first."""
    check_reachable(tracking_uri)
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    return [(run.info.run_name, dict(run.data.metrics)) for run in runs]


def child_key(parent_run_id: str | None, name: str) -> str:
    """The resume key of run ``name`` under a parent run (``name`` alone without one)."""
    return f"{parent_run_id}/{name}" if parent_run_id else name
