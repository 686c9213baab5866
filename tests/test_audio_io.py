"""Audio file I/O: streaming read + resample, channel policy, atomic writes, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from uti.audio.io import AudioWriter, load_audio, read_blocks, rechunk, write_audio
from uti.errors import InputError

ASSETS = Path(__file__).parent / "assets" / "audio"
SPEECH = ASSETS / "speech_courtyard.wav"


def _wav(path: Path, data: np.ndarray, sr: int, subtype: str = "FLOAT") -> Path:
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def test_streamed_resampling_is_block_size_independent_and_equals_one_shot() -> None:
    whole, sr = sf.read(str(SPEECH), dtype="float32", always_2d=True)
    expected = soxr.resample(whole, sr, 24_000, quality="HQ")
    for block in (997, 4096, 1 << 20):
        got = np.concatenate(list(read_blocks(SPEECH, 24_000, "mono_mean", block_frames=block)))
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("sr", [8_000, 16_000, 22_050, 44_100, 48_000, 96_000])
def test_sample_rates_8k_to_96k(tmp_path: Path, sr: int) -> None:
    t = np.arange(sr // 2) / sr
    path = _wav(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    wav = load_audio(path, 24_000, "mono_mean")
    assert wav.shape[0] == 1 and abs(wav.shape[1] - 12_000) <= 1
    assert 0.2 < np.abs(wav).max() < 0.4  # the tone survives resampling


def test_channel_policy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    six = rng.uniform(-0.5, 0.5, size=(2400, 6)).astype(np.float32)
    path = _wav(tmp_path / "six.wav", six, 24_000)
    np.testing.assert_allclose(load_audio(path, 24_000, "mono_mean")[0], six.mean(axis=1), atol=1e-7)
    with pytest.raises(InputError, match="6 channels cannot be fed to a stereo codec"):
        load_audio(path, 24_000, "stereo")
    mono = _wav(tmp_path / "mono.wav", six[:, 0], 24_000)
    stereo = load_audio(mono, 24_000, "stereo")
    assert stereo.shape == (2, 2400) and np.array_equal(stereo[0], stereo[1])
    many = _wav(tmp_path / "many.wav", np.zeros((100, 17), np.float32), 24_000)
    with pytest.raises(InputError, match="17 channels"):
        load_audio(many, 24_000, "mono_mean")


def test_ogg_and_flac(tmp_path: Path) -> None:
    bell = load_audio(ASSETS / "bell.oga", 24_000, "mono_mean")
    assert bell.shape[0] == 1 and bell.shape[1] > 3000 and np.isfinite(bell).all()
    write_audio(tmp_path / "bell.flac", bell, 24_000)
    back, sr = sf.read(str(tmp_path / "bell.flac"), dtype="float32", always_2d=True)
    assert sr == 24_000 and np.abs(back[:, 0] - bell[0]).max() < 1e-4  # 24-bit FLAC


def test_wav_write_is_exact_and_atomic(tmp_path: Path) -> None:
    wav = np.random.default_rng(1).uniform(-1, 1, size=(1, 500)).astype(np.float32)
    out = tmp_path / "x.wav"
    write_audio(out, wav, 24_000)
    np.testing.assert_array_equal(sf.read(str(out), dtype="float32")[0], wav[0])
    with pytest.raises(RuntimeError), AudioWriter(tmp_path / "y.wav", 24_000, 1) as w:
        w.write(wav)
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav"]  # no partial file, no temp left
    with pytest.raises(InputError, match="cannot write .mp4"):
        write_audio(tmp_path / "x.mp4", wav, 24_000)


@pytest.mark.parametrize("bad, match", [
    ("nan", "sample 7 is NaN or infinite"),
    ("inf", "sample 7 is NaN or infinite"),
    ("empty", "empty"),
    ("text", "not a readable audio file"),
    ("missing", "no such audio file"),
    ("rate", "sample rate 2000 Hz"),
])
def test_bad_files_raise_one_line_input_error(tmp_path: Path, bad: str, match: str) -> None:
    data = np.zeros(100, np.float32)
    path = tmp_path / "bad.wav"
    if bad in ("nan", "inf"):
        data[7] = np.nan if bad == "nan" else np.inf
        _wav(path, data, 16_000)
    elif bad == "empty":
        _wav(path, data[:0], 16_000)
    elif bad == "text":
        path.write_text("this is not audio")
    elif bad == "rate":
        _wav(path, data, 2_000)
    with pytest.raises(InputError, match=match) as info:
        load_audio(path, 24_000, "mono_mean")
    assert "\n" not in str(info.value)


def test_rechunk_regroups_exactly() -> None:
    blocks = [np.arange(n, dtype=np.float32)[:, None] for n in (3, 10, 1, 6)]
    chunks = list(rechunk(blocks, 4))
    assert [len(c) for c in chunks] == [4, 4, 4, 4, 4]
    np.testing.assert_array_equal(np.concatenate(chunks), np.concatenate(blocks))


def test_long_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    """One minute at 44.1 kHz (5.8 MB as float32 at 24 kHz) pass through read -> resample -> chunks
    while numpy never holds more than a few blocks (tracemalloc sees numpy's allocations)."""
    import tracemalloc

    path, sr = tmp_path / "long.wav", 44_100
    with sf.SoundFile(str(path), "w", sr, 2, subtype="PCM_16") as f:
        for k in range(6):
            f.write(np.full((sr * 10, 2), 0.01 * (k + 1), np.float32))
    tracemalloc.start()
    total = 0
    for chunk in rechunk(read_blocks(path, 24_000, "mono_mean"), 24_000):
        assert chunk.shape[1] == 1 and len(chunk) <= 24_000
        total += len(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert total == 60 * 24_000
    assert peak < 3_000_000, f"peak numpy memory {peak} bytes; the stream is not bounded"
