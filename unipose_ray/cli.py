"""How every job meets its user: a mistake is one message and exit code 2, a failure whole.

A user's mistake (a config key or value, a missing or wrong file, a resumed run given other
settings) raises a :class:`UsageError`; :func:`entry` turns it into ``<job>: error:
<message>`` on stderr and exit code 2, as argparse does for a bad flag, without a
traceback. Anything else (a bug, a dead node, a full disk) propagates whole.

This module imports nothing heavy: the jobs check their config and inputs with it before
they import Ray, MLflow or the model stack.
"""

from __future__ import annotations

import argparse
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


# --- the flags jobs share, defined once ---------------------------------------------------
# ``--config`` always means the run's config (a preset or a YAML file); an MMPose model config
# file (``.py``) is ``--model-config``.


def job_parser(doc: str | None) -> argparse.ArgumentParser:
    """A job's parser, described by the first line of its module docstring."""
    return argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)


def add_run_flags(parser: argparse.ArgumentParser, *, config: str, presets: tuple[str, ...],
                  output_dir: str | None, output_help: str = "where everything is written",
                  tracking: bool = False, address: bool = True, resume: bool = False,
                  example: str = "optim.epochs=5") -> None:
    """The flags of a job that runs a config: ``--config``, ``--output-dir`` (required when
    ``output_dir`` is ``None``), ``--tracking-uri``, ``--address``, ``--resume-anyway`` and the
    ``a.b=value`` overrides."""
    parser.add_argument("--config", default=config,
                        help=f"the run config: a preset ({', '.join(presets)}) or a YAML file")
    parser.add_argument("--output-dir", default=output_dir, required=output_dir is None,
                        help=output_help)
    if tracking:
        parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                            "MLFLOW_TRACKING_URI or a SQLite store in --output-dir)")
    if address:
        parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    if resume:
        parser.add_argument("--resume-anyway", action="store_true",
                            help="resume a run although its settings changed (see the refusal)")
    parser.add_argument("overrides", nargs="*", help=f"config overrides, e.g. {example}")


def run_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides, with ``--tracking-uri`` as ``tracking.tracking_uri`` when given."""
    uri = getattr(args, "tracking_uri", None)
    return [*args.overrides, *([f"tracking.tracking_uri={uri}"] if uri else [])]


def add_model_flags(parser: argparse.ArgumentParser, *, onnx: bool = False) -> None:
    """The flags of a job that loads a trained model: ``--checkpoint``, ``--model-config``
    (its MMPose config, default ``model_config.py`` beside it) and ``--trust-checkpoint``."""
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="MMPose checkpoint (.pth)" + (" or ONNX export (.onnx)" if onnx else ""))
    parser.add_argument("--model-config", type=Path,
                        help="its MMPose model config (.py); default: model_config.py beside it")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle the checkpoint without restrictions (trusted files only)")
