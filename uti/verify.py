"""`uti verify`: check the artifacts the toolkit writes against a token space and its pinned assets.

One function per artifact kind; each calls the reader that every consumer of that artifact uses (so a
file `uti verify` passes is one they load) and adds only the comparison with the given space:

* ``space``      a token_space.json: `TokenSpace.from_path` (stored hash, schema, ranges), the pinned
                 content hashes of its assets on this machine (`TokenSpace.verify_assets`), same hash as SPACE;
* ``document``   an encoded document: `read_document` (schema) and `document_space` (hash), its modality
                 and IDs inside the space;
* ``shards``     a folder of `uti encode` shards: `read_shards` (format, hash, checksum, structure) and each
                 shard's `.done.json` marker (same space and checksum, no failed inputs);
* ``rows``       a rows checkpoint: manifest content hash and schema, the folder's space copy, the tensor
                 file hash; the base fingerprint too (`load_rows`) when the base model is a folder on this
                 machine, else "base not checked";
* ``connector``  a connector checkpoint: manifest, tensor file hashes, token-space hash, image special IDs
                 and vision tower identity; the LLM (`load_connector`) when it is a folder on this machine;
* ``export``     a `tokenlm export` folder: its export record and space copy, `config.vocab_size`, and the
                 grown tokenizer's added tokens against the space's specials and code tokens.

The kind is detected from the content (manifest files, format fields, JSON keys), never from the name
the user gave. A damaged or hostile artifact is a failed `Result` with a one-line reason, never an
exception. `tokenlm` and `connectors` are imported only when an artifact of theirs is checked.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import HashMismatchError, InputError, MissingAssetError, TokenRangeError, UTIError
from .io import resolve_ref
from .space import TokenSpace

__all__ = ["KINDS", "Result", "VerifyError", "detect_kind", "verify_artifact", "verify_artifacts", "verify_connector",
           "verify_document", "verify_export", "verify_rows", "verify_shards", "verify_space_file",
           "verify_space_assets"]

MAX_SNIFF_BYTES = 64 * 2**20  #: a JSON artifact larger than this is no artifact `uti verify` knows
MAX_TOKENIZER_BYTES = 256 * 2**20  #: an exported tokenizer.json larger than this is refused before parsing
BASE_NOT_CHECKED = "not checked"  # the base model is not on this machine


class VerifyError(UTIError):
    """An artifact does not match the token space (or is not an artifact `uti verify` knows)."""

    exit_code = 1


@dataclass
class Result:
    """The outcome of verifying one artifact: ok, or the one-line reason it is not."""

    path: str
    kind: str
    ok: bool
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # what was checked (hashes, "base": ...)

    def line(self) -> str:
        """`ok KIND PATH k=v ...` or `BAD KIND PATH: reason`."""
        if not self.ok:
            return f"BAD {self.kind} {self.path}: {self.reason}"
        shown = " ".join(_show_detail(k, v) for k, v in self.details.items())
        return f"ok {self.kind} {self.path} {shown}".rstrip()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "kind": self.kind, "ok": self.ok, **self.details}
        if not self.ok:
            out["error"] = self.reason
        return out


def _show_detail(key: str, value: Any) -> str:
    """`key=value`; a mapping as `key=a:x,b:y`; a phrase as `key phrase` (e.g. `base not checked`)."""
    if isinstance(value, dict):
        return f"{key}={','.join(f'{k}:{v}' for k, v in value.items()) or 'none'}"
    return f"{key} {value}" if " " in str(value) else f"{key}={value}"


# --- detection --------------------------------------------------------------------------------------

_FOLDER_MARKERS = (("trainable_rows.json", "rows"), ("connector.json", "connector"),
                   ("tokenlm_export.json", "export"))
_FORMATS = {"tokenlm-trainable-rows": "rows", "uti-connector": "connector", "tokenlm-export": "export"}


def detect_kind(path: str | os.PathLike) -> str:
    """The artifact kind of `path` from its content (see the module doc); VerifyError when it is none."""
    path = Path(path)
    if path.is_dir():
        return _folder_kind(path)
    if not path.is_file():
        raise VerifyError(f"{path}: no such file or folder")
    head = _read_head(path, 9)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < MAX_SNIFF_BYTES:
        raise VerifyError(f"{path}: a safetensors file; give the folder it belongs to (a shard folder or a "
                          "checkpoint folder)")
    data = _sniff_json(path)
    if "abi" in data and "hash" in data:
        return "space"
    if "token_space" in data and "ids" in data:
        return "document"
    kind = _FORMATS.get(data.get("format")) if isinstance(data.get("format"), str) else None
    if kind is not None:
        raise VerifyError(f"{path}: the manifest of a {kind} folder; give the folder {path.parent}")
    raise VerifyError(f"{path}: not an artifact uti verify knows (expected a token space file, an encoded "
                      "document, or a shard, checkpoint or export folder)")


def _folder_kind(path: Path) -> str:
    for name, kind in _FOLDER_MARKERS:
        if (path / name).is_file():
            return kind
    if (path / "trainable_rows.pt").is_file():
        raise VerifyError(f"{path}: an older trainable_rows.pt checkpoint (no hashes to verify); convert it with "
                          "`tokenlm rows import`")
    if any(path.glob("part-*.safetensors")) or any(path.glob("part-*.safetensors.done.json")):
        return "shards"
    if (path / "token_space.json").is_file():
        return "space"
    raise VerifyError(f"{path}: folder holds no artifact uti verify knows (expected trainable_rows.json, "
                      "connector.json, tokenlm_export.json, part-*.safetensors shards or token_space.json)")


def _read_head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as err:
        raise VerifyError(f"{path}: cannot read ({err.strerror or err})") from None


def _sniff_json(path: Path) -> dict[str, Any]:
    from .schema import read_json_file

    data = read_json_file(path, MAX_SNIFF_BYTES, VerifyError, "artifact")
    if not isinstance(data, dict):
        raise VerifyError(f"{path}: JSON {type(data).__name__}, not an artifact uti verify knows")
    return data


# --- one function per kind: each returns what it checked, or raises a UTIError ----------------------

def _same_space(found_hash: Any, space: TokenSpace, what: str) -> None:
    if found_hash is None:
        raise HashMismatchError(f"{what} records no token space hash, so it cannot be checked against space "
                                f"{space.label}; save it again with the space")
    space.check_hash(str(found_hash), what)


def verify_space_assets(space: TokenSpace) -> dict[str, str]:
    """Status of the pinned assets of `space` on this machine (`TokenSpace.verify_assets`); raises
    HashMismatchError naming the assets whose content no longer matches their pin."""
    assets = space.verify_assets()
    broken = [f"asset {k}: {v[5:]}" for k, v in assets.items() if v.startswith("BAD")]
    if broken:
        raise HashMismatchError("; ".join(broken))
    return assets


def verify_space_file(path: str | os.PathLike, space: TokenSpace) -> dict[str, Any]:
    """A token_space.json (or its folder): intact, its present pinned assets intact, the same space as `space`."""
    other = TokenSpace.from_path(path)
    assets = verify_space_assets(other)
    _same_space(other.hash, space, f"space file {other.path}")
    return {"name": other.name, "hash": other.hash, "assets": assets}


def verify_document(path: str | os.PathLike, space: TokenSpace) -> dict[str, Any]:
    """An encoded document: schema (`read_document`), made with `space` (`document_space`), its modality in
    the space and its IDs below the padding range."""
    from .document import document_space, read_document

    doc = read_document(path)
    document_space(doc, space.path if space.path is not None else space.name)
    if doc.modality not in space.modalities:
        raise InputError(f"{path}: modality {doc.modality} is not in space {space.name!r} "
                         f"({', '.join(space.modalities)})")
    limit = space.ranges["padding"].start
    if doc.ids and max(doc.ids) >= limit:
        raise TokenRangeError(f"{path}: ID {max(doc.ids)} is outside the used IDs [0, {limit}) of space "
                              f"{space.name!r}")
    return {"hash": doc.space_hash, "modality": doc.modality, "ids": len(doc.ids)}


def verify_shards(path: str | os.PathLike, space: TokenSpace) -> dict[str, Any]:
    """A shard folder: every shard read back by `read_shards` (format, space hash, checksum, structure),
    each with its `.done.json` marker for the same space and checksum and no failed inputs; no marker
    without its shard."""
    from .batch import _done_path, _read_marker, read_shards  # the batch's own marker reader

    folder = Path(path)
    shards = items = 0
    for shard in read_shards(folder, space):
        done, why = _read_marker(shard.path)
        if done is None:
            raise VerifyError(f"{shard.path}: {why or 'has no .done.json marker: its batch did not finish'}; rerun "
                              "`uti encode` with the same --out")
        _same_space(done.token_space_hash, space, f"{_done_path(shard.path)}")
        if done.checksum != shard.checksum:
            raise VerifyError(f"{shard.path} does not match the checksum in {_done_path(shard.path).name}; rerun "
                              "`uti encode` with the same --out")
        if done.failed:
            raise VerifyError(f"{shard.path}: {len(done.failed)} input(s) failed (first: {done.failed[0]['path']}); "
                              "fix or remove them and rerun `uti encode` with the same --out")
        shards, items = shards + 1, items + len(shard)
    markers = folder.glob("part-*.safetensors.done.json")
    orphans = [m.name for m in markers if not m.with_name(m.name.removesuffix(".done.json")).is_file()]
    if orphans:
        raise VerifyError(f"{folder}: marker {orphans[0]} has no shard; rerun `uti encode` with the same --out")
    return {"hash": space.hash, "shards": shards, "items": items}


def _local_model(ref: Any) -> Path | None:
    """`ref` as a local Hugging Face model folder (config.json inside), else None (a hub id is not fetched)."""
    if not ref:
        return None
    folder = Path(str(ref))
    return folder if (folder / "config.json").is_file() else None


def verify_rows(path: str | os.PathLike, space: TokenSpace) -> dict[str, Any]:
    """A rows checkpoint: manifest (content hash, schema), its space copy and `space`, the tensors file hash;
    with the base model on this machine, everything `load_rows` checks (fingerprint, sizes, dtype)."""
    from tokenlm.checkpoint import CheckpointError, check_space, load_rows, read_manifest, rows_file
    from tokenlm.ckpt_store import read_tensors
    from tokenlm.generate import resolve_base
    from tokenlm.model import load_base

    folder = Path(path)
    manifest = read_manifest(folder)
    check_space(folder, manifest, space)
    try:
        base = _local_model(resolve_base(space, manifest, rows_dir=folder))
    except MissingAssetError:
        base = None
    details = {"hash": manifest["token_space"]["hash"], "stage": manifest["stage"]}
    if base is None:
        specs = {k: (v["shape"], v["dtype"]) for k, v in manifest["tensors"].items()}
        read_tensors(rows_file(folder), specs, manifest["tensors_hash"], CheckpointError)
        return {**details, "base": BASE_NOT_CHECKED}
    load_rows(load_base(str(base), dtype=manifest["dtype"]), folder, space)
    return {**details, "base": "checked"}


def verify_connector(path: str | os.PathLike, space: TokenSpace) -> dict[str, Any]:
    """A connector checkpoint: manifest, tensor file hashes, made for `space` (hash, image special IDs, the
    space's vision tower identity); with the LLM on this machine, everything `load_connector` checks."""
    from connectors.checkpoint import checkpoint_tensors, load_connector, read_manifest
    from connectors.inject import ImageTokenIds
    from tokenlm.model import load_base

    from .config import to_dict
    from .space import identity_diff

    folder = Path(path)
    manifest = read_manifest(folder)
    checkpoint_tensors(folder)
    _same_space(manifest["token_space_hash"], space, f"connector {folder}")
    want = to_dict(ImageTokenIds.from_space(space))
    if manifest["image_ids"] != want:
        raise HashMismatchError(f"connector {folder} uses image IDs {manifest['image_ids']}, but space {space.label} "
                                f"has {want}")
    pinned = (space.abi.get("image") or {}).get("tower")
    diff = identity_diff(pinned, manifest["tower"], ignore=frozenset({"name"})) if pinned is not None else []
    if diff:
        raise HashMismatchError(f"connector {folder} was trained on another vision tower than space {space.label} "
                                f"pins: {'; '.join(diff[:3])}")
    details = {"hash": manifest["token_space_hash"], "stage": manifest["stage"]}
    llm = _local_model(resolve_ref(manifest["llm"]["name"], folder))
    if llm is None:
        return {**details, "base": BASE_NOT_CHECKED}
    load_connector(folder, load_base(str(llm)), space_hash=space.hash)
    return {**details, "base": "checked"}


def verify_export(path: str | os.PathLike, space: TokenSpace) -> dict[str, Any]:
    """A `tokenlm export` folder: export record and space copy of `space`, `config.vocab_size` equal to the
    space's total, and the grown tokenizer's added tokens exactly the space's specials and code tokens
    (`tokenlm.export.code_token_names`) at their IDs."""
    from tokenlm.ckpt_store import read_json
    from tokenlm.export import code_token_names

    folder = Path(path)
    record = read_json(folder / "tokenlm_export.json", VerifyError)
    if not isinstance(record, dict) or record.get("format") != "tokenlm-export" \
            or not isinstance(record.get("token_space"), dict):
        raise VerifyError(f"{folder / 'tokenlm_export.json'}: not a tokenlm export record")
    _same_space(record["token_space"].get("hash"), space, f"export {folder}")
    copy = TokenSpace.from_path(folder / "token_space.json")
    _same_space(copy.hash, space, f"{copy.path}")
    config = read_json(folder / "config.json", VerifyError)
    vocab = config.get("vocab_size") if isinstance(config, dict) else None
    if vocab != space.total:
        raise VerifyError(f"{folder / 'config.json'}: vocab_size {str(vocab)[:40]} != space {space.name!r} total "
                          f"{space.total}; export again with the space")
    added = _added_tokens(folder / "tokenizer.json")
    want = {i: (name, special) for i, name, special in code_token_names(space)}
    diff = [i for i in sorted(want) if added.get(i) != want[i]]
    beyond = [i for i in sorted(added) if i >= space.ranges["padding"].start]
    if diff or beyond:
        i = (diff or beyond)[0]
        raise VerifyError(f"{folder / 'tokenizer.json'}: added token {i} is {_show_token(added.get(i))}, space "
                          f"{space.name!r} has {_show_token(want.get(i))} ({len(diff) + len(beyond)} ID(s) differ); "
                          "export again with the space")
    return {"hash": space.hash, "vocab_size": vocab, "code_tokens": len(want)}


def _show_token(token: tuple[str, bool] | None) -> str:
    if token is None:
        return "none"
    return f"{token[0][:40]!r}" + (" (special)" if token[1] else "")


def _added_tokens(path: Path) -> dict[int, tuple[str, bool]]:
    """{ID: (content, special)} of the added tokens of a tokenizer.json, read with `tokenizers`."""
    from tokenizers import Tokenizer

    try:
        size = path.stat().st_size
    except OSError as err:
        raise VerifyError(f"{path}: cannot read ({err.strerror or err}); the export folder is incomplete") from None
    if size > MAX_TOKENIZER_BYTES:
        raise VerifyError(f"{path} is {size} bytes, more than {MAX_TOKENIZER_BYTES}; not an exported tokenizer")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - tokenizers raises plain Exceptions for malformed files
        raise VerifyError(f"{path}: not a tokenizer.json ({str(err).splitlines()[0][:120]})") from None
    return {i: (t.content, bool(t.special)) for i, t in tok.get_added_tokens_decoder().items()}


# --- the dispatcher --------------------------------------------------------------------------------

KINDS: dict[str, Callable[[str | os.PathLike, TokenSpace], dict[str, Any]]] = {
    "space": verify_space_file, "document": verify_document, "shards": verify_shards, "rows": verify_rows,
    "connector": verify_connector, "export": verify_export,
}


def verify_artifact(path: str | os.PathLike, space: TokenSpace) -> Result:
    """Detect the kind of `path` and verify it against `space`; any failure is a failed Result (one line)."""
    kind = "unknown"
    try:
        kind = detect_kind(path)
        return Result(str(path), kind, True, details=KINDS[kind](path, space))
    except UTIError as err:
        return Result(str(path), kind, False, str(err).removeprefix(f"{path}: "))
    except Exception as err:  # noqa: BLE001 - a hostile artifact must be a BAD line, never a traceback
        first = (str(err).splitlines() or [""])[0][:200]
        return Result(str(path), kind, False, f"cannot be read ({type(err).__name__}: {first})")


def verify_artifacts(paths: list[str], space: TokenSpace) -> list[Result]:
    """One Result per path, preceded by a failed `space` Result when a pinned asset of `space` on this
    machine no longer matches its pin (every artifact made with it is then suspect)."""
    results = []
    try:
        verify_space_assets(space)
    except UTIError as err:
        results.append(Result(str(space.path or space.name), "space", False, str(err)))
    return results + [verify_artifact(p, space) for p in paths]
