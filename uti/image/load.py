"""Robust image loading: any image file Pillow can read becomes an (H, W, 3) uint8 RGB array, or an InputError.

Conversions (what a user's files really contain):

* EXIF orientation is applied, so the array is the image as viewers show it.
* Grayscale, bilevel, palette, CMYK (Pillow's plain conversion, no ICC profile), YCbCr, LAB, HSV -> RGB.
* 16-bit and 32-bit integer grayscale ("I;16", "I") are scaled from 0..65535 to 0..255 with rounding
  (Pillow's own `convert("RGB")` would clip them); float grayscale ("F") is taken as 0..1.
* Alpha (RGBA, LA, palette with transparency) is composited on black: a pixel's colour is multiplied by its
  opacity, so content hidden by transparency (often garbage left by editors) never leaks into the tokens,
  and a transparent area reads the same whatever colour it stores.

Refused with a one-line `InputError`: missing, empty, non-image, corrupt or truncated files, images with more
than `max_pixels` pixels (decompression bombs: the size is checked from the header before any pixel is
decoded), and images with a side shorter than `min_side` (smaller than a vision-tower patch).

Repaired JPEGs: libjpeg recovers from corrupt entropy-coded data (flipped bytes, a lost segment) by filling
in blocks, and Pillow silences its warnings, so such a file decodes "fine" with large pixel errors. JPEGs are
therefore also run through OpenCV's decoder (libjpeg-turbo, at 1/8 scale: the whole entropy-coded stream is
still parsed) with its stderr captured; a libjpeg warning becomes a `DecodeWarning` (the CLIs print one
`warning:` line), or an `InputError` with `strict=True` (`uti encode --strict`).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError, UTIWarning

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MIN_SIDE", "DecodeWarning", "jpeg_decoder_warning", "load_image"]

DEFAULT_MAX_PIXELS = 16384 * 8192  # a 16K equirect panorama (134 M pixels, 400 MB as RGB)
DEFAULT_MIN_SIDE = 16  # a SigLIP2 patch


class DecodeWarning(UTIWarning):
    """The decoder repaired corrupt data: the pixels may be far from what the file was meant to hold."""


def load_image(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE, strict: bool = False
) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; bad or unacceptable files raise `InputError` (see module doc).

    A JPEG the decoder had to repair gives a `DecodeWarning`, or an `InputError` when `strict`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected an image file (JPEG, PNG, WebP, TIFF, ...)")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); expected an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit below
            with Image.open(path) as im:
                _check_size(path, im.size, max_pixels, min_side)
                im.load()
                is_jpeg = im.format in ("JPEG", "MPO")  # MPO: multi-picture JPEG from cameras
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
    except InputError:
        raise
    except Image.DecompressionBombError:
        msg = f"{path}: refused as a decompression bomb (too many pixels); limit is {max_pixels:,}"
        raise InputError(msg) from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: corrupt or truncated image ({msg}); re-export or re-download the file") from None
    _check_size(path, (rgb.shape[1], rgb.shape[0]), max_pixels, min_side)
    problem = jpeg_decoder_warning(path) if is_jpeg else None
    if problem and strict:
        raise InputError(f"{path}: corrupt JPEG data the decoder had to repair ({problem}); re-export or "
                         "re-download the file, or drop --strict to accept it")
    if problem:
        warnings.warn(f"{path}: corrupt JPEG data, decoded with repairs ({problem}); the pixels may be wrong "
                      "(--strict refuses such files)", DecodeWarning, stacklevel=2)
    return rgb


_STDERR_LOCK = threading.Lock()
# libjpeg's warning texts (jerror.h): what it prints when it recovers from bad data instead of failing
_LIBJPEG_WARNING = re.compile(r"^(Corrupt JPEG data|Premature end of JPEG file|Invalid |Inconsistent |Warning: |"
                              r"Bogus |Unsupported |Huffman |Not a JPEG|JPEG datastream)")


def jpeg_decoder_warning(path: str | Path) -> str | None:
    """The first warning libjpeg (in OpenCV) prints while decoding JPEG `path`, or None for a clean file.

    libjpeg writes warnings to file descriptor 2, so it is pointed at a temporary file for the decode (under a
    lock; text other threads write meanwhile is passed on to the real stderr).
    """
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    with _STDERR_LOCK, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        lines = tmp.read().decode("utf-8", "replace").splitlines()
    found = [ln.strip() for ln in lines if _LIBJPEG_WARNING.match(ln.strip())]
    others = [ln for ln in lines if not _LIBJPEG_WARNING.match(ln.strip())]
    if others:
        os.write(2, ("\n".join(others) + "\n").encode())
    return found[0] if found else None


def _check_size(path: Path, size: tuple[int, int], max_pixels: int, min_side: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise InputError(
            f"{path}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} (possible decompression bomb);"
            " downscale the image or raise max_pixels"
        )
    if min(w, h) < min_side:
        raise InputError(f"{path}: {w}x{h} image is too small; each side must be at least {min_side} pixels")


def _to_rgb(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 from any Pillow mode (see the module docstring for the policy)."""
    mode = im.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im).astype(np.float64)
        scale = 255.0 if mode == "F" else 255.0 / 65535.0
        gray = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    has_alpha = "A" in mode or "a" in mode or (mode == "P" and "transparency" in im.info)
    if not has_alpha:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)  # (H, W, 4); "RGBa"/"La" are un-premultiplied here
    rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255  # composite on black, rounded
    return np.ascontiguousarray(rgb.astype(np.uint8))
