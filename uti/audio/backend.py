"""The registry of audio codec backends: codec name (`AudioConfig.codec`, `abi.audio.codec`) -> how to load
the model, count its levels, frame it, pin its config, and call transformers' own encode / decode.

`AudioCodec` is backend-agnostic: chunking, channel policy, serialisation and checks are shared, so every
registered codec gets the same strictness and ID layout (one range per level).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from .encodec import (
    check_supported,
    config_identity,
    levels_for_bandwidth,
    load_encodec,
)
from .mimi import (
    check_mimi,
    load_mimi,
    mimi_bandwidth,
    mimi_decode,
    mimi_encode,
    mimi_identity,
    mimi_levels,
)

__all__ = ["BACKENDS", "Backend"]


@dataclass(frozen=True)
class Backend:
    """One codec family. `levels(model_config, audio_config)` -> K; encode [C, n] -> [K, T]; decode [K, f] -> [C, f*hop]."""

    load: Callable[[Any], Any]
    check: Callable[[Any, str], None]
    levels: Callable[[Any, Any], int]
    hop_length: Callable[[Any], int]
    bandwidth: Callable[[Any, Any, int], float]  # kbps recorded in the ABI
    identity: Callable[[Any], dict]
    encode: Callable[[Any, torch.Tensor, int, Any], torch.Tensor]
    decode: Callable[[Any, torch.Tensor], torch.Tensor]
    chunk_frames: int  # default chunk: 30 s


def _check_encodec(model, where: str) -> None:
    if model.config.model_type != "encodec":
        raise ConfigError(f"{where} is a {model.config.model_type!r} model, not EnCodec; set audio.codec to match "
                          "the model")
    check_supported(model, where)


@torch.no_grad()
def _encodec_encode(model, wav: torch.Tensor, levels: int, config) -> torch.Tensor:
    out = model.encode(wav[None], bandwidth=float(config.bandwidth), return_dict=True)
    return out.audio_codes[0, 0]  # (chunks=1, batch=1, K, frames) -> [K, frames]


@torch.no_grad()
def _encodec_decode(model, codes: torch.Tensor) -> torch.Tensor:
    return model.decode(codes[None, None], [None], return_dict=True).audio_values[0]


BACKENDS: dict[str, Backend] = {
    "encodec": Backend(
        load=load_encodec, check=_check_encodec,
        levels=lambda mc, cfg: levels_for_bandwidth(mc, cfg.bandwidth),
        hop_length=lambda mc: int(mc.hop_length),
        bandwidth=lambda mc, cfg, k: float(cfg.bandwidth),
        identity=config_identity, encode=_encodec_encode, decode=_encodec_decode, chunk_frames=2250),
    "mimi": Backend(
        load=load_mimi, check=check_mimi,
        levels=lambda mc, cfg: mimi_levels(mc, cfg.num_quantizers),
        hop_length=lambda mc: int(mc.frame_size),
        bandwidth=lambda mc, cfg, k: mimi_bandwidth(mc, k),
        identity=mimi_identity, encode=lambda m, wav, k, cfg: mimi_encode(m, wav, k), decode=mimi_decode,
        chunk_frames=375),
}
