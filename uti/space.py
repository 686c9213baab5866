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
outside the `abi`: moving a file does not change what an ID means (see `uti.assets` for the asset rule).

Loading treats the file as hostile, in this order: its size is bounded, the JSON is parsed strictly
(`uti.schema.read_json_file`), the stored hash is compared with the hash of the raw `abi` (nothing is
derived first), then the whole file is checked against one typed schema (`FILE_SCHEMA`) whose size fields
are bounded by `LIMITS`, and only then are ranges and specials derived. Names and paths are kept apart:
`TokenSpace.named` resolves only registry names, `TokenSpace.from_path` only paths.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from . import space_registry
from .assets import ASSET_ENTRY, ResolvedAsset, check_pin, content_hash, hf_hint, locate, pin_of, relative_entry
from .errors import HashMismatchError, MissingAssetError, SpaceError, TokenRangeError, UTIError
from .hashing import hash_json
from .io import atomic_write_json
from .schema import HEX_HASH, Bool, Const, Int, ListOf, MapOf, Num, Obj, Opt, Spec, Str, problems, read_json_file
from .specials import BASE_SPECIALS

__all__ = ["IdRange", "TokenSpace", "identity_diff", "spaces_dir", "known_spaces", "DEFAULT_SPACE", "SCHEMA", "LIMITS",
           "ABI_SCHEMA", "FILE_SCHEMA", "validate_abi", "derive_ranges", "token_budget"]

SCHEMA = 1
FORMAT = "uti-token-space"
DEFAULT_SPACE = "tiny"


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


def _registry_file(name: str) -> Path:
    """The token_space.json of installed space `name` (one of `known_spaces()`); the one place that maps a
    registry name to a file (through `uti.space_registry`, which also knows spaces other packages register)."""
    return space_registry.resolve_space_name(name)


class _CodecSection(Spec):
    """A mapping checked elsewhere: the section of a codec registered beyond image and audio (its own
    `validate_section` checks it), or the abi inside a file (checked by `validate_abi`)."""

    def check(self, value: Any, where: str, out: list[str]) -> None:
        if not isinstance(value, dict):
            out.append(f"{where} must be a mapping (the codec's section), got {type(value).__name__}")

    def describe(self) -> str:
        return "a codec's section mapping"


#: Upper bounds of every size field, generous for real models (the shipped real space: Qwen3 vocabulary
#: 151,936, 16,384 image codes, 8 of 1,024 audio codes; Mimi has 32 levels of 2,048). A file beyond them is
#: refused before anything is allocated; with all at their maximum a space has under 10 million IDs.
LIMITS: dict[str, int] = {
    "file_bytes": 4 << 20,  # token_space.json
    "base_vocab_size": 1 << 22,
    "specials": 4096,
    "special_chars": 128,
    "image_codebook_size": 1 << 20,
    "num_tiles": 1024,
    "pitches": 64,
    "pixels": 8192,  # tile_size, image_size, patch_size
    "grid": 1024,
    "hidden_size": 1 << 16,  # tower width, codebook dim
    "audio_num_codebooks": 64,
    "audio_codebook_size": 1 << 16,
    "sample_rate": 768_000,
    "hop_length": 1 << 20,
    "chunk_frames": 1 << 24,
    "pad_to_multiple": 1 << 16,
}
MAX_TOTAL = (LIMITS["base_vocab_size"] + LIMITS["specials"] + LIMITS["image_codebook_size"]
             + LIMITS["audio_num_codebooks"] * LIMITS["audio_codebook_size"] + LIMITS["pad_to_multiple"])
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"

_PIX, _HID = Int(1, LIMITS["pixels"]), Int(1, LIMITS["hidden_size"])
_NAME = Str(max_len=512)
_TEXT = Obj({"tokenizer": _NAME, "tokenizer_hash": Opt(HEX_HASH), "base_vocab_size": Int(1, LIMITS["base_vocab_size"])},
            required=("tokenizer", "base_vocab_size"), name="the text section mapping")
_LAYOUT = Obj({"fov": Num(0, 180), "overlap": Num(0, 1), "pitches": ListOf(Num(-90, 90), LIMITS["pitches"], 1),
               "tile_size": _PIX, "global_view": Bool(), "grid": Str(choices=("centers", "edges")),
               "num_tiles": Int(0, LIMITS["num_tiles"])}, required=("num_tiles",), name="the layout mapping")
