"""Released model files: a folder of MMPose configs and checkpoints with a ``manifest.json``.

The demo starts from released files the way the paper starts from MMPose's: a backbone
checkpoint and teacher config + checkpoint paths. A folder that holds a
``manifest.json`` is a release: every file it lists is checked against its sha256 when it
is read (:func:`verify_released`, called by every checkpoint and config reader), so a
damaged or swapped file fails with its name, not with a wrong table.

:func:`write_release` makes such a folder: fp16 weights (half the size; the models run in
fp32 after loading), the MMPose configs as written by training, and a manifest with the
sha256 of each file and how they were made.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unipose_ray.cli import InputError

MANIFEST_NAME = "manifest.json"


class ReleaseError(InputError, ValueError):
    """A released file does not match its manifest."""


def sha256_of(*paths: str | os.PathLike) -> str:
    """The sha256 of the files' bytes, one after the other (of one file: its own; code
    moved between the files keeps it)."""
    if not paths:
        raise ValueError("sha256_of needs at least one file")
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def verify_released(path: str | os.PathLike) -> None:
    """Check ``path`` against the ``manifest.json`` of its folder, if there is one.

    Raises:
        ReleaseError: the file is listed with another sha256, or the folder is a release
            that does not list it.
    """
    path = Path(path)
    manifest_path = path.parent / MANIFEST_NAME
    if not manifest_path.is_file():
        return
    files = json.loads(manifest_path.read_text()).get("files", {})
    if path.name not in files:
        raise ReleaseError(f"{path} is not one of the files {manifest_path} lists "
                           f"({', '.join(sorted(files))}); keep other files out of a release folder")
    expected, actual = files[path.name]["sha256"], sha256_of(path)
    if actual != expected:
        raise ReleaseError(
            f"{path} has sha256 {actual[:16]}..., but {manifest_path} says {expected[:16]}...: "
            "the file was changed or damaged. Restore it (git checkout -- <file>) or remake "
            "the release with jobs/release_demo_models.py")


def write_manifest(folder: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    """``manifest.json`` with the sha256 and size of every other file in ``folder``."""
    folder = Path(folder)
    files = {p.name: {"sha256": sha256_of(p), "bytes": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_NAME}
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps({"files": files, **info}, indent=2) + "\n")
    return path
