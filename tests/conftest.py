"""Shared test fixtures and the test tiers.

Tiers (``tests/README.md``): a plain ``pytest`` runs the ``unit`` tier (no Ray Train fit,
minutes on 2 cores); ``pytest --tier ci`` the end-to-end tests on one shared Ray
(``tests/e2e/``), which CI runs after the unit tier; ``--tier bench`` the benchmark
commands of ``docs/benchmarks.md`` with their flags; ``--tier chaos`` long fault runs; ``--tier
all`` every tier. A test's tier is its marker (``ci``, ``bench``, ``chaos``), else
``unit``; tests of other tiers are reported as deselected, never silently dropped.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: the workers share the cores
    import torch

    torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = REPO_ROOT.parent / "shared" / "data" / "real_samples"

TIERS = {
    "unit": "unit and small-integration tests, no Ray Train fit (the default)",
    "ci": "end to end on one shared Ray, each behaviour once (CI runs it after unit)",
    "bench": "docs/benchmarks.md's benchmark commands with their flags (opt-in, long)",
    "chaos": "long fault runs (opt-in)",
}
TIMEOUT_S = {"unit": 300, "ci": 1500, "bench": 3600, "chaos": 3600}
"""Per test, setup included (a session fixture's run counts in its first test): a hung
test fails with every thread's stack instead of at CI's limit."""


def pytest_addoption(parser):
    parser.addoption("--tier", default="unit", choices=[*TIERS, "all"],
                     help="which tests run: " + "; ".join(f"{k}: {v}" for k, v in TIERS.items())
                     + "; all: every tier")


def pytest_configure(config):
    tier = config.getoption("tier")
    if tier != "unit" and (config.getoption("numprocesses", None) or 0) > 0:
        raise pytest.UsageError(f"--tier {tier} runs its end-to-end tests on one Ray in one "
                                "process (a session fixture): run it without -n")


def tier_of(item: pytest.Item) -> str:
    marked = [name for name in TIERS if name != "unit" and item.get_closest_marker(name)]
    if len(marked) > 1:
        raise pytest.UsageError(f"{item.nodeid} is marked for tiers {marked}; a test has one")
    return marked[0] if marked else "unit"


def pytest_report_header(config):
    tier = config.getoption("tier")
    return (f"tier: {tier} ({TIERS.get(tier, 'every tier')}); the others: "
            + ", ".join(f"--tier {t}" for t in TIERS if t != tier) + " (tests/README.md)")


def pytest_collection_modifyitems(config, items):
    import torch

    tier = config.getoption("tier")
    selected, deselected = [], []
    for item in items:
        own = tier_of(item)
        if tier not in ("all", own):
            deselected.append(item)
            continue
        selected.append(item)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIMEOUT_S[own]))
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none on this machine"))
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """``../shared/data/real_samples`` (real COCO and MPII files)."""
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"real samples not found at {REAL_SAMPLES} (shared/ is not beside the repo)")
    return REAL_SAMPLES


@pytest.fixture(scope="session")
def load_job():
    """``load_job("evaluate")`` imports ``jobs/evaluate.py`` as a module (jobs run nothing at
    import time; tests call their ``main(argv)``). ``jobs/`` joins ``sys.path``, as it does
    for a script, so the benchmarks find ``bench_common``."""

    def load(name: str):
        if str(REPO_ROOT / "jobs") not in sys.path:
            sys.path.append(str(REPO_ROOT / "jobs"))
        spec = importlib.util.spec_from_file_location(f"{name}_job", REPO_ROOT / "jobs" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """The one tiny generated dataset of the suite (COCO- and MPII-format files): 24 + 24
    training and 4 + 4 validation images of at most two drawn people, the demo's occluders
    and truncation. Unit tests read its validation splits; the end-to-end tests train on
    it (``tests/e2e/conftest.py``)."""
    from helpers import TINY_DATA

    from unipose_ray.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("tiny_dataset"), TINY_DATA, progress=False)


@pytest.fixture(scope="session")
def tiny_eval_sets(tiny_dataset, tmp_path_factory):
    """The tiny dataset's COCO and MPII validation sets as :class:`EvalSet` s (records written
    once for the session)."""
    from unipose_ray.data.readers import read_coco, read_mpii
    from unipose_ray.data.records import write_records
    from unipose_ray.evaluation.cross_dataset import EvalSet

    out = tmp_path_factory.mktemp("tiny_eval_sets")
    d = tiny_dataset
    coco = write_records(read_coco(d.coco_val_ann, d.coco_val_images), out / "c.parquet")
    mpii = write_records(read_mpii(d.mpii_val_ann, d.mpii_val_images), out / "m.parquet")
    return [EvalSet("coco", str(coco), str(d.coco_val_ann), str(d.coco_val_unified)),
            EvalSet("mpii", str(mpii), None, str(d.mpii_val_unified))]


@pytest.fixture(scope="session")
def random_teachers(tmp_path_factory, load_job):
    """``name -> TeacherConfig`` of RTMPose-t teachers with random weights, written as MMPose
    config + checkpoint files at the ``demo_self_trained`` preset's teacher sizes (COCO
    64x96, the student's; MPII 64x64)."""
    import torch

    write_random_teacher = load_job("bench_common").write_random_teacher
    from unipose_ray.config import load_config

    out = tmp_path_factory.mktemp("random_teachers")
    config = load_config("demo_self_trained")
    torch.manual_seed(0)
    return {t.name: write_random_teacher(t, config.student.codec, out) for t in config.teachers}


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port nothing listens on."""
    return free_port()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free loopback port with proxied artifacts; stopped at teardown."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
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
