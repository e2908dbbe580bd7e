"""The benchmark commands of ``docs/benchmarks.md`` (its ``uv run python jobs/benchmark_*``
lines).

- ``ci`` tier: each benchmark script once at smoke size, in this process on the shared Ray
  (its ``main``), and its printed figures checked for sense: rates and times positive and
  finite, the ratio line parsed. Speed itself is not a test.
- ``bench`` tier (opt-in, long): every listed command with its flags, as a user runs it (a
  subprocess with its own Ray); the figures in ``docs/`` come from those runs.

A benchmark ``docs/benchmarks.md`` lists without a smoke size here fails, so a new one
cannot be left out of CI.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
from helpers import REPO, in_repo

SMOKE = {
    "benchmark_pipeline.py": ["--samples", "20"],
    "benchmark_distill.py": ["--steps", "6", "--batch-size", "4"],
    "benchmark_startup.py": ["--steps", "1"],
    "benchmark_export.py": ["--repeats", "1", "--warmup", "0", "--batch-size", "2"],
    "benchmark_kd.py": ["--steps", "6", "--batch-size", "4", "--deviation-views", "8",
                        "--calibration", "48"],
    "benchmark_scale.py": ["--coco-sample", "../shared/data/real_samples/coco/test_coco.json",
                           "--mpii-sample", "../shared/data/real_samples/mpii/test_mpii.json",
                           "--scale", "0.002", "--eval-people", "4", "--dets-per-image", "3",
                           "--eval-workers", "1"],
    "benchmark_stream.py": ["--records", "2000", "--stages", "2", "--measured-stages", "1",
                            "--cache-records", "200", "--open-records", "200", "--views", "2",
                            "--shard-records", "50"],
    "benchmark_metrics.py": ["--images", "40", "--detections", "3", "--mpii-people", "40"],
    "benchmark_readers.py": ["--sample", "../shared/data/real_samples/coco/000000000785.jpg",
                             "--images", "200", "--people", "300"],
    "benchmark_evaluation.py": ["--images", "4", "--workers", "1"],
}
"""Appended to a script's own defaults for the CI smoke run (argparse keeps the last
value): a few steps, few samples."""

FIGURES = {
    "benchmark_pipeline.py": [r"  full sample / decode ratio ", r"  full sample "],
    "benchmark_distill.py": [r"  .+ samples/s$", r"  .+ / .+: .+x$"],
    "benchmark_startup.py": [r"  torch ", r"  joint student: fit\(\) to first step ",
                             r"  phase wall time "],
    "benchmark_export.py": [r"\s+\d+  pytorch / onnxruntime: "],
    "benchmark_kd.py": [r"  cached targets .+ samples/s$",
                        r"cached/in-process: .+x  bytes: 1/.+ of fp32  kd-loss deviation: .+%$"],
    "benchmark_scale.py": [r"scale ", r"\| evaluate \| ", r"\| evaluate x1 \| "],
    "benchmark_stream.py": [r"construction time ", r"bytes read at ", r"as written "],
    "benchmark_metrics.py": [r"COCO AP, [\d,]+ detections", r"MPII PCKh, "],
    "benchmark_readers.py": [r"  speed-up "],
    "benchmark_evaluation.py": [r"driver \(warm\)", r"remote x1 \(warm\)"],
}
"""Per script, the lines its output must have (regexes matched at a line's start). The
numbers on such a line must be finite and not negative, its first (the figure the line
is for: a rate, a time, a ratio) above zero."""
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|nan|inf")


BENCHMARKS_DOC = REPO / "docs" / "benchmarks.md"


def readme_commands() -> list[list[str]]:
    """The commands of ``docs/benchmarks.md``, each as ``[script, *flags]``."""
    lines = BENCHMARKS_DOC.read_text().splitlines()
    return [line.split("#")[0].split()[3:] for line in lines
            if line.startswith("uv run python jobs/benchmark_")]


def check_figures(script: str, output: str) -> None:
    lines = output.splitlines()
    for pattern in FIGURES[script]:
        found = [line for line in lines if re.match(pattern, line)]
        assert found, f"{script} printed no line like {pattern!r}:\n{output[-3000:]}"
        for line in found:
            label = re.match(pattern, line).group(0) if pattern.endswith(" ") else ""
            values = [float(v.replace(",", "")) for v in NUMBER.findall(line[len(label):])]
            assert values and values[0] > 0, line
            assert all(math.isfinite(v) and v >= 0 for v in values), line


def test_every_readme_benchmark_has_a_smoke_size_and_a_figure_check():
    scripts = {command[0].removeprefix("jobs/") for command in readme_commands()}
    assert {"benchmark_kd.py", "benchmark_distill.py"} <= scripts
    assert any("--paper-sizes" in command for command in readme_commands())
    assert scripts <= set(SMOKE), f"give {sorted(scripts - set(SMOKE))} a size in SMOKE"
    assert set(SMOKE) <= set(FIGURES)


@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_a_readme_benchmark_command_parses_with_its_flags(command, load_job):
    """The listed flags are the script's (the runs themselves: ``--tier bench``)."""
    job = load_job(command[0].removeprefix("jobs/").removesuffix(".py"))
    job.parse_args(command[1:])  # an unknown or malformed flag exits here


@pytest.mark.ci
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_a_benchmark_at_smoke_size_prints_sane_figures(script, ray_cluster, load_job, capsys):
    import cv2
    import torch

    threads = torch.get_num_threads(), cv2.getNumThreads()  # scripts set their own
    try:
        with in_repo():
            load_job(script.removesuffix(".py")).main(SMOKE[script])
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    check_figures(script, capsys.readouterr().out)


@pytest.mark.bench
@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_a_readme_benchmark_command_prints_sane_figures(command):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=3600)
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{proc.stderr[-4000:]}"
    check_figures(command[0].removeprefix("jobs/"), proc.stdout)
