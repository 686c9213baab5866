"""Plain values the unified tokenizer takes and gives: `Audio` (a waveform and its rate) and `Segment`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import InputError

__all__ = ["Audio", "Segment"]


@dataclass
class Audio:
    """A waveform [samples] or [channels, samples] (float, -1..1) at `sample_rate` Hz.

    Give it to `uti.Tokenizer.encode` (resampled and mixed like an audio file); `decode` returns it.
    """

    waveform: Any  # np.ndarray | torch.Tensor, [n] or [channels, n]
    sample_rate: int

    def __post_init__(self) -> None:
        if not isinstance(self.sample_rate, (int, np.integer)) or isinstance(self.sample_rate, bool) \
                or not 1 <= int(self.sample_rate) <= 768_000:
            raise InputError(f"Audio.sample_rate must be an integer in [1, 768000] Hz, got {self.sample_rate!r}")
        wav = self.waveform
        if not isinstance(wav, (np.ndarray, torch.Tensor)) or wav.ndim not in (1, 2) or wav.shape[-1] == 0 \
                or (wav.ndim == 2 and not 1 <= wav.shape[0] <= 64):
            desc = f"shape {tuple(wav.shape)}" if hasattr(wav, "shape") else type(wav).__name__
            raise InputError(f"Audio.waveform must be a non-empty [samples] or [channels<=64, samples] array, got {desc}")

    def as_blocks(self) -> np.ndarray:
        """The samples as float32 [samples, channels] (the layout of `uti.audio.io` blocks); NaN/inf refused."""
        wav = self.waveform.detach().cpu().numpy() if isinstance(self.waveform, torch.Tensor) else self.waveform
        wav = np.asarray(wav, dtype=np.float32)
        if not np.isfinite(wav).all():
            raise InputError("Audio.waveform has NaN or infinite samples; clean it before encoding")
        return np.ascontiguousarray(wav[:, None] if wav.ndim == 1 else wav.T)


@dataclass
class Segment:
    """One decoded piece of a stream: `modality` ("text", "image", "audio", any registered name, or
    "special" for a lone marker such as ``<|gen_text|>``), its `value`, the IDs it came from, and whether
    its block was closed (`complete`; False only from `Tokenizer.split(ids, partial=True)`)."""

    modality: str
    value: Any
    ids: list[int] = field(default_factory=list)
    complete: bool = True
