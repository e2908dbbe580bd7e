"""Typed configs from YAML: nested frozen dataclasses built from plain dicts, with overrides.

``build(DistillConfig, {...})`` turns a YAML mapping into the dataclass tree, checking every
key (a typo is an error that lists the valid keys) and coercing lists to tuples; each
dataclass then validates its own values in ``__post_init__``. ``apply_overrides`` applies
``section.key=value`` strings from the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from unipose_ray.cli import InputError, UsageError

T = TypeVar("T")


class ConfigError(UsageError, ValueError):
    """A config key or value that does not fit the typed config."""


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only ``true`` / ``false``.

    PyYAML follows YAML 1.1, which also reads ``on``, ``off``, ``yes``, ``no`` (and ``y``,
    ``n`` in some tools) as booleans: ``optim.amp: off`` would arrive as ``False``. Here
    they stay words; a boolean field still takes them (see ``_coerce``).
    """


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
"""What a boolean field takes as a word (any case)."""


def parse_yaml(text: str) -> Any:
    """A YAML document or scalar (``3``, ``[1, 2]``, ``null``, ``off``) as plain data."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)


def build(cls: type[T], values: dict | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping (recursively)."""
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    if unknown:
        close = {k: difflib.get_close_matches(k, names, n=1) for k in unknown}
        hints = [f"{k} -> {m[0]}?" for k, m in close.items() if m]
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}"
                          + (f" ({', '.join(hints)})" if hints else "")
                          + f"; valid keys: {names}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _coerce(options[0], value, where) if len(options) == 1 else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()} if args else value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}.{i}") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(a, v, f"{where}.{i}") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint is bool and isinstance(value, str) and value.lower() in _WORDS:
        return _WORDS[value.lower()]
    if hint in (int, str, bool) and (not isinstance(value, hint)
                                     or hint is int and isinstance(value, bool)):
        got = "null (write the word in quotes: 'null')" if value is None else repr(value)
        raise ConfigError(f"{where}: expected {hint.__name__}, got {got}")
    return value


def to_plain(obj: Any) -> Any:
    """The plain-data form of a config tree: what JSON, YAML and MLflow receive.

    Dataclasses become dicts (``dataclasses.asdict``), mappings dicts with string keys,
    tuples and lists lists, sets sorted lists of strings, enums their names, numpy scalars
    Python numbers; ``None``, booleans, numbers and strings stay; paths and any other object
    become their ``str``.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted(map(str, obj))
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():  # numpy scalars
        return obj.item()
    if isinstance(obj, enum.Enum):
        return obj.name
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    with open(path) as f:
        try:
            data = parse_yaml(f) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level of a config must be a mapping")
    return data


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML: ``3``, ``[1, 2]``, ``null``)."""
    values = _deep_copy(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, raw = item.split("=", 1)
        *parents, leaf = key.strip().split(".")
        node = values
        for part in parents:
            node = _child(node, part, item)
        if isinstance(node, list):
            node[_list_index(node, leaf, item)] = _value(raw, item)
        else:
            node[leaf] = _value(raw, item)
    return values


def _value(raw: str, item: str) -> Any:
    try:
        return parse_yaml(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override '{item}': the value is not valid YAML (quote a string "
                          "with spaces or colons: key='a: b')") from None


def _child(node: Any, part: str, item: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, item)]
    if not isinstance(node, dict):
        raise ConfigError(f"override '{item}': '{part}' is inside a value, not a section")
    return node.setdefault(part, {})


def _list_index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override '{item}': '{part}' is not an index of a list of "
                          f"{len(node)} entries")
    return int(part)


def _deep_copy(values: Any) -> Any:
    if isinstance(values, dict):
        return {k: _deep_copy(v) for k, v in values.items()}
    if isinstance(values, list):
        return [_deep_copy(v) for v in values]
    return values
