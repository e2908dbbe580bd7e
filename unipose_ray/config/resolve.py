"""Run configs by name: the presets, YAML files that build on one another (``base:``),
and ``a.b=value`` overrides, loaded into a :class:`DistillConfig`."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from unipose_ray.config.loading import ConfigError, apply_overrides, build, load_yaml
from unipose_ray.config.schema import DistillConfig

PRESETS = ("demo", "demo_self_trained", "demo_models", "demo_body", "demo_body_models",
           "demo_sweep", "paper", "paper_body")


def load_config(source: str, overrides: list[str] = ()) -> DistillConfig:
    """A :class:`DistillConfig` from a preset name or a YAML file, plus ``a.b=value`` overrides.

    A file may start from another with ``base: <preset or YAML file>`` (a relative path is
    relative to the file): its mappings are merged key by key into the base's, while lists
    (``teachers``) and plain values replace the base's.
    """
    return build(DistillConfig, apply_overrides(_values(source), list(overrides)))


def preset_path(name: str) -> Path:
    return Path(str(resources.files("unipose_ray.config") / "presets" / f"{name}.yaml"))


def _values(source: str, seen: tuple[str, ...] = ()) -> dict:
    """The values of a preset or YAML file, its ``base:`` chain merged in."""
    if source not in PRESETS and not Path(source).is_file():
        raise ConfigError(f"--config {source}: {_not_a_config(source)}")
    path = preset_path(source) if source in PRESETS else Path(source)
    values = load_yaml(path)
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a preset name or a YAML file, got {base!r}")
    resolved = base if base in PRESETS or Path(base).is_absolute() else str(path.parent / base)
    if resolved not in PRESETS and not Path(resolved).is_file():
        raise ConfigError(f"{path}: base: {base}: {_not_a_config(base)}")
    if resolved in seen or resolved == str(path):
        chain = " -> ".join([*seen, str(path), resolved])
        raise ConfigError(f"{path}: base: {base} makes a loop ({chain})")
    return merged(_values(resolved, (*seen, str(path))), values)


def _not_a_config(name: str) -> str:
    close = difflib.get_close_matches(name, PRESETS, n=1)
    return (f"neither a preset ({', '.join(PRESETS)}) nor a YAML file"
            + (f"; did you mean {close[0]}?" if close else ""))


def merged(base: dict, values: dict) -> dict:
    """``values`` over ``base``: mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out
