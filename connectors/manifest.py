"""The typed schema of a connector-checkpoint manifest (`connector.json`, schema 3), checked before use.

`parse_manifest(data, where)` checks that it is a JSON object of this format and schema, that its
`content_hash` equals `hash_json` of the manifest without that key (tensor contents are covered through
the file hashes in `files`), then every field's type and the cross-field rules: stage `finetune` if and
only if the LoRA settings, the LoRA file and its tensor list are all there; stage `vision` tuned at least
one tower layer; the tuned tower layers (`vision`, at least this stage's `vision_trainable_blocks`, at
most the tower's depth) if and only if their file and tensor list are there; the connector projects to the
LLM's width; LoRA rank at most that width. Sizes against the real LLM are checked by `load_connector`.

Schema 3 (the three stages, tuned tower layers, the global view's own projector) replaced schema 2; a
schema-2 checkpoint is refused in one line: its weights have no global projector (retrain it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenlm.ckpt_store import content_name
from tokenlm.rows_manifest import FileRef, TensorSpec, content_hash
from uti.config import parse

from .errors import ConnectorError
from .inject import ImageTokenIds
from .vlm import ConnectorConfig

__all__ = ["FORMAT", "SCHEMA", "STAGES", "ConnectorManifest", "LlmRef", "LoraArgs", "VisionRef", "parse_manifest",
           "content_hash"]

FORMAT, SCHEMA = "uti-connector", 3
STAGES = ("vision", "resampler", "finetune")


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


@dataclass
class LlmRef:
    """The LLM the connector was trained on: identity, widths and `tokenlm.fingerprint.model_fingerprint`."""

    name: str
    model_type: str
    hidden_size: int
    vocab_size: int
    fingerprint: str

    def __post_init__(self) -> None:
        _need(1 <= self.hidden_size <= 1 << 16 and 1 <= self.vocab_size <= 1 << 31, "llm sizes out of range")


@dataclass
class LoraArgs:
    """The `add_lora` settings of stage `lora`."""

    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]

    def __post_init__(self) -> None:
        _need(self.r >= 1, f"lora.r must be >= 1, got {self.r}")
        _need(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout}")
        _need(0 < len(self.target_modules) <= 256, "lora.target_modules must name 1 to 256 modules")


@dataclass
class VisionRef:
    """The tower layers the checkpoint carries: its last `tuned_blocks` of `depth` kept encoder layers."""

    tuned_blocks: int
    depth: int

    def __post_init__(self) -> None:
        _need(1 <= self.depth <= 4096 and 1 <= self.tuned_blocks <= self.depth,
              f"vision.tuned_blocks must be in [1, depth], got {self.tuned_blocks} of {self.depth}")


@dataclass
class ConnectorManifest:
    """Everything `load_connector` checks before building the connector (see module doc)."""

    format: str
    schema: int
    toolkit_version: str
    stage: str
    connector: ConnectorConfig
    tower: dict[str, Any]
    tower_hash: str
    llm: LlmRef
    image_ids: ImageTokenIds
    token_space_hash: str | None
    lora: LoraArgs | None
    tensors: dict[str, TensorSpec]
    lora_tensors: dict[str, TensorSpec] | None
    vision_trainable_blocks: int
    vision: VisionRef | None
    vision_tensors: dict[str, TensorSpec] | None
    files: dict[str, FileRef]
    extra: dict[str, Any]
    content_hash: str

    def __post_init__(self) -> None:
        _need(self.stage in STAGES, f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        lora = self.stage == "finetune"
        _need(lora == (self.lora is not None) == (self.lora_tensors is not None) == ("lora" in self.files),
              f"stage {self.stage!r} with lora {'null' if self.lora is None else 'set'}: stage finetune needs its "
              "LoRA settings, tensors and file, the other stages have none")
        tuned = 0 if self.vision is None else self.vision.tuned_blocks
        _need(0 <= self.vision_trainable_blocks <= tuned and (self.stage != "vision" or tuned >= 1),
              f"vision_trainable_blocks {self.vision_trainable_blocks} must be in [0, tuned blocks {tuned}] "
              "(at least 1 in stage vision)")
        _need((self.vision is not None) == (self.vision_tensors is not None) == ("vision" in self.files),
              "vision, vision_tensors and files.vision must be all there (tuned tower layers) or all absent")
        _need(set(self.files) <= {"weights", "lora", "vision"} and "weights" in self.files,
              "files must name weights [, lora and vision]")
        for role, ref in self.files.items():
            stem = "connector" if role == "weights" else role
            _need(ref.name == content_name(stem, ref.hash, ".safetensors"),
                  f"files.{role}.name is {ref.name!r:.80}, expected {stem}.<16 hex of its hash>.safetensors")
        _need(self.connector.llm_width == self.llm.hidden_size,
              f"connector.llm_width {self.connector.llm_width} != llm.hidden_size {self.llm.hidden_size}")
        if self.lora is not None:
            _need(self.lora.r <= self.llm.hidden_size, f"lora.r {self.lora.r} exceeds the LLM width {self.llm.hidden_size}")
        width = self.tower.get("hidden_size")
        _need(isinstance(width, int) and not isinstance(width, bool) and 1 <= width <= 1 << 16,
              "tower.hidden_size must be an integer in [1, 65536]")
        ids = self.image_ids
        _need(all(0 <= i < self.llm.vocab_size + (1 << 20) for i in (ids.start, ids.end, ids.patch))
              and 1 <= ids.base_vocab_size <= self.llm.vocab_size, "image_ids out of range for the LLM")


def parse_manifest(data: Any, where: str) -> ConnectorManifest:
    """Check format, schema and content hash, then the typed schema; raises `ConnectorError` (one line)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConnectorError(f"{where} is not a connector manifest (expected a JSON object with format {FORMAT!r})")
    if data.get("schema") != SCHEMA:
        raise ConnectorError(f"{where}: manifest schema {data.get('schema')!r:.20} is not {SCHEMA}; older connectors "
                             "have no global-view projector or stage fields: train the connector again with this toolkit")
    try:
        actual = content_hash(data)
    except ValueError as err:  # NaN/inf
        raise ConnectorError(f"{where}: manifest holds a value that is not valid JSON ({err})") from None
    if data.get("content_hash") != actual:
        raise ConnectorError(f"{where}: content hash {actual} != recorded {str(data.get('content_hash'))[:40]}: the "
                             "manifest (or a file it describes) was edited or damaged")
    return parse(ConnectorManifest, data, where, ConnectorError)
