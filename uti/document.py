"""The encoded document: the JSON that `uti encode` writes and `uti decode` reads, built and parsed only here.

    {"token_space": {"name": "tiny", "hash": "<32 hex>"}, "modality": "text" | "image" | "audio",
     "ids": [int, ...], "meta": {...}[, "unpinned": ["vision_tower", ...]]}

A document is hostile input. `read_document` bounds the file size before reading, refuses NaN/Infinity,
duplicate keys, over-long integers and deep nesting with one line, and `EncodedDocument` checks every field
by type before anything uses it: `ids` is a flat list of integers (never booleans, floats or strings) in
[0, 2**31), `modality` names a registered codec, and `meta` has exactly the typed fields that codec
declares (`ModalityCodec.meta_type`), so a new modality needs no edit here. Nothing is coerced: `1.5`,
`"258"`, `true` or `num_samples: 1000.7` refuse the document. `unpinned` (present only when non-empty) lists
the assets the encoder used without a pinned content hash (`uti encode --allow-unpinned`).

`document_space` picks the space to decode with: the one the user named (a name or a path), else the
registered space the document names (a name is never opened as a path); the hashes must match.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
import re
import reprlib
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from .dtypes import warn_compute_dtype
from .errors import HashMismatchError, InputError, SpaceError
from .io import atomic_write_text

__all__ = [
    "EncodedDocument",
    "MAX_DOCUMENT_BYTES",
    "MAX_IDS",
    "at_least",
    "document_space",
    "meta_type",
    "parse_document",
    "read_document",
    "write_document",
]

MAX_DOCUMENT_BYTES = 64 * 2**20  #: larger files are refused before they are read
MAX_IDS = 2**23  #: ~ 58 min of 8-level EnCodec audio at 75 Hz; a longer stream belongs in shards
ID_LIMIT = 2**31  #: every ID lies in [0, ID_LIMIT) whatever the space
MAX_LIST = 4096  #: longest list inside `meta`
_INT64 = 2**63
_KEYS = ("token_space", "modality", "ids", "meta", "unpinned")
MAX_UNPINNED = 32  #: a space names at most 32 assets
_SPACE_KEYS = ("name", "hash")
_HASH = re.compile(r"[0-9a-f]{32}")
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = _SHOW.maxlong = 40
_SPACE_HINT = "give the space file with --space PATH/token_space.json"


# --- typed meta: each codec owns the dataclass of its documents' meta (`ModalityCodec.meta_type`) ---------

def meta_type(modality: str) -> type | None:
    """The dataclass the `meta` of a `modality` document must match: the registered codec's `meta_type`
    (None when no codec is registered under that exact name)."""
    from .codecs import codec_classes

    return next((c.meta_type for c in codec_classes() if c.modality == modality), None)


def at_least(obj: Any, name: str, low: int) -> None:
    """For a meta dataclass's `__post_init__`: field `name` of `obj`, when set, must be >= `low`."""
    value = getattr(obj, name)
    if value is not None and value < low:
        raise InputError(f"{name} must be >= {low}, got {value}")


