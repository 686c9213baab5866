"""Robust image loading: every odd file either becomes (H, W, 3) uint8 RGB or a one-line InputError."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uti.errors import InputError, UTIError
from uti.image.load import load_image

ASSET = Path(__file__).parent / "assets" / "panoramas" / "city.jpg"


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h pixels (what a decompression bomb looks like before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _expect_error(path: Path, match: str, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as info:
        load_image(path, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and isinstance(info.value, UTIError)
    return msg


def test_real_panorama_loads_as_rgb() -> None:
    img = load_image(ASSET)
    assert img.shape == (512, 1024, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
    assert np.array_equal(img, np.asarray(Image.open(ASSET).convert("RGB")))


def test_modes_are_converted_to_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (32, 48), dtype=np.uint8)

    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert np.array_equal(load_image(tmp_path / "gray.png"), np.repeat(gray[..., None], 3, axis=2))

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cmyk = load_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (32, 48, 3) and np.abs(cmyk.astype(int) - rgb).mean() < 20

    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "palette.png")
    assert np.array_equal(load_image(tmp_path / "palette.png"), np.asarray(pal.convert("RGB")))

    g16 = (gray.astype(np.uint16) * 257 + (gray < 255) * 100).astype(np.uint16)  # off the 257 grid: rounding counts
    Image.fromarray(g16).save(tmp_path / "gray16.png")
    assert np.abs(load_image(tmp_path / "gray16.png")[..., 0].astype(int) - gray).max() <= 1  # scaled, not clipped

    import cv2  # writes true 16-bit-per-channel PNGs (BGR order)

    cv2.imwrite(str(tmp_path / "rgb16.png"), (rgb[..., ::-1].astype(np.uint16) * 257))
    assert np.abs(load_image(tmp_path / "rgb16.png").astype(int) - rgb).max() <= 1


def test_alpha_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :10, 3] = 255  # left opaque
    rgba[:, 10:, 3] = 0  # right fully transparent
    rgba[0, 0, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    out = load_image(tmp_path / "alpha.png")
    assert out.shape == (20, 20, 3)
    assert (out[1:, :10] == 200).all() and (out[:, 10:] == 0).all() and (out[0, 0] == 100).all()

    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    la.save(tmp_path / "la.png")
    assert np.array_equal(load_image(tmp_path / "la.png"), out)

    pal = Image.fromarray(np.full((20, 20), 200, np.uint8)).convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal_t.png", transparency=pal.getpixel((0, 0)))
    assert (load_image(tmp_path / "pal_t.png") == 0).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = np.zeros((30, 60, 3), np.uint8)
    img[:, :30] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(img).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    assert load_image(tmp_path / "rot.jpg").shape == (60, 30, 3)


def test_bad_files_are_one_line_input_errors(tmp_path: Path) -> None:
    _expect_error(tmp_path / "missing.jpg", "no such file")
    _expect_error(tmp_path, "no such file")
    (tmp_path / "empty.jpg").write_bytes(b"")
    _expect_error(tmp_path / "empty.jpg", "empty")
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    _expect_error(tmp_path / "notes.jpg", "not a readable image")

    data = ASSET.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    _expect_error(tmp_path / "truncated.jpg", "corrupt or truncated")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "ok.png")
    png = (tmp_path / "ok.png").read_bytes()
    data_at = png.index(b"IDAT") + 8  # inside the compressed pixel data, chunk headers intact
    (tmp_path / "corrupt.png").write_bytes(png[:data_at] + b"\xff" * 16 + png[data_at + 16:])
    _expect_error(tmp_path / "corrupt.png", "corrupt or truncated")
    (tmp_path / "bad_header.png").write_bytes(png[:20] + b"\xff" * 40 + png[60:])
    _expect_error(tmp_path / "bad_header.png", "not a readable image")


def test_decompression_bombs_are_refused_before_decoding(tmp_path: Path) -> None:
    _expect_error(_png_header_only(tmp_path / "bomb.png", 100_000, 100_000), "decompression bomb")  # Pillow's own check
    msg = _expect_error(_png_header_only(tmp_path / "big.png", 12_000, 12_000), "decompression bomb")  # ours
    assert "144,000,000" in msg and "limit" in msg
    _expect_error(ASSET, "exceeds the limit", max_pixels=1000)


def test_too_small_images_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 100, 3), np.uint8)).save(tmp_path / "thin.png")
    _expect_error(tmp_path / "thin.png", "too small")
    assert load_image(tmp_path / "thin.png", min_side=8).shape == (8, 100, 3)
