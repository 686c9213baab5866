"""Build a token space from a small typed config (`uti space build CONFIG --out PATH`).

The config names the text tokenizer, the codec settings and the asset locations (by the rule of
`uti.assets`: paths inside the output folder, or hub ids; absolute paths are refused, so the written file
names no path outside its folder); the builder loads whatever assets are on this machine to pin their
content hashes, derives the specials, and writes `token_space.json`. Modality sections are built by their
registered codecs (`uti.codecs`: `build_section`, e.g. `uti.image.codec.image_abi_section`), so the space
never guesses a codec's identity; the specials are the base ones, then each present codec's in layout order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .assets import ASSET_ENTRY, locate
from .codecs import codec_class, codec_classes
from .config import from_dict, read_config_file
from .errors import ConfigError, MissingAssetError, SpaceError
from .schema import MapOf, Str, problems
from .space import SCHEMA, TokenSpace
from .specials import BASE_SPECIALS

__all__ = ["TextConfig", "SpaceConfig", "build_space", "build_space_file"]


def _asset_keys() -> list[str]:
    """Asset keys a config may name: those of every registered codec."""
    return sorted({k for c in codec_classes() for k in c.asset_keys})


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
    """Everything that defines a space. `image`/`audio` are codec configs (see their codecs' docs);
    `codecs` holds the sections of further registered codecs, keyed by modality name."""

    name: str
    text: TextConfig
    assets: dict[str, Any] = field(default_factory=dict)  # entries as in token_space.json (see uti.assets)
    image: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    codecs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pad_to_multiple: int = 128
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a non-empty folder-safe string, got {self.name!r}")
        if self.pad_to_multiple <= 0:
            raise ConfigError(f"pad_to_multiple must be positive, got {self.pad_to_multiple}")
        unknown = sorted(set(self.assets) - set(_asset_keys()))
        if unknown:
            raise ConfigError(f"assets: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(_asset_keys())}")
        found = problems(MapOf(Str(64), ASSET_ENTRY, 32), self.assets, "assets")
        if found:
            raise ConfigError("; ".join(found[:3]))
        for kind in self.codecs:
            if kind in ("text", "image", "audio"):
                raise ConfigError(f"codecs.{kind}: give the {kind} section at the top level of the config")
            try:
                codec_class(kind)
            except SpaceError as err:
                raise ConfigError(f"codecs.{kind}: {err}") from None

    def sections(self) -> dict[str, dict[str, Any]]:
        """Modality name -> its codec's config section, for every modality other than text."""
        out = {k: v for k, v in (("image", self.image), ("audio", self.audio)) if v is not None}
        return {**out, **self.codecs}


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
        tok_hash, tok_size = codec.tokenizer_hash, codec.codebook_size
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


def build_space(cfg: SpaceConfig, root: Path) -> TokenSpace:
    """The space `cfg` defines; relative asset paths are resolved against `root` (the output folder)."""
    abi: dict[str, Any] = {"schema": SCHEMA, "text": _text_section(cfg, root)}
    sections = cfg.sections()
    assets = {k: _resolve(k, v, root) for k, v in cfg.assets.items()}
    specials = list(BASE_SPECIALS)
    for codec in codec_classes():  # layout order, so specials are appended in the order of the ranges
        if codec.modality in sections:
            abi[codec.modality] = codec.build_section(sections[codec.modality], assets)
        if abi.get(codec.modality) is not None:
            specials += [n for n in codec.specials(abi[codec.modality]) if n not in specials]
    abi["specials"] = specials
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