def _typed(hint: Any, value: Any, where: str) -> Any:
    """`value` checked against type `hint` (no coercion); dataclass hints build the dataclass from a dict."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None) and value is None:
                return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(inner, value, where)
    if origin is Literal:
        if value in args and type(value) is type(args[0]):
            return value
        raise InputError(f"{where} must be one of {', '.join(map(repr, args))}, got {_SHOW.repr(value)}")
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, where)
    want = origin or hint
    ok = {int: lambda v: type(v) is int and -_INT64 <= v < _INT64,
          float: lambda v: type(v) in (int, float) and -_INT64 <= v < _INT64,
          str: lambda v: type(v) is str, bool: lambda v: type(v) is bool,
          list: lambda v: type(v) is list and len(v) <= MAX_LIST, dict: lambda v: type(v) is dict}[want]
    if not ok(value):
        kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                list: f"a list of at most {MAX_LIST} items", dict: "an object"}[want]
        raise InputError(f"{where} must be {kind}, got {_describe(value)}")
    if want is list:
        return [_typed(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _dataclass(cls: type, value: Any, where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if type(value) is not dict:
        raise InputError(f"{where} must be an object with keys {', '.join(fields)}, got {_describe(value)}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise InputError(f"{where} has unknown key(s) {_names(unknown)}; valid keys: {', '.join(fields)}")
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in value]
    if required:
        raise InputError(f"{where} lacks required key(s) {', '.join(required)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _typed(hints[k], v, f"{where}.{k}") for k, v in value.items()}
    try:
        return cls(**kwargs)
    except InputError as err:  # a __post_init__ check, which names the field only
        raise InputError(f"{where}.{err}") from None


def _names(keys: Any, limit: int = 5) -> str:
    """At most `limit` keys, quoted and shortened, for a message."""
    keys = sorted(keys)
    return ", ".join(_SHOW.repr(k) for k in keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _describe(value: Any) -> str:
    """A short, safe description of a JSON value for a message (never a deep or huge repr)."""
    if isinstance(value, dict):
        return f"an object with key(s) {_names(value)}" if value else "an empty object"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return f"{type(value).__name__} {_SHOW.repr(value)}"


# --- the document -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class EncodedDocument:
    """One encoded item: the space it was made with (name and hash), its modality, its IDs and meta, and the
    assets it was encoded with unpinned.

    Construction validates every field (see the module doc); `where` (a path or `<stdin>`) only names the
    source in messages.
    """

    space_name: str
    space_hash: str
    modality: str
    ids: list[int]
    meta: dict[str, Any] = field(default_factory=dict)
    where: str = field(default="encoded document", compare=False, repr=False)
    unpinned: tuple[str, ...] = ()  # asset keys used without a pinned content hash (--allow-unpinned)
    typed_meta: Any = field(init=False, compare=False, repr=False)  # the codec's `meta_type` instance of `meta`

    def __post_init__(self) -> None:
        _check_ids(self.ids, self.where)
        if type(self.space_name) is not str or not 0 < len(self.space_name) <= 256:
            raise InputError(f"{self.where}: token_space.name must be a non-empty string of at most 256 "
                             f"characters, got {_describe(self.space_name)}")
        if type(self.space_hash) is not str or not _HASH.fullmatch(self.space_hash):
            raise InputError(f"{self.where}: token_space.hash must be 32 lowercase hex digits, "
                             f"got {_describe(self.space_hash)}")
        schema = meta_type(self.modality) if type(self.modality) is str else None
        if schema is None:
            from .codecs import codec_classes

            raise InputError(f"{self.where}: modality must be one of "
                             f"{', '.join(sorted(c.modality for c in codec_classes()))}, got {_describe(self.modality)}")
        if type(self.unpinned) is not tuple or len(self.unpinned) > MAX_UNPINNED or not all(
                type(k) is str and 0 < len(k) <= 64 for k in self.unpinned):
            raise InputError(f"{self.where}: unpinned must be a list of at most {MAX_UNPINNED} asset names "
                             f"(strings of 1..64 characters), got {_describe(list(self.unpinned))}")
        try:
            typed = _dataclass(schema, self.meta, "meta")
        except InputError as err:
            raise InputError(f"{self.where}: {err}") from None
        object.__setattr__(self, "typed_meta", typed)

    @classmethod
    def for_space(cls, space: Any, modality: str, ids: Any, meta: dict[str, Any] | None = None,
                  unpinned: Any = ()) -> EncodedDocument:
        """The document of `ids` (any integer sequence an encoder returns) made with `space`; `unpinned`: the
        asset keys the encoder used unpinned (`TokenSpace.unpinned_used`)."""
        if any(isinstance(i, bool) for i in ids):
            raise InputError("IDs must be integers, not booleans")
        return cls(space.name, space.hash, modality, [operator.index(i) for i in ids], dict(meta or {}),
                   unpinned=tuple(sorted(unpinned)))

    @classmethod
    def from_json(cls, obj: Any, where: str = "encoded document") -> EncodedDocument:
        """Validate a parsed JSON value as a document (construction checks the IDs before anything else)."""
        if type(obj) is not dict:
            raise InputError(f"{where}: expected a JSON object with keys {', '.join(_KEYS)} (output of "
                             f"`uti encode --json`), got {_describe(obj)}")
        unknown = sorted(set(obj) - set(_KEYS))
        if unknown:
            raise InputError(f"{where}: unknown key(s) {_names(unknown)}; valid keys: {', '.join(_KEYS)}")
        missing = [k for k in _KEYS[:3] if k not in obj]
        if missing:
            raise InputError(f"{where}: missing key(s) {', '.join(missing)} (output of `uti encode --json`)")
        space = obj["token_space"]
        if type(space) is not dict or set(space) != set(_SPACE_KEYS):
            raise InputError(f"{where}: token_space must be an object with exactly the keys name and hash, "
                             f"got {_describe(space)}")
        unpinned = obj.get("unpinned", [])
        if type(unpinned) is not list:
            raise InputError(f"{where}: unpinned must be a list of asset names, got {_describe(unpinned)}")
        return cls(space["name"], space["hash"], obj["modality"], obj["ids"], obj.get("meta", {}), where,
                   tuple(unpinned))

    def to_json(self) -> dict[str, Any]:
        out = {"token_space": {"name": self.space_name, "hash": self.space_hash}, "modality": self.modality,
               "ids": list(self.ids), "meta": dict(self.meta)}
        if self.unpinned:  # only documents made with --allow-unpinned carry the key
            out["unpinned"] = list(self.unpinned)
        return out

    def dumps(self) -> str:
        """The document as one line of JSON (what `uti encode --json` prints and `--out` writes)."""
        return json.dumps(self.to_json(), ensure_ascii=False, allow_nan=False)


def _check_ids(ids: Any, where: str) -> None:
    if type(ids) is not list:
        raise InputError(f"{where}: ids must be a list of integers, got {_describe(ids)}")
    if len(ids) > MAX_IDS:
        raise InputError(f"{where}: {len(ids)} ids; a document holds at most {MAX_IDS} (use batch shards)")
    if set(map(type, ids)) - {int}:  # exact ints only: bool, float, str, list, None are refused
        i, v = next((i, v) for i, v in enumerate(ids) if type(v) is not int)
        raise InputError(f"{where}: ids[{i}] is {_describe(v)}; IDs are integers (not booleans, floats, "
                         "strings or lists)")
    if ids and not (0 <= min(ids) and max(ids) < ID_LIMIT):
        i, v = next((i, v) for i, v in enumerate(ids) if not 0 <= v < ID_LIMIT)
        raise InputError(f"{where}: ids[{i}] is {_SHOW.repr(v)}; IDs lie in [0, 2**31)")


# --- reading and writing ----------------------------------------------------------------------------

class _Refused(ValueError):
    """Raised from inside the JSON parser for input that is valid to Python's json but not to us."""


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"number {_SHOW.repr(text)} overflows to infinity")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        dup = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
        raise _Refused(f"key {_SHOW.repr(dup)} appears twice in one object")
    return obj


