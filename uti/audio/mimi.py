"""Mimi through transformers' `MimiModel`: loading, level count, checks and config identity.

Mimi (Kyutai) is a 24 kHz split residual-VQ codec at 12.5 frames per second (hop 1920 samples): level 0 is
a semantic codebook, levels 1.. acoustic ones. At 8 levels it gives 100 audio tokens per second, 6x fewer
than EnCodec at 6 kbps (8 levels at 75 Hz). The number of levels is chosen with `AudioConfig.num_quantizers`
(default: all the model has) and always passed explicitly to `MimiModel.encode`; it is part of the ABI as
`num_codebooks` (and as the derived `bandwidth` in kbps, for display). Codes come from transformers' own
`encode` / `decode` in non-streaming mode, so they are exactly the reference codes.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import ConfigError
from .encodec import load_pretrained_codec

__all__ = ["check_mimi", "load_mimi", "mimi_bandwidth", "mimi_decode", "mimi_encode", "mimi_identity",
           "mimi_levels"]


def load_mimi(name_or_path: str | Path):
    """A `MimiModel` in eval mode (float32, CPU) from a hub id or a local HF-format folder."""
    from transformers import MimiModel

    return load_pretrained_codec(MimiModel, name_or_path, "Mimi", "or download the model (e.g. kyutai/mimi) first")


def check_mimi(model, where: str) -> None:
    """Refuse non-Mimi models, and configs whose declared frame rate is not the one the convolutions give."""
    cfg = model.config
    if cfg.model_type != "mimi":
        raise ConfigError(f"{where} is a {cfg.model_type!r} model, not Mimi; set audio.codec to match the model")
    if model.encoder is None or model.decoder is None:
        raise ConfigError(f"{where}: Mimi needs both its encoder and decoder to turn audio into codes and back")
    if not math.isclose(float(cfg.frame_rate), cfg.sampling_rate / cfg.frame_size):
        raise ConfigError(f"{where}: config frame_rate {cfg.frame_rate} != sampling_rate / frame_size "
                          f"({cfg.sampling_rate} / {cfg.frame_size}); fix the model's config.json")


def mimi_levels(config, num_quantizers: int | None) -> int:
    """Levels to use: `num_quantizers` (semantic ones included), default all of the model's."""
    if num_quantizers is None:
        return int(config.num_quantizers)
    low, high = int(config.num_semantic_quantizers), int(config.num_quantizers)
    if not low <= num_quantizers <= high:
        raise ConfigError(f"audio.num_quantizers {num_quantizers} is not offered by this Mimi; choose "
                          f"{low}..{high}")
    return int(num_quantizers)


def mimi_bandwidth(config, levels: int) -> float:
    """The bit rate in kbps of `levels` levels (log2(codebook_size) bits each per frame)."""
    return levels * math.log2(config.codebook_size) * (config.sampling_rate / config.frame_size) / 1000


@torch.no_grad()
def mimi_encode(model, wav: torch.Tensor, levels: int) -> torch.Tensor:
    """One chunk [channels, n] -> codes [levels, ceil(n / frame_size)] (transformers' encode)."""
    return model.encode(wav[None], num_quantizers=levels, use_streaming=False, return_dict=True).audio_codes[0]


@torch.no_grad()
def mimi_decode(model, codes: torch.Tensor) -> torch.Tensor:
    """Codes [levels, f] -> waveform [channels, f * frame_size] (transformers' decode)."""
    return model.decode(codes[None], return_dict=True).audio_values[0]


_ARCH_KEYS = ("sampling_rate", "audio_channels", "hidden_size", "num_filters", "num_residual_layers",
              "upsampling_ratios", "kernel_size", "last_kernel_size", "residual_kernel_size",
              "dilation_growth_rate", "use_causal_conv", "pad_mode", "compress", "trim_right_ratio",
              "codebook_size", "codebook_dim", "num_quantizers", "use_conv_shortcut",
              "vector_quantization_hidden_dimension", "num_semantic_quantizers", "upsample_groups",
              "num_hidden_layers", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
              "hidden_act", "max_position_embeddings", "norm_eps", "rope_parameters", "sliding_window",
              "layer_scale_initial_scale", "attention_bias")


def mimi_identity(config) -> dict:
    """The config fields that change what the model computes (no versions, paths or dtypes)."""
    out = {"frame_rate": float(config.frame_rate)}
    for key in _ARCH_KEYS:
        value = getattr(config, key, None)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
