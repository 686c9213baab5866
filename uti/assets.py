"""Where a token space's assets are, and the one rule that checks their pinned content hashes.

An entry of `assets` in token_space.json is one of::

    {"path": "codebook.safetensors"}                           a local path inside the space folder
    {"hub": "google/siglip2-so400m-patch14-384", "revision": "<commit>"}   a hub id (revision optional)
    "hub:google/siglip2-so400m-patch14-384@<commit>"          the same hub id as a string
    "codebook.safetensors"                                     plain string (the original form): a local path
                                                               when it exists in the folder; else an
                                                               "owner/name" hub id; else a missing local path

Local paths are relative; absolute paths, `..` and symlinks that lead out of the space folder are refused,
so a space file can only name files shipped with it. A missing local path is an error, never a hub id.
A space built in code (no file, no folder) may name any local path: code is not a hostile file.

Pins: the `abi` holds the content hash of each asset that decides what an ID means (`PINS`: tokenizer,
vision tower weights, codebook, audio codec weights). `check_pin` is the one place an asset's hash is
compared with its pin; a null pin means unpinned, which is refused unless explicitly allowed (then a
warning is logged). The base model is not pinned by the space: it does not change what an ID means, and
rows checkpoints fingerprint it themselves.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import HashMismatchError, MissingAssetError, SpaceError
from .schema import Either, Obj, Opt, Str

__all__ = ["ASSET_ENTRY", "PINS", "ResolvedAsset", "locate", "pin_of", "check_pin", "content_hash", "hf_hint",
           "register_pin", "relative_entry"]

log = logging.getLogger("uti.assets")

HUB_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_HUB_STRING = re.compile(rf"hub:({HUB_ID})(?:@([A-Za-z0-9._/-]{{1,128}}))?")
_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".model", ".txt", ".yaml")
_REVISION = Str(max_len=128, pattern=r"[A-Za-z0-9._/-]+")

#: The typed schema of one `assets` entry.
ASSET_ENTRY = Either((
    Str(max_len=1024),
    Obj({"path": Str(max_len=1024)}, required=("path",)),
    Obj({"hub": Str(max_len=193, pattern=HUB_ID), "revision": Opt(_REVISION)}, required=("hub",)),
), name='a relative path, "hub:OWNER/NAME[@REV]", {"path": ...} or {"hub": ..., "revision": ...}')


def _hash_tokenizer(location: Path) -> str:
    from .text import load_tokenizer, tokenizer_hash

    return tokenizer_hash(load_tokenizer(location))


def _hash_weights(location: Path) -> str:
    from .hashing import hash_safetensors

    try:
        return hash_safetensors(location)
    except FileNotFoundError as err:
        raise MissingAssetError(f"{location}: {err}") from None
    except Exception as err:  # safetensors raises its own errors for damaged files
        raise HashMismatchError(f"{location}: cannot read safetensors ({str(err).splitlines()[0][:120]})") from None


#: asset key -> (dotted path of its pin in the abi, content-hash function of a local copy)
PINS: dict[str, tuple[str, Callable[[Path], str]]] = {
    "tokenizer": ("text.tokenizer_hash", _hash_tokenizer),
    "vision_tower": ("image.tower.weights_hash", _hash_weights),
    "codebook": ("image.codebook.hash", _hash_weights),
    "audio_codec": ("audio.weights_hash", _hash_weights),
}


def register_pin(key: str, abi_field: str, hasher: Callable[[Path], str]) -> None:
    """Declare that asset `key` is pinned by the abi field `abi_field` (dotted), hashed by `hasher`."""
    PINS[key] = (abi_field, hasher)


@dataclass(frozen=True)
class ResolvedAsset:
    """Where asset `key` of a space is, and the content hash the space pins for it (None: unpinned)."""

    key: str
    path_or_id: Path | str  # a local path, or a hub id (str) that is not in the local cache
    revision: str | None
    pin_field: str | None  # dotted abi field holding the pin; None when the abi pins nothing for this key
    pinned_hash: str | None

    @property
    def is_local(self) -> bool:
        return isinstance(self.path_or_id, Path)


def _parse(key: str, entry: Any) -> tuple[str, str | None, str | None]:
    """(kind, value, revision) of an entry: kind "path", "hub" or "plain" (the original string form)."""
    if isinstance(entry, dict):
        if "hub" in entry:
            return "hub", entry["hub"], entry.get("revision")
        return "path", entry.get("path"), None
    if not isinstance(entry, str):
        raise SpaceError(f"asset {key!r} is {type(entry).__name__}; expected {ASSET_ENTRY.name}")
    match = _HUB_STRING.fullmatch(entry)
    if match:
        return "hub", match.group(1), match.group(2)
    if entry.startswith("hub:"):
        raise SpaceError(f"asset {key!r}: {entry[:80]!r} is not hub:OWNER/NAME[@REVISION]")
    return "plain", entry, None


def _inside(key: str, rel: str, root: Path) -> Path:
    """`root / rel`, refusing absolute paths, `..` and symlinks that leave `root`."""
    path = Path(rel)
    if path.is_absolute() or rel.startswith("~") or ".." in path.parts or "\\" in rel or "\0" in rel:
        raise SpaceError(f"asset {key!r} path {rel[:80]!r} must be relative to the space folder {root} without "
                         "'..'; copy the asset into the folder or name a hub id")
    full = root / path
    try:
        inside = full.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # symlink loop
        inside = False
    if not inside:
        raise SpaceError(f"asset {key!r} path {rel[:80]!r} leads out of the space folder {root} (a symlink); "
                         "copy the asset into the folder")
    return full


def _looks_like_hub_id(text: str) -> bool:
    return re.fullmatch(HUB_ID, text) is not None and ".." not in text and not text.endswith(_FILE_SUFFIXES)


def _cached(hub_id: str, revision: str | None) -> Path | None:
    """The local snapshot folder of a hub repo when it is in the Hugging Face cache, else None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (offline machine) or not a valid id
        return None


