"""A training worker's clocks: time per phase, start-up marks, samples per second."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator

WARMUP_STEPS = 5  # steps excluded from the throughput figure (start-up, first crops)


class Stopwatch:
    """Accumulates seconds spent in named waits (data, teachers) between log lines."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def timed(self, name: str, iterable: Iterable) -> Iterator:
        iterator = iter(iterable)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                self.add(name, time.perf_counter() - start)
            yield item

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def pop(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


class StartupMarks:
    """Seconds from the driver's ``fit()`` to each start-up milestone of a worker.

    The start-up figure of a training phase: worker process up (Ray Train's controller and
    worker group, imports), model built, MLflow run started, first batch (Ray Data's crop
    actors), first step. Wall-clock times; the driver's and the worker's clocks are the
    same machine's in a local run.
    """

    def __init__(self, submitted_at: float):
        self.submitted_at = submitted_at
        self.seconds: dict[str, float] = {}

    def mark(self, name: str) -> None:
        if self.submitted_at:
            self.seconds[name] = time.time() - self.submitted_at

    def metrics(self) -> dict[str, float]:
        out = {f"startup/{k.replace(' ', '_')}_s": v for k, v in self.seconds.items()}
        if "first step" in self.seconds:
            out["train/startup_s"] = self.seconds["first step"]
        return out

    def __str__(self) -> str:
        first = self.seconds.get("first step", float("nan"))
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items() if k != "first step")
        return f"first step {first:.1f} s after fit() ({parts})"


class Throughput:
    """Samples/s over the steps after the first few (start-up excluded)."""

    def __init__(self, samples_per_step: int):
        self.samples_per_step, self.steps, self.start = samples_per_step, 0, None

    def tick(self) -> None:
        self.steps += 1
        if self.steps == WARMUP_STEPS:
            self.start = time.perf_counter()

    @property
    def value(self) -> float:
        if self.start is None or self.steps <= WARMUP_STEPS:
            return math.nan
        return (self.steps - WARMUP_STEPS) * self.samples_per_step / (time.perf_counter() - self.start)
