"""Overlap pairs of E2P tiles from ray geometry: which patches of two tiles look in the same direction.

Pure geometry of a `Layout` and a patch grid (numpy only, no torch), so it lives beside `e2p`; the VICReg
loss that consumes the pairs is `connectors.vicreg`.

Every patch of every tile has a centre ray (the ray of the centre of its pixel block, as in
`e2p.view_geometry`). For each pair of tile views (a, b), a < b in `layout.views()` order (adjacent yaws,
the ±180° seam, and across pitch rows alike; the global view never pairs), each patch of a is matched to the
patch of b whose centre ray has the largest dot product with it (nearest direction), and the pair is kept
when the angle between the two rays is at most the tolerance.

Tolerance. By default half the smallest angle between the centre rays of two neighbouring patches of a tile
(`patch_spacing_deg`; a pinhole tile's patches are smallest, in angle, at its corners). Two patches of one
tile are then more than twice the tolerance apart, so a patch of b is within tolerance of at most one patch
of a (triangle inequality): the pairs are one-to-one, and a kept pair is off by less than half a patch.

The column-index pairing of the PanoLLaVA recipe (right k = int(overlap * g) patch columns of tile v with the
left k of tile v + 1, same row) is `column_index_pairs`, kept to measure its error (`pair_error_patches`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import InputError
from .e2p import view_geometry
from .layout import Layout

__all__ = ["column_index_pairs", "overlap_pairs", "pair_error_patches", "patch_rays", "patch_spacing_deg"]


def patch_rays(layout: Layout, grid: int) -> np.ndarray:
    """Unit centre rays (N, g*g, 3) float64 of every view's patches, views in `layout.views()` order.

    Patch p of a view is row p // g, column p % g; axes x east, y up, z towards longitude 0."""
    g = _check_grid(grid)
    lon, lat = (np.radians(v).reshape(v.shape[0], g * g) for v in view_geometry(layout, (g, g)))
    return np.stack([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)], axis=-1)


def patch_spacing_deg(layout: Layout, grid: int) -> float:
    """Smallest angle (degrees) between the centre rays of two row- or column-neighbouring patches of a tile."""
    g = _check_grid(grid)
    if g < 2:
        return layout.fov
    one = Layout(fov=layout.fov, overlap=layout.overlap, pitches=(0.0,), tile_size=layout.tile_size,
                 global_view=False, grid=layout.grid)
    r = patch_rays(one, g)[0].reshape(g, g, 3)  # a tile's angular pattern does not depend on its yaw/pitch
    dots = np.concatenate([(r[:, 1:] * r[:, :-1]).sum(-1).ravel(), (r[1:] * r[:-1]).sum(-1).ravel()])
    return float(np.degrees(np.arccos(np.clip(dots.max(), -1.0, 1.0))))


@lru_cache(maxsize=32)
def overlap_pairs(layout: Layout, grid: int, tol_deg: float | None = None) -> np.ndarray:
    """Patch pairs (M, 4) int64 (view_a, patch_a, view_b, patch_b) of overlapping tiles; see module docstring.

    Views index `layout.views()` (the global view, if any, is view 0 and never appears); patches are
    row * g + column of a g x g grid; view_a < view_b. `tol_deg` defaults to half `patch_spacing_deg`.
    Cached per (layout, grid, tol_deg); the result is read-only."""
    g = _check_grid(grid)
    tol = 0.5 * patch_spacing_deg(layout, g) if tol_deg is None else float(tol_deg)
    if not 0.0 < tol < 90.0:
        raise InputError(f"overlap tolerance must be in (0, 90) degrees, got {tol}")
    rays = patch_rays(layout, g)  # (N, P, 3)
    tiles = [i for i, v in enumerate(layout.views()) if v.kind == "tile"]
    cos_tol = math.cos(math.radians(tol))
    out = []
    for i, a in enumerate(tiles):  # loops over views only; patches are matched as matrices
        for b in tiles[i + 1:]:
            dots = rays[a] @ rays[b].T  # (P, P)
            best = dots.argmax(axis=1)  # (P,) nearest patch of b for each patch of a
            keep = np.nonzero(dots[np.arange(len(best)), best] >= cos_tol)[0]
            if len(keep):
                out.append(np.stack([np.full_like(keep, a), keep, np.full_like(keep, b), best[keep]], axis=1))
    pairs = np.concatenate(out).astype(np.int64) if out else np.zeros((0, 4), np.int64)
    pairs.setflags(write=False)
    return pairs


def column_index_pairs(layout: Layout, grid: int) -> np.ndarray:
    """The recipe's pairing (M, 4): right k = int(overlap * g) columns of tile v with the left k of the next tile
    of its row (the last tile with the first, across the seam), row for row. Kept to measure its error."""
    g = _check_grid(grid)
    k = int(layout.overlap * g)
    rows, j = np.meshgrid(np.arange(g), np.arange(k), indexing="ij")  # (g, k)
    pa, pb = (rows * g + (g - k) + j).ravel(), (rows * g + j).ravel()
    out, start = [], int(layout.global_view)
    for _, yaws in layout.rows:
        n = len(yaws)
        for t in range(n if n > 1 else 0):
            a, b = start + t, start + (t + 1) % n
            out.append(np.stack([np.full_like(pa, a), pa, np.full_like(pb, b), pb], axis=1))
        start += n
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 4), np.int64)


def pair_error_patches(layout: Layout, grid: int, pairs: np.ndarray) -> np.ndarray:
    """(M, 2) |row, column| offset, in patches of view_b's grid, of patch_a's centre ray from patch_b's centre.

    The ray of patch_a is projected into view_b's image plane and turned into a continuous patch coordinate
    (patch centres at integers); a ray behind view_b's camera gives inf."""
    g = _check_grid(grid)
    views = layout.views()
    rays = patch_rays(layout, g)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 4)
    ray = rays[pairs[:, 0], pairs[:, 1]]  # (M, 3)
    yaw = np.radians([views[v].yaw for v in pairs[:, 2]])
    pitch = np.radians([views[v].pitch for v in pairs[:, 2]])
    x, y, z = ray[:, 0], ray[:, 1], ray[:, 2]
    a = x * np.cos(yaw) - z * np.sin(yaw)  # undo the yaw (inverse of e2p._rays), then the pitch
    z0 = x * np.sin(yaw) + z * np.cos(yaw)
    b = y * np.cos(pitch) - z0 * np.sin(pitch)
    f = y * np.sin(pitch) + z0 * np.cos(pitch)
    scale = np.tan(np.radians([views[v].fov for v in pairs[:, 2]]) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        col = _plane_to_patch(a / f / scale, layout, g)
        row = _plane_to_patch(-b / f / scale, layout, g)  # image rows grow downwards
    err = np.abs(np.stack([row - pairs[:, 3] // g, col - pairs[:, 3] % g], axis=1))
    return np.where((f > 0)[:, None], err, np.inf)


def _plane_to_patch(p: np.ndarray, layout: Layout, g: int) -> np.ndarray:
    """Image-plane coordinate (units of tan(fov/2)) -> continuous patch index (patch i's centre is i)."""
    s = layout.tile_size
    t = ((p + 1.0) * s - 1.0) / 2.0 if layout.grid == "centers" else (p + 1.0) * (s - 1) / 2.0  # pixel index
    return (t + 0.5) * g / s - 0.5


def _check_grid(grid: int) -> int:
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
        raise InputError(f"patch grid must be a positive integer (patches per view side), got {grid!r}")
    return int(grid)
