"""How every job meets its user: a mistake is one message and exit code 2, a failure whole.

A user's mistake (a config key or value, a missing or wrong file, a resumed run given other
settings) raises a :class:`UsageError`; :func:`entry` turns it into ``<job>: error:
<message>`` on stderr and exit code 2, as argparse does for a bad flag, without a
traceback. Anything else (a bug, a dead node, a full disk) propagates whole.

This module imports nothing heavy: the jobs check their config and inputs with it before
they import Ray, MLflow or the model stack.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

R = TypeVar("R")


class UsageError(Exception):
    """A mistake the user fixes in the command, the config or a file; the message says how."""


class InputError(UsageError, FileNotFoundError):
    """A file or folder the run needs is missing or is not what it should be."""


def entry(main: Callable[..., R]) -> Callable[..., R]:
    """Decorate a job's ``main(argv)``: a :class:`UsageError` exits with code 2 and its
    message, named after the job's file (``distill.py: error: ...``)."""
    job = Path(inspect.getfile(main)).name

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> R:
        try:
            return main(argv)
        except UsageError as error:
            print(f"{job}: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    return run
