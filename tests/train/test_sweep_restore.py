"""An interrupted sweep resumes without rerunning its finished trials.

``jobs/sweep.py`` runs as a user runs it (its own local Ray, the MLflow SQLite store in its
output folder behind the sweep's local server). It is stopped with Ctrl+C (SIGINT) once
its first trial has finished, then started again with the same command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_sweep import TINY

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TWO_TRIALS = [o for o in TINY if not o.startswith("sweep.lr")] + ["sweep.lr=[0.002,0.003]"]


def sweep(out: Path, stop_after_first: bool) -> tuple[int, str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(REPO)}
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    command = [sys.executable, "jobs/sweep.py", "--config", "demo_sweep", "--output-dir",
               str(out), *TWO_TRIALS]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 900
    for line in proc.stdout:
        lines.append(line)
        if stop_after_first and line.startswith("[sweep]") and " finished after " in line:
            proc.send_signal(signal.SIGINT)  # Ctrl+C, once
            stop_after_first = False
        if time.monotonic() > deadline:
            proc.kill()
    return proc.wait(timeout=300), "".join(lines)


def trial_results(out: Path) -> dict[str, str]:
    """Each trial's Tune ``result.json`` (one line per validation), by trial folder."""
    return {p.parent.name: p.read_text()
            for p in (out / "tune" / "demo_sweep_sweep").glob("run_trial_*/result.json")}


def test_a_stopped_sweep_resumes_and_keeps_its_finished_trials(tmp_path):
    code, first = sweep(tmp_path, stop_after_first=True)
    assert code == 130, first[-3000:]
    assert "run the same command again" in first
    finished = [line.split()[1] for line in first.splitlines()
                if line.startswith("[sweep]") and " finished after 2 " in line]
    assert len(finished) == 1, first[-3000:]
    done = finished[0]
    assert f"[demo_sweep_{done}]" in first  # its workers' lines reach the driver
    before = trial_results(tmp_path)
    [folder] = [name for name in before if f"_{done}_" in name]
    assert before[folder].count("\n") == 2  # its two validations

    code, second = sweep(tmp_path, stop_after_first=False)
    assert code == 0, second[-3000:]
    assert "[sweep] resuming the sweep" in second
    assert f"[demo_sweep_{done}]" not in second  # the finished trial did not train again
    assert trial_results(tmp_path)[folder] == before[folder]
    rows = json.loads((tmp_path / "sweep_results.json").read_text())
    assert len(rows) == 2 and all(row["validations"] == 2 for row in rows)
    kept = next(row for row in rows if row["trial"] == done)
    last = json.loads(before[folder].splitlines()[-1])
    assert kept["val/score"] == pytest.approx(max(
        json.loads(line)["val/score"] for line in before[folder].splitlines()))
    assert kept["steps"] == last["train/step"]
