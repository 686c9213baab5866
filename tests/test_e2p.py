"""E2P views: layout, agreement with py360convert, seam, poles, antialiasing, determinism and caching."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from uti.errors import ConfigError, InputError
from uti.image import e2p
from uti.image.e2p import (
    is_panorama,
    render_plain,
    render_view,
    render_views,
    view_geometry,
)
from uti.image.layout import Layout
from uti.image.load import load_image

PANORAMAS = sorted((Path(__file__).parent / "assets" / "panoramas").glob("*.jpg"))


@pytest.fixture(scope="module")
def panos() -> dict[str, np.ndarray]:
    return {p.stem: load_image(p) for p in PANORAMAS}


def smooth_pano(h: int = 128, w: int = 256) -> np.ndarray:
    """A synthetic equirect whose colours are smooth functions of the 3D direction (continuous everywhere,
    including across the seam and the poles), so sampling errors show up as large differences."""
    lon = (np.arange(w) + 0.5) / w * 2 * np.pi - np.pi
    lat = np.pi / 2 - (np.arange(h) + 0.5) / h * np.pi
    lon, lat = np.meshgrid(lon, lat)
    x, y, z = np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)
    rgb = np.stack([128 + 100 * x, 128 + 100 * z, 128 + 60 * y + 40 * x * z], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def exact_sample(pano: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Slow exact float bilinear sampling of an equirect at lon/lat (radians) with the seam wrapped and the
    rows beyond each pole taken from the edge row half a turn away."""
    h, w = pano.shape[:2]
    col = (lon / (2 * np.pi) + 0.5) * w - 0.5
    row = (0.5 - lat / np.pi) * h - 0.5
    r0, c0 = np.floor(row).astype(int), np.floor(col).astype(int)
    fr, fc = (row - r0)[..., None], (col - c0)[..., None]

    def px(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        flip = (r < 0) | (r >= h)
        r = np.where(r < 0, -1 - r, np.where(r >= h, 2 * h - 1 - r, r))
        c = np.where(flip, c + w // 2, c) % w
        return pano[r, c].astype(np.float64)

    top = px(r0, c0) * (1 - fc) + px(r0, c0 + 1) * fc
    bottom = px(r0 + 1, c0) * (1 - fc) + px(r0 + 1, c0 + 1) * fc
    return top * (1 - fr) + bottom * fr


# --- layout ---------------------------------------------------------------------------------------------


def test_default_layout_has_eight_yaws_and_a_global_view() -> None:
    layout = Layout()
    views = layout.views()
    assert layout.num_tiles == 8 and layout.num_views == 9 and len(views) == 9
    assert views[0].kind == "global" and views[0].fov == 360.0
    assert [v.yaw for v in views[1:]] == [-180.0, -135.0, -90.0, -45.0, 0.0, 45.0, 90.0, 135.0]
    assert [v.index for v in views[1:]] == list(range(8))
    assert all(v.kind == "tile" and v.pitch == 0.0 and v.fov == 90.0 for v in views[1:])


def test_pitch_rows_need_fewer_tiles_towards_the_poles() -> None:
    layout = Layout(pitches=(0, 60, -60, 90), global_view=False)
    counts = [len(yaws) for _, yaws in layout.rows]
    assert counts == [8, 6, 6, 1]  # tile span at pitch 60: 2 atan(tan 45 / cos 60) = 126.9 deg, step 63.4
    assert layout.num_tiles == 21 == len(layout.views())
    assert Layout(fov=60, overlap=0.0).num_tiles == 6
    assert Layout(fov=100, overlap=0.25).num_tiles == 5  # step 75 deg -> ceil(4.8)


def test_abi_round_trip_and_stability() -> None:
    layout = Layout(fov=75, overlap=0.4, pitches=[0, -30], tile_size=224, global_view=False, grid="edges")
    abi = layout.abi()
    assert json.loads(json.dumps(abi)) == abi
    assert abi["num_tiles"] == layout.num_tiles and abi["pitches"] == [0.0, -30.0]
    assert Layout.from_abi(json.loads(json.dumps(abi))) == layout
    assert Layout().abi() == {"fov": 90.0, "overlap": 0.5, "pitches": [0.0], "tile_size": 384,
                              "global_view": True, "grid": "centers", "num_tiles": 8}
    with pytest.raises(ConfigError, match="num_tiles"):
        Layout.from_abi({**abi, "num_tiles": 3})
    with pytest.raises(ConfigError, match="valid keys"):
        Layout.from_abi({**abi, "yaw": 3})


@pytest.mark.parametrize("kwargs", [
    {"fov": 0}, {"fov": 180}, {"overlap": 1.0}, {"overlap": -0.1}, {"pitches": (91,)}, {"pitches": ()},
    {"pitches": (0, 0)}, {"tile_size": 4}, {"tile_size": 3.5}, {"grid": "corners"}, {"global_view": "yes"},
    {"fov": "90"},
])
def test_layout_rejects_bad_fields(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Layout(**kwargs)


# --- reference: py360convert ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [p.stem for p in PANORAMAS])
def test_edges_grid_matches_py360convert(panos: dict[str, np.ndarray], name: str) -> None:
    py360convert = pytest.importorskip("py360convert")
    pano = panos[name]
    size = 192
    layout = Layout(pitches=(0, 60, -60), tile_size=size, grid="edges", global_view=False)
    ours = render_views(pano, layout)
    views = layout.views()  # 8 at pitch 0 (one centred on the seam), 6 at pitch 60, 6 at pitch -60
    assert views[0].yaw == -180.0 and views[0].pitch == 0 and {v.pitch for v in views} == {0, 60, -60}
    for v in views:
        ref = py360convert.e2p(pano, v.fov, v.yaw, v.pitch, (size, size), mode="bilinear")
        diff = np.abs(ref.astype(np.int16) - ours[v.index])
        assert diff.mean() < 0.1 and diff.max() <= 1, (v, diff.mean(), diff.max())


def test_seam_tile_at_yaw_180_matches_py360convert(panos: dict[str, np.ndarray]) -> None:
    py360convert = pytest.importorskip("py360convert")
    pano = panos[PANORAMAS[0].stem]
    ref = py360convert.e2p(pano, 90, 180, 0, (160, 160), mode="bilinear")
    ours = render_view(pano, 180, 0, 90, 160, grid="edges")
    diff = np.abs(ref.astype(np.int16) - ours).max(axis=-1)
    assert diff.mean() < 0.1 and diff.max() <= 1


# --- geometry: seam, poles, grids -----------------------------------------------------------------------


def test_centers_grid_matches_exact_bilinear() -> None:
    pano = smooth_pano()
    for yaw, pitch in [(0, 0), (180, 0), (-100, 35), (30, -75)]:
        lon, lat = e2p.view_lonlat(yaw, pitch, 90, 48)
        ref = exact_sample(pano, lon, lat)
        ours = render_view(pano, yaw, pitch, 90, 48)
        assert np.abs(ref - ours).max() <= 0.6, (yaw, pitch)  # 1/32-pixel weights + rounding to nearest


def test_seam_is_continuous() -> None:
    """The tile centred on the seam equals the tile centred on the same content moved to the middle."""
    pano = smooth_pano()
    rolled = np.roll(pano, pano.shape[1] // 2, axis=1)
    at_seam = render_view(pano, 180, 10, 90, 64).astype(int)
    in_middle = render_view(rolled, 0, 10, 90, 64).astype(int)
    assert np.abs(at_seam - in_middle).max() <= 1
    assert np.abs(np.diff(at_seam, axis=1)).max() <= 6  # smooth content: no jump where the seam crosses


@pytest.mark.parametrize("pitch", [90, -90])
def test_pole_views_sample_across_the_pole(pitch: int) -> None:
    pano = smooth_pano()
    # A narrow view centred on the pole: every ray is within a few rows of it, half of them across it.
    lon, lat = e2p.view_lonlat(0, pitch, 8, 16)
    narrow = render_view(pano, 0, pitch, 8, 16)
    assert np.abs(exact_sample(pano, lon, lat) - narrow).max() <= 0.6
    # Looking straight up or down, changing the yaw only rotates the image.
    v0 = render_view(pano, 0, pitch, 90, 64).astype(int)
    v90 = render_view(pano, 90, pitch, 90, 64).astype(int)
    assert np.abs(np.rot90(v0, k=-1 if pitch > 0 else 1) - v90).max() <= 1
    assert np.abs(np.rot90(v0, k=1 if pitch > 0 else -1) - v90).max() > 20  # the other way is wrong


def test_pole_padding_turns_the_edge_rows_half_a_turn() -> None:
    for w in (8, 9):
        pano = np.random.default_rng(0).integers(0, 256, (4, w, 3), dtype=np.uint8)
        padded = e2p._pad(pano)
        assert np.array_equal(padded[1:-1, 1:-1], pano)
        assert np.array_equal(padded[1:-1, 0], pano[:, -1]) and np.array_equal(padded[1:-1, -1], pano[:, 0])
        for dst, src in ((0, 0), (-1, -1)):
            for j in range(w):  # column j's opposite longitude is at j + w/2
                k = j + w / 2
                want = pano[src, int(k) % w] if k == int(k) else (
                    (pano[src, int(k) % w].astype(int) + pano[src, (int(k) + 1) % w] + 1) // 2)
                assert np.array_equal(padded[dst, 1 + j], want)


def test_grids_differ_by_the_pixel_convention() -> None:
    pano = smooth_pano()
    centers = e2p.view_lonlat(0, 0, 90, 8, "centers")[0][0]
    edges = e2p.view_lonlat(0, 0, 90, 8, "edges")[0][0]
    # view_lonlat returns float32 angles (the precision of the sampling maps): compare to a few float32 ulps
    assert math.isclose(np.degrees(edges[0]), -45.0, rel_tol=1e-6)
    assert math.isclose(np.degrees(edges[-1]), 45.0, rel_tol=1e-6)
    assert math.isclose(np.degrees(centers[0]), -math.degrees(math.atan(7 / 8)), rel_tol=1e-6)
    assert not np.array_equal(render_view(pano, 0, 0, 90, 8), render_view(pano, 0, 0, 90, 8, grid="edges"))


def test_view_geometry_gives_patch_centres() -> None:
    layout = Layout(pitches=(0, 45), tile_size=64)
    lon, lat = view_geometry(layout, (3, 5))
    assert lon.shape == lat.shape == (layout.num_views, 3, 5)
    assert np.allclose(lon[0, 0], [-144, -72, 0, 72, 144]) and np.allclose(lat[0, :, 0], [60, 0, -60])
    for i, v in enumerate(layout.views()[1:], 1):  # the centre patch looks at the view's direction
        assert math.isclose(lon[i, 1, 2], v.yaw, abs_tol=1e-9) and math.isclose(lat[i, 1, 2], v.pitch, abs_tol=1e-9)
    assert (lon >= -180).all() and (lon < 180).all() and (np.abs(lat) <= 90).all()
    assert (lat[1:, 0] > lat[1:, 2]).all()  # patch rows go down
    # a 1:1 patch grid is the pixel grid: patch centres are the rendered pixels' directions
    small = Layout(tile_size=16, global_view=False)
    plon, plat = view_geometry(small, (16, 16))
    lon_r, lat_r = e2p.view_lonlat(-135.0, 0.0, 90.0, 16)
    assert np.allclose(plon[1], np.degrees(lon_r), atol=1e-4) and np.allclose(plat[1], np.degrees(lat_r), atol=1e-4)


# --- rendering ------------------------------------------------------------------------------------------


def test_render_views_order_and_global_view(panos: dict[str, np.ndarray]) -> None:
    pano = panos[PANORAMAS[0].stem]
    layout = Layout(pitches=(0, -60), tile_size=64)
    views = render_views(pano, layout)
    assert views.shape == (layout.num_views, 64, 64, 3) and views.dtype == np.uint8
    assert np.array_equal(views[0], cv2.resize(pano, (64, 64), interpolation=cv2.INTER_AREA))
    for i, v in enumerate(layout.views()[1:], 1):
        assert np.array_equal(views[i], render_view(pano, v.yaw, v.pitch, v.fov, 64)), v
    no_global = render_views(pano, Layout(pitches=(0, -60), tile_size=64, global_view=False))
    assert np.array_equal(no_global, views[1:])


def test_antialias_is_a_box_average_of_supersamples(panos: dict[str, np.ndarray]) -> None:
    pano = panos[PANORAMAS[0].stem]
    aa = render_view(pano, 30, 20, 90, 32, antialias=2).astype(float)
    fine = render_view(pano, 30, 20, 90, 64).astype(float)  # same sample points (centers grid)
    box = fine.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(aa - box).max() <= 1.0
    # on a pattern finer than the tile pixels antialiasing removes the aliasing
    stripes = np.zeros((512, 1024, 3), np.uint8)
    stripes[:, ::2] = 255
    plain, smooth = render_view(stripes, 0, 0, 90, 32), render_view(stripes, 0, 0, 90, 32, antialias=8)
    err = lambda img: np.abs(img[8:-8, 8:-8].astype(int) - 127.5).mean()
    assert err(smooth) < 8 and err(plain) > 30  # 8 equirect pixels per tile pixel here
    layout = Layout(tile_size=32, global_view=False)
    assert np.array_equal(render_views(pano, layout, antialias=2)[3], render_view(pano, -45, 0, 90, 32, antialias=2))


def test_deterministic_and_cached(panos: dict[str, np.ndarray]) -> None:
    pano = panos[PANORAMAS[1].stem]
    layout = Layout(tile_size=48, pitches=(10,))
    e2p._layout_maps.cache_clear()
    first = render_views(pano, layout)
    info = e2p._layout_maps.cache_info()
    again = render_views(pano.copy(), Layout(tile_size=48, pitches=(10.0,)))
    after = e2p._layout_maps.cache_info()
    assert np.array_equal(first, again)
    assert after.misses == info.misses == 1 and after.hits == info.hits + 1
    maps = e2p._layout_maps(layout, *pano.shape[:2], 1)
    assert not maps[0].flags.writeable
    e2p._layout_maps.cache_clear()
    assert np.array_equal(first, render_views(pano, layout))  # rebuilt maps give the same pixels


WRAP_CASES = [  # (h, w, layout kwargs, antialias, padded): seam tiles, odd widths, supersampling, pole rows
    (128, 256, {}, 1, False),
    (64, 129, {"tile_size": 24}, 1, False),
    (128, 256, {"tile_size": 32, "fov": 120.0}, 2, False),
    (128, 256, {"tile_size": 32, "pitches": (0.0, 50.0, -50.0)}, 1, False),  # near the poles, no sample past
    (128, 256, {"tile_size": 33, "pitches": (0.0, 90.0)}, 1, True),  # the centre pixel looks at the pole
    (64, 129, {"tile_size": 33, "pitches": (-90.0,)}, 2, True),
    (1024, 2048, {"tile_size": 384}, 1, False),
]


@pytest.mark.parametrize("h,w,kwargs,aa,padded", WRAP_CASES)
def test_unpadded_maps_give_the_padded_bits(h: int, w: int, kwargs: dict, aa: int, padded: bool) -> None:
    """Tiles that miss the poles sample the panorama itself with the seam wrapped by OpenCV: same bits as the pad."""
    pano = np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)  # noise: any slip shows
    layout = Layout(global_view=False, **kwargs)
    e2p._layout_maps.cache_clear()
    maps = e2p._layout_maps(layout, h, w, aa)
    col, row = cv2.convertMaps(maps.m1, maps.m2, cv2.CV_32FC1)
    pad_col, pad_row = (col, row) if maps.padded else (col + 1, row + 1)
    ref_maps = e2p.Maps(*cv2.convertMaps(pad_col, pad_row, cv2.CV_16SC2), True)  # the same samples, padded
    n = layout.num_tiles * layout.tile_size
    out, ref = (np.empty((n, layout.tile_size, 3), np.uint8) for _ in range(2))
    e2p._remap_into(pano, maps, aa, out)
    e2p._remap_into(pano, ref_maps, aa, ref)
    assert np.array_equal(out, ref)
    assert maps.padded == padded  # only samples past a pole need the padded copy
    assert pad_col.min() < 1 and pad_col.max() > w  # the tiles do cross the seam
    e2p._layout_maps.cache_clear()


def test_strided_panoramas_render_like_contiguous_ones() -> None:
    """Without the padded copy OpenCV reads the caller's array itself: flipped or sliced arrays must work too."""
    rng = np.random.default_rng(3)
    pano, rgba = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8), rng.integers(0, 256, (64, 128, 4), dtype=np.uint8)
    layout = Layout(tile_size=16)
    for view in (pano[:, ::-1], pano[::-1], pano[:, :, ::-1], rgba[..., :3]):
        assert np.array_equal(render_views(view, layout), render_views(np.ascontiguousarray(view), layout))


def test_plain_images_and_bad_input() -> None:
    assert is_panorama(512, 1024) and is_panorama(1000, 2010) and not is_panorama(512, 900)
    img = np.zeros((60, 200, 3), np.uint8)
    img[:, 100:] = 200
    out = render_plain(img, 32)
    assert out.shape == (32, 32, 3) and out[:, :15].max() == 0 and out[:, 17:].min() == 200  # squeezed, all kept
    with pytest.raises(InputError, match="uint8"):
        render_views(np.zeros((8, 16, 3), np.float32), Layout())
    with pytest.raises(InputError, match="uint8"):
        render_views(np.zeros((8, 16), np.uint8), Layout())
    with pytest.raises(InputError, match="antialias"):
        render_views(np.zeros((8, 16, 3), np.uint8), Layout(), antialias=0)


def test_wide_panoramas_use_float_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond int16 pixel coordinates the maps stay float32 (OpenCV rounds them slightly differently)."""
    pano = smooth_pano(64, 129)  # odd width: the pole pads average two columns
    fixed = render_view(pano, 170, 70, 90, 24)
    monkeypatch.setattr(e2p, "_INT16_COORD_LIMIT", 100)
    e2p._view_maps.cache_clear()
    assert e2p._view_maps(170.0, 70.0, 90.0, 24, "centers", 64, 129, 1)[0].dtype == np.float32
    diff = np.abs(render_view(pano, 170, 70, 90, 24).astype(int) - fixed)
    assert diff.max() <= 1 and diff.mean() < 0.05
    e2p._view_maps.cache_clear()


# --- global view: exact area resize ---------------------------------------------------------------------

AREA_SIZES = [  # (h, w, size): the fast exact path must give OpenCV's INTER_AREA bit for bit
    (1024, 2048, 384),  # the default: periods 8 -> 3 rows and 16 -> 3 columns
    (2048, 4096, 384),  # 256 * 32 * 16 needs uint32 column sums
    (1024, 2048, 224),  # SigLIP-224 tiles: periods 32 -> 7 and 64 -> 7
    (512, 1024, 384),  # periods 4 -> 3 and 8 -> 3
    (768, 1024, 384),  # a plain (non-panoramic) photo: 2 -> 1 rows, 8 -> 3 columns
    (384, 1024, 384),  # rows unchanged (period 1)
]


@pytest.mark.parametrize("h,w,size", AREA_SIZES)
def test_global_view_equals_opencv_area_bit_for_bit(h: int, w: int, size: int) -> None:
    rng = np.random.default_rng(h + w + size)
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noise hits exact .5 ties (rounded half to even)
    flat = np.full((h, w, 3), 255, np.uint8)  # the largest sums
    plans = e2p._area_plan(h, size), e2p._area_plan(w, size)
    assert None not in plans and len(plans[1][2]) > 1  # the exact path runs (columns: a non-integer factor)
    for img in (noise, flat):
        assert np.array_equal(e2p._resize(img, size), cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))


def test_global_view_of_real_panoramas_is_unchanged(panos: dict[str, np.ndarray]) -> None:
    for name, pano in panos.items():
        big = cv2.resize(pano, (2048, 1024), interpolation=cv2.INTER_CUBIC)
        for img in (big, pano):
            old = cv2.resize(img, (384, 384), interpolation=cv2.INTER_AREA)  # what render_global always was
            assert np.array_equal(e2p.render_global(img, 384), old), name
            assert np.array_equal(render_views(img, Layout())[0], old), name


def test_area_sizes_without_an_exact_form_use_opencv() -> None:
    assert e2p._area_plan(2688, 384) is None  # period 7 -> 1 (5376 x 2688 cameras): weights not binary fractions
    assert e2p._area_plan(1000, 384) is None
    img = np.random.default_rng(1).integers(0, 256, (1000, 2000, 3), dtype=np.uint8)
    assert np.array_equal(e2p._resize(img, 384), cv2.resize(img, (384, 384), interpolation=cv2.INTER_AREA))


def test_global_view_results_do_not_share_work_arrays() -> None:
    rng = np.random.default_rng(2)
    a_img, b_img = (rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8) for _ in range(2))
    a = e2p.render_global(a_img, 384)
    a_copy = a.copy()
    b = e2p.render_global(b_img, 384)
    assert np.array_equal(a, a_copy) and not np.shares_memory(a, b)


def test_render_views_same_with_and_without_the_global_view_thread(panos: dict[str, np.ndarray]) -> None:
    pano = cv2.resize(panos[PANORAMAS[0].stem], (1024, 512), interpolation=cv2.INTER_AREA)
    layout = Layout(tile_size=128)
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)  # no overlap: the global view is rendered in the calling thread
        alone = render_views(pano, layout)
        cv2.setNumThreads(2)  # the global view is rendered on the worker thread while the tiles remap
        overlapped = render_views(pano, layout)
    finally:
        cv2.setNumThreads(threads)
    assert np.array_equal(alone, overlapped)


def test_render_views_works_in_a_forked_child(panos: dict[str, np.ndarray]) -> None:
    import multiprocessing as mp

    pano = cv2.resize(panos[PANORAMAS[0].stem], (512, 256), interpolation=cv2.INTER_AREA)
    layout = Layout(tile_size=64)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        want = render_views(pano, layout)  # the parent's worker thread now exists; a child does not inherit it
        with mp.get_context("fork").Pool(1) as pool:
            got = pool.apply_async(render_views, (pano, layout)).get(timeout=20)
    finally:
        cv2.setNumThreads(threads)
    assert np.array_equal(got, want)


def test_render_views_from_many_threads_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (256, 512, 3), dtype=np.uint8) for _ in range(6)]
    layout = Layout(tile_size=96)  # 512 -> 96: the exact area path (periods 16 -> 3)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        want = [render_views(img, layout) for img in images]  # one thread, no overlap
        cv2.setNumThreads(2)
        with ThreadPoolExecutor(4) as pool:  # scratch arrays are per thread; the global views overlap
            got = list(pool.map(lambda img: render_views(img, layout), images * 3))
    finally:
        cv2.setNumThreads(threads)
    assert all(np.array_equal(g, want[i % len(images)]) for i, g in enumerate(got))
