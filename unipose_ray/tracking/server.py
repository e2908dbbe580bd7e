"""One writer for a SQLite MLflow store that many processes log to at once.

A sweep's trials all log to MLflow side by side. SQLite takes one writer at a time, and
MLflow's SQLAlchemy store answers concurrent writers with ``database is locked`` after a
short wait. :func:`served` puts a local ``mlflow server`` in front of the store for the
duration of the sweep: the trials talk HTTP to it and it is the store's only writer.
Tracking URIs that are already servers (or other stores) pass through untouched.

The server listens on this node's Ray address, so trials on other nodes reach it too (on
a multi-node cluster the store and its ``mlartifacts`` must be on storage every node
mounts, which the runs check before training; a tracking server of your own is the other
way). Its log goes to ``<store folder>/mlflow_server.log``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from unipose_ray.tracking.uris import TrackingUnavailableError, default_artifact_root, sqlite_path

START_TIMEOUT_S = 120.0


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def node_address() -> str:
    """This node's address in the Ray cluster (loopback without Ray)."""
    try:
        import ray  # noqa: PLC0415

        return ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
    except Exception:  # noqa: BLE001 - no Ray: a local store served locally
        return "127.0.0.1"


@contextmanager
def served(tracking_uri: str, host: str | None = None) -> Iterator[str]:
    """Yield a URI every process may log to at once: ``tracking_uri`` itself, or for a
    SQLite store the ``http://`` address of a local ``mlflow server`` writing it.

    Raises:
        TrackingUnavailableError: the server did not come up (with the tail of its log).
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        yield tracking_uri
        return
    host = host or node_address()
    port = free_port(host)
    log_path = db.parent / "mlflow_server.log"
    db.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", tracking_uri,
               "--artifacts-destination", str(default_artifact_root(tracking_uri)),
               "--host", host, "--port", str(port), "--workers", "1",
               "--allowed-hosts", f"{host}:{port},{host},localhost:{port},127.0.0.1:{port}"]
    # no job runner (5 more processes, which slowed a 2-core machine's first requests)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log_path.open("ab") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://{host}:{port}"
    try:
        wait_until_up(uri, server, log_path)
        yield uri
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    """The server and the uvicorn worker it started (its process group)."""
    with suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def wait_until_up(uri: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    stop(server)
    raise TrackingUnavailableError(
        f"the local MLflow server for the sweep's SQLite store did not answer at {uri} "
        f"within {START_TIMEOUT_S:.0f} s (exit code {server.poll()}). Its log "
        f"({log_path}) ends:\n{tail}\nPass --tracking-uri http://<host>:<port> of a running "
        f"`mlflow server` instead.")
