"""The typed schema of a rows-checkpoint manifest (`trainable_rows.json`, version 2), checked before use.

`parse_manifest(data, where)` checks, in this order and before anything is allocated: that it is a JSON
object of this format and version, that its `content_hash` equals `hash_json` of the manifest without that
key (so no field, not the stage, dtype or LoRA config, can be edited unnoticed; the tensors are covered
through `tensors_hash`), then every field's type (`uti.config.parse`) and the cross-field rules below
(sizes bounded by the manifest's own hidden size; `base_vocab_size`, `hidden_size` and the fingerprint are
then checked against the loaded base by `tokenlm.checkpoint`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from uti.config import parse
from uti.hashing import hash_json

from .ckpt_store import DTYPES, content_name

__all__ = ["FORMAT", "VERSION", "RowsManifest", "LoraSpec", "TensorSpec", "FileRef", "SpaceRef", "parse_manifest",
           "content_hash"]

FORMAT, VERSION = "tokenlm-trainable-rows", 2
_HEX = re.compile(r"[0-9a-f]{32}")
MAX_HIDDEN, MAX_ROWS, MAX_TENSORS = 1 << 16, 1 << 24, 1 << 16


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


def _hex(value: str, what: str) -> None:
    _need(bool(_HEX.fullmatch(value)), f"{what} must be 32 lowercase hex digits, got {value!r:.40}")


@dataclass
class TensorSpec:
    """Shape and dtype of one saved tensor."""

    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        _need(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _need(len(self.shape) <= 4 and all(0 <= d <= 1 << 31 for d in self.shape),
              f"shape must have at most 4 dims in [0, 2^31], got {list(self.shape)[:6]}")


@dataclass
class SpaceRef:
    """The token space the rows belong to (its hash decides; `source` is where its file was, relative to the
    checkpoint folder: a hint, hash-checked before use; older manifests hold an absolute path)."""

    name: str
    hash: str
    source: str | None = None

    def __post_init__(self) -> None:
        _hex(self.hash, "token_space.hash")


@dataclass
class FileRef:
    """A content-named data file of the checkpoint and the hash of its content."""

    name: str
    hash: str

    def __post_init__(self) -> None:
        _hex(self.hash, "file hash")


@dataclass
class LoraSpec:
    """The peft `LoraConfig` fields stage `lora` was trained with."""

    r: int
    lora_alpha: float
    lora_dropout: float
    target_modules: tuple[str, ...] | str
    bias: str = "none"
    use_rslora: bool = False

    def __post_init__(self) -> None:
        _need(self.r >= 1, f"lora_config.r must be >= 1, got {self.r}")
        _need(0.0 <= self.lora_dropout < 1.0, f"lora_config.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        _need(self.bias in ("none", "all", "lora_only"), f"lora_config.bias must be none, all or lora_only, got {self.bias!r}")
        _need(0 < len(self.target_modules) <= 256, "lora_config.target_modules must name 1 to 256 modules")


@dataclass
class RowsManifest:
    """Everything `load_rows` needs to check before patching rows onto a base (see module doc)."""

    format: str
    version: int
    toolkit_version: str
    base_model: str
    base_fingerprint: str
    base_vocab_size: int
    row_start: int
    row_end: int
    total: int
    tied: bool
    dtype: str
    hidden_size: int
    token_space: SpaceRef
    stage: str
    init: str | None
    trained: tuple[str, ...]
    lora_config: LoraSpec | None
    tensors: dict[str, TensorSpec]
    tensors_hash: str
    files: dict[str, FileRef]
    content_hash: str

    def __post_init__(self) -> None:
        from .model import STAGES

        _hex(self.base_fingerprint, "base_fingerprint")
        _hex(self.tensors_hash, "tensors_hash")
        _need(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _need(self.stage in STAGES, f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        _need(1 <= self.hidden_size <= MAX_HIDDEN, f"hidden_size must be in [1, {MAX_HIDDEN}], got {self.hidden_size}")
        _need(1 <= self.base_vocab_size == self.row_start < self.row_end <= self.total <= 1 << 31
              and self.row_end - self.row_start <= MAX_ROWS,
              f"rows [{self.row_start}, {self.row_end}) of total {self.total} do not fit base vocab "
              f"{self.base_vocab_size} (or exceed {MAX_ROWS} rows)")
        _need((self.stage == "lora") == (self.lora_config is not None),
              f"stage {self.stage!r} with lora_config {'null' if self.lora_config is None else 'set'}: stage lora "
              "needs its LoRA config and other stages have none")
        if self.lora_config is not None:
            _need(self.lora_config.r <= self.hidden_size,
                  f"lora_config.r {self.lora_config.r} exceeds the hidden size {self.hidden_size}")
        n = self.row_end - self.row_start
        rows = {"embed_rows"} | (set() if self.tied else {"head_rows"})
        for key in rows:
            spec = self.tensors.get(key)
            _need(spec is not None and list(spec.shape) == [n, self.hidden_size] and spec.dtype == self.dtype,
                  f"tensors.{key} must be {self.dtype} [{n}, {self.hidden_size}]")
        _need("head_rows" in self.tensors or self.tied, "an untied head needs tensors.head_rows")
        _need(self.tied is False or "head_rows" not in self.tensors, "a tied head has no tensors.head_rows")
        _need(len(self.tensors) <= MAX_TENSORS and len(self.trained) <= MAX_TENSORS, "too many tensors")
        _need(set(self.files) == {"tensors", "space"}, "files must name exactly tensors and space")
        _need(self.files["tensors"].hash == self.tensors_hash, "files.tensors.hash differs from tensors_hash")
        for role, stem, ext in (("tensors", "trainable_rows", ".safetensors"), ("space", "token_space", ".json")):
            ref = self.files[role]
            _need(ref.name == content_name(stem, ref.hash, ext),
                  f"files.{role}.name is {ref.name!r:.80}, expected {stem}.<16 hex of its hash>{ext}")


def content_hash(data: dict[str, Any]) -> str:
    """`hash_json` of a manifest without its `content_hash` key."""
    return hash_json({k: v for k, v in data.items() if k != "content_hash"})


def parse_manifest(data: Any, where: str, error: type[Exception]) -> RowsManifest:
    """Check format, version and content hash, then the typed schema; raises `error` (one line) on any problem."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise error(f"{where}: not a {FORMAT} manifest (expected a JSON object with format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise error(f"{where}: manifest version {data.get('version')!r:.20} is not {VERSION}; version 1 manifests "
                    "carry no content hash: train or import the rows again with this tokenlm")
    recorded = data.get("content_hash")
    try:
        actual = content_hash(data)
    except ValueError as err:  # NaN/inf in the JSON (allow_nan=False)
        raise error(f"{where}: manifest holds a value that is not valid JSON ({err})") from None
    if recorded != actual:
        raise error(f"{where}: content hash {actual} != recorded {str(recorded)[:40]}: the manifest (or a file it "
                    "describes) was edited or damaged")
    return parse(RowsManifest, data, where, error)
