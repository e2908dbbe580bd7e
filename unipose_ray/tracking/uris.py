"""Where runs are tracked: the tracking URI a job uses, its SQLite file and artifact folder.

:func:`resolve_tracking_uri`: ``--tracking-uri`` > ``MLFLOW_TRACKING_URI`` > a SQLite store
in the work dir (:func:`default_tracking_uri`), whose artifacts also stay in the work dir
(:func:`default_artifact_root`). :func:`check_reachable` fails fast on a server that does
not answer. Imports no MLflow.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path


class TrackingUnavailableError(RuntimeError):
    """The tracking server did not answer (raised at start, before any training work)."""


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