def locate(key: str, entry: Any, root: Path | None) -> tuple[Path | str, str | None]:
    """(local path or hub id, revision) of asset `key`; `root` is the space folder (None: built in code).

    A hub id in the local cache comes back as its snapshot folder. Raises SpaceError for a forbidden
    path and MissingAssetError for a local path that does not exist.
    """
    kind, value, revision = _parse(key, entry)
    if kind == "hub":
        return _cached(value, revision) or value, revision
    if root is None:  # a space built in code: paths as given
        if Path(value).exists():
            return Path(value), None
        if kind == "plain" and _looks_like_hub_id(value):
            return _cached(value, None) or value, None
        raise MissingAssetError(f"asset {key!r}: {value} does not exist")
    escapes = Path(value).is_absolute() or ".." in Path(value).parts
    if kind == "plain" and not escapes and not (root / value).exists() and _looks_like_hub_id(value):
        return _cached(value, None) or value, None
    path = _inside(key, value, root)
    if not path.exists():
        raise MissingAssetError(f"asset {key!r}: {value} does not exist in the space folder {root}; restore it, "
                                f"or name a hub id as {{\"hub\": \"OWNER/NAME\"}}")
    return path, None


def relative_entry(key: str, entry: Any, folder: Path) -> Any:
    """`entry` to save in a space file in `folder`: an absolute local path becomes relative to `folder`
    (SpaceError when it lies outside); other entries are kept."""
    kind, value, _ = _parse(key, entry)
    if kind == "hub" or not Path(value).is_absolute():
        return entry
    try:
        rel = Path(value).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        raise SpaceError(f"asset {key!r} at {value} lies outside {folder}, where the space is being saved; copy it "
                         "into that folder (a space file names only its own files or hub ids)") from None
    return {"path": rel} if isinstance(entry, dict) else rel


def pin_of(abi: dict, key: str) -> tuple[str | None, str | None]:
    """(dotted abi field, pinned hash or None) of asset `key`; (None, None) when the abi pins nothing for it."""
    if key not in PINS:
        return None, None
    field_path = PINS[key][0]
    node: Any = abi
    for part in field_path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None, None
        node = node[part]
    return field_path, node


def content_hash(asset: ResolvedAsset) -> str:
    """The content hash of a local asset, computed the way its pin was (see `PINS`)."""
    if not asset.is_local:
        raise MissingAssetError(f"asset {asset.key!r} ({asset.path_or_id}) is not on this machine; {hf_hint([asset])}")
    return PINS[asset.key][1](asset.path_or_id)  # type: ignore[arg-type]


def check_pin(asset: ResolvedAsset, actual_hash: str | None, *, space: str, allow_unpinned: bool = False) -> None:
    """THE check of an asset against its pin: refuse a different content hash, and an unpinned asset
    unless `allow_unpinned` (then warn). `space` names the space in messages."""
    if asset.pin_field is None:
        return
    if asset.pinned_hash is None:
        what = f"space {space} does not pin asset {asset.key!r} (abi.{asset.pin_field} is null)"
        if not allow_unpinned:
            raise HashMismatchError(f"{what}, so any file would give valid-looking IDs; rebuild the space with the "
                                    "asset present to pin it, or pass --allow-unpinned to use it unchecked")
        log.warning("warning: %s; using %s unchecked (--allow-unpinned)", what, asset.path_or_id)
        return
    if actual_hash != asset.pinned_hash:
        raise HashMismatchError(f"asset {asset.key!r} ({asset.path_or_id}) has content hash {actual_hash}, but space "
                                f"{space} pins {asset.pinned_hash} (abi.{asset.pin_field}); restore the asset or "
                                "rebuild the space")


def hf_hint(assets: list[ResolvedAsset]) -> str:
    """How to get hub assets that are not cached: `hf download REPO [--revision REV]` (huggingface_hub CLI)."""
    cmds = [f"hf download {a.path_or_id}" + (f" --revision {a.revision}" if a.revision else "")
            for a in assets if not a.is_local]
    return f"download with `{'`, `'.join(cmds)}`" if cmds else "restore the files in the space folder"
