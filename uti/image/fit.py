"""Fit a codebook for a space's vision tower and layout on a folder of images (`uti codebook fit`).

Images are split by file into a fit set and a held-out set (every image whose sorted index i satisfies
``i % round(1 / held_out) == 0`` is held out, so the split is deterministic and spread over the folder);
k-means runs on the patch features of the fit set, and the health report is measured on both sets. The
held-out images are scenes the fit never saw, so the report measures how the codes generalise.

Training views: each image is rendered once with the layout, or, with augmentation, several times:
`rotations` yaw rotations of a panorama (the equirect rolled by k / rotations of the first tile row's yaw
step, k = 0 .. rotations - 1, so every rotation gives new tiles and a new global view) and, with `mirror`,
the same for its left-right mirror image (a plain image is only mirrored). A rotated or mirrored panorama is
as valid a panorama as the original, so these are views the space meets, not distortions. Held-out images
get the same augmentation: more held-out vectors, so `utilisation` is not capped by too few samples (see
`uti.image.vq.health_report`, `uniform_utilisation`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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

__all__ = ["MAX_ROTATIONS", "FitResult", "fit_codebook_on_images", "image_features", "renderings", "split_images"]

MAX_ROTATIONS = 64  # yaw rotations per panorama: beyond, a 1024-wide equirect's rolls are under 2 pixels apart


@dataclass
class FitResult:
    codebook: Codebook
    report: dict[str, Any]


def image_features(paths: Sequence[str | Path], tower: VisionTower, layout: Layout, antialias: int = 1,
                   progress: bool = True, per_image: int | None = None, seed: int = 0, rotations: int = 1,
                   mirror: bool = False, token_grid: Sequence[int] | None = None,
                   ) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """Patch features (M, D) of all views of `paths` (panoramas -> layout views, others -> one view), of
    each of its renderings (`renderings`: `rotations` yaw rotations, times two with `mirror`).

    per_image: keep at most this many random patches per image (seeded, spread evenly over its renderings),
    which bounds memory on large folders. Unreadable images are skipped and returned as failures with their reason.
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
        n = (rotations if is_panorama(*img.shape[:2]) else 1) * (2 if mirror else 1)  # renderings of this image
        keep = None if per_image is None else -(-per_image // n)  # ceil: per_image over all renderings
        for v in renderings(img, layout, antialias, rotations, mirror):
            f = pool_features(tower.encode(v), (tower.grid, tower.grid), token_grid)  # (V, P, D), P pooled if asked
            f = f.reshape(-1, tower.hidden_size).cpu()  # (V * P, D)
            if keep is not None and len(f) > keep:
                f = f[torch.randperm(len(f), generator=gen)[:keep]]
            feats.append(f)
    return (torch.cat(feats) if feats else torch.zeros(0, tower.hidden_size)), failed


def renderings(img: np.ndarray, layout: Layout, antialias: int = 1, rotations: int = 1, mirror: bool = False,
               ) -> Iterator[np.ndarray]:
    """The view stacks (N, S, S, 3) uint8 of one (H, W, 3) image, one per rendering (module docstring), one at
    a time: a panorama's `rotations` yaw rotations (of the image, then of its mirror with `mirror`), or a plain
    image (and its mirror)."""
    _check_rotations(rotations)
    h, w = img.shape[:2]
    step = w / (rotations * len(layout.rows[0][1]))  # pixels per rotation: 1 / rotations of a tile's yaw step
    for im in (img, np.ascontiguousarray(img[:, ::-1])) if mirror else (img,):
        if not is_panorama(h, w):
            yield render_plain(im, layout.tile_size)[None]
            continue
        for k in range(rotations):
            yield render_views(np.roll(im, round(k * step), axis=1) if k else im, layout, antialias=antialias)


def _check_rotations(rotations: int) -> None:
    if isinstance(rotations, bool) or not isinstance(rotations, int) or not 1 <= rotations <= MAX_ROTATIONS:
        raise InputError(f"--rotations must be an integer in [1, {MAX_ROTATIONS}], got {rotations!r}")


def _relative_failure(failure: dict[str, str], images: str | Path) -> dict[str, str]:
    """A failure named by its path relative to the images folder: the report travels with the codebook."""
    rel = Path(failure["path"]).relative_to(images).as_posix()
    return {"path": rel, "reason": failure["reason"].replace(failure["path"], rel)}


def split_images(paths: Sequence[str], held_out: float) -> tuple[list[str], list[str]]:
    """(fit, held-out) of sorted `paths`: every round(1 / held_out)-th image from the first is held out
    (none of a single image, none with held_out 0)."""
    every = round(1 / held_out) if held_out > 0 else 0
    held = [p for i, p in enumerate(paths) if every and i % every == 0 and len(paths) > 1]
    return [p for p in paths if p not in held], held


def fit_codebook_on_images(
    images: str | Path, tower: VisionTower, layout: Layout, size: int, out: str | Path, *, antialias: int = 1,
    held_out: float = 0.25, iters: int = 20, seed: int = 0, metric: str = "euclidean", progress: bool = True,
    max_vectors: int = 1_000_000, rotations: int = 1, mirror: bool = False,
    token_grid: Sequence[int] | None = None,
) -> FitResult:
    """Fit, save `out` (codebook.safetensors) and `<out>.report.json`; returns the codebook and report.

    held_out: fraction of the images kept out of the fit for the report's `held_out` health; rotations and
    mirror: training views per image (module docstring), for the fit and the held-out images alike.
    """
    paths = sorted(str(p) for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise InputError(f"{images}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    if not 0.0 <= held_out < 1.0:
        raise InputError(f"--held-out must be in [0, 1), got {held_out}")
    _check_rotations(rotations)
    fit, held = split_images(paths, held_out)
    per_image = -(-max_vectors // max(len(fit), 1))  # ceil: about max_vectors fit vectors in total
    fit_feats, failed = image_features(fit, tower, layout, antialias, progress, per_image, seed, rotations, mirror,
                                       token_grid)
    held_feats, failed_held = image_features(held, tower, layout, antialias, progress, per_image, seed + 1,
                                             rotations, mirror, token_grid)
    codebook = fit_codebook(fit_feats, size, iters=iters, seed=seed, metric=metric)
    codebook.save(out)
    report = {
        "codebook": Path(out).name, "hash": hash_safetensors(out), "size": size, "dim": codebook.dim, "metric": metric,
        "iters": iters, "seed": seed, "max_vectors": max_vectors, "tower": tower.abi(), "layout": layout.abi(),
        "antialias": antialias, "rotations": rotations, "mirror": mirror, "held_out_fraction": held_out,
        **({"token_grid": list(token_grid)} if token_grid else {}),
        "fit_images": len(fit), "held_out_images": len(held),
        "failed": [_relative_failure(f, images) for f in failed + failed_held],
        "fit": health_report(codebook, fit_feats),
        "held_out": health_report(codebook, held_feats) if len(held_feats) else None,
    }
    atomic_write_json(Path(str(out) + ".report.json"), report)
    return FitResult(codebook, report)