_STATS = ListOf(Num(-1e6, 1e6), 4, 1)
_TOWER = Obj({"name": _NAME, "weights_hash": Opt(HEX_HASH), "architecture": Str(64), "feature_layer": Int(-1024, 1024),
              "image_size": _PIX, "patch_size": _PIX, "hidden_size": _HID, "image_mean": _STATS, "image_std": _STATS},
             name="the tower mapping")
_CODEBOOK = Obj({"hash": Opt(HEX_HASH), "size": Int(1, LIMITS["image_codebook_size"]), "dim": _HID,
                 "metric": Str(choices=("euclidean", "cosine"))}, name="the codebook mapping")
_IMAGE = Obj({"layout": _LAYOUT, "antialias": Int(1, 8), "tower": _TOWER, "feature_layer": Int(-1024, 1024),
              "image_size": _PIX, "patch_size": _PIX, "grid": ListOf(Int(1, LIMITS["grid"]), 2, 2),
              "token_grid": ListOf(Int(1, LIMITS["grid"]), 2, 2),  # optional: patches average-pooled to it
              "tokens_per_view": Int(1, LIMITS["grid"] ** 2), "codebook": _CODEBOOK,
              "codebook_size": Int(1, LIMITS["image_codebook_size"])},
             required=("codebook_size", "layout"), name="the image section mapping (omit the key for no images)")
_AUDIO = Obj({"codec": Str(64), "model": _NAME, "weights_hash": Opt(HEX_HASH), "config_hash": Opt(HEX_HASH),
              "sample_rate": Int(1, LIMITS["sample_rate"]), "frame_rate": Num(1e-3, LIMITS["sample_rate"]),
              "hop_length": Int(1, LIMITS["hop_length"]), "bandwidth": Opt(Num(0, 1e4)),
              "num_codebooks": Int(1, LIMITS["audio_num_codebooks"]),
              "codebook_size": Int(1, LIMITS["audio_codebook_size"]), "order": Str(64), "channels": Str(64),
              "chunk_frames": Int(1, LIMITS["chunk_frames"])},
             required=("num_codebooks", "codebook_size"), name="the audio section mapping (omit the key for no audio)")
#: The typed schema of the `abi` (the hashed part). Sections are closed: an unknown key is an error.
ABI_SCHEMA = Obj({"schema": Const(SCHEMA), "text": _TEXT, "image": _IMAGE, "audio": _AUDIO,
                  "specials": ListOf(Str(LIMITS["special_chars"]), LIMITS["specials"], 1),
                  "pad_to_multiple": Int(1, LIMITS["pad_to_multiple"])},
                 required=("schema", "text", "specials", "pad_to_multiple"), name="the abi mapping")
#: The typed schema of a whole token_space.json (its `abi` is checked with ABI_SCHEMA, after the hash).
FILE_SCHEMA = Obj({"format": Const(FORMAT), "name": Str(128, pattern=NAME_PATTERN), "description": Str(4096, min_len=0),
                   "hash": HEX_HASH, "abi": ABI_SCHEMA,
                   "ranges": MapOf(Str(32), ListOf(Int(0, MAX_TOTAL), 2, 2), 4 + LIMITS["audio_num_codebooks"]),
                   "total": Int(0, MAX_TOTAL),
                   "assets": MapOf(Str(64, pattern="[a-z][a-z0-9_]*"), ASSET_ENTRY, 32)},
                  required=("format", "name", "hash", "abi"), name="a token space mapping")


def _abi_schema() -> Obj:
    """ABI_SCHEMA plus a section for each codec registered beyond image and audio (its codec checks it)."""
    from .codecs import codec_classes

    extra = {c.modality: _CodecSection() for c in codec_classes() if c.modality not in ABI_SCHEMA.fields}
    return Obj({**ABI_SCHEMA.fields, **extra}, ABI_SCHEMA.required, ABI_SCHEMA.name) if extra else ABI_SCHEMA


def validate_abi(abi: Any, where: str = "abi") -> list[str]:
    """All problems of an `abi` section (empty list when valid): its typed schema, each present codec's
    `validate_section`, then the specials."""
    from .codecs import present_codecs

    found = problems(_abi_schema(), abi, where)
    for codec in present_codecs(abi) if not found else ():
        found += codec.validate_section(abi[codec.modality])
    return found or _check_specials(abi)


