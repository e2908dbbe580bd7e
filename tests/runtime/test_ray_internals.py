"""Every private Ray API the product uses still exists where ``runtime/ray_internals.py``
reaches for it: an upgrade that moves one fails here, by name."""

from __future__ import annotations

import logging

import pytest
import ray
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from unipose_ray.runtime import ray_internals


def test_the_worker_printers_are_where_they_are_wrapped():
    from ray._private import worker as ray_worker

    assert callable(ray_worker.print_to_stdstream)
    dispatcher = ray_worker.global_worker_stdstream_dispatcher
    assert hasattr(dispatcher, "_lock") and isinstance(dispatcher.handlers, list)  # of pairs
    assert callable(dispatcher.add_handler) and callable(dispatcher.remove_handler)


def test_wrapping_the_worker_printers_wraps_both_once():
    from ray._private import worker as ray_worker

    dispatcher = ray_worker.global_worker_stdstream_dispatcher
    original_print = ray_worker.print_to_stdstream
    wrapped: list = []

    def printer(data):
        return None

    dispatcher.add_handler(ray_internals.WORKER_LOG_HANDLER, printer)

    def wrap(f):
        if getattr(f, "_wrapped", False):
            return f
        g = lambda *a, **k: f(*a, **k)  # noqa: E731
        g._wrapped = True
        wrapped.append(f)
        return g

    try:
        ray_internals.wrap_worker_printers(wrap)
        ray_internals.wrap_worker_printers(wrap)  # idempotent
        assert wrapped == [original_print, printer]
        assert dict(dispatcher.handlers)[ray_internals.WORKER_LOG_HANDLER]._wrapped
    finally:
        ray_worker.print_to_stdstream = original_print
        dispatcher.remove_handler(ray_internals.WORKER_LOG_HANDLER)


def test_the_uv_run_switch_is_the_constant_ray_init_reads(monkeypatch):
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "RAY_ENABLE_UV_RUN_RUNTIME_ENV", True)
    ray_internals.disable_uv_run_runtime_env()
    assert ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV is False


def test_the_autoscaler_limits_are_read_where_ray_keeps_them():
    from ray._private import state

    assert callable(state.state.get_max_resources_from_cluster_config)
    if not ray.is_initialized():  # no GCS to ask: Ray raises, the driver treats it as none
        with pytest.raises(Exception):  # noqa: B017, PT011
            ray_internals.autoscaler_max_resources()


def test_the_train_helper_callbacks_are_rays_default_ones():
    datasets, cleaner = ray_internals.train_helper_callbacks()
    assert datasets.__name__ == "DatasetsCallback"
    assert cleaner.__name__ == "PlacementGroupCleanerCallback"
    assert callable(DataParallelTrainer._create_default_callbacks)


@pytest.mark.parametrize("name", [ray_internals.TOKEN_NOTE_LOGGER,
                                  ray_internals.DATA_PROGRESS_LOGGER])
def test_the_quieted_loggers_are_rays_module_names(name):
    import importlib

    importlib.import_module(name)  # the logger is its module's __name__
    assert logging.getLogger(name).name == name
