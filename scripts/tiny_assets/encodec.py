"""The tiny space's audio codec: a random (untrained) EnCodec-architecture model with codebooks from its encoder.

Made to come out bit for bit the same on any machine and with any thread count or library version:

* every tensor is drawn explicitly from numpy's PCG64 generator as uniform values (integer arithmetic and
  exactly rounded scaling), never from transformers' initialisation or torch's vectorised normal sampler,
  which differ between library versions and CPU instruction sets;
* the codebooks are encoder outputs of the speech clips in tests/assets/audio (read as exact PCM), taken in float64 and
  rounded to float32 once: float32 kernels (oneDNN convolutions, LSTM GEMMs) round differently on different
  CPUs and thread counts, float64 differences stay far below one float32 step.

`config.json` is written without transformers' `transformers_version` stamp, so the folder does not change
with the installed transformers.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from .hf import unstamp

__all__ = ["TINY_BANDWIDTH", "TINY_ENCODEC_CONFIG", "make_tiny_encodec"]

#: A tiny EnCodec: same 24 kHz / hop 320 / 75 Hz framing as facebook/encodec_24khz, narrow channels,
#: 256-entry codebooks; 2.4 kbps = 4 levels x 8 bits x 75 Hz.
TINY_ENCODEC_CONFIG: dict = {
    "sampling_rate": 24_000, "audio_channels": 1, "num_filters": 4, "hidden_size": 16, "num_lstm_layers": 1,
    "upsampling_ratios": [8, 5, 4, 2], "codebook_size": 256, "target_bandwidths": [1.2, 2.4],
}
TINY_BANDWIDTH = 2.4


def _uniform(rng: np.random.Generator, shape: torch.Size, bound: float) -> torch.Tensor:
    """U(-bound, bound) float32 of `shape`; `bound` a power of two keeps every step exact."""
    return torch.from_numpy((bound * (2.0 * rng.random(tuple(shape)) - 1.0)).astype(np.float32))


@torch.no_grad()
def _init_weights(model: torch.nn.Module, seed: int) -> None:
    """Set every parameter from `seed` in sorted-name order (weight-norm directions uniform, gains 1,
    biases 0, LSTM weights U(-1/8, 1/8) as PyTorch's 1/sqrt(hidden 64)); refuses tensors it does not know."""
    rng = np.random.default_rng(seed)
    for name, p in sorted(model.named_parameters()):
        if name.endswith("parametrizations.weight.original1"):  # weight-norm direction v
            p.copy_(_uniform(rng, p.shape, 1.0))
        elif name.endswith("parametrizations.weight.original0"):  # weight-norm gain g: unit-norm filters
            p.fill_(1.0)
        elif ".lstm.weight_" in name:
            p.copy_(_uniform(rng, p.shape, 0.125))
        elif name.endswith("bias") or ".lstm.bias_" in name:
            p.zero_()
        else:
            raise RuntimeError(f"tiny EnCodec maker: no initialisation rule for parameter {name}")


#: The espeak-ng speech clips shipped with the tests (22.05 kHz 16-bit PCM, see tests/assets/audio/LICENSE.txt).
SPEECH = [Path(__file__).resolve().parents[2] / "tests" / "assets" / "audio" / f"speech_{name}.wav"
          for name in ("courtyard", "forest")]


def _speech() -> torch.Tensor:
    """The speech clips joined, float64 [1, 1, T], played at 24 kHz (9% higher, no resampling: exact samples)."""
    import soundfile as sf

    clips = [sf.read(str(path), dtype="float64", always_2d=True)[0].mean(1) for path in SPEECH]
    return torch.from_numpy(np.concatenate(clips))[None, None]


@torch.no_grad()
def _fit_codebooks(model, seed: int) -> None:
    """Give each RVQ level a codebook drawn from the encoder's own residual embeddings of the test speech.

    transformers initialises codebooks to zeros (every frame would map to code 0); sampling entries from
    real residuals makes codes vary with the input, at every level. Computed in float64 (module docstring).
    """
    rng = np.random.default_rng(seed)
    encoder = copy.deepcopy(model.encoder).double()
    residual = encoder(_speech())[0].t()  # [frames, D] float64, 508 frames: enough for 256-entry books
    for layer in model.quantizer.layers:
        book = layer.codebook
        pick = torch.from_numpy(rng.choice(residual.shape[0], size=book.codebook_size, replace=False))
        entries = residual[pick]  # [K, D] float64
        book.embed.copy_(entries.float())
        book.embed_avg.copy_(entries.float())
        book.cluster_size.fill_(1.0)
        book.inited.fill_(1.0)
        nearest = torch.cdist(residual, entries).argmin(-1)  # [frames]
        residual = residual - entries[nearest]


def make_tiny_encodec(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny EnCodec (config.json + model.safetensors) to `out_dir`; returns `out_dir`."""
    from transformers import EncodecConfig, EncodecModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = EncodecModel(EncodecConfig(**TINY_ENCODEC_CONFIG)).eval()
    _init_weights(model, seed)
    _fit_codebooks(model, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    unstamp(out_dir)
    return out_dir