def _required_specials(abi: dict) -> list[str]:
    """The base specials, then those of every present codec (e.g. the image layout's view markers)."""
    from .codecs import present_codecs

    required = list(BASE_SPECIALS)
    for codec in present_codecs(abi):
        required += [n for n in codec.specials(abi[codec.modality]) if n not in required]
    return required


def _check_specials(abi: dict) -> list[str]:
    """Duplicates and missing required specials of a schema-valid abi."""
    specials = abi["specials"]
    problems_ = []
    dupes = sorted(s for s, n in Counter(specials).items() if n > 1)
    if dupes:
        problems_.append(f"abi.specials has duplicates: {', '.join(dupes[:10])}")
    have = set(specials)
    missing = [s for s in _required_specials(abi) if s not in have]
    if missing:
        problems_.append(f"abi.specials lacks required {', '.join(missing[:10])}")
    return problems_


def derive_ranges(abi: dict) -> tuple[dict[str, IdRange], int]:
    """The ID ranges and padded total implied by a valid `abi`: the codecs' declared range sizes laid out as
    text, special, the other present codecs in (rank, name) order (see `uti.codecs`), padding. At most a few
    dozen ranges: every size is bounded by the schema."""
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


def token_budget(abi: dict) -> dict[str, Any]:
    """What content costs in IDs under a valid `abi`: per image view, per panorama and per plain image
    (`uti.modalities.image.image_budget`: markers included) and per second of audio (frame rate x codebook
    levels; a clip adds its two markers). A modality the abi lacks is absent."""
    from .modalities.image import image_budget

    out: dict[str, Any] = {}
    if "image" in abi:
        out["image"] = image_budget(abi["image"])
    audio = abi.get("audio")
    if audio is not None and "frame_rate" in audio:
        per_second = audio["frame_rate"] * audio["num_codebooks"]
        out["audio"] = {"frame_rate": audio["frame_rate"], "num_codebooks": audio["num_codebooks"],
                        "tokens_per_second": int(per_second) if float(per_second).is_integer() else per_second}
    return out


def _summary(found: list[str]) -> str:
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    return "; ".join(found[:5]) + more