def parse_document(data: bytes, where: str = "encoded document") -> EncodedDocument:
    """Parse and validate the bytes of a document; every problem is one `InputError` line naming `where`."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InputError(f"{where}: larger than {MAX_DOCUMENT_BYTES // 2**20} MiB; not an encoded document")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{where}: not UTF-8 text (bad byte at offset {err.start}); expected the JSON "
                         "of `uti encode --json`") from None
    if not text.strip():
        raise InputError(f"{where}: is empty; expected the JSON of `uti encode --json`")
    try:
        obj = json.loads(text, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except _Refused as err:
        raise InputError(f"{where}: not valid JSON ({err})") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply; not an encoded document") from None
    except ValueError as err:  # Python's limit on integer digits (3.11+)
        raise InputError(f"{where}: not valid JSON (a number has too many digits: {str(err).split(':')[0]})") from None
    except MemoryError:
        raise InputError(f"{where}: too large to parse; not an encoded document") from None
    return EncodedDocument.from_json(obj, where)


def read_document(source: str | os.PathLike) -> EncodedDocument:
    """Read and validate a document from a file, or from standard input when `source` is `-`."""
    if str(source) == "-":
        return parse_document(sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1), "<stdin>")
    where = str(source)
    try:
        with open(source, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_DOCUMENT_BYTES:
                raise InputError(f"{where}: larger than {MAX_DOCUMENT_BYTES // 2**20} MiB; not an encoded document")
            data = f.read(MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{where}: is a folder; expected an encoded JSON document (`uti encode --out`)") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise InputError(f"{where}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    return parse_document(data, where)


def write_document(path: str | os.PathLike, doc: EncodedDocument) -> None:
    """Write `doc` to `path` atomically, as the one line `uti encode --json` prints."""
    try:
        atomic_write_text(path, doc.dumps() + "\n")
    except OSError as err:
        raise InputError(f"{path}: cannot write ({err.strerror or err}); choose another --out") from None


# --- the space a document is decoded with --------------------------------------------------------------

def document_space(doc: EncodedDocument, space_ref: str | os.PathLike | None = None) -> Any:
    """The `TokenSpace` to decode `doc` with: `space_ref` (a name or path the user gave) when not None, else
    the registered space the document names. The space's hash must be the document's."""
    from .space import TokenSpace, known_spaces

    if space_ref is not None:
        space = TokenSpace.load(space_ref)
    else:
        name = doc.space_name
        if name not in known_spaces():  # a path-like name is never registered: it is never opened
            known = ", ".join(known_spaces()) or "none"
            raise SpaceError(f"{doc.where} names token space {_SHOW.repr(name)}, which is not a registered space "
                             f"(registered: {known}); {_SPACE_HINT}")
        space = TokenSpace.named(name)
    warn_compute_dtype([doc.meta], doc.where)  # decoding codes made in bfloat16/float16: one warning line
    if space.hash != doc.space_hash:
        raise HashMismatchError(f"{doc.where} was made with token space {_SHOW.repr(doc.space_name)} hash "
                                f"{doc.space_hash}, but space {space.name!r} ({space.path or 'in memory'}) has hash "
                                f"{space.hash}; {_SPACE_HINT} of the space it was made with")
    return space
