"""The token space: one global ID space for text, specials, image codes and audio codes.

A space file (`token_space.json`) has an `abi` section, the only part that is hashed (xxh3-128 of its
canonical JSON). Every ID range is derived from the `abi`:

    text     [0, V)                  V = base model's config.vocab_size (never shrunk)
    special  [V, V + S)              S = len(abi["specials"]), in list order
    image    [.., + K)               K = abi["image"]["codebook_size"]            (if present)
    audio.q  [.., + C)  q = 0..Q-1   Q, C = abi["audio"]["num_codebooks"/"codebook_size"] (if present)
    padding  [.., total)             total = the next multiple of abi["pad_to_multiple"]

The file also stores `hash`, `ranges` and `total` for people to read; on load all three are recomputed
and any difference is refused. `assets` (where the tokenizer, towers, codebook and codecs are) lies
outside the `abi`: moving a file does not change what an ID means.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from . import space_registry
from .errors import HashMismatchError, MissingAssetError, SpaceError, TokenRangeError
from .hashing import hash_json
from .io import atomic_write_json
from .specials import BASE_SPECIALS

__all__ = ["IdRange", "TokenSpace", "identity_diff", "spaces_dir", "known_spaces", "DEFAULT_SPACE", "SCHEMA"]

SCHEMA = 1
FORMAT = "uti-token-space"
DEFAULT_SPACE = "tiny"
_ABI_KEYS = {"schema", "text", "specials", "image", "audio", "pad_to_multiple"}
_FILE_KEYS = {"format", "name", "description", "hash", "abi", "ranges", "total", "assets"}


@dataclass(frozen=True)
class IdRange:
    """Half-open range [start, stop) of global IDs; maps local codes to global IDs and back, with checks."""

    name: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def __contains__(self, gid: object) -> bool:
        return isinstance(gid, (int, np.integer)) and self.start <= int(gid) < self.stop

    def to_global(self, local: Any) -> Any:
        """Local codes in [0, len) -> global IDs; same container type (tensor, ndarray or list)."""
        arr = _as_array(local)
        if arr.size and (arr.min() < 0 or arr.max() >= len(self)):
            bad = int(arr[(arr < 0) | (arr >= len(self))].flat[0])
            raise TokenRangeError(f"local {self.name} code {bad} is outside [0, {len(self)})")
        return _like(local, arr + self.start)

    def to_local(self, gid: Any) -> Any:
        """Global IDs in this range -> local codes; an ID outside the range raises TokenRangeError."""
        arr = _as_array(gid)
        if arr.size and (arr.min() < self.start or arr.max() >= self.stop):
            bad = int(arr[(arr < self.start) | (arr >= self.stop)].flat[0])
            raise TokenRangeError(f"ID {bad} is not a {self.name} ID; expected [{self.start}, {self.stop})")
        return _like(gid, arr - self.start)

    def as_list(self) -> list[int]:
        return [self.start, self.stop]


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().astype(np.int64, copy=False)
    arr = np.asarray(x)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TokenRangeError(f"token IDs must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _like(template: Any, arr: np.ndarray) -> Any:
    if isinstance(template, torch.Tensor):
        return torch.from_numpy(arr).to(template.device)
    if isinstance(template, np.ndarray):
        return arr
    return arr.tolist()


def spaces_dir() -> Path:
    """Folder holding the toolkit's own spaces: $UTI_SPACES_DIR, else its `token_spaces/` (source tree or wheel)."""
    return space_registry.own_spaces_dir()


