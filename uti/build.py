"""Build a token space from a small typed config (`uti space build CONFIG --out PATH`).

The config names the text tokenizer, the image and audio codec settings and the asset locations (by the
rule of `uti.assets`: paths inside the output folder, or hub ids; absolute paths are refused, so the
written file names no path outside its folder); the builder loads whatever assets are on this machine
to pin their content hashes, derives the specials, and writes `token_space.json`. Modality sections are built by their codecs
(`uti.image.codec.image_abi_section`, `uti.audio.codec.audio_abi_section`), so the space never guesses
a codec's identity.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .assets import ASSET_ENTRY, locate
from .config import from_dict, read_config_file
from .errors import ConfigError, MissingAssetError
from .schema import MapOf, Str, problems
from .space import SCHEMA, TokenSpace
from .specials import default_specials

__all__ = ["TextConfig", "SpaceConfig", "build_space", "build_space_file"]

_SECTION_BUILDERS = {"image": "uti.image.codec:image_abi_section", "audio": "uti.audio.codec:audio_abi_section"}
_ASSET_KEYS = ("tokenizer", "base_model", "vision_tower", "codebook", "audio_codec")


@dataclass
class TextConfig:
    """The text tokenizer. `base_vocab_size` defaults to the base model's `config.vocab_size` (asset
    `base_model`), else to the tokenizer's size; `tokenizer_hash` pins a tokenizer that is not local."""

    tokenizer: str
    base_vocab_size: int | None = None
    tokenizer_hash: str | None = None

    def __post_init__(self) -> None:
        if self.base_vocab_size is not None and self.base_vocab_size <= 0:
            raise ConfigError(f"text.base_vocab_size must be positive, got {self.base_vocab_size}")


@dataclass
class SpaceConfig:
    """Everything that defines a space. `image`/`audio` are codec configs (see their codecs' docs)."""

    name: str
    text: TextConfig
    assets: dict[str, Any] = field(default_factory=dict)  # entries as in token_space.json (see uti.assets)
    image: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    pad_to_multiple: int = 128
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a non-empty folder-safe string, got {self.name!r}")
        if self.pad_to_multiple <= 0:
            raise ConfigError(f"pad_to_multiple must be positive, got {self.pad_to_multiple}")
        unknown = sorted(set(self.assets) - set(_ASSET_KEYS))
        if unknown:
            raise ConfigError(f"assets: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(_ASSET_KEYS)}")
        found = problems(MapOf(Str(64), ASSET_ENTRY, 32), self.assets, "assets")
        if found:
            raise ConfigError("; ".join(found[:3]))


def _resolve(key: str, ref: Any, root: Path) -> Path | str:
    """Where asset `key` is, by the space's asset rule (`uti.assets`: inside `root`, or a hub id); a
    missing local path stays a string here so the section builder that needs it names it."""
    try:
        return locate(key, ref, root)[0]
    except MissingAssetError:
        return ref if isinstance(ref, str) else str(ref.get("path"))


def _text_section(cfg: SpaceConfig, root: Path) -> dict:
    from .text import TextCodec

    tok_ref = _resolve("tokenizer", cfg.assets.get("tokenizer", cfg.text.tokenizer), root)
    try:
        codec = TextCodec.from_pretrained(tok_ref)
        tok_hash, tok_size = codec.vocab_hash, codec.codebook_size
    except MissingAssetError:
        codec, tok_hash, tok_size = None, cfg.text.tokenizer_hash, None
    if cfg.text.tokenizer_hash is not None and tok_hash != cfg.text.tokenizer_hash:
        raise ConfigError(f"text.tokenizer_hash pins {cfg.text.tokenizer_hash} but {tok_ref} hashes to {tok_hash}")
    vocab = cfg.text.base_vocab_size
    if vocab is None and "base_model" in cfg.assets:
        vocab = _base_vocab_size(_resolve("base_model", cfg.assets["base_model"], root))
    vocab = vocab if vocab is not None else tok_size
    if vocab is None:
        raise ConfigError("text.base_vocab_size is needed when neither the tokenizer nor the base model is on this machine")
    if tok_size is not None and tok_size > vocab:
        raise ConfigError(f"tokenizer has {tok_size} tokens but base_vocab_size is {vocab}; it must be >= the tokenizer")
    return {"tokenizer": cfg.text.tokenizer, "tokenizer_hash": tok_hash, "base_vocab_size": vocab}


def _base_vocab_size(ref: Path | str) -> int | None:
    try:
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(str(ref)).vocab_size)
    except Exception:  # not on this machine: fall back to the tokenizer / explicit value
        return None


def _modality_section(kind: str, section_cfg: dict, cfg: SpaceConfig, root: Path) -> dict:
    module, func = _SECTION_BUILDERS[kind].split(":")
    try:
        builder = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{kind} section: this install has no {kind} codec ({err})") from None
    assets = {k: _resolve(k, v, root) for k, v in cfg.assets.items()}
    return builder(section_cfg, assets)


def build_space(cfg: SpaceConfig, root: Path) -> TokenSpace:
    """The space `cfg` defines; relative asset paths are resolved against `root` (the output folder)."""
    abi: dict[str, Any] = {"schema": SCHEMA, "text": _text_section(cfg, root)}
    for kind in ("image", "audio"):
        section_cfg = getattr(cfg, kind)
        if section_cfg is not None:
            abi[kind] = _modality_section(kind, section_cfg, cfg, root)
    layout = abi["image"]["layout"] if "image" in abi else None
    abi["specials"] = default_specials(layout["num_tiles"] if layout else None, bool(layout.get("global_view", True)) if layout else True)
    abi["pad_to_multiple"] = cfg.pad_to_multiple
    return TokenSpace.from_abi(abi, name=cfg.name, assets=cfg.assets, description=cfg.description)


def build_space_file(config_path: str | Path, out: str | Path) -> TokenSpace:
    """Read a YAML/JSON config, build the space and write it atomically to `out`."""
    cfg = from_dict(SpaceConfig, read_config_file(config_path), where=str(config_path))
    out = Path(out)
    if out.is_dir() or out.suffix != ".json":
        out = out / "token_space.json"
    space = build_space(cfg, out.parent)
    space.save(out)
    return space
