"""Typed parsing of JSON manifests into dataclasses: every field's type is checked, unknown keys are refused.

`parse(Cls, data, where, error)` is `uti.config.from_dict` plus a type check of each value against the
field's annotation (`int` refuses bools, floats and 5000-digit numbers; `float` refuses NaN/inf; `str`,
`bool`, `X | None`, `tuple[X, ...]`, `dict[str, X]`, nested dataclasses; `Any` takes any
JSON value). Lists become tuples where the field is a tuple. Value rules (ranges, cross-field checks)
stay in each dataclass's `__post_init__`; a `ValueError` raised there becomes `error` with `where`.
Nothing is coerced: a value of the wrong type is a one-line error naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

from uti.errors import ConfigError, UTIError

__all__ = ["parse", "MAX_INT"]

T = TypeVar("T")
MAX_INT = 2**53  # larger integers are not exact in most JSON readers and are never a valid size here
_MAX_STR = 1 << 16


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check(tp: Any, value: Any, where: str, error: type[UTIError]) -> Any:
    """`value` checked against annotation `tp` (lists converted to tuples for tuple fields)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        failures = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(arg, value, where, error)
            except UTIError as err:
                failures.append(str(err))
        raise error(failures[0] if len(failures) == 1 else f"{where}: unexpected {_type_name(value)} value")
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where, error)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INT
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and abs(value) <= MAX_INT
    elif tp is str:
        ok = isinstance(value, str) and len(value) <= _MAX_STR
    elif origin is tuple:
        if not isinstance(value, list):
            raise error(f"{where}: expected a list, got {_type_name(value)}")
        item = typing.get_args(tp)[0]
        return tuple(_check(item, v, f"{where}[{i}]", error) for i, v in enumerate(value))
    elif origin is dict:
        if not isinstance(value, dict):
            raise error(f"{where}: expected an object, got {_type_name(value)}")
        item = typing.get_args(tp)[1]
        return {k: _check(item, v, f"{where}.{k}", error) for k, v in value.items()}
    else:  # pragma: no cover - a schema using an unsupported annotation is a programming error
        raise TypeError(f"unsupported annotation {tp!r} at {where}")
    if not ok:
        raise error(f"{where}: expected {tp.__name__}, got {_type_name(value)} {value!r:.40}")
    return value


def parse(cls: type[T], data: Any, where: str, error: type[UTIError] = ConfigError) -> T:
    """Build dataclass `cls` from JSON data with every field type-checked; any problem raises `error`."""
    if not isinstance(data, dict):
        raise error(f"{where}: expected an object, got {_type_name(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise error(f"{where}: unknown key(s) {', '.join(map(str, unknown))[:200]}; "
                    f"valid keys: {', '.join(sorted(fields))}")
    missing = [n for n, f in fields.items() if n not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{where}: missing required key(s) {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _check(hints[k], v, f"{where}.{k}", error) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except UTIError as err:
        raise error(f"{where}: {err}") from None
    except (TypeError, ValueError) as err:
        raise error(f"{where}: {err}") from None
