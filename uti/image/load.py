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
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MIN_SIDE", "load_image"]

DEFAULT_MAX_PIXELS = 16384 * 8192  # a 16K equirect panorama (134 M pixels, 400 MB as RGB)
DEFAULT_MIN_SIDE = 16  # a SigLIP2 patch


def load_image(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE
) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; bad or unacceptable files raise `InputError` (see module doc)."""
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
    return rgb


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
