"""Shared test fixtures: the real samples beside the project, a real ``mlflow server``, and
marker handling."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = REPO_ROOT.parent / "shared" / "data" / "real_samples"


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """``../shared/data/real_samples`` (real COCO and MPII files)."""
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"real samples not found at {REAL_SAMPLES} (shared/ is not beside the repo)")
    return REAL_SAMPLES


@pytest.fixture(scope="session")
def load_job():
    """``load_job("evaluate")`` imports ``jobs/evaluate.py`` as a module (jobs run nothing at
    import time; tests call their ``main(argv)``)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_job", REPO_ROOT / "jobs" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port nothing listens on."""
    return _free_port()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free loopback port with proxied artifacts; stopped at teardown."""
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    # The job runner (huey consumers, 5 processes) is off: it is not needed to log runs,
    # and on a 2-core machine it slowed the first requests to ~40 s.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
    ]  # fmt: skip
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(uri, proc, timeout_s=90, log=root / "server.log")
        yield uri, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _wait_healthy(uri: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"mlflow server not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")
