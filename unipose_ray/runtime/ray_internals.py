"""Every use of Ray's private API, in one place (Ray 2.60, pinned by ``uv.lock``).

Each is a small function or constant that names what it reaches into. On a Ray upgrade,
``tests/runtime/test_ray_internals.py`` fails loudly on whichever one moved, instead of a
run breaking (or, worse, a filter or a patch silently doing nothing) somewhere else.

- ``ray._private.worker``: the driver's printer of worker output (:func:`wrap_worker_printers`);
- ``ray._private.ray_constants``: ``uv run`` propagation into workers
  (:func:`disable_uv_run_runtime_env`);
- ``ray._private.state``: the autoscaler's node-group maxima (:func:`autoscaler_max_resources`);
- ``ray.train.v2._internal.callbacks``: the helper actors Ray Train starts for every run
  (:func:`train_helper_callbacks`), which ``LeanTorchTrainer`` drops in its override of
  the private ``DataParallelTrainer._create_default_callbacks``;
- logger names under ``_private`` / ``_internal`` (:data:`TOKEN_NOTE_LOGGER`,
  :data:`DATA_PROGRESS_LOGGER`).
"""

from __future__ import annotations

from collections.abc import Callable

TOKEN_NOTE_LOGGER = "ray._private.authentication.authentication_token_setup"
DATA_PROGRESS_LOGGER = "ray.data._internal.progress"
WORKER_LOG_HANDLER = "ray_print_logs"


def wrap_worker_printers(wrap: Callable[[Callable], Callable]) -> None:
    """Replace the two printers of worker output on the driver by ``wrap(printer)``.

    Worker logs reach the terminal through the stdstream dispatcher's ``ray_print_logs``
    handler, the raylet's notes through ``print_to_stdstream`` itself. ``wrap`` must return
    its argument for a printer it already wrapped (the call is then idempotent).
    """
    from ray._private import worker as ray_worker  # noqa: PLC0415

    ray_worker.print_to_stdstream = wrap(ray_worker.print_to_stdstream)
    dispatcher = ray_worker.global_worker_stdstream_dispatcher
    with dispatcher._lock:
        handlers = dict(dispatcher.handlers)
    printer = handlers.get(WORKER_LOG_HANDLER)
    wrapped = None if printer is None else wrap(printer)
    if wrapped is not printer:
        dispatcher.remove_handler(WORKER_LOG_HANDLER)
        dispatcher.add_handler(WORKER_LOG_HANDLER, wrapped)


def disable_uv_run_runtime_env() -> None:
    """Workers do not re-run ``uv run`` (what ``RAY_ENABLE_UV_RUN_RUNTIME_ENV=0`` does), for
    the rest of this process; read by ``ray.init``."""
    from ray._private import ray_constants  # noqa: PLC0415

    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False


def autoscaler_max_resources() -> dict | None:
    """The resources the autoscaler may bring up (its node groups' maxima); ``None`` when no
    autoscaler published them."""
    import ray._private.state  # noqa: PLC0415

    return ray._private.state.state.get_max_resources_from_cluster_config()


def train_helper_callbacks() -> tuple[type, type]:
    """Ray Train's callbacks that start its dataset manager and its placement-group cleaner
    (built in ``DataParallelTrainer._create_default_callbacks``)."""
    from ray.train.v2._internal.callbacks import DatasetsCallback  # noqa: PLC0415
    from ray.train.v2._internal.callbacks.placement_group_callback import (  # noqa: PLC0415
        PlacementGroupCleanerCallback,
    )

    return DatasetsCallback, PlacementGroupCleanerCallback
