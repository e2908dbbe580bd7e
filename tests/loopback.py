"""Loopback Ray clusters for tests: ``ray start`` nodes on 127.0.0.1, each with its own
temp dir, and the ``ray`` CLI run as a user would (jobs submitted with ``--working-dir``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cluster_env() -> dict[str, str]:
    """The environment the nodes and the CLI run in: this interpreter's ``python`` first."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
           "RAY_AUTH_MODE": "disabled",  # a loopback test cluster; no token to distribute
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return env


def ray_cli(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    ray_bin = Path(sys.executable).with_name("ray")
    return subprocess.run([str(ray_bin), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def start_node(temp: Path, env: dict, *args: str) -> None:
    started = ray_cli("start", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
                      "--disable-usage-stats", *args, env=env)
    assert started.returncode == 0, started.stderr


def submit(env: dict, *command: str) -> str:
    """``ray job submit --no-wait --working-dir . -- <command>``; returns the job id."""
    deadline = time.monotonic() + 120
    while True:  # a just-started head takes a few seconds to have its job agent up
        submitted = ray_cli("job", "submit", "--no-wait", "--working-dir", ".", "--", *command,
                            env=env)
        if "No available agent" not in submitted.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert submitted.returncode == 0, submitted.stderr
    return re.search(r"raysubmit_\w+", submitted.stdout + submitted.stderr).group(0)


def wait_for_job(client, job_id: str, timeout_s: float = 900):
    deadline = time.time() + timeout_s
    while not client.get_job_status(job_id).is_terminal() and time.time() < deadline:
        time.sleep(3)
    return client.get_job_status(job_id), client.get_job_logs(job_id)


def registered_steps(run_dir: Path) -> list[int]:
    """Steps of the checkpoints Ray Train's controller registered (what a restart sees)."""
    try:
        results = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
        return [r["metrics"]["train/step"] for r in results["checkpoint_results"]]
    except (OSError, ValueError, KeyError):  # not written yet, or being rewritten
        return []
