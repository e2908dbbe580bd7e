"""Local paths and URIs: resolved once, on the driver, before any work.

Ray Train workers run in another folder, and on a cluster on another machine: a relative
path a user wrote means the driver's working directory, so it becomes absolute there.
URIs (``s3://``, ``gs://``, ``abfs://``, ``file://``) are left as written, for pyarrow's
filesystems (as Ray's own storage does).
"""

from __future__ import annotations

from pathlib import Path


def is_uri(path: str | Path) -> bool:
    """``scheme://...``: a filesystem URI, not a local path."""
    return "://" in str(path)


def resolve_path(path: str | Path) -> str:
    """An absolute local path (``~`` expanded), or the URI unchanged."""
    if is_uri(path):
        return str(path)
    return str(Path(path).expanduser().resolve())
