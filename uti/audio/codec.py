"""`AudioCodec`: waveform or audio file <-> RVQ codes [K, T] <-> global IDs of a token space.

The codec family is `AudioConfig.codec`, looked up in `uti.audio.backend.BACKENDS`: "encodec" (75 Hz) or
"mimi" (12.5 Hz). Codes are produced by transformers' own `EncodecModel.encode` / `decode` (bandwidth always
passed) or `MimiModel.encode` / `decode` (number of levels always passed), so they are exactly the
reference codes. What follows is said for EnCodec and holds for Mimi alike (its default chunk is 375 frames,
also 30 s). Long inputs are cut into chunks of `chunk_frames` frames
(`chunk_frames * hop_length` samples, 30 s by default) that are encoded independently: the 24 kHz EnCodec
runs causal convolutions and an LSTM over the whole input (it has no chunking of its own), so memory
grows with the input and an hour would need tens of GB. Inputs up to one chunk give exactly the one-pass
codes; longer inputs give, chunk for chunk, exactly the one-pass codes of each chunk (tested), and
frames near a chunk boundary differ from a hypothetical one-pass run over the whole file. Because the
chunk size changes codes, `chunk_frames` is part of the ABI. Chunks are whole frames, so the frame count
is always ceil(samples / hop_length). Decoding mirrors this, chunk by chunk, and trims to the recorded
sample count.

ABI section (`abi["audio"]`): codec ("encodec" | "mimi"), model, weights_hash (`hash_safetensors` of the weights),
config_hash, sample_rate, frame_rate, hop_length, bandwidth, num_codebooks, codebook_size, order
("frame_major" | "delay"), channels ("mono_mean" | "stereo", see `uti.audio.io`), chunk_frames.
Audio IDs are wrapped as `<|audio_start|> ... <|audio_end|>`; the delay order fills gaps with `<|pad|>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import specials as S
from ..codec import Encoded
from ..config import from_dict
from ..dtypes import dtype_name
from ..errors import (
    ConfigError,
    HashMismatchError,
    InputError,
    MissingAssetError,
    SpaceError,
    TokenRangeError,
)
from ..hashing import hash_json, hash_safetensors
from ..space import identity_diff
from .backend import BACKENDS
from .encodec import encodec_weights_dir
from .io import AudioWriter, channel_policy, mix_channels, read_blocks, rechunk
from .serialize import ORDERS, codes_to_ids, ids_to_codes

__all__ = ["AudioCodec", "AudioConfig", "audio_abi_section"]

_SECTION_KEYS = ("codec", "model", "weights_hash", "config_hash", "sample_rate", "frame_rate", "hop_length",
                 "bandwidth", "num_codebooks", "codebook_size", "order", "channels", "chunk_frames")


@dataclass
class AudioConfig:
    """The `audio` section of a space config. `name` defaults to the codec asset's folder name or hub id."""

    codec: str = "encodec"
    name: str | None = None
    bandwidth: float | None = None  # EnCodec only: kbps, default 6.0
    num_quantizers: int | None = None  # Mimi only: levels, default all of the model's
    order: str = "frame_major"
    chunk_frames: int | None = None  # default 30 s: 2250 at 75 Hz (EnCodec), 375 at 12.5 Hz (Mimi)

    def __post_init__(self) -> None:
        if self.codec not in BACKENDS:
            raise ConfigError(f"audio.codec {self.codec!r} is not supported; valid: {', '.join(BACKENDS)}")
        if self.codec == "encodec":
            self.bandwidth = 6.0 if self.bandwidth is None else self.bandwidth
            if self.num_quantizers is not None:
                raise ConfigError("audio.num_quantizers is for Mimi; EnCodec levels are chosen by audio.bandwidth")
        elif self.bandwidth is not None:
            raise ConfigError(f"audio.bandwidth is for EnCodec; choose {self.codec} levels with audio.num_quantizers")
        if self.chunk_frames is None:
            self.chunk_frames = BACKENDS[self.codec].chunk_frames
        if self.order not in ORDERS:
            raise ConfigError(f"audio.order {self.order!r} is not valid; expected one of {', '.join(ORDERS)}")
        if self.chunk_frames <= 0:
            raise ConfigError(f"audio.chunk_frames must be positive, got {self.chunk_frames}")


