"""Every benchmark command the README shows runs, with the flags it shows, at a small size.

The commands are read from README.md itself (lines ``uv run python jobs/benchmark_*.py``);
a benchmark listed there without a small size here fails, so a new one cannot be skipped.
Each runs as a subprocess (its own local Ray), as a user runs it; its figures are not
checked (speed is not a test), only that it finishes and prints its result line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# appended to the README's flags (argparse keeps the last value): a few steps, few samples
SMALL = {
    "benchmark_pipeline.py": ["--samples", "20"],
    "benchmark_distill.py": ["--steps", "6", "--batch-size", "4"],
    "benchmark_startup.py": ["--steps", "1"],
    "benchmark_export.py": ["--repeats", "1", "--warmup", "0", "--batch-size", "2"],
    "benchmark_kd.py": ["--steps", "6", "--batch-size", "4", "--deviation-views", "8"],
}
# the line each one ends with (its result), where it has one
RESULT = {
    "benchmark_distill.py": r"^  .+ / .+: \d+\.\d\dx$",
    "benchmark_startup.py": r"^  phase wall time ratio: data_actors=0 ray / data_actors=0 lean: "
                            r"\d+\.\d\dx$",
    "benchmark_kd.py": r"^cached/in-process: \d+\.\d\dx  bytes: 1/\d+ of fp32  "
                       r"kd-loss deviation: \d+\.\d\d%$",
}


def readme_commands() -> list[list[str]]:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    return [line.split("#")[0].split()[3:] for line in lines
            if line.startswith("uv run python jobs/benchmark_")]


def test_the_readme_lists_the_benchmarks():
    scripts = {command[0].removeprefix("jobs/") for command in readme_commands()}
    assert {"benchmark_kd.py", "benchmark_distill.py"} <= scripts
    assert any("--paper-sizes" in command for command in readme_commands())


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_a_readme_benchmark_command_runs(command):
    script = command[0].removeprefix("jobs/")
    assert script in SMALL, f"README runs {script}; give it a small size in SMALL"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, *command, *SMALL[script]], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{proc.stderr[-4000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"{' '.join(command)} printed nothing"
    if script in RESULT:
        assert re.match(RESULT[script], lines[-1]), lines[-5:]
