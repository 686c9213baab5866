"""The tiny space's image codebook: k-means (K=64) of the tiny tower's patch features of the CC0 panoramas."""

from __future__ import annotations

from pathlib import Path

from uti.image.fit import fit_codebook_on_images
from uti.image.layout import Layout
from uti.image.vision import VisionTower

__all__ = ["PANORAMAS", "make_tiny_codebook"]

#: The four CC0 panoramas shipped with the tests (one is held out of the fit, see `fit_codebook_on_images`).
PANORAMAS = Path(__file__).resolve().parents[2] / "tests" / "assets" / "panoramas"


def make_tiny_codebook(out_dir: str | Path, seed: int = 0, *, tower_dir: str | Path | None = None,
                       images: str | Path = PANORAMAS, size: int = 64, tile_size: int = 64) -> Path:
    """Fit `out_dir/codebook.safetensors` (+ `.report.json`) on `images` with the tower in `tower_dir`
    (default `out_dir/vision_tower`) and the default layout at `tile_size`; needs no token space, so the space
    is built afterwards from these assets. Returns the codebook path."""
    out_dir = Path(out_dir)
    tower = VisionTower.from_pretrained(Path(tower_dir or out_dir / "vision_tower"))
    out = out_dir / "codebook.safetensors"
    fit_codebook_on_images(images, tower, Layout(tile_size=tile_size), size, out, seed=seed, progress=False)
    return out
