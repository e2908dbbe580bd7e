"""MLflow tracking for rank 0 of the training loop, and a no-op twin for the other ranks.

:class:`RunTracker` logs through an explicit ``MlflowClient`` (no global "active run"), and
resumes the same MLflow run when a restarted job starts it again with the same run name.
:class:`NullTracker` has the same interface, so the loop calls ``tracker.log_metrics`` on
every rank without ``if rank == 0``. Params come flat from :mod:`unipose_ray.tracking.params`,
tracking URIs from :mod:`unipose_ray.tracking.uris`.

Metric names are the project's flat names (``train/loss``, ``val/coco_AP``). MLflow allows
only alphanumerics, ``_ - . / : `` and spaces in a name, so other characters are replaced
by ``_`` on the way in (``val/mpii_PCKh@0.1`` is stored as ``val/mpii_PCKh_0.1``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from unipose_ray.config.loading import to_plain
from unipose_ray.tracking.params import ParamValue, clean_name, param_value
from unipose_ray.tracking.uris import check_reachable, default_artifact_root, sqlite_path

logger = logging.getLogger(__name__)

RUN_KEY_TAG = "unipose_ray.run_id"
"""Tag holding the job's stable run name; a restarted job finds its MLflow run by it."""
PARENT_TAG = "mlflow.parentRunId"  # nests a run under another in the MLflow UI
# Without this tag MLflow 3's UI opens an experiment on its GenAI view, not the runs.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
_BATCH = 100  # MLflow's limit on params/tags per log_batch request
_RENAMED: set[str] = set()  # metric names already reported as renamed (once per process)


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
            location = (self.artifact_root.resolve() / clean_name(name)).as_uri()
        return self.client.create_experiment(name, artifact_location=location,
                                             tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})

    def _log_params(self, params: dict[str, ParamValue]) -> None:
        params = {clean_name(k): param_value(v) for k, v in params.items()}
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
        clean = clean_name(name)
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
        self.client.log_image(self.run_id, image, artifact_file=name)

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


def _string_literal(value: str) -> str:
    """``value`` quoted for an MLflow search filter (which has no escape sequences)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"run name {value!r} holds both quote characters; use at most one kind")


def child_key(parent_run_id: str | None, name: str) -> str:
    """The resume key of run ``name`` under a parent run (``name`` alone without one)."""
    return f"{parent_run_id}/{name}" if parent_run_id else name
