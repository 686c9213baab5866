"""Audio files in and out: soundfile for reading/writing, soxr for resampling, one channel policy.

Channel policy (part of the audio ABI as `channels`):
  * "mono_mean" (mono codecs, e.g. EnCodec 24 kHz): every input channel count is averaged to one channel.
  * "stereo" (stereo codecs, e.g. EnCodec 48 kHz): mono input is duplicated to both channels, stereo is
    kept; more than two channels are refused (there is no agreed stereo downmix of surround layouts).
Files with more than `MAX_CHANNELS` channels are refused either way.

Reading is streamed: the file is read in blocks (`soundfile.SoundFile.blocks`), each block is checked for
NaN/inf, mixed to the codec's channels and pushed through one `soxr.ResampleStream`, so memory stays
bounded by the block size however long the file is. soxr's stream output does not depend on the block
size and equals a one-shot `soxr.resample` (checked in tests), so blocking never changes the samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..errors import InputError
from ..io import atomic_path

__all__ = [
    "CHANNEL_POLICIES",
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "AudioWriter",
    "channel_policy",
    "load_audio",
    "mix_channels",
    "read_blocks",
    "rechunk",
    "write_audio",
]

CHANNEL_POLICIES = ("mono_mean", "stereo")
MAX_CHANNELS = 16  # more than this is not an audio recording we can sensibly mix
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 384_000
BLOCK_FRAMES = 1 << 16  # input frames per read (~1.5 s at 44.1 kHz)
WRITE_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24"), ".ogg": ("OGG", "VORBIS")}


def channel_policy(codec_channels: int) -> str:
    """The channel policy for a codec with `codec_channels` channels (1 or 2)."""
    if codec_channels not in (1, 2):
        raise InputError(f"codec has {codec_channels} channels; only mono (1) and stereo (2) codecs are supported")
    return CHANNEL_POLICIES[codec_channels - 1]


def mix_channels(block: np.ndarray, policy: str, where: str = "input") -> np.ndarray:
    """Apply `policy` to a block [frames, channels_in] -> [frames, 1 or 2] float32."""
    n_in = block.shape[1]
    if policy == "mono_mean":
        return block if n_in == 1 else block.mean(axis=1, keepdims=True, dtype=np.float32)
    if policy == "stereo":
        if n_in > 2:
            raise InputError(f"{where}: {n_in} channels cannot be fed to a stereo codec; downmix it to stereo first")
        return block if n_in == 2 else np.repeat(block, 2, axis=1)
    raise InputError(f"unknown channel policy {policy!r}; expected one of {', '.join(CHANNEL_POLICIES)}")


def _open(path: str | Path) -> sf.SoundFile:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such audio file")
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        reason = getattr(err, "error_string", None) or err  # libsndfile's own message repeats the path
        raise InputError(f"{path}: not a readable audio file ({reason}); use wav, flac or ogg") from None
    problem = None
    if f.frames == 0:
        problem = "is empty (0 samples)"
    elif f.channels > MAX_CHANNELS:
        problem = f"has {f.channels} channels; at most {MAX_CHANNELS} are accepted"
    elif not MIN_SAMPLE_RATE <= f.samplerate <= MAX_SAMPLE_RATE:
        problem = f"has sample rate {f.samplerate} Hz; expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
    if problem:
        f.close()
        raise InputError(f"{path}: {problem}")
    return f


def read_blocks(path: str | Path, sample_rate: int, policy: str,
                block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Stream `path` as float32 blocks [frames, channels] at `sample_rate`, mixed by `policy`.

    Raises InputError for unreadable/empty files, NaN or inf samples (with the sample index), too many
    channels and sample rates outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE].
    """
    with _open(path) as f:
        sr_in, total = f.samplerate, f.frames
        out_channels = 1 if policy == "mono_mean" else 2
        mix_channels(np.zeros((1, f.channels), np.float32), policy, str(path))  # refuse early, before reading
        resampler = None if sr_in == sample_rate else soxr.ResampleStream(
            sr_in, sample_rate, out_channels, dtype="float32", quality="HQ")
        done = 0
        for block in f.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
            finite = np.isfinite(block)
            if not finite.all():
                bad = done + int(np.argwhere(~finite)[0, 0])
                raise InputError(f"{path}: sample {bad} is NaN or infinite; clean the file before encoding")
            done += len(block)
            block = mix_channels(block, policy, str(path))
            if resampler is not None:
                block = resampler.resample_chunk(block, last=done >= total)
            if len(block):
                yield block


def rechunk(blocks: Iterable[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    """Regroup blocks [n_i, C] into chunks [chunk, C] (the last one may be shorter); memory ~ 2 chunks."""
    pending: list[np.ndarray] = []
    have = 0
    for block in blocks:
        pending.append(block)
        have += len(block)
        while have >= chunk:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield joined[:chunk]
            rest = joined[chunk:]
            pending, have = ([rest] if len(rest) else []), len(rest)
    if have:
        yield np.concatenate(pending)


def load_audio(path: str | Path, sample_rate: int, policy: str) -> np.ndarray:
    """Whole file as float32 [channels, samples] at `sample_rate` (for short clips; long ones: `read_blocks`)."""
    return np.ascontiguousarray(np.concatenate(list(read_blocks(path, sample_rate, policy))).T)


class AudioWriter:
    """Append [channels, samples] blocks to an audio file written atomically (temp file + rename on close).

    The format comes from the suffix of `path`: .wav (32-bit float), .flac (24-bit) or .ogg (Vorbis).
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int):
        path = Path(path)
        if path.suffix.lower() not in WRITE_FORMATS:
            raise InputError(f"{path}: cannot write {path.suffix or 'no suffix'}; use one of {', '.join(WRITE_FORMATS)}")
        self.path, self.sample_rate, self.channels = path, sample_rate, channels
        self._format, self._subtype = WRITE_FORMATS[path.suffix.lower()]

    def __enter__(self) -> AudioWriter:  # noqa: PYI034
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._file = sf.SoundFile(str(tmp), "w", self.sample_rate, self.channels,
                                  subtype=self._subtype, format=self._format)
        return self

    def write(self, wav: np.ndarray) -> None:
        """Append samples [channels, n]."""
        self._file.write(np.ascontiguousarray(np.asarray(wav, dtype=np.float32).T))

    def __exit__(self, *exc) -> None:
        self._file.close()
        self._atomic.__exit__(*exc)


def write_audio(path: str | Path, wav: np.ndarray, sample_rate: int) -> None:
    """Write float samples [channels, samples] to `path` atomically."""
    wav = np.asarray(wav, dtype=np.float32)
    with AudioWriter(path, sample_rate, wav.shape[0]) as w:
        w.write(wav)
