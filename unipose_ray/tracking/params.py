"""Config -> MLflow params: a typed config tree as the flat ``{"loss.w_gt": 0.45}`` MLflow takes.

Nested dicts break ``log_params``, so :func:`flatten_config` walks the config's plain form
(:func:`unipose_ray.config.loading.to_plain`) into dotted names. MLflow allows only
alphanumerics, ``_ - . / : `` and spaces in a name (:func:`clean_name` replaces the rest
with ``_``) and caps a param value's length (:func:`param_value` truncates).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from unipose_ray.config.loading import to_plain

ParamValue = str | int | float | bool
_INVALID_NAME_CHARS = re.compile(r"[^/\w.\- :]")


def flatten_config(obj: Any, prefix: str = "") -> dict[str, ParamValue]:
    """Flatten nested dataclasses / mappings / lists / tuples into dotted MLflow params.

    ``Config(loss=LossConfig(w_gt=0.45), teachers=(T(checkpoint=Path("a.pth")),))`` gives
    ``{"loss.w_gt": 0.45, "teachers.0.checkpoint": "a.pth"}``. Paths and other objects
    become strings, ``None`` becomes ``"None"``, empty containers ``"[]"`` / ``"{}"``, and
    strings longer than MLflow's param limit are truncated.

    Raises:
        TypeError: if ``obj`` is a scalar (there would be no key to put it under).
    """
    plain = to_plain(obj)
    if not isinstance(plain, dict | list):
        raise TypeError(f"flatten_config expects a dataclass, mapping or sequence, got {obj!r}")
    out: dict[str, ParamValue] = {}
    _flatten_into(plain, prefix, out)
    return out


def run_params(config: Any) -> dict[str, ParamValue]:
    """A run's params: its config flattened, plus its datasets and the joint names of its
    unified skeleton (``datasets``, ``skeleton``: comma-separated), so runs of other
    skeletons are told apart in MLflow without reading their data."""
    return flatten_config(config) | {"datasets": param_value(",".join(config.datasets)),
                                     "skeleton": param_value(",".join(config.skeleton.names))}


def _flatten_into(plain: Any, key: str, out: dict[str, ParamValue]) -> None:
    if isinstance(plain, dict):
        items = list(plain.items())
    elif isinstance(plain, list):
        items = [(str(i), v) for i, v in enumerate(plain)]
    else:
        out[clean_name(key)] = param_value(plain)
        return
    if not items:
        out[clean_name(key)] = "[]" if isinstance(plain, list) else "{}"
    for name, value in items:
        _flatten_into(value, f"{key}.{name}" if key else name, out)


def param_value(value: Any) -> ParamValue:
    """A param's value as MLflow stores it: numbers and booleans as they are, ``None`` as
    ``"None"``, anything else as a string (of a scalar's plain form), truncated to MLflow's
    limit."""
    if not isinstance(value, Mapping | list | tuple):
        value = to_plain(value)
    if value is None:
        return "None"
    if isinstance(value, bool | int | float):
        return value
    text = str(value)
    if len(text) > MAX_PARAM_VAL_LENGTH:
        text = text[: MAX_PARAM_VAL_LENGTH - 3] + "..."
    return text


def clean_name(name: str) -> str:
    """``name`` with each character MLflow rejects in a param or metric name made ``_``."""
    return _INVALID_NAME_CHARS.sub("_", name)
