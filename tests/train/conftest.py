"""Fixtures of the training tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the module (8 logical CPUs: a student, crop actors and
    teacher services fit on 2 cores, time-sliced); a module that needs the dashboard
    defines its own."""
    import ray

    from unipose_ray.distributed import start_local_ray

    start_local_ray(num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
