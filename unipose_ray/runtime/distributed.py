"""Rank, world size, device and rank-zero printing, with a world-size-1 fallback.

Inside a Ray Train worker these read ``ray.train.get_context()``; anywhere else (a plain
process, a test, ``ScalingConfig(num_workers=0)``-style use) they answer as a single process,
so the training loop runs with or without Ray.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys

import torch
import torch.distributed as dist


def _train_context():
    try:
        import ray.train  # noqa: PLC0415

        return ray.train.get_context()
    except Exception:  # not inside a Ray Train worker
        return None


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_rank_zero() -> bool:
    return rank() == 0


def device() -> torch.device:
    """The worker's device: its CUDA device under Ray Train with GPUs, else the CPU."""
    if torch.cuda.is_available():
        try:
            import ray.train.torch  # noqa: PLC0415

            return ray.train.torch.get_device()
        except Exception:
            return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def print0(*args, **kwargs) -> None:
    """``print`` on rank 0 only, flushed (Ray forwards worker stdout line by line).

    Ray Train patches ``print`` in its workers to log through the root logger *and* echo
    to a wrapped stdout, which shows every line twice; writing to the process's own stdout
    (what Ray forwards to the driver) shows it once.
    """
    if is_rank_zero():
        stream = sys.__stdout__ if _train_context() is not None else sys.stdout
        print(*args, **kwargs, file=stream, flush=True)


@contextlib.contextmanager
def quiet():
    """Swallow what third-party code prints (pycocotools' progress chatter).

    ``redirect_stdout`` alone misses it in a Ray Train worker, where ``print`` is patched to
    log at INFO through the root logger, so INFO logging is paused for the block as well.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over workers (identity with one process)."""
    if world_size() == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world_size()


def init_ray(address: str | None = None) -> None:
    """For job scripts: attach to a cluster if one is named, else start Ray locally.

    ``ray job submit`` sets ``RAY_ADDRESS``; without it a local Ray starts with more logical
    CPUs than cores, so the student, the crop actor and the teacher services of a run (or
    two runs side by side) fit on a laptop and the OS time-slices them. The dashboard runs
    too: Ray Train's placement-group cleaner asks its state API whether the controller lives.
    A process that already has Ray (a job's ``main`` called from a test or a notebook)
    keeps it; naming another address there is refused.
    """
    import os  # noqa: PLC0415

    import ray  # noqa: PLC0415

    from unipose_ray.runtime.output import filter_worker_output, quiet_driver_logging  # noqa: PLC0415

    quiet_driver_logging()
    if ray.is_initialized():
        if address:
            raise RuntimeError(
                f"this process already has a Ray ({ray.get_runtime_context().gcs_address}); "
                f"--address {address} cannot attach it to another: run the job in a process "
                "of its own, or leave --address out to use the one it has")
    elif address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        start_local_ray(num_cpus=max(8, 2 * (os.cpu_count() or 1)),
                        logging_level=logging.WARNING)
    filter_worker_output()


def start_local_ray(**kwargs) -> None:
    """``ray.init`` of a local cluster whose workers run this very interpreter.

    Started under ``uv run``, Ray launches every worker process through ``uv run`` in a
    copy of the working directory (its ``RAY_ENABLE_UV_RUN_RUNTIME_ENV`` hook): seconds
    per process and a page of packaging logs, to rebuild the environment this process
    already has. A cluster elsewhere needs that hook (or an image); a local one does not.
    Setting ``RAY_ENABLE_UV_RUN_RUNTIME_ENV`` yourself still wins.

    Start-up on a laptop's few cores is what the user waits for, so by default (variables
    you set win) the raylet does not prestart idle workers for the first driver (Ray
    Train's actors carry their own runtime environment and do not use them), and Ray
    Train runs no preemption watcher (a local machine is not preempted): each was one
    more process importing its stack while the trainings start.

    Always a new Ray of this process's own (``address="local"``): a bare ``ray.init`` would
    attach to a Ray that someone else started on this machine (``ray start``), with its
    resources, its runtime environment and its jobs.
    """
    import os  # noqa: PLC0415

    import ray  # noqa: PLC0415

    from unipose_ray.runtime.ray_internals import disable_uv_run_runtime_env  # noqa: PLC0415

    if "RAY_ENABLE_UV_RUN_RUNTIME_ENV" not in os.environ:
        # read by ray.init; stays off for the rest of this process, like the env var would
        disable_uv_run_runtime_env()
    for name, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(name, value)  # inherited by the raylet and every worker
    ray.init(address="local", **kwargs)
    global _STARTED_LOCALLY
    _STARTED_LOCALLY = True


_STARTED_LOCALLY = False


def started_local_ray() -> bool:
    """Whether this process started its own Ray (which no node will ever join)."""
    return _STARTED_LOCALLY


LOCAL_RAY_ENV = {"RAY_prestart_worker_first_driver": "0",
                 "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