class AudioCodec:
    """A registered RVQ codec (EnCodec, Mimi) as a `uti.codec.Codec` (modality "audio"); `space` (optional)
    adds global-ID methods."""

    modality = "audio"

    def __init__(self, model, config: AudioConfig, name: str, weights_hash: str, space=None) -> None:
        self.backend = BACKENDS[config.codec]
        self.backend.check(model, name)
        self.model, self.config, self.name, self.weights_hash, self.space = model, config, name, weights_hash, space
        mc = model.config
        self.sample_rate: int = int(mc.sampling_rate)
        self.hop_length: int = self.backend.hop_length(mc)
        rate = self.sample_rate / self.hop_length
        self.frame_rate: int | float = int(rate) if rate.is_integer() else rate  # 75 (EnCodec), 12.5 (Mimi)
        self.codebook_size: int = int(mc.codebook_size)
        self.channels: int = int(mc.audio_channels)
        self.channel_policy: str = channel_policy(self.channels)
        self.num_codebooks: int = self.backend.levels(mc, config)
        self.chunk_samples: int = config.chunk_frames * self.hop_length

    # construction ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, config: AudioConfig | None = None,
                        name: str | None = None, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> AudioCodec:
        """Load an HF-format model of `config.codec` (hub id or local folder); pin its weights by content hash.

        `device`/`dtype` place the model (the waveform follows it; codes always come back as CPU longs).
        Reduced precision may change codes near a quantiser boundary: the reference codes are float32's.
        """
        config = config or AudioConfig()
        model = BACKENDS[config.codec].load(name_or_path).to(device=device, dtype=dtype)
        weights_hash = hash_safetensors(encodec_weights_dir(name_or_path))
        return cls(model, config, config.name or name or _default_name(name_or_path), weights_hash)

    @classmethod
    def from_space(cls, space, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> AudioCodec:
        """The codec a token space names (asset "audio_codec"), checked against its ABI section."""
        section = space.abi.get("audio")
        if section is None:
            raise MissingAssetError(f"space {space.name!r} has no audio section")
        lacking = [k for k in _SECTION_KEYS if k not in section]
        if lacking:
            raise SpaceError(f"space {space.name!r} ({space.path}): abi.audio lacks {', '.join(lacking)}; "
                             "rebuild it with `uti space build`")
        space.require_assets("audio_codec")
        ref = space.asset("audio_codec")
        if section["codec"] not in BACKENDS:
            raise SpaceError(f"space {space.name!r}: abi.audio.codec {section['codec']!r} is unknown to this "
                             f"version; known: {', '.join(BACKENDS)}")
        levels = ({"bandwidth": section["bandwidth"]} if section["codec"] == "encodec"
                  else {"num_quantizers": section["num_codebooks"]})
        config = AudioConfig(codec=section["codec"], name=section["model"], order=section["order"],
                             chunk_frames=section["chunk_frames"], **levels)
        codec = cls.from_pretrained(ref, config, device=device, dtype=dtype)
        codec.space = space
        space.check_asset("audio_codec", codec.weights_hash)  # the one pin check (uti.assets.check_pin)
        diff = identity_diff(section, codec.abi(), ignore=frozenset({"model"}))
        if diff:
            raise HashMismatchError(f"audio codec {ref} does not match space {space.name!r} ({space.path}): "
                                    f"{'; '.join(diff)}; restore the codec or rebuild the space")
        return codec

    def abi(self) -> dict[str, Any]:
        """The audio ABI section: every fact that changes what an audio ID means."""
        mc = self.model.config
        return {"codec": self.config.codec, "model": self.name, "weights_hash": self.weights_hash,
                "config_hash": hash_json(self.backend.identity(mc)),
                "sample_rate": self.sample_rate, "frame_rate": self.frame_rate, "hop_length": self.hop_length,
                "bandwidth": self.backend.bandwidth(mc, self.config, self.num_codebooks),
                "num_codebooks": self.num_codebooks,
                "codebook_size": self.codebook_size, "order": self.config.order,
                "channels": self.channel_policy, "chunk_frames": self.config.chunk_frames}

    # codes ------------------------------------------------------------------------------------------
    def encode_chunk(self, wav: torch.Tensor) -> torch.Tensor:
        """One chunk [channels, n] at the codec rate -> codes [K, ceil(n / hop)] on the CPU (transformers' encode)."""
        p = next(self.model.parameters())
        return self.backend.encode(self.model, wav.to(p.device, p.dtype), self.num_codebooks, self.config).cpu()

    def decode_chunk(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [K, f] -> float32 waveform [channels, f * hop] on the CPU (transformers' decode)."""
        device = next(self.model.parameters()).device
        return self.backend.decode(self.model, codes.to(device)).float().cpu()

    def encode_blocks(self, blocks: Iterable[np.ndarray], where: str = "input") -> Encoded:
        """Encode blocks [n_i, channels] at the codec rate, chunk by chunk (bounded memory)."""
        parts, samples = [], 0
        for chunk in rechunk(blocks, self.chunk_samples):  # [n, C]
            samples += len(chunk)
            parts.append(self.encode_chunk(torch.from_numpy(np.ascontiguousarray(chunk.T))))
        if not samples:
            raise InputError(f"{where}: no audio samples to encode")
        codes = torch.cat(parts, dim=1)  # [K, T]
        return Encoded(codes, {"sample_rate": self.sample_rate, "num_samples": samples, "channels": self.channels,
                               "frames": int(codes.shape[1]),
                               "compute_dtype": dtype_name(next(self.model.parameters()).dtype)})

    def encode(self, x: Any) -> Encoded:
        """Encode an audio file path, or a waveform [channels, n] / [n] at the codec's sample rate."""
        if isinstance(x, (str, Path)):
            return self.encode_file(x)
        wav = torch.as_tensor(np.asarray(x, dtype=np.float32))
        wav = wav[None] if wav.ndim == 1 else wav
        if wav.ndim != 2 or wav.shape[0] > 64:
            raise InputError(f"waveform must be [channels, samples] or [samples], got shape {tuple(wav.shape)}")
        if not torch.isfinite(wav).all():
            raise InputError("waveform has NaN or infinite samples")
        block = mix_channels(wav.t().numpy(), self.channel_policy)  # [n, C]
        return self.encode_blocks([block])

    def encode_file(self, path: str | Path) -> Encoded:
        """Read, mix, resample and encode a file in bounded memory."""
        return self.encode_blocks(read_blocks(path, self.sample_rate, self.channel_policy), str(path))

    def iter_decode(self, encoded: Encoded) -> Iterator[torch.Tensor]:
        """Waveform chunks [channels, n] of `encoded`, trimmed to meta["num_samples"] when known."""
        codes = encoded.codes
        if codes.ndim != 2 or codes.shape[0] != self.num_codebooks:
            raise TokenRangeError(f"audio codes must be [{self.num_codebooks}, frames], got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise TokenRangeError(f"audio codes must lie in [0, {self.codebook_size})")
        frames = codes.shape[1]
        left = int(encoded.meta.get("num_samples", frames * self.hop_length))
        if not 0 <= left <= frames * self.hop_length:
            raise InputError(f"meta num_samples {left} does not fit {frames} frames of {self.hop_length} samples")
        for start in range(0, frames, self.config.chunk_frames):
            wav = self.decode_chunk(codes[:, start:start + self.config.chunk_frames].long())
            wav, left = wav[:, :left], left - min(left, wav.shape[1])
            yield wav

    def decode(self, encoded: Encoded) -> torch.Tensor:
        """Codes -> waveform [channels, samples] at `sample_rate`."""
        return torch.cat(list(self.iter_decode(encoded)), dim=1)

    def decode_to_file(self, encoded: Encoded, path: str | Path) -> int:
        """Decode straight into an audio file (atomic write, bounded memory); returns the sample count."""
        n = 0
        with AudioWriter(path, self.sample_rate, self.channels) as writer:
            for wav in self.iter_decode(encoded):
                writer.write(wav.numpy())
                n += wav.shape[1]
        return n

    # global IDs -------------------------------------------------------------------------------------
    def _space(self):
        if self.space is None:
            raise MissingAssetError("this AudioCodec has no token space; build it with AudioCodec.from_space")
        return self.space

    def _starts(self) -> list[int]:
        ranges = self._space().audio_ranges
        if len(ranges) != self.num_codebooks or any(len(r) != self.codebook_size for r in ranges):
            raise TokenRangeError(f"space {self._space().name!r} has {len(ranges)} audio ranges; the codec needs "
                                  f"{self.num_codebooks} of {self.codebook_size}")
        return [r.start for r in ranges]

    def to_ids(self, encoded: Encoded) -> list[int]:
        """Codes -> `<|audio_start|> ... <|audio_end|>` global IDs in the ABI's order."""
        sp = self._space()
        body = codes_to_ids(encoded.codes, self._starts(), self.codebook_size, self.config.order,
                            sp.special_id(S.PAD))
        return [sp.special_id(S.AUDIO_START), *body.tolist(), sp.special_id(S.AUDIO_END)]

    def from_ids(self, ids: Sequence[int], meta: dict | None = None) -> Encoded:
        """Global IDs (wrapped in audio start/end markers or bare) -> Encoded codes [K, T]."""
        sp = self._space()
        ids = [int(i) for i in ids]
        start, end = sp.special_id(S.AUDIO_START), sp.special_id(S.AUDIO_END)
        if ids[:1] == [start]:
            if ids[-1:] != [end] or len(ids) < 2:
                raise TokenRangeError("audio stream starts with <|audio_start|> but does not end with <|audio_end|>")
            ids = ids[1:-1]
        codes = ids_to_codes(ids, self._starts(), self.codebook_size, self.config.order, sp.special_id(S.PAD))
        meta = dict(meta or {})
        meta.setdefault("frames", int(codes.shape[1]))
        return Encoded(codes, meta)


def _default_name(ref: str | Path) -> str:
    return Path(ref).name if isinstance(ref, Path) or Path(ref).exists() else str(ref)


def audio_abi_section(section_cfg: dict, assets: dict[str, Path | str]) -> dict:
    """The `abi["audio"]` section for a space config (used by `uti space build`); loads the codec asset."""
    config = from_dict(AudioConfig, section_cfg, where="audio")
    if "audio_codec" not in assets:
        raise ConfigError("an audio section needs assets.audio_codec (an EnCodec or Mimi folder or hub id)")
    return AudioCodec.from_pretrained(assets["audio_codec"], config).abi()
