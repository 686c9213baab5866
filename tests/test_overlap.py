"""Overlap pairs from ray geometry: same content through the real E2P, column-index error, seam, pitch rows."""

from __future__ import annotations

import numpy as np
import pytest

from uti.errors import InputError
from uti.image.e2p import render_views
from uti.image.layout import Layout
from uti.image.overlap import (
    column_index_pairs,
    overlap_pairs,
    pair_error_patches,
    patch_rays,
    patch_spacing_deg,
)


def _direction_pano(h: int = 512) -> np.ndarray:
    """(h, 2h, 3) uint8 equirect whose colour is the unit direction: RGB = 127.5 * (1 + (x, y, z))."""
    lat = np.radians(90.0 - (np.arange(h) + 0.5) * 180.0 / h)[:, None]
    lon = np.radians((np.arange(2 * h) + 0.5) * 360.0 / (2 * h) - 180.0)[None, :]
    xyz = np.stack(np.broadcast_arrays(np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)), -1)
    return np.round(127.5 * (1.0 + xyz)).astype(np.uint8)


def _patch_means(views: np.ndarray, g: int) -> np.ndarray:
    """(N, S, S, 3) views -> (N, g*g, 3) mean colour of each patch."""
    n, s = views.shape[:2]
    p = s // g
    return views.reshape(n, g, p, g, p, 3).astype(np.float64).mean(axis=(2, 4)).reshape(n, g * g, 3)


def _colour_gap(means: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    return np.abs(means[pairs[:, 0], pairs[:, 1]] - means[pairs[:, 2], pairs[:, 3]]).max(axis=1)


@pytest.mark.parametrize("g, size", [(4, 64), (27, 378)])
def test_pairs_see_the_same_content(g: int, size: int) -> None:
    layout = Layout(tile_size=size)
    means = _patch_means(render_views(_direction_pano(), layout), g)
    pairs = overlap_pairs(layout, g)
    gap = _colour_gap(means, pairs)
    rng = np.random.default_rng(0)
    rand = pairs.copy()
    rand[:, 2] = rng.integers(1, layout.num_views, len(pairs))
    rand[:, 3] = rng.integers(0, g * g, len(pairs))
    # a colour level is 2/255 of a unit vector: paired patches are less than half a patch apart in direction
    assert gap.mean() < 0.2 * _colour_gap(means, rand).mean()
    spacing_levels = 127.5 * np.radians(patch_spacing_deg(layout, g))
    assert gap.max() < spacing_levels
    if g == 27:  # the recipe's column-index pairs see visibly different content
        assert gap.mean() < 0.5 * _colour_gap(means, column_index_pairs(layout, g)).mean()


def test_column_index_error_at_default_layout() -> None:
    layout = Layout()  # fov 90, overlap 0.5, SO400M patch grid 384 / 14 -> 27
    ours = pair_error_patches(layout, 27, overlap_pairs(layout, 27))
    theirs = pair_error_patches(layout, 27, column_index_pairs(layout, 27))
    assert ours.max() <= 0.5 + 1e-9  # within half a patch in rows and columns
    assert theirs.max(axis=0).min() > 1.0  # off by more than a patch in rows and in columns
    assert theirs.mean() > 2 * ours.mean()


def test_pairs_are_one_to_one_and_ordered() -> None:
    layout = Layout(tile_size=64)
    pairs = overlap_pairs(layout, 4)
    assert (pairs[:, 0] < pairs[:, 2]).all() and (pairs[:, [0, 2]] >= 1).all()  # view 0 (global) never pairs
    for a, b in {(int(a), int(b)) for a, b in pairs[:, [0, 2]]}:
        sel = pairs[(pairs[:, 0] == a) & (pairs[:, 2] == b)]
        assert len(set(sel[:, 1])) == len(sel) == len(set(sel[:, 3]))


def test_adjacent_and_seam_pairs() -> None:
    layout = Layout(tile_size=64, global_view=False)
    views = {(int(a), int(b)) for a, b in overlap_pairs(layout, 4)[:, [0, 2]]}
    assert views == {(t, t + 1) for t in range(7)} | {(0, 7)}  # 8 tiles at 45°: neighbours and the seam


def test_pitch_rows_pair_across_rows() -> None:
    layout = Layout(tile_size=64, pitches=(0.0, 45.0))
    n0 = len(layout.rows[0][1])
    views = {(int(a), int(b)) for a, b in overlap_pairs(layout, 4)[:, [0, 2]]}
    cross = {(a, b) for a, b in views if a <= n0 < b}
    assert (1, n0 + 1) in cross  # yaw -180 at pitch 0 and at pitch 45 share the rays between them
    pairs = overlap_pairs(layout, 4)
    rays = patch_rays(layout, 4)
    cos = (rays[pairs[:, 0], pairs[:, 1]] * rays[pairs[:, 2], pairs[:, 3]]).sum(-1)
    assert np.degrees(np.arccos(cos.min())) <= 0.5 * patch_spacing_deg(layout, 4) + 1e-9  # the angle guarantee


def test_cached_and_read_only() -> None:
    layout = Layout(tile_size=64)
    assert overlap_pairs(layout, 4) is overlap_pairs(Layout(tile_size=64), 4)
    with pytest.raises(ValueError):
        overlap_pairs(layout, 4)[0, 0] = 3


@pytest.mark.parametrize("grid", [0, -1, 2.5, True])
def test_bad_grid(grid) -> None:
    with pytest.raises(InputError):
        overlap_pairs(Layout(tile_size=64), grid)
