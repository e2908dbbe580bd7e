"""Literals and small helpers the tests share (importable from any test module: pytest puts
``tests/`` on ``sys.path`` for its root conftest)."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from unipose_ray.config import load_config
from unipose_ray.data.synthetic import SyntheticConfig

REPO = Path(__file__).resolve().parents[1]

DEMO_CODEC = load_config("demo").student.codec
"""The demo student's SimCC codec (RTMPose-t at 64x96, sigma (1.63, 2.12), split 2)."""

TINY_DATA = SyntheticConfig(seed=0, coco_train=24, coco_val=4, mpii_train=24, mpii_val=4,
                            max_people=2, occluder_prob=0.2, truncation_prob=0.1)
"""The suite's one generated dataset (the ``tiny_dataset`` fixture)."""


def free_port() -> int:
    """A loopback TCP port nothing listens on now (the OS's choice: never a fixed one, which
    a Ray or a server a contributor runs may hold)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def in_repo():
    """Work in the repository (the presets' ``released/`` paths are relative to it)."""
    before = os.getcwd()
    os.chdir(REPO)
    try:
        yield REPO
    finally:
        os.chdir(before)
