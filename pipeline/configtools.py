"""Typed-config machinery: dataclass trees <-> plain dicts/YAML, with errors that name the key path.

Components declare ``@dataclass(kw_only=True)`` configs next to their code and validate single
fields in ``__post_init__`` (raising ``ValueError("field: what is wrong")``). This module turns
YAML/dicts into those dataclasses, rejects unknown keys (listing the valid ones), coerces and
checks types, applies ``--set a.b=value`` overrides, and prefixes every error with the full key
path, e.g. ``train.batch: must be a positive integer, got -3``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

_BOOL_WORDS = {True: ("yes", "on", "true", "y"), False: ("no", "off", "false", "n")}


class ConfigError(ValueError):
    """A user mistake in a config file or override; the message names the key path."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``path``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                f"{path}: expected a mapping of {sorted(_field_names(tp))}, got {value!r}"
            )
        return from_dict(tp, value, path)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed):
            # YAML 1.1 reads no/off/yes/on as booleans: `mixed_precision: no` means the string
            value = next((a for a in allowed if str(a).lower() in _BOOL_WORDS[value]), value)
        if value not in allowed:
            raise ConfigError(
                f"{path}: {value!r} is not valid; choose one of {', '.join(map(repr, allowed))}"
            )
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(number):  # inf/nan would fail much later without the key's name
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    return value


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def from_dict(cls: type, data: dict[str, Any] | None, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad values raise ConfigError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    valid = _field_names(cls)
    unknown = sorted(set(data) - set(valid))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]}"
            + (f" (and {', '.join(where + u for u in unknown[1:])})" if len(unknown) > 1 else "")
            + f"; valid keys{' under ' + path if path else ''}: {', '.join(valid)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{path}.{name}" if path else name)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        msg = str(exc)
        raise ConfigError(f"{path}.{msg}" if path else msg) from None


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict (tuples become lists) suitable for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.batch=32"`` -> (["train", "batch"], 32). The value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value (e.g. train.batch=32)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key path")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cls: type, data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to the raw dict, checking each path against ``cls``."""
    data = _deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node, node_cls, walked = data, cls, []
        for i, key in enumerate(keys):
            valid = _field_names(node_cls)
            if key not in valid:
                where = ".".join(walked)
                raise ConfigError(
                    f"unknown config key {'.'.join(keys[: i + 1])} in override {text!r}; "
                    f"valid keys{' under ' + where if where else ''}: {', '.join(valid)}"
                )
            walked.append(key)
            field_tp = typing.get_type_hints(node_cls)[key]
            if i == len(keys) - 1:
                node[key] = value
            else:
                if not dataclasses.is_dataclass(field_tp):
                    raise ConfigError(
                        f"{'.'.join(walked)} is a value, not a section (override {text!r})"
                    )
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{'.'.join(walked)} must be a mapping")
                node_cls = field_tp
    return data


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``top`` over ``base`` (used for preset inheritance)."""
    out = _deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = _deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: top level must be a mapping of sections, got {type(data).__name__}"
        )
    return data
