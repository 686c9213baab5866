"""The one small interface every modality codec follows (after audiocraft's `CompressionModel`).

A codec turns an input (string, image, waveform) into local codes and back. The unified tokenizer maps
local codes to global IDs with the token space; codecs never see global IDs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Encoded", "Codec"]


@dataclass
class Encoded:
    """Local codes plus plain JSON-serialisable metadata needed to decode them.

    codes: LongTensor; the shape is the codec's own, e.g. (views, patches) for images and (levels, frames)
    for audio.
    """

    codes: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Codec(Protocol):
    """What `uti` needs from a modality codec."""

    modality: str
    codebook_size: int
    num_codebooks: int

    def encode(self, x: Any) -> Encoded: ...

    def decode(self, encoded: Encoded) -> Any: ...

    def abi(self) -> dict[str, Any]: ...
