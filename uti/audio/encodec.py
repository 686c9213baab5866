"""EnCodec through transformers' `EncodecModel`: loading and bandwidth -> levels.

Why not the PyPI `encodec` package: it imports torchaudio at import time, and no CPU torchaudio build
exists for the torch this toolkit pins; its released code is also licensed CC-BY-NC, which an
Apache/MIT toolkit cannot depend on. transformers' port gives the same codes and loads any HF-format
EnCodec by hub id or local folder; original `.th` checkpoints are converted with
`uti audio convert-encodec` (see `uti.audio.convert`).

The bandwidth is always passed explicitly: `EncodecModel.encode` silently falls back to the smallest
bandwidth when given none, which would change the number of codebook levels behind the user's back.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import ConfigError, MissingAssetError

__all__ = [
    "check_supported",
    "config_identity",
    "encodec_weights_dir",
    "levels_for_bandwidth",
    "load_encodec",
]

def _quiet_transformers() -> None:
    """No "Loading weights" bar on every load (it would interleave with `uti encode --json` output)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_pretrained_codec(model_cls: type, name_or_path: str | Path, label: str, hint: str):
    """`model_cls.from_pretrained` in eval mode (float32, CPU), with one-line errors for a missing model.

    `label` names the codec in messages ("EnCodec", "Mimi"); `hint` says where to get it. Progress bars and
    log lines follow transformers' settings (the CLIs silence them unless `--verbose`, see `uti.cli_base`).
    """
    if isinstance(name_or_path, Path) and not name_or_path.exists():
        raise MissingAssetError(f"{label} folder {name_or_path} does not exist")
    try:
        model = model_cls.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MissingAssetError(f"cannot load {label} {name_or_path!r}: {first}; give a local HF-format folder "
                                f"{hint}") from None
    return model.eval()


def load_encodec(name_or_path: str | Path):
    """An `EncodecModel` in eval mode (float32, CPU) from a hub id or a local HF-format folder."""
    from transformers import EncodecModel

    model = load_pretrained_codec(EncodecModel, name_or_path, "EnCodec",
                                  "(see `uti audio convert-encodec`) or download the model first")
    if model.config.model_type != "encodec":
        raise ConfigError(f"{name_or_path} is a {model.config.model_type!r} model, not EnCodec")
    return model


def encodec_weights_dir(name_or_path: str | Path) -> Path:
    """The local folder holding the model's safetensors (a hub id is looked up in the local HF cache)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), local_files_only=True, allow_patterns=["*.safetensors",
                                                                                              "*.json"]))
    except Exception as err:  # noqa: BLE001 - not in the cache on this (offline) machine
        raise MissingAssetError(f"audio codec {name_or_path!r} is neither a local folder nor in the HF cache ({err})") from None


def levels_for_bandwidth(config, bandwidth: float) -> int:
    """Number of RVQ levels EnCodec uses at `bandwidth` kbps (must be one of config.target_bandwidths)."""
    allowed = [float(b) for b in config.target_bandwidths]
    if float(bandwidth) not in allowed:
        raise ConfigError(f"bandwidth {bandwidth} kbps is not offered by this EnCodec; choose one of {allowed}")
    bits_per_level = math.log2(config.codebook_size) * config.frame_rate
    return int(max(1, math.floor(bandwidth * 1000 / bits_per_level)))


def check_supported(model, where: str) -> None:
    """Refuse EnCodec variants whose codes alone cannot rebuild the waveform."""
    cfg = model.config
    if cfg.normalize or cfg.chunk_length_s is not None:
        raise ConfigError(f"{where}: EnCodec models with normalize=True or chunk_length_s (e.g. the 48 kHz model) "
                         "need per-chunk scales that token IDs do not carry; use a 24 kHz-style model")


_ARCH_KEYS = ("target_bandwidths", "sampling_rate", "audio_channels", "normalize", "chunk_length_s", "overlap",
              "hidden_size", "num_filters", "num_residual_layers", "upsampling_ratios", "norm_type", "kernel_size",
              "last_kernel_size", "residual_kernel_size", "dilation_growth_rate", "use_causal_conv", "pad_mode",
              "compress", "num_lstm_layers", "trim_right_ratio", "codebook_size", "codebook_dim", "use_conv_shortcut")


def config_identity(config) -> dict:
    """The config fields that change what the model computes (no versions, paths or dtypes)."""
    out = {}
    for key in _ARCH_KEYS:
        value = getattr(config, key)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
