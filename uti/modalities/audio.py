"""Audio as a registered codec: thin adapter over `uti.audio.codec.AudioCodec` (EnCodec / Mimi RVQ).

Block layout: ``<|audio_start|> ... <|audio_end|>`` with the levels serialised in the ABI's order
(`frame_major` or `delay`, see `uti.audio.serialize`); level q has its own range `audio.q`.
Inputs: a `pathlib.Path` to an audio file or a `uti.Audio` (resampled and mixed like a file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import specials as S
from ..codecs import ModalityCodec, Ranges, register_codec
from ..document import at_least
from ..errors import InputError, SpaceError
from ..items import Audio

__all__ = ["AUDIO_SUFFIXES", "AudioMeta", "AudioModality", "AudioGrammar"]

#: File suffixes read as audio (anything libsndfile reads; unreadable files fail cleanly).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


@dataclass(frozen=True)
class AudioMeta:
    """The `meta` of an audio document."""

    sample_rate: int | None = None
    num_samples: int | None = None  # samples at the codec rate; decoding trims to it
    channels: int | None = None
    frames: int | None = None
    source: str | None = None  # the input file's name
    compute_dtype: Literal["float32", "bfloat16", "float16"] | None = None  # the codec's dtype (uti.dtypes)

    def __post_init__(self) -> None:
        for name, low in (("sample_rate", 1), ("num_samples", 0), ("channels", 1), ("frames", 0)):
            at_least(self, name, low)


class AudioGrammar:
    """Inside audio. `frame_major`: levels 0..K-1 of frame 0, then of frame 1, ...; slot q takes only
    `audio.q`; the end marker only at a frame boundary after >= 1 frame. `delay` (MusicGen): step s has K
    slots, slot q holds level q of frame s-q or the `<|pad|>` filler where that frame does not exist; a
    filler in slot 0 (from step 1 on) ends the frames, the K-1 tail steps follow, then only the end marker.
    State: (position in the block, frame count once known or None)."""

    def __init__(self, levels: list[tuple[int, int]], order: str, end: int, pad: int) -> None:
        self.levels, self.order, self.end, self.pad = levels, order, end, pad

    def start(self) -> tuple[int, int | None]:
        return 0, None

    def allowed(self, state: tuple[int, int | None], prompt: bool = False) -> Ranges:
        pos, frames = state
        k = len(self.levels)
        step, q = divmod(pos, k)
        end, pad = [(self.end, self.end + 1)], [(self.pad, self.pad + 1)]
        if self.order == "frame_major":
            return [self.levels[q]] + (end if q == 0 and step > 0 else [])
        if frames is not None and step == frames + k - 1:
            return end if q == 0 else []
        if step - q < 0 or (frames is not None and step - q >= frames):
            return pad
        if q == 0 and frames is None and step > 0:
            return [self.levels[0]] + pad  # a filler here ends the frames
        return [self.levels[q]]

    def advance(self, state: tuple[int, int | None], tok: int) -> tuple[int, int | None]:
        pos, frames = state
        k = len(self.levels)
        if self.order == "delay" and tok == self.pad and frames is None and pos % k == 0:
            frames = pos // k
        return pos + 1, frames

    def export(self) -> dict[str, Any]:
        return {"order": self.order, "levels": [list(r) for r in self.levels], "end": self.end,
                "filler": self.pad if self.order == "delay" else None,
                "end_rule": "after a whole frame (>= 1 frame)" if self.order == "frame_major"
                else "after the K-1 tail steps that follow the first slot-0 filler"}


@register_codec("audio", rank=20, short="a")
class AudioModality(ModalityCodec):
    """`uti.audio.codec.AudioCodec` (loaded on first encode/decode) behind the registry."""

    asset_keys = ("audio_codec",)
    meta_type = AudioMeta

    @classmethod
    def build_section(cls, section_cfg: dict[str, Any], assets: dict[str, Path | str]) -> dict[str, Any]:
        from ..audio.codec import audio_abi_section

        return audio_abi_section(section_cfg, assets)

    @classmethod
    def range_sizes(cls, section: dict[str, Any]) -> list[tuple[str, int]]:
        return [(f"audio.{q}", section["codebook_size"]) for q in range(section["num_codebooks"])]

    @classmethod
    def code_token_name(cls, range_name: str, code: int) -> str:
        return f"<|aud_{range_name.split('.')[1]}_{code}|>"

    @classmethod
    def file_suffixes(cls) -> tuple[str, ...]:
        return AUDIO_SUFFIXES

    @classmethod
    def accepts(cls, item: Any) -> bool:
        if isinstance(item, Audio):
            return True
        return isinstance(item, Path) and item.suffix.lower() in AUDIO_SUFFIXES

    def __init__(self, space: Any, **run: Any) -> None:
        super().__init__(space, **run)
        self._codec: Any = None

    @property
    def codec(self) -> Any:
        """The space's `AudioCodec` (on `device` in `dtype`, default float32), built on first use. `strict` has
        no effect: audio files that need repairs are always refused."""
        if self._codec is None:
            import torch

            from ..audio.codec import AudioCodec

            self._codec = AudioCodec.from_space(self.space, device=self.device, dtype=self.dtype or torch.float32)
        return self._codec

    def load(self) -> None:
        self.codec

    def encode(self, item: Path | Audio) -> list[int]:
        return self.encode_with_meta(item)[0]

    def encode_with_meta(self, item: Path | Audio) -> tuple[list[int], dict[str, Any]]:
        """Global IDs of one audio item and its metadata (sample rate, samples, frames; a file's name)."""
        codec = self.codec
        if isinstance(item, Path):
            encoded = codec.encode_file(item)
            return codec.to_ids(encoded), {**encoded.meta, "source": item.name}
        else:
            import soxr

            from ..audio.io import mix_channels

            block = mix_channels(item.as_blocks(), codec.channel_policy, "Audio")  # [n, C]
            if int(item.sample_rate) != codec.sample_rate:  # soxr one-shot == the file path's stream (uti.audio.io)
                block = soxr.resample(block, int(item.sample_rate), codec.sample_rate, quality="HQ")
            encoded = codec.encode_blocks([block], "Audio")
        return codec.to_ids(encoded), encoded.meta

    def decode_block(self, ids: list[int]) -> Audio:
        """The waveform [channels, samples] of one audio block at the codec's rate."""
        encoded = self.codec.from_ids(ids)
        return Audio(self.codec.decode(encoded).numpy(), self.codec.sample_rate)

    def decode_to_file(self, ids: list[int], out: str | None, meta: AudioMeta,
                       where: str = "document") -> dict[str, Any]:
        """Decode an audio document to the waveform file `out` (atomic write, chunk by chunk). The meta must
        agree with the codec (sample rate, channels, frames); `num_samples` trims the end."""
        if not out:
            raise InputError("decoding audio needs --out FILE (.wav, .flac or .ogg)")
        codec = self.codec
        enc = codec.from_ids(ids, {} if meta.num_samples is None else {"num_samples": meta.num_samples})
        found = {"sample_rate": codec.sample_rate, "channels": codec.channels, "frames": int(enc.codes.shape[1])}
        for key, value in found.items():
            if getattr(meta, key) not in (None, value):
                raise InputError(f"{where}: meta.{key} is {getattr(meta, key)}, but the IDs and the space's codec "
                                 f"give {value}; the document was edited or belongs to another codec")
        n = codec.decode_to_file(enc, out)
        return {"modality": self.modality, "out": str(out), "sample_rate": codec.sample_rate, "num_samples": n,
                "seconds": round(n / codec.sample_rate, 3), "frames": int(enc.codes.shape[1])}

    def block_grammar(self) -> AudioGrammar:
        sp = self.space
        if self.section.get("order", "frame_major") not in ("frame_major", "delay"):
            raise SpaceError(f"abi.audio.order {self.section['order']!r} is not supported; expected frame_major or delay")
        return AudioGrammar([(sp.ranges[k].start, sp.ranges[k].stop) for k in self.range_keys()],
                            self.section.get("order", "frame_major"), sp.special_id(self.markers()[1]),
                            sp.special_id(S.PAD))

    # --- token LM hooks (see `ModalityCodec`) ---------------------------------------------------------
    default_seconds = 5.0  # a generated audio block may close after any whole frame; this is its default length

    def _frame_steps(self) -> tuple[int, int]:
        """(levels K, extra steps of the serialisation order: K - 1 for `delay`, else 0)."""
        k = int(self.section["num_codebooks"])
        return k, (k - 1 if self.section.get("order") == "delay" else 0)

    def default_new_tokens(self) -> int:
        """`default_seconds` of frames, K levels each (plus K - 1 steps for `delay`), then `<|audio_end|>`."""
        k, extra = self._frame_steps()
        return (round(self.default_seconds * float(self.section["frame_rate"])) + extra) * k + 1

    def budget_close(self, max_new_tokens: int) -> tuple[int, int] | None:
        """Close after the whole frames `max_new_tokens` holds: `<|audio_end|>` (frame_major) or the level-0
        `<|pad|>` that ends the frames (delay; the grammar then forces the fillers and the end marker)."""
        k, extra = self._frame_steps()
        frames = (max_new_tokens - 1) // k - extra
        if frames < 1:
            return None
        return frames * k, self.space.special_id(S.PAD if extra else self.markers()[1])

    def summary(self, segment: Any, out: Path | None = None) -> dict[str, Any]:
        """Frames of the block; with `out`, the waveform written to `out.wav` (atomic) and its sample count."""
        res: dict[str, Any] = {"frames": int(self.codec.from_ids(segment.ids).codes.shape[1])}
        if out is not None and isinstance(segment.value, Audio):
            from ..audio.io import AudioWriter

            wav = segment.value.as_blocks().T  # [channels, samples]
            path = out.with_suffix(".wav")
            with AudioWriter(path, int(segment.value.sample_rate), wav.shape[0]) as writer:
                writer.write(wav)
            res.update(samples=int(wav.shape[1]), path=str(path))
        return res