def known_spaces() -> list[str]:
    """Names of every registered space: the toolkit's and those other packages register (`uti.space_registry`)."""
    return space_registry.known_spaces()


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def validate_abi(abi: Any) -> list[str]:
    """All problems of an `abi` section (empty list when valid)."""
    if not isinstance(abi, dict):
        return [f"abi must be a mapping, got {type(abi).__name__}"]
    from .codecs import codec_classes, present_codecs

    valid = _ABI_KEYS | {c.modality for c in codec_classes()}
    problems = [f"unknown abi key {k!r} (valid: {', '.join(sorted(valid))})" for k in sorted(set(abi) - valid)]
    if abi.get("schema") != SCHEMA:
        problems.append(f"abi.schema is {abi.get('schema')!r}, expected {SCHEMA}")
    text = abi.get("text")
    if not isinstance(text, dict):
        problems.append("abi.text is missing (expected tokenizer, tokenizer_hash, base_vocab_size)")
    else:
        if not isinstance(text.get("tokenizer"), str) or not text.get("tokenizer"):
            problems.append("abi.text.tokenizer must be a non-empty string")
        if text.get("tokenizer_hash") is not None and not isinstance(text.get("tokenizer_hash"), str):
            problems.append("abi.text.tokenizer_hash must be a hex string or null")
        if not _is_int(text.get("base_vocab_size")) or text["base_vocab_size"] <= 0:
            problems.append(f"abi.text.base_vocab_size must be a positive integer, got {text.get('base_vocab_size')!r}")
    problems += _check_specials(abi)
    for codec in present_codecs(abi):
        problems += codec.validate_section(abi[codec.modality])
    image, audio = abi.get("image"), abi.get("audio")
    if image is not None:
        if not isinstance(image, dict) or not _is_int(image.get("codebook_size")) or image["codebook_size"] <= 0:
            problems.append("abi.image.codebook_size must be a positive integer")
        if not isinstance(image, dict) or not isinstance(image.get("layout"), dict) \
                or not _is_int(image["layout"].get("num_tiles")) or image["layout"]["num_tiles"] < 0:
            problems.append("abi.image.layout.num_tiles must be a non-negative integer")
    if audio is not None:
        for key in ("num_codebooks", "codebook_size"):
            if not isinstance(audio, dict) or not _is_int(audio.get(key)) or audio[key] <= 0:
                problems.append(f"abi.audio.{key} must be a positive integer")
    if not _is_int(abi.get("pad_to_multiple")) or abi["pad_to_multiple"] <= 0:
        problems.append(f"abi.pad_to_multiple must be a positive integer, got {abi.get('pad_to_multiple')!r}")
    return problems


def _required_specials(abi: dict) -> list[str]:
    """The base specials, then those of every present codec (e.g. the image layout's view markers)."""
    from .codecs import present_codecs

    required = list(BASE_SPECIALS)
    for codec in present_codecs(abi):
        required += [n for n in codec.specials(abi[codec.modality]) if n not in required]
    return required


def _check_specials(abi: dict) -> list[str]:
    specials = abi.get("specials")
    if not isinstance(specials, list) or not all(isinstance(s, str) and s for s in specials):
        return ["abi.specials must be a list of non-empty strings"]
    problems = []
    dupes = sorted({s for s in specials if specials.count(s) > 1})
    if dupes:
        problems.append(f"abi.specials has duplicates: {', '.join(dupes)}")
    missing = [s for s in _required_specials(abi) if s not in specials]
    if missing:
        problems.append(f"abi.specials lacks required {', '.join(missing)}")
    return problems


