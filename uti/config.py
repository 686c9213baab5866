"""Typed configs: dataclasses built from dicts (JSON or YAML files) with unknown keys rejected.

`from_dict(Cls, d)` builds nested dataclasses recursively, turns lists into tuples where the field is a
tuple, and raises `ConfigError` naming the bad key and listing the valid ones. Value checks live in each
dataclass's `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, UTIError

__all__ = ["from_dict", "parse", "to_dict", "read_config_file", "MAX_INT"]

MAX_INT = 2**53  # larger integers are not exact in most JSON readers and are never a valid size here
_MAX_STR = 1 << 16

T = TypeVar("T")


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass inside `tp` (`Foo`, `Foo | None`, `Optional[Foo]`), or None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def _convert(tp: Any, value: Any, where: str) -> Any:
    sub = _dataclass_in(tp)
    if sub is not None and isinstance(value, dict):
        return from_dict(sub, value, where)
    origin = typing.get_origin(tp) or tp
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def _fields(cls: type, data: Any, where: str, error: type[UTIError]) -> dict[str, dataclasses.Field]:
    """`cls`'s init fields, after refusing a non-mapping, unknown keys (listing the valid ones) and missing keys."""
    if not isinstance(data, dict):
        raise error(f"{where}: expected a mapping of fields, got {_type_name(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(map(str, set(data) - set(fields)))
    if unknown:
        raise error(f"{where}: unknown key(s) {', '.join(unknown)[:200]}; valid keys: {', '.join(sorted(fields))}")
    missing = [n for n, f in fields.items() if n not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{where}: missing required key(s) {', '.join(missing)}")
    return fields


def _build(cls: type[T], kwargs: dict[str, Any], where: str, error: type[UTIError]) -> T:
    try:
        return cls(**kwargs)
    except error:
        raise
    except (UTIError, TypeError, ValueError) as err:
        raise error(f"{where}: {err}") from None


def from_dict(cls: type[T], data: Any, where: str | None = None) -> T:
    """Build dataclass `cls` from a mapping; unknown or missing keys raise `ConfigError` listing valid keys."""
    where = where or cls.__name__
    _fields(cls, data, where, ConfigError)
    hints = typing.get_type_hints(cls)
    return _build(cls, {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}, where, ConfigError)


def parse(cls: type[T], data: Any, where: str, error: type[UTIError] = ConfigError) -> T:
    """`from_dict` for files the toolkit reads back (manifests): every value is also checked against its field's
    annotation, nothing coerced (`int` refuses bools, floats and numbers past 2**53; `float` refuses NaN/inf;
    `str`, `bool`, `X | None`, `tuple[X, ...]`, `dict[str, X]`, nested dataclasses; `Any` takes any JSON
    value); any problem raises `error` naming the field. Value rules stay in each `__post_init__`."""
    _fields(cls, data, where, error)
    hints = typing.get_type_hints(cls)
    return _build(cls, {k: _check(hints[k], v, f"{where}.{k}", error) for k, v in data.items()}, where, error)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check(tp: Any, value: Any, where: str, error: type[UTIError]) -> Any:
    """`value` checked against annotation `tp` (lists converted to tuples for tuple fields)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _check_union(typing.get_args(tp), value, where, error)
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where, error)
    if origin in (tuple, dict):
        return _check_container(tp, value, where, error)
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_INT,
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
          and abs(v) <= MAX_INT,
          str: lambda v: isinstance(v, str) and len(v) <= _MAX_STR}.get(tp)
    if ok is None:  # pragma: no cover - a schema using an unsupported annotation is a programming error
        raise TypeError(f"unsupported annotation {tp!r} at {where}")
    if not ok(value):
        raise error(f"{where}: expected {tp.__name__}, got {_type_name(value)} {value!r:.40}")
    return value


def _check_union(args: tuple, value: Any, where: str, error: type[UTIError]) -> Any:
    if value is None and type(None) in args:
        return None
    failures = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _check(arg, value, where, error)
        except UTIError as err:
            failures.append(str(err))
    raise error(failures[0] if len(failures) == 1 else f"{where}: unexpected {_type_name(value)} value")


def _check_container(tp: Any, value: Any, where: str, error: type[UTIError]) -> Any:
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list):
            raise error(f"{where}: expected a list, got {_type_name(value)}")
        item = typing.get_args(tp)[0]
        return tuple(_check(item, v, f"{where}[{i}]", error) for i, v in enumerate(value))
    if not isinstance(value, dict):
        raise error(f"{where}: expected an object, got {_type_name(value)}")
    item = typing.get_args(tp)[1]
    return {k: _check(item, v, f"{where}.{k}", error) for k, v in value.items()}


def to_dict(obj: Any) -> dict:
    """A dataclass as plain JSON-ready data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def read_config_file(path: str | Path) -> dict:
    """Read a JSON or YAML (`.yaml`/`.yml`) mapping; malformed files raise `ConfigError` with the location."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # yaml.YAMLError / json.JSONDecodeError: both carry a position
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    return data