class TokenSpace:
    """A loaded, verified token space.

    Build with `TokenSpace.named(name)` (the registry of installed spaces), `TokenSpace.from_path(path)`,
    `TokenSpace.load(ref)` (a CLI `--space` argument: a name, else an existing path) or `TokenSpace.from_abi`.
    `allow_unpinned` (default False) lets consumers use assets whose pin is null (see `check_asset`);
    `unpinned_used` collects the keys of those it let through, so outputs can record them.
    """

    def __init__(self, abi: dict, *, name: str, assets: dict | None = None, description: str = "",
                 path: Path | None = None) -> None:
        found = validate_abi(abi) + problems(MapOf(Str(64), ASSET_ENTRY, 32), dict(assets or {}), "assets")
        if found:
            raise SpaceError(f"{path or name}: invalid token space: {_summary(found)}")
        self.abi = abi
        self.name = name
        self.assets = dict(assets or {})
        self.description = description
        self.path = Path(path) if path is not None else None
        self.allow_unpinned = False
        self.unpinned_used: set[str] = set()
        self.hash = hash_json(abi)
        self.ranges, self.total = derive_ranges(abi)
        start = self.ranges["special"].start
        self.specials: dict[str, int] = {s: start + i for i, s in enumerate(abi["specials"])}

    # construction -------------------------------------------------------------------------------
    @classmethod
    def from_abi(cls, abi: dict, name: str, assets: dict | None = None, description: str = "") -> "TokenSpace":
        return cls(abi, name=name, assets=assets, description=description)

    @classmethod
    def named(cls, name: str) -> "TokenSpace":
        """An installed space by registry name only (never a path): for names read from files (documents,
        checkpoints), so a name like `../../etc/passwd` can never open a file."""
        if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
            raise SpaceError(f"token space name {str(name)[:60]!r} is not a valid name (letters, digits, '.', '_', "
                             "'-'); give the space's path with --space PATH")
        if name not in known_spaces():
            known = ", ".join(known_spaces()) or "none"
            raise SpaceError(f"unknown token space {name!r}; known spaces: {known} (a custom space: pass --space PATH)")
        return cls.from_file(_registry_file(name))

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "TokenSpace":
        """A space from a token_space.json file or the folder holding one (a path the user gave)."""
        path = Path(path)
        if path.is_dir():
            path = path / "token_space.json"
        if not path.is_file():
            raise SpaceError(f"token space file {path} does not exist")
        return cls.from_file(path)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike | None = None) -> "TokenSpace":
        """A CLI `--space` argument: an installed space's name, else an existing file/folder path."""
        ref = str(name_or_path or DEFAULT_SPACE)
        if re.fullmatch(NAME_PATTERN, ref) and ref in known_spaces():
            return cls.named(ref)
        if Path(ref).exists():
            return cls.from_path(ref)
        known = ", ".join(known_spaces()) or "none"
        raise SpaceError(f"unknown token space {ref[:200]!r}; known spaces: {known} (or give the path of an existing "
                         "token_space.json or its folder)")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TokenSpace":
        """Read and verify a token_space.json: bounded read, strict JSON, hash first, then the schema."""
        path = Path(path)
        data = read_json_file(path, LIMITS["file_bytes"], SpaceError, "token space file")
        return cls.from_json(data, path)

    @classmethod
    def from_json(cls, data: Any, path: Path | None = None) -> "TokenSpace":
        """Verify parsed JSON: the stored hash against the canonical hash of the raw `abi` first (nothing
        derived or allocated before), then the whole file against FILE_SCHEMA, then ranges and total."""
        where = str(path or "<token space>")
        if not isinstance(data, dict) or not isinstance(data.get("abi"), dict) or not isinstance(data.get("hash"), str):
            raise SpaceError(f"{where}: not a token space (expected a JSON object with an `abi` mapping and a "
                             "`hash` string)")
        try:
            actual = hash_json(data["abi"])
        except (ValueError, TypeError, RecursionError) as err:
            raise SpaceError(f"{where}: the abi cannot be hashed ({str(err)[:120]})") from None
        if data["hash"] != actual:
            raise HashMismatchError(f"{where}: stored hash {data['hash'][:40]} != recomputed {actual} of its abi; "
                                    "the abi was edited or the file is corrupt (rebuild it with `uti space build`)")
        found = problems(Obj({**FILE_SCHEMA.fields, "abi": _CodecSection()}, FILE_SCHEMA.required, FILE_SCHEMA.name),
                         data, "space")  # the abi itself next, with the sections of every registered codec
        found = found or validate_abi(data["abi"], "space.abi")
        if found:
            raise SpaceError(f"{where}: invalid token space: {_summary(found)}")
        space = cls(data["abi"], name=data["name"], assets=data.get("assets"),
                    description=data.get("description", ""), path=path)
        stored = data.get("ranges")
        if stored is not None:
            derived = {k: r.as_list() for k, r in space.ranges.items()}
            diff = [f"{k}: stored {stored.get(k)} derived {derived.get(k)}"
                    for k in sorted(set(stored) | set(derived)) if stored.get(k) != derived.get(k)]
            if diff:
                raise SpaceError(f"{where}: ranges differ from those derived from the abi ({'; '.join(diff[:5])})")
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
        """Write the space atomically; `path` becomes this space's path. Absolute asset paths (a space built
        in code) are written relative to the new folder; one outside that folder is refused (no saved file
        names a path outside its folder)."""
        folder = Path(path).parent
        assets = {k: relative_entry(k, v, folder) for k, v in self.assets.items()}
        atomic_write_json(path, {**self.to_json(), "assets": assets})
        self.assets, self.path = assets, Path(path)

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

    @property
    def label(self) -> str:
        """How messages name this space: its name and file."""
        return f"{self.name!r} ({self.path or 'in memory'})"

    def resolve_asset(self, key: str) -> ResolvedAsset:
        """Where asset `key` is (see `uti.assets`) and the hash the abi pins for it; no hashing done here."""
        if key not in self.assets:
            raise MissingAssetError(f"space {self.label} names no asset {key!r}; it names "
                                    f"{', '.join(self.assets) or 'none'}")
        location, revision = locate(key, self.assets[key], self.root)
        pin_field, pinned = pin_of(self.abi, key)
        return ResolvedAsset(key, location, revision, pin_field, pinned)

    def check_asset(self, key: str, actual_hash: str | None = None, *,
                    allow_unpinned: bool | None = None) -> Path | str:
        """Asset `key`'s location after checking its content hash against the pin (`uti.assets.check_pin`).

        Every consumer goes through here. Pass `actual_hash` when the consumer already hashed what it
        loaded (saves reading the file twice); else it is computed. An unpinned asset is refused unless
        `allow_unpinned` (default: this space's `allow_unpinned`, which `--allow-unpinned` sets).
        """
        asset = self.resolve_asset(key)
        allow = self.allow_unpinned if allow_unpinned is None else allow_unpinned
        if actual_hash is None and asset.pinned_hash is not None:
            actual_hash = content_hash(asset)
        check_pin(asset, actual_hash, space=self.label, allow_unpinned=allow)
        if asset.pin_field is not None and asset.pinned_hash is None:  # allowed unpinned: outputs record it
            self.unpinned_used.add(key)
        return asset.path_or_id

    def asset(self, key: str) -> Path | str:
        """Where asset `key` is: a local path, or a hub id (str) not in the local cache. Not hash-checked:
        consumers that load it call `check_asset`."""
        return self.resolve_asset(key).path_or_id

    def missing_assets(self, keys: Iterable[str]) -> list[str]:
        """Assets that are neither local files nor in the Hugging Face cache."""
        missing = []
        for key in keys:
            try:
                if not isinstance(self.asset(key), Path):
                    missing.append(key)
            except MissingAssetError:
                missing.append(key)
        return missing

    def require_assets(self, *keys: str) -> None:
        """Refuse, naming each one and how to get it, when any of `keys` is not on this machine."""
        missing = self.missing_assets(keys)
        if missing:
            where = ", ".join(f"{k}={self.assets.get(k, '?')}" for k in missing)
            hub = []
            for k in missing:
                try:
                    hub.append(self.resolve_asset(k))
                except MissingAssetError:
                    pass
            raise MissingAssetError(f"space {self.label} needs asset(s) not on this machine: {where}; {hf_hint(hub)}, "
                                    "or point `assets` in the space file at copies inside its folder")

    def verify_assets(self) -> dict[str, str]:
        """Status of each pinned asset: "ok", "unpinned", "not checked (missing)" or "BAD: <why>"."""
        status = {}
        for key in self.assets:
            if pin_of(self.abi, key)[0] is None:  # the abi pins nothing for it (e.g. the base model)
                continue
            try:
                asset = self.resolve_asset(key)
                if asset.pinned_hash is None:
                    status[key] = "unpinned"
                elif not asset.is_local:
                    status[key] = "not checked (missing)"
                else:
                    check_pin(asset, content_hash(asset), space=self.label)
                    status[key] = "ok"
            except MissingAssetError:
                status[key] = "not checked (missing)"
            except UTIError as err:
                status[key] = f"BAD: {err}"
        return status

    def check_hash(self, other_hash: str, what: str) -> None:
        """Refuse `what` (a file recording `other_hash`) unless it was made with this space."""
        if other_hash != self.hash:
            raise HashMismatchError(f"{what} was made with token space hash {other_hash}, but space {self.name!r} "
                                    f"({self.path or 'in memory'}) has hash {self.hash}")

    def describe(self) -> dict:
        """Summary for `uti space show` (`budget`: tokens per image view, panorama and audio second)."""
        return {"name": self.name, "hash": self.hash, "path": str(self.path) if self.path else None,
                "total": self.total, "ranges": {k: r.as_list() for k, r in self.ranges.items()},
                "specials": self.specials, "assets": self.assets, "modalities": self.modalities,
                "budget": token_budget(self.abi)}

    def __repr__(self) -> str:
        return f"TokenSpace(name={self.name!r}, hash={self.hash[:12]}…, total={self.total})"


def identity_diff(pinned: Any, actual: Any, prefix: str = "", ignore: frozenset[str] = frozenset()) -> list[str]:
    """Dotted paths where `actual` (an asset's identity) differs from what a space `pinned`.

    A structural comparison (shapes, sizes, settings): `None` in `pinned` accepts any value here. Content
    hashes are NOT judged by this function: consumers check them with `TokenSpace.check_asset`, which
    refuses unpinned assets unless allowed. Keys named in `ignore` are informational.
    """
    if pinned is None:
        return []
    if isinstance(pinned, dict) and isinstance(actual, dict):
        keys = sorted((set(pinned) | set(actual)) - ignore)
        return [d for k in keys for d in identity_diff(pinned.get(k), actual.get(k), f"{prefix}{k}.", ignore)
                ] if keys else []
    return [] if pinned == actual else [f"{prefix.rstrip('.')}: space has {pinned!r}, asset has {actual!r}"]
