"""Fit a codebook for a space's vision tower and layout on a folder of images (`uti codebook fit`).

Images are split by file into a fit set and a held-out set (every image whose sorted index i satisfies
``i % round(1 / held_out) == 0`` is held out, so the split is deterministic and spread over the folder);
k-means runs on the patch features of the fit set, and the health report is measured on both sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..hashing import hash_safetensors
from ..io import atomic_write_json
from .codec import IMAGE_EXTENSIONS
from .pool import pool_features
from .e2p import is_panorama, render_plain, render_views
from .layout import Layout
from .load import load_image
from .vision import VisionTower
from .vq import Codebook, fit_codebook, health_report

__all__ = ["FitResult", "fit_codebook_on_images", "image_features"]


@dataclass
class FitResult:
    codebook: Codebook
    report: dict[str, Any]


def image_features(paths: Sequence[str | Path], tower: VisionTower, layout: Layout, antialias: int = 1,
                   progress: bool = True, per_image: int | None = None, seed: int = 0,
                   token_grid: Sequence[int] | None = None) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """Patch features (M, D) of all views of `paths` (panoramas -> layout views, others -> one view).

    per_image: keep at most this many random patches per image (seeded), which bounds memory on large
    folders. Unreadable images are skipped and returned as failures with their reason.
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    feats, failed = [], []
    for path in tqdm(paths, desc="features", unit="img", disable=not progress):
        try:
            img = load_image(path)
        except InputError as err:
            failed.append({"path": str(path), "reason": str(err)})
            continue
        h, w = img.shape[:2]
        views = render_views(img, layout, antialias=antialias) if is_panorama(h, w) else render_plain(
            img, layout.tile_size)[None]
        f = pool_features(tower.encode(views), (tower.grid, tower.grid), token_grid)  # (V, P, D), P pooled if asked
        f = f.reshape(-1, tower.hidden_size).cpu()  # (V * P, D)
        if per_image is not None and len(f) > per_image:
            f = f[torch.randperm(len(f), generator=gen)[:per_image]]
        feats.append(f)
    return (torch.cat(feats) if feats else torch.zeros(0, tower.hidden_size)), failed


def _relative_failure(failure: dict[str, str], images: str | Path) -> dict[str, str]:
    """A failure named by its path relative to the images folder: the report travels with the codebook."""
    rel = Path(failure["path"]).relative_to(images).as_posix()
    return {"path": rel, "reason": failure["reason"].replace(failure["path"], rel)}


def fit_codebook_on_images(
    images: str | Path, tower: VisionTower, layout: Layout, size: int, out: str | Path, *, antialias: int = 1,
    held_out: float = 0.25, iters: int = 20, seed: int = 0, metric: str = "euclidean", progress: bool = True,
    max_vectors: int = 1_000_000, token_grid: Sequence[int] | None = None,
) -> FitResult:
    """Fit, save `out` (codebook.safetensors) and `<out>.report.json`; returns the codebook and report."""
    paths = sorted(str(p) for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise InputError(f"{images}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    if not 0.0 <= held_out < 1.0:
        raise InputError(f"--held-out must be in [0, 1), got {held_out}")
    every = round(1 / held_out) if held_out > 0 else 0
    held = [p for i, p in enumerate(paths) if every and i % every == 0 and len(paths) > 1]
    fit = [p for p in paths if p not in held]
    per_image = -(-max_vectors // max(len(fit), 1))  # ceil: about max_vectors fit vectors in total
    fit_feats, failed = image_features(fit, tower, layout, antialias, progress, per_image, seed, token_grid)
    held_feats, failed_held = image_features(held, tower, layout, antialias, progress, per_image, seed + 1, token_grid)
    codebook = fit_codebook(fit_feats, size, iters=iters, seed=seed, metric=metric)
    codebook.save(out)
    report = {
        "codebook": Path(out).name, "hash": hash_safetensors(out), "size": size, "dim": codebook.dim, "metric": metric,
        "iters": iters, "seed": seed, "max_vectors": max_vectors, "tower": tower.abi(), "layout": layout.abi(),
        "antialias": antialias, **({"token_grid": list(token_grid)} if token_grid else {}),
        "fit_images": len(fit), "held_out_images": len(held),
        "failed": [_relative_failure(f, images) for f in failed + failed_held],
        "fit": health_report(codebook, fit_feats),
        "held_out": health_report(codebook, held_feats) if len(held_feats) else None,
    }
    atomic_write_json(Path(str(out) + ".report.json"), report)
    return FitResult(codebook, report)

