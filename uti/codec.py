"""`Encoded`: what a modality's model-level codec (`uti.image.codec.ImageCodec`, `uti.audio.codec.AudioCodec`)
gives back: local codes and the metadata to decode them. Local codes are mapped to global IDs of a token space
by the registered codec adapters (`uti.codecs`, `uti.modalities`); model-level codecs never see global IDs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Encoded"]


@dataclass
class Encoded:
    """Local codes plus plain JSON-serialisable metadata needed to decode them.

    codes: LongTensor; the shape is the codec's own, e.g. (views, patches) for images and (levels, frames)
    for audio.
    """

    codes: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
