"""`uti encode` as a newcomer meets it: repaired JPEGs warn (or are refused with --strict), --device/--dtype,
and nothing on stderr but what the toolkit prints (transformers' loading bars only with --verbose)."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import ASSETS
from hostile import assert_one_line_error, run_cli

COURTYARD = ASSETS / "panoramas" / "courtyard.jpg"


def flip_after_sos(src: bytes, n: int, seed: int) -> bytes:
    """`src` with `n` bytes of the entropy-coded data (after the first SOS header) inverted (XOR 0xFF)."""
    sos = src.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(src[sos + 2:sos + 4], "big")
    out = bytearray(src)
    for p in random.Random(seed).sample(range(start, len(src) - 2), n):
        out[p] ^= 0xFF
    return bytes(out)


@pytest.fixture(scope="module")
def repaired_jpeg(tmp_path_factory) -> Path:
    """A copy of courtyard.jpg with 100 flipped bytes that Pillow decodes without any error or warning."""
    src = COURTYARD.read_bytes()
    ref = np.asarray(Image.open(COURTYARD).convert("RGB"), dtype=np.int16)
    path = tmp_path_factory.mktemp("jpeg") / "flipped.jpg"
    for seed in range(50):
        path.write_bytes(flip_after_sos(src, 100, seed))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                img = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        except (OSError, Warning):
            continue
        assert np.abs(img - ref).mean() > 20  # badly wrong pixels, silently
        return path
    raise AssertionError("no seed gave a JPEG that Pillow decodes")


def test_clean_jpeg_has_no_decoder_warning():
    from uti.image.load import jpeg_decoder_warning, load_image

    assert jpeg_decoder_warning(COURTYARD) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(COURTYARD, strict=True)


def test_repaired_jpeg_warns_and_strict_refuses(repaired_jpeg):
    from uti.errors import InputError
    from uti.image.load import DecodeWarning, load_image

    with pytest.warns(DecodeWarning, match="corrupt JPEG data"):
        load_image(repaired_jpeg)
    with pytest.raises(InputError, match="corrupt JPEG data"):
        load_image(repaired_jpeg, strict=True)


@pytest.mark.slow
def test_cli_repaired_jpeg_one_warning_line_or_strict_error(repaired_jpeg):
    proc = run_cli("uti", "encode", repaired_jpeg)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert [ln for ln in err.splitlines() if ln.strip()] == [err.strip()] and err.startswith("warning: "), err
    assert str(repaired_jpeg) in err and "Corrupt JPEG data" in err
    assert_one_line_error(run_cli("uti", "encode", repaired_jpeg, "--strict"), contains="corrupt JPEG data")


@pytest.mark.slow
def test_cli_encode_stderr_is_empty_and_verbose_shows_loading():
    quiet = run_cli("uti", "encode", COURTYARD)
    assert quiet.returncode == 0 and quiet.stderr == b"", quiet.stderr.decode()
    loud = run_cli("uti", "encode", ASSETS / "audio" / "bell.oga", "--verbose")
    assert loud.returncode == 0 and b"Loading weights" in loud.stderr, loud.stderr.decode()


def test_encode_dtype_and_device_options(tmp_path):
    from uti.cli import main

    runner = CliRunner()
    bell = str(ASSETS / "audio" / "bell.oga")
    res = runner.invoke(main, ["encode", bell, "--dtype", "bfloat16", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    ref = runner.invoke(main, ["encode", bell, "--json"])
    assert ref.exit_code == 0 and '"ids"' in ref.output
    bad = runner.invoke(main, ["encode", bell, "--device", "tpu9"])
    assert bad.exit_code == 2 and "--device" in bad.output
    assert "--dtype" in runner.invoke(main, ["encode", "--help"]).output


def test_audio_codec_moves_to_dtype(tiny_space):
    import torch

    from uti.audio.codec import AudioCodec

    codec = AudioCodec.from_space(tiny_space, dtype=torch.bfloat16)
    assert next(codec.model.parameters()).dtype == torch.bfloat16
    enc = codec.encode(np.zeros(4800, np.float32))
    assert enc.codes.dtype == torch.long and enc.codes.device.type == "cpu"
    assert codec.decode(enc).dtype == torch.float32
