"""The tiny space's image codebook: k-means (K=64) of the tiny tower's patch features of the CC0 panoramas.

Four panoramas give 432 fit vectors for 64 codes in one rendering each (6.75 a code: the codes fit single
patches, held-out perplexity 26 of 64); 8 yaw rotations and the mirror give each panorama 16 renderings,
6912 fit vectors and 2304 held-out ones (`uti.image.fit`).
"""

from __future__ import annotations

from pathlib import Path

from uti.image.fit import fit_codebook_on_images
from uti.image.layout import Layout
from uti.image.vision import VisionTower

__all__ = ["MIRROR", "PANORAMAS", "ROTATIONS", "make_tiny_codebook"]

#: The four CC0 panoramas shipped with the tests (one is held out of the fit, see `fit_codebook_on_images`).
PANORAMAS = Path(__file__).resolve().parents[2] / "tests" / "assets" / "panoramas"
ROTATIONS = 8  # training views: yaw rotations of each panorama (5.625 degrees apart at the tiny layout's 45)
MIRROR = True  # ... and of its mirror image


def make_tiny_codebook(out_dir: str | Path, seed: int = 0, *, tower_dir: str | Path | None = None,
                       images: str | Path = PANORAMAS, size: int = 64, tile_size: int = 64) -> Path:
    """Fit `out_dir/codebook.safetensors` (+ `.report.json`) on `images` with the tower in `tower_dir`
    (default `out_dir/vision_tower`) and the default layout at `tile_size`; needs no token space, so the space
    is built afterwards from these assets. Returns the codebook path."""
    out_dir = Path(out_dir)
    tower = VisionTower.from_pretrained(Path(tower_dir or out_dir / "vision_tower"))
    out = out_dir / "codebook.safetensors"
    fit_codebook_on_images(images, tower, Layout(tile_size=tile_size), size, out, seed=seed, progress=False,
                           rotations=ROTATIONS, mirror=MIRROR)
    return out
