"""Hostile-safe JSON reading and a small declarative schema checker for the toolkit's file formats.

`read_json_file(path, max_bytes, error)` reads a JSON file the way every reader of untrusted files must:
the size is bounded before reading, NaN/Infinity (which Python's `json` accepts), floats that overflow to
inf, integers past Python's 4300-digit limit, duplicate keys and nesting deep enough to exhaust the stack
are all refused with one line (`error` is the `UTIError` subclass to raise).

A schema is a tree of specs (`Int`, `Num`, `Str`, `Bool`, `Const`, `Opt`, `ListOf`, `MapOf`, `Obj`,
`Either`); `problems(spec, value, where)` returns one line per violation (empty when valid). Every
number has bounds, every list and map a maximum length, every object a closed set of keys, so a value
that passes can be used without allocating more than the bounds allow. Bools are never integers or
numbers, and strings are never numbers: nothing is coerced.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UTIError

__all__ = ["Spec", "Int", "Num", "Str", "Bool", "Const", "Opt", "ListOf", "MapOf", "Obj", "Either", "problems",
           "parse_json", "read_json_file", "HEX_HASH"]


class _Refused(Exception):
    """A JSON construct the toolkit refuses (raised from inside the parser's hooks)."""


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number JSON allows")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:24]} does not fit a float")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def parse_json(text: str | bytes, where: str, error: type[UTIError]) -> Any:
    """Parse `text` strictly (see module doc); any problem raises `error` with one line naming `where`."""
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float, object_pairs_hook=_object)
    except _Refused as err:
        raise error(f"{where}: {err}") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply") from None
    except json.JSONDecodeError as err:
        raise error(f"{where}: not valid JSON: {err}") from None
    except UnicodeDecodeError as err:
        raise error(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except ValueError as err:  # Python refuses integer literals of more than 4300 digits
        why = "an integer literal has thousands of digits" if "digits" in str(err) else str(err).splitlines()[0][:120]
        raise error(f"{where}: not acceptable JSON: {why}") from None


def read_json_file(path: str | os.PathLike, max_bytes: int, error: type[UTIError], what: str = "JSON file") -> Any:
    """Read and strictly parse the JSON file `path`, refusing files over `max_bytes` before reading them."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path}: {what} is {size} bytes, more than the limit of {max_bytes}; it is not a {what}")
        data = path.read_bytes()
    except OSError as err:
        raise error(f"{path}: cannot read {what}: {err.strerror or err}") from None
    return parse_json(data, str(path), error)


def _show(value: Any) -> str:
    """A short description of `value` for messages (never the whole of a huge value)."""
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} of {len(value)}"
    if value is None:
        return "null"
    big = isinstance(value, int) and abs(value) >= 10**30
    text = f"an integer of {len(str(value))} digits" if big else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Spec:
    """One node of a schema; `check` appends one line per problem of `value` (at dotted path `where`).

    A leaf says only whether it `accepts` a value; containers override `check` to look inside.
    """

    def check(self, value: Any, where: str, out: list[str]) -> None:
        if not self.accepts(value):
            out.append(f"{where} must be {self.describe()}, got {_show(value)}")

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Spec):
    lo: int
    hi: int

    def accepts(self, value: Any) -> bool:
        return _is_int(value) and self.lo <= value <= self.hi

    def describe(self) -> str:
        return f"an integer in [{self.lo}, {self.hi}]"


@dataclass(frozen=True)
class Num(Spec):
    lo: float
    hi: float

    def accepts(self, value: Any) -> bool:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok and self.lo <= value <= self.hi

    def describe(self) -> str:
        return f"a number in [{self.lo}, {self.hi}]"


@dataclass(frozen=True)
class Str(Spec):
    max_len: int = 256
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    min_len: int = 1
    name: str | None = None  # how messages describe the expected value

    def accepts(self, value: Any) -> bool:
        ok = isinstance(value, str) and self.min_len <= len(value) <= self.max_len
        ok = ok and (self.pattern is None or re.fullmatch(self.pattern, value) is not None)
        return ok and (self.choices is None or value in self.choices)

    def describe(self) -> str:
        if self.name is not None:
            return self.name
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        shape = f" matching {self.pattern}" if self.pattern else ""
        return f"a string of {self.min_len}..{self.max_len} characters{shape}"


@dataclass(frozen=True)
class Bool(Spec):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Const(Spec):
    value: Any

    def accepts(self, value: Any) -> bool:
        return type(value) is type(self.value) and value == self.value

    def describe(self) -> str:
        return repr(self.value)


@dataclass(frozen=True)
class Opt(Spec):
    """`inner` or null (an explicit null, e.g. an unpinned hash; a missing key is the parent `Obj`'s business)."""

    inner: Spec

    def check(self, value: Any, where: str, out: list[str]) -> None:
        if value is not None:
            self.inner.check(value, where, out)

    def describe(self) -> str:
        return f"{self.inner.describe()} or null"


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    max_len: int
    min_len: int = 0

    def check(self, value: Any, where: str, out: list[str]) -> None:
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            out.append(f"{where} must be {self.describe()}, got {_show(value)}")
            return
        for i, item in enumerate(value):
            self.item.check(item, f"{where}[{i}]", out)

    def describe(self) -> str:
        return f"a list of {self.min_len}..{self.max_len} items, each {self.item.describe()}"


@dataclass(frozen=True)
class MapOf(Spec):
    """A mapping with keys matching `key` and values matching `value` (for maps whose keys are data)."""

    key: Str
    value: Spec
    max_len: int

    def check(self, value: Any, where: str, out: list[str]) -> None:
        if not isinstance(value, dict) or len(value) > self.max_len:
            out.append(f"{where} must be {self.describe()}, got {_show(value)}")
            return
        for k, v in value.items():
            self.key.check(k, f"{where} key", out)
            self.value.check(v, f"{where}.{k[:40]}", out)

    def describe(self) -> str:
        return f"a mapping of at most {self.max_len} entries"


@dataclass(frozen=True)
class Obj(Spec):
    """A mapping with a closed set of keys; `required` ones must be present (null counts as present)."""

    fields: dict[str, Spec]
    required: tuple[str, ...] = ()
    name: str = "a mapping"

    def check(self, value: Any, where: str, out: list[str]) -> None:
        if not isinstance(value, dict):
            out.append(f"{where} must be {self.describe()}, got {_show(value)}")
            return
        unknown = sorted(set(value) - set(self.fields))
        if unknown:
            shown = ", ".join(repr(k[:40]) for k in unknown[:5])
            out.append(f"{where} has unknown key(s) {shown} (valid: {', '.join(sorted(self.fields))})")
        out.extend(f"{where} lacks required key {k!r}" for k in self.required if k not in value)
        for k, spec in self.fields.items():
            if k in value:
                spec.check(value[k], f"{where}.{k}", out)

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class Either(Spec):
    """The first of `options` that `value` satisfies; else one line describing all of them."""

    options: tuple[Spec, ...]
    name: str

    def check(self, value: Any, where: str, out: list[str]) -> None:
        for option in self.options:
            found: list[str] = []
            option.check(value, where, found)
            if not found:
                return
        out.append(f"{where} must be {self.name}, got {_show(value)}")

    def describe(self) -> str:
        return self.name


HEX_HASH = Str(max_len=32, min_len=32, pattern="[0-9a-f]{32}", name="a content hash of 32 lowercase hex digits")


def problems(spec: Spec, value: Any, where: str) -> list[str]:
    """Every violation of `spec` by `value` (one line each; empty when valid)."""
    out: list[str] = []
    spec.check(value, where, out)
    return out
