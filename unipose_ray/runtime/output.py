"""What a user sees of Ray: our progress lines and real errors, not Ray's own chatter.

Ray forwards every worker's and actor's output to the driver. Besides our progress lines
that is pages of scheduling notes (Train's "Requesting resources", Ray Data's execution
plans), C++ notes at error level that are not errors (``core_worker.cc ... Actor with
class name ... has constructor arguments in the object store``), deprecation warnings,
and the tracebacks of transient calls Ray retries by itself (the Train controller's
``GetTimeoutError`` on "Failed to send resource request"). :func:`filter_worker_output`
drops exactly those, by pattern; every other line, a real error's traceback included,
is printed whole.
"""

from __future__ import annotations

import logging
import re

from unipose_ray.runtime.ray_internals import (
    DATA_PROGRESS_LOGGER,
    TOKEN_NOTE_LOGGER,
    wrap_worker_printers,
)

NOISE = re.compile("|".join((
    r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store",
    r"PYTHON worker processes have been started on node",
    r"Requesting resources: \{",
    r"Failed to send resource request for train-",  # transient: the controller retries
    r"Attempting to start training worker group",
    r"Started training worker group",
    r"Setting up process group for",
    r"Starting execution of Dataset",
    r"Execution plan of Dataset",
    r"Full logs are in .*ray-data",
    r"Progress bars disabled\. To enable",
    r"Registered dataset logger for dataset",
    r"Dataset \S+ execution finished in",
    r"Moving training worker group",
    r"Token authentication is enabled",
    r"world_rank=\d+, local_rank=\d+, node_rank=\d+",
    r"Reporting training result \d+: TrainingReport\(",
    r"Checkpoint successfully created at: Checkpoint\(",
    r"Moving model to device: ",
    r"Wrapping provided model in DistributedDataParallel",
    r"^\s*\S+\.py:\d+: \w*Warning: ",  # a Python warning ...
)))
_WARNING_SOURCE = re.compile(r"^\s+\S")  # ... and its source line
TRANSIENT = re.compile(r"Failed to send resource request|GetTimeoutError")
_TRACEBACK = "Traceback (most recent call last)"


def keep_lines(lines: list[str]) -> list[str]:
    """``lines`` without Ray's known noise and without tracebacks of transient retries."""
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _TRACEBACK in line:
            end = _traceback_end(lines, i)
            block = lines[i:end]
            if not any(TRANSIENT.search(b) for b in block):
                kept.extend(block)
            i = end
            continue
        if NOISE.search(line):
            i += 1
            if "Warning: " in line and i < len(lines) and _WARNING_SOURCE.match(lines[i]):
                i += 1
            continue
        kept.append(line)
        i += 1
    return kept


def _traceback_end(lines: list[str], start: int) -> int:
    """Index after a traceback: its indented frames, then the exception line."""
    i = start + 1
    while i < len(lines) and (lines[i].startswith((" ", "\t")) or not lines[i].strip()):
        i += 1
    return min(i + 1, len(lines))


def _filtered(printer):
    if getattr(printer, "_unipose_filtered", False):
        return printer

    def filtered(data: dict, *args, **kwargs) -> None:
        lines = keep_lines(list(data.get("lines", [])))
        if lines:
            printer({**data, "lines": lines}, *args, **kwargs)

    filtered._unipose_filtered = True
    return filtered


def filter_worker_output() -> None:
    """Filter the worker output this driver prints (call after ``ray.init``); idempotent.

    Two paths reach the terminal: worker logs through the stdstream dispatcher's
    ``ray_print_logs`` handler, and the raylet's notes (the worker-count warning) through
    ``print_to_stdstream`` itself; both are wrapped.
    """
    wrap_worker_printers(_filtered)


def quiet_driver_logging() -> None:
    """Ray's own notes in this process (call before ``ray.init``): warnings and errors only,
    and not the local-cluster token note."""
    logging.getLogger(TOKEN_NOTE_LOGGER).setLevel(logging.ERROR)
    for name in ("ray.data", "ray.train", "ray.tune", "mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_ray_data() -> None:
    """Ray Data's notes in this process (call after importing ``ray.data``, which sets up its
    own loggers): warnings, without the "progress bars disabled" note (our own lines say how
    far the work is)."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger(DATA_PROGRESS_LOGGER).setLevel(logging.ERROR)