def derive_ranges(abi: dict) -> tuple[dict[str, IdRange], int]:
    """The ID ranges and padded total implied by a valid `abi`: the codecs' declared range sizes laid out as
    text, special, the other present codecs in (rank, name) order (see `uti.codecs`), padding."""
    from .codecs import present_codecs

    ranges: dict[str, IdRange] = {}
    cursor = 0

    def add(name: str, size: int) -> None:
        nonlocal cursor
        ranges[name] = IdRange(name, cursor, cursor + size)
        cursor += size

    codecs = present_codecs(abi)
    for before in (True, False):
        for codec in (c for c in codecs if c.before_specials == before):
            for name, size in codec.range_sizes(abi[codec.modality]):
                add(name, size)
        if before:
            add("special", len(abi["specials"]))
    multiple = abi["pad_to_multiple"]
    total = -(-cursor // multiple) * multiple
    add("padding", total - cursor)
    return ranges, total


class TokenSpace:
    """A loaded, verified token space. Build with `TokenSpace.load(name_or_path)` or `TokenSpace.from_abi`."""

    def __init__(self, abi: dict, *, name: str, assets: dict | None = None, description: str = "",
                 path: Path | None = None) -> None:
        problems = validate_abi(abi)
        if problems:
            raise SpaceError(f"{path or name}: invalid token space: " + "; ".join(problems))
        self.abi = abi
        self.name = name
        self.assets = dict(assets or {})
        self.description = description
        self.path = Path(path) if path is not None else None
        self.hash = hash_json(abi)
        self.ranges, self.total = derive_ranges(abi)
        start = self.ranges["special"].start
        self.specials: dict[str, int] = {s: start + i for i, s in enumerate(abi["specials"])}

    # construction -------------------------------------------------------------------------------
    @classmethod
    def from_abi(cls, abi: dict, name: str, assets: dict | None = None, description: str = "") -> "TokenSpace":
        return cls(abi, name=name, assets=assets, description=description)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike | None = None) -> "TokenSpace":
        """Load a shipped space by name (`tiny`) or a file/folder path; the hash and ranges are re-derived and checked."""
        ref = str(name_or_path or DEFAULT_SPACE)
        path = Path(ref)
        if path.is_dir():
            path = path / "token_space.json"
        elif not path.exists() and os.sep not in ref and not ref.endswith(".json"):
            path = space_registry.resolve_space_name(ref)
        if not path.exists():
            raise SpaceError(f"token space file {ref} does not exist")
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TokenSpace":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise SpaceError(f"{path}: cannot read token space: {err}") from None
        except json.JSONDecodeError as err:
            raise SpaceError(f"{path}: not valid JSON: {err}") from None
        return cls.from_json(data, path)

    @classmethod
    def from_json(cls, data: Any, path: Path | None = None) -> "TokenSpace":
        where = str(path or "<token space>")
        if not isinstance(data, dict):
            raise SpaceError(f"{where}: expected a JSON object")
        problems = [f"unknown key {k!r} (valid: {', '.join(sorted(_FILE_KEYS))})" for k in sorted(set(data) - _FILE_KEYS)]
        problems += [f"missing key {k!r}" for k in ("format", "name", "hash", "abi") if k not in data]
        if data.get("format", FORMAT) != FORMAT:
            problems.append(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        problems += validate_abi(data.get("abi"))
        if problems:
            raise SpaceError(f"{where}: invalid token space: " + "; ".join(problems))
        space = cls(data["abi"], name=data["name"], assets=data.get("assets"),
                    description=data.get("description", ""), path=path)
        if data["hash"] != space.hash:
            raise HashMismatchError(f"{where}: stored hash {data['hash']} != recomputed {space.hash} of its abi; "
                                    "the abi was edited or the file is corrupt (rebuild it with `uti space build`)")
        stored = data.get("ranges")
        if stored is not None:
            derived = {k: r.as_list() for k, r in space.ranges.items()}
            diff = [f"{k}: stored {stored.get(k)} derived {derived.get(k)}"
                    for k in sorted(set(stored) | set(derived)) if stored.get(k) != derived.get(k)]
            if diff:
                raise SpaceError(f"{where}: ranges differ from those derived from the abi ({'; '.join(diff)})")
        if "total" in data and data["total"] != space.total:
            raise SpaceError(f"{where}: total is {data['total']}, derived {space.total}")
        return space

    # serialisation ------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "name": self.name,
            "description": self.description,
            "hash": self.hash,
            "abi": self.abi,
            "ranges": {k: r.as_list() for k, r in self.ranges.items()},
            "total": self.total,
            "assets": self.assets,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the space atomically; `path` becomes this space's path."""
        atomic_write_json(path, self.to_json())
        self.path = Path(path)

    # queries ------------------------------------------------------------------------------------
    @property
    def root(self) -> Path | None:
        return self.path.parent if self.path is not None else None

    @property
    def modalities(self) -> list[str]:
        from .codecs import present_codecs

        return [c.modality for c in present_codecs(self.abi)]

    @property
    def audio_ranges(self) -> list[IdRange]:
        return [r for k, r in self.ranges.items() if k.startswith("audio.")]

    def special_id(self, name: str) -> int:
        try:
            return self.specials[name]
        except KeyError:
            raise TokenRangeError(f"space {self.name!r} has no special {name!r}; it has {', '.join(self.specials)}") from None

    def range_of(self, gid: int) -> IdRange:
        """The range holding global ID `gid`; IDs outside [0, total) raise TokenRangeError."""
        for r in self.ranges.values():
            if gid in r:
                return r
        raise TokenRangeError(f"ID {gid} is outside token space {self.name!r} [0, {self.total})")

    def asset(self, key: str) -> Path | str:
        """Where asset `key` is: a local path (relative to the space file) when it exists, else the string (a hub id)."""
        if key not in self.assets:
            raise MissingAssetError(f"space {self.name!r} names no asset {key!r}; it names {', '.join(self.assets) or 'none'}")
        ref = str(self.assets[key])
        local = (self.root / ref) if self.root is not None else Path(ref)
        return local if local.exists() else ref

    def missing_assets(self, keys: Iterable[str]) -> list[str]:
        """Assets that are neither local files nor in the Hugging Face cache."""
        return [k for k in keys if not _asset_available(self.asset(k) if k in self.assets else None)]

    def require_assets(self, *keys: str) -> None:
        missing = self.missing_assets(keys)
        if missing:
            where = ", ".join(f"{k}={self.assets.get(k, '?')}" for k in missing)
            raise MissingAssetError(f"space {self.name!r} needs asset(s) not on this machine: {where}; download them "
                                    "(huggingface-cli download ID) or point `assets` in the space file at local copies")

    def check_hash(self, other_hash: str, what: str) -> None:
        """Refuse `what` (a file recording `other_hash`) unless it was made with this space."""
        if other_hash != self.hash:
            raise HashMismatchError(f"{what} was made with token space hash {other_hash}, but space {self.name!r} "
                                    f"({self.path or 'in memory'}) has hash {self.hash}")

    def describe(self) -> dict:
        """Summary for `uti space show`."""
        return {"name": self.name, "hash": self.hash, "path": str(self.path) if self.path else None,
                "total": self.total, "ranges": {k: r.as_list() for k, r in self.ranges.items()},
                "specials": self.specials, "assets": self.assets, "modalities": self.modalities}

    def __repr__(self) -> str:
        return f"TokenSpace(name={self.name!r}, hash={self.hash[:12]}…, total={self.total})"


def _asset_available(ref: Path | str | None) -> bool:
    if ref is None:
        return False
    if isinstance(ref, Path):
        return True
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(ref, local_files_only=True)
        return True
    except Exception:  # not cached (offline machine) or not a valid id
        return False


def identity_diff(pinned: Any, actual: Any, prefix: str = "", ignore: frozenset[str] = frozenset()) -> list[str]:
    """Dotted paths where `actual` (an asset's identity) differs from what a space `pinned`.

    `None` in `pinned` means unpinned (a space shipped for assets not on the building machine, e.g. hub
    weights whose hash was unknown): it accepts any value. Keys named in `ignore` are informational.
    """
    if pinned is None:
        return []
    if isinstance(pinned, dict) and isinstance(actual, dict):
        keys = sorted((set(pinned) | set(actual)) - ignore)
        return [d for k in keys for d in identity_diff(pinned.get(k), actual.get(k), f"{prefix}{k}.", ignore)
                ] if keys else []
    return [] if pinned == actual else [f"{prefix.rstrip('.')}: space has {pinned!r}, asset has {actual!r}"]


def check_ids(space: TokenSpace, ids: Sequence[int]) -> None:
    """Every ID lies in [0, total) and outside the padding range."""
    arr = _as_array(ids)
    if arr.size and (arr.min() < 0 or arr.max() >= space.ranges["padding"].start):
        bad = int(arr[(arr < 0) | (arr >= space.ranges["padding"].start)].flat[0])
        raise TokenRangeError(f"ID {bad} is outside the used IDs [0, {space.ranges['padding'].start}) of space {space.name!r}")

