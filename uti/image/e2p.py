"""Equirectangular-to-perspective (E2P): the square views a panorama becomes, rendered in one batched call.

Geometry. A tile is a pinhole camera with square pixels looking at (yaw, pitch) with horizontal = vertical
fov. Camera axes: x right, y up, z forward; the ray of plane point (a, b) is (a, b, 1) rotated first by
pitch about x, then by yaw about the vertical axis. Longitude = atan2(x, z), latitude = atan2(y, hypot(x, z));
equirect pixel j (of W) has its centre at longitude (j + 0.5) / W * 360 - 180, row i (of H) at latitude
90 - (i + 0.5) / H * 180 (yaw 0 is the centre column, as in `py360convert`). Where the pixel centres of a tile
lie in its image plane is the layout's `grid` (see `uti.image.layout`).

Sampling. Bilinear with OpenCV's `cv2.remap` on the panorama padded by one pixel on every side: the left and
right pads are the opposite edge columns (the ±180° seam wraps), and the top and bottom pads are the first and
last rows shifted by half a turn, because the equirect row just beyond a pole at longitude L is the edge row
at L + 180°. A ray that crosses a pole therefore blends with the opposite-longitude pixels; nothing is clamped
or wrapped vertically. OpenCV interpolates uint8 with weights quantised to 1/32 pixel and rounds to nearest,
as `py360convert` does; with the same float32 map precision our "edges"-grid tiles come out bit-identical to
`py360convert.e2p(..., mode="bilinear")` on the test panoramas (tests allow 1 level). The sampling maps of all
tiles of a layout are built once per (layout, input size, antialias), stacked, and cached; a render is then one
remap. The padded copy is made only when some sample reaches a pad row (a tile near a pole); otherwise the
maps address the panorama itself and OpenCV wraps the seam (`BORDER_WRAP` reads the same columns as the pad,
and the fixed-point maps are the same numbers less one pixel, so the output is the same bits).

Antialiasing (`antialias=a > 1`): every tile pixel is sampled at a x a evenly spaced points of its footprint
and the samples are averaged (box filter, OpenCV's exact integer-factor area resize). Samples are rounded to
8 bits before averaging: the result is within one level of the float average (mean 0.12 levels on a real
panorama) at less than half the cost of float sampling (OpenCV's float and 16-bit remaps are not vectorised).
Use it when the panorama has many more pixels per degree than the tiles (e.g. 8K panoramas into 384-pixel tiles).

Global view. The whole equirect is area-resized (box filter, `cv2.INTER_AREA`) to S x S, i.e. squeezed 2:1
horizontally. OpenCV's area resize with non-integer factors is a scalar float loop that costs as much CPU as
all eight tiles of a 2048 x 1024 panorama; where its float arithmetic is exact (see `_area_plan`: each axis
repeats with a period of a power-of-two input pixels, e.g. 2048 -> 384 is 16 pixels -> 3 outputs), the same
numbers are computed as vectorised integer weighted sums (`_area_exact`) and rounded half to even as OpenCV
does: bit-identical output for half the CPU time. Other sizes use `cv2.resize` itself. When OpenCV may use
threads, `render_views` computes the global view on a worker thread while the tiles are remapped.

A perspective view cannot show the full sphere, and any other projection (cubemap, fisheye) would cut or
distort some region more than others; the squeezed equirect keeps every direction, in the layout the user
sees, for as many tokens as one tile, and its patch grid maps to longitude/latitude by a simple affine formula
(`view_geometry`). Fine detail is what the tiles are for.

Non-panoramic images (`is_panorama` false) are one ordinary view: `render_plain` resizes the whole image to
S x S ignoring the aspect ratio (box filter when shrinking an axis, bilinear when enlarging), which is what
SigLIP's own image processor does, keeps all of the content, and keeps the pixel-to-patch mapping affine.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from ..errors import InputError
from .layout import GRIDS, Layout

__all__ = [
    "PANORAMA_ASPECT_TOLERANCE",
    "is_panorama",
    "render_global",
    "render_plain",
    "render_view",
    "render_views",
    "view_geometry",
    "view_lonlat",
]

PANORAMA_ASPECT_TOLERANCE = 0.01  # |W / H - 2| / 2 below this counts as a 2:1 panorama
_INT16_COORD_LIMIT = 32000  # fixed-point maps hold int16 pixel coordinates
_AREA_MAX_PERIOD = 128  # longest period (input pixels, or outputs) the exact area resize unrolls
_AREA_CHUNK_ROWS = 128  # input rows per chunk of the exact area resize (about 1 MB of a 2048-wide panorama)
_SCRATCH = threading.local()
_WORKER: tuple[int, ThreadPoolExecutor] | None = None


class Maps(NamedTuple):
    """Sampling maps for `cv2.remap`: fixed-point (int16 pairs, uint16 fractions) or float32 (x, y) pixel
    coordinates, into the padded panorama (`padded`, see `_pad`) or into the panorama itself with the seam
    wrapped by OpenCV."""

    m1: np.ndarray
    m2: np.ndarray | None
    padded: bool


def is_panorama(h: int, w: int) -> bool:
    """True if an h x w image is a 2:1 equirectangular panorama (within 1 %, e.g. stitcher rounding)."""
    return h > 0 and abs(w / h - 2.0) <= 2.0 * PANORAMA_ASPECT_TOLERANCE


def render_views(pano: np.ndarray, layout: Layout, *, antialias: int = 1) -> np.ndarray:
    """All views of `layout` from one equirect: the global view (if enabled) then tiles in `layout.views()` order.

    pano: (H, W, 3) uint8 equirectangular image. Returns (N, S, S, 3) uint8, N = `layout.num_views`.
    """
    h, w = _check_pano(pano)
    antialias = _check_antialias(antialias)
    s = layout.tile_size
    out = np.empty((layout.num_views, s, s, 3), np.uint8)  # (N, S, S, 3)
    pending = None
    if layout.global_view:
        if layout.num_tiles and cv2.getNumThreads() > 1:  # OpenCV may use threads: overlap it with the tiles
            pending = _worker().submit(_resize, pano, s)
        else:
            out[0] = _resize(pano, s)
    if layout.num_tiles:
        tiles = out[int(layout.global_view):].reshape(layout.num_tiles * s, s, 3)  # view into `out`
        maps = _layout_maps(layout, h, w, antialias)
        _remap_into(pano, maps, antialias, tiles)
    if pending is not None:
        out[0] = pending.result()
    return out


def render_view(
    pano: np.ndarray, yaw: float, pitch: float, fov: float, size: int, *, grid: str = "centers", antialias: int = 1
) -> np.ndarray:
    """One perspective view (size, size, 3) uint8 of an equirect (H, W, 3) uint8; angles in degrees."""
    h, w = _check_pano(pano)
    antialias = _check_antialias(antialias)
    if grid not in GRIDS:
        raise InputError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    if not 0.0 < fov < 180.0 or size < 2:
        raise InputError(f"a perspective view needs 0 < fov < 180 degrees and size >= 2, got fov={fov}, size={size}")
    maps = _view_maps(float(yaw), float(pitch), float(fov), int(size), grid, h, w, antialias)
    out = np.empty((size, size, 3), np.uint8)
    _remap_into(pano, maps, antialias, out)
    return out


def render_global(pano: np.ndarray, size: int) -> np.ndarray:
    """The global view: the whole equirect (H, W, 3) area-resized to (size, size, 3); see module docstring."""
    _check_pano(pano)
    return _resize(pano, size)


def render_plain(img: np.ndarray, size: int) -> np.ndarray:
    """A non-panoramic (H, W, 3) uint8 image as one (size, size, 3) view: full image, aspect not kept."""
    _check_pano(img)
    return _resize(img, size)


def view_lonlat(
    yaw: float, pitch: float, fov: float, size: int, grid: str = "centers", antialias: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude (radians, float32) of every (sub)pixel of a view: two (size*a, size*a) arrays.

    Plane coordinates are float32, rays float64, angles float32: float32 is the precision of the sampling maps,
    and this is also the precision at each step of py360convert, so both round to OpenCV's 1/32-pixel grid
    identically (bit-identical tiles in the "edges" grid on the test panoramas)."""
    t = (_plane_axis(size, grid, antialias) * math.tan(math.radians(fov) / 2)).astype(np.float32)  # (n,)
    t64 = t.astype(np.float64)
    return _lonlat(_rays(t64[None, :], -t64[:, None], yaw, pitch).astype(np.float32))


def view_geometry(layout: Layout, grid_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude (degrees) of every patch centre of every view: two (N, gh, gw) float64 arrays.

    Views are in `layout.views()` order; a view of S pixels is split into a gh x gw patch grid and a patch's
    centre is the centre of its pixel block, mapped with the layout's `grid` convention. Longitudes are in
    [-180, 180), latitudes in [-90, 90]. The global view maps its patch grid affinely onto the equirect.
    """
    gh, gw = (int(v) for v in grid_hw)
    if gh < 1 or gw < 1:
        raise InputError(f"patch grid must be at least 1 x 1, got {gh} x {gw}")
    s = layout.tile_size
    lons, lats = [], []
    for view in layout.views():
        if view.kind == "global":
            lon = np.broadcast_to(-180.0 + 360.0 * (np.arange(gw) + 0.5) / gw, (gh, gw))
            lat = np.broadcast_to(90.0 - 180.0 * (np.arange(gh) + 0.5) / gh, (gw, gh)).T
        else:
            scale = math.tan(math.radians(view.fov) / 2)
            a = _index_to_plane((np.arange(gw) + 0.5) * s / gw - 0.5, s, layout.grid) * scale  # (gw,)
            b = _index_to_plane((np.arange(gh) + 0.5) * s / gh - 0.5, s, layout.grid) * scale  # (gh,)
            lon_r, lat_r = _lonlat(_rays(a[None, :], -b[:, None], view.yaw, view.pitch))
            lon, lat = np.degrees(lon_r), np.degrees(lat_r)
        lons.append(lon)
        lats.append(lat)
    lon = np.stack(lons).astype(np.float64)
    lon = np.where(lon >= 180.0, lon - 360.0, lon)  # (N, gh, gw)
    return lon, np.stack(lats).astype(np.float64)


# --- geometry -------------------------------------------------------------------------------------------


def _index_to_plane(t: np.ndarray, size: int, grid: str) -> np.ndarray:
    """Continuous pixel-index coordinate (pixel i's centre is i) -> image-plane coordinate in units of tan(fov/2)."""
    if grid == "centers":
        return (2.0 * t + 1.0) / size - 1.0
    return 2.0 * t / (size - 1) - 1.0


def _plane_axis(size: int, grid: str, antialias: int) -> np.ndarray:
    """Plane coordinates (size * antialias,) of the sample points along one axis, sub-samples evenly in each pixel."""
    j = np.arange(size * antialias, dtype=np.float64)
    return _index_to_plane((j + 0.5) / antialias - 0.5, size, grid)


def _rays(a: np.ndarray, b: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """World rays (..., 3) of camera-plane points (a right, b up, z = 1) of a camera looking at (yaw, pitch)."""
    a, b = np.broadcast_arrays(a, b)
    cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    y = b * cp + sp  # pitch about x: forward (0,0,1) -> (0, sin p, cos p), up (0,1,0) -> (0, cos p, -sin p)
    z0 = cp - b * sp
    x = a * cy + z0 * sy  # yaw about the vertical: forward (0,0,1) -> (sin y, 0, cos y), right -> (cos y, 0, -sin y)
    z = z0 * cy - a * sy
    return np.stack([x, y, z], axis=-1)


def _lonlat(rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude in [-pi, pi] and latitude in [-pi/2, pi/2] (radians) of rays (..., 3)."""
    x, y, z = rays[..., 0], rays[..., 1], rays[..., 2]
    return np.arctan2(x, z), np.arctan2(y, np.hypot(x, z))


def _padded_coords(lon: np.ndarray, lat: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (float32) in the equirect padded by one pixel on each side (see `_pad`)."""
    lon, lat = lon.astype(np.float32), lat.astype(np.float32)
    col = (lon / (2 * math.pi) + 0.5) * w - 0.5 + 1  # pixel centres at +0.5; +1 for the pad
    row = (-lat / math.pi + 0.5) * h - 0.5 + 1
    return col, row


def _fixed_maps(col: np.ndarray, row: np.ndarray, h: int, w: int) -> Maps:
    """OpenCV fixed-point maps (what remap computes internally anyway; faster when reused), read-only.

    `col`, `row` address the padded panorama. Where no sample's two rows reach a pad row, the maps are moved
    to the unpadded panorama (integer parts minus one: the same fixed-point numbers, so the same weights) and
    `Maps.padded` is False: the seam's wrap is then OpenCV's BORDER_WRAP, which reads exactly the columns the
    pad would hold, and no padded copy of the panorama is made (usually: tiles that miss the poles)."""
    if w + 2 >= _INT16_COORD_LIMIT:
        m1, m2, padded = np.ascontiguousarray(col), np.ascontiguousarray(row), True
    else:
        m1, m2 = cv2.convertMaps(col, row, cv2.CV_16SC2)  # (n, m, 2) int16 x, y; (n, m) uint16 1/32-pixel index
        x, y = m1[..., 0], m1[..., 1]
        # padded x in [0, w] reads columns x, x + 1 <= w + 1 (the pad columns are the wrap); rows y, y + 1
        # must both be real rows 1..h of the padded image
        padded = not (x.min() >= 0 and x.max() <= w and y.min() >= 1 and y.max() <= h - 1)
        if not padded:
            m1 = m1 - np.int16(1)
    for m in (m1, m2):
        m.setflags(write=False)
    return Maps(m1, m2, padded)


@lru_cache(maxsize=8)  # 8 tiles of 384 at antialias 1 hold 7 MB of maps
def _layout_maps(layout: Layout, h: int, w: int, antialias: int) -> Maps:
    """Stacked sampling maps of all tiles of `layout`: (T * S * a, S * a) each, built once and cached."""
    cols, rows = [], []
    for view in layout.views():
        if view.kind == "tile":
            lon, lat = view_lonlat(view.yaw, view.pitch, view.fov, layout.tile_size, layout.grid, antialias)
            col, row = _padded_coords(lon, lat, h, w)
            cols.append(col)
            rows.append(row)
    return _fixed_maps(np.concatenate(cols), np.concatenate(rows), h, w)


@lru_cache(maxsize=64)
def _view_maps(
    yaw: float, pitch: float, fov: float, size: int, grid: str, h: int, w: int, antialias: int
) -> Maps:
    """Sampling maps (size * a, size * a) of one view, cached."""
    lon, lat = view_lonlat(yaw, pitch, fov, size, grid, antialias)
    return _fixed_maps(*_padded_coords(lon, lat, h, w), h, w)


# --- pixels ---------------------------------------------------------------------------------------------


def _pad(pano: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H+2, W+2, C): wrap the seam horizontally, and continue across each pole with the edge row turned 180°."""
    h, w = pano.shape[:2]
    out = np.empty((h + 2, w + 2) + pano.shape[2:], pano.dtype) if out is None else out
    out[1:-1, 1:-1] = pano
    for dst, src in ((0, pano[0]), (h + 1, pano[-1])):
        if w % 2 == 0:
            out[dst, 1:-1] = np.roll(src, w // 2, axis=0)
        else:  # the opposite longitude falls between two columns: average them, rounding halves up
            a, b = np.roll(src, -(w // 2), axis=0), np.roll(src, -(w // 2) - 1, axis=0)
            out[dst, 1:-1] = ((a.astype(np.uint16) + b + 1) // 2).astype(pano.dtype)
    out[:, 0] = out[:, w]
    out[:, w + 1] = out[:, 1]
    return out


def _remap_into(pano: np.ndarray, maps: Maps, antialias: int, out: np.ndarray) -> None:
    """Sample `pano` at `maps` into `out` (n, m, 3) uint8; with antialias a, box-average a x a samples per pixel."""
    m1, m2, padded = maps
    if padded:
        src = _pad(pano, _scratch("pad", (pano.shape[0] + 2, pano.shape[1] + 2) + pano.shape[2:], pano.dtype))
        border = cv2.BORDER_REPLICATE
    else:
        src, border = pano, cv2.BORDER_WRAP
    if antialias == 1:
        res = cv2.remap(src, m1, m2, cv2.INTER_LINEAR, dst=out, borderMode=border)
        if res is not out:  # OpenCV writes into `out` when shapes match; keep it correct if it did not
            out[...] = res
        return
    fine = cv2.remap(src, m1, m2, cv2.INTER_LINEAR, borderMode=border)  # (n*a, m*a, 3) uint8
    n, m = out.shape[:2]
    out[...] = cv2.resize(fine, (m, n), interpolation=cv2.INTER_AREA)  # exact a x a box mean (integer factor)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W, 3) to (size, size, 3): box filter on an axis that shrinks, bilinear on one that grows."""
    h, w = img.shape[:2]
    if w >= size and h >= size:
        plans = _area_plan(h, size), _area_plan(w, size)
        if plans[0] is not None and plans[1] is not None and max(len(plans[0][2]), len(plans[1][2])) > 1:
            return _area_exact(img, size, *plans)  # same bits as cv2.INTER_AREA, faster (integer factors: OpenCV's
            # own fast path, taken below, is vectorised already)
    if (w >= size) == (h >= size):
        mode = cv2.INTER_AREA if w >= size else cv2.INTER_LINEAR
        return cv2.resize(img, (size, size), interpolation=mode)
    tmp = cv2.resize(img, (size, h), interpolation=cv2.INTER_AREA if w >= size else cv2.INTER_LINEAR)
    return cv2.resize(tmp, (size, size), interpolation=cv2.INTER_AREA if h >= size else cv2.INTER_LINEAR)


@lru_cache(maxsize=32)
def _area_plan(n: int, size: int) -> tuple[int, int, tuple[tuple[tuple[int, tuple[int, ...]], ...], ...]] | None:
    """Integer form of OpenCV's area weights for n -> size pixels along one axis, or None where it is not exact.

    The axis repeats every p = n / g input pixels (q = size / g outputs, g = gcd). Measured in 1/q of an input
    pixel, input pixel k of a period overlaps output j by an integer w[k, j] (each output's weights sum to p),
    and OpenCV's float32 weight is w[k, j] / p. Where p is a power of two these are exact binary fractions, so
    OpenCV's float sums are exact and its output is the exact mean rounded half to even; returned then (and
    while the sums stay small: 255 * p fits uint16, 255 * p_x * p_y fits float32's 24 bits) as (g, p, terms),
    terms[j] = ((weight, input pixels with that weight), ...) for each output j of a period."""
    g = math.gcd(n, size)
    p, q = n // g, size // g
    if p & (p - 1) or p > _AREA_MAX_PERIOD or q > _AREA_MAX_PERIOD:
        return None
    terms = []
    for j in range(q):  # output j covers [j * p, (j + 1) * p) in units of 1/q input pixel
        w = [max(0, min((k + 1) * q, (j + 1) * p) - max(k * q, j * p)) for k in range(p)]
        terms.append(tuple((v, tuple(k for k in range(p) if w[k] == v)) for v in sorted(set(w) - {0})))
    return g, p, tuple(terms)


def _worker() -> ThreadPoolExecutor:
    """This process's threads for global views (a forked child gets its own pool, not the parent's).

    One per CPU at most, started on demand: callers rendering from several threads (`uti encode --workers`)
    each get their global view computed concurrently, not queued behind one thread."""
    global _WORKER
    if _WORKER is None or _WORKER[0] != os.getpid():
        _WORKER = (os.getpid(), ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="uti-e2p"))
    return _WORKER[1]


def _scratch(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A per-thread reusable work array: fresh multi-megabyte arrays cost more in page faults than the sums.

    One buffer per name and thread, reused while its trailing shape and dtype match and its first axis is long
    enough (a shorter last chunk takes a prefix). Valid until the next call with that name in that thread;
    never returned to a caller."""
    arrays = _SCRATCH.__dict__.setdefault("arrays", {})
    have = arrays.get(name)
    if have is None or have.dtype != dtype or have.shape[1:] != shape[1:] or have.shape[0] < shape[0]:
        have = arrays[name] = np.empty(shape, dtype)
    return have[:shape[0]]


def _weighted_rows(rows: np.ndarray, terms: tuple, out: np.ndarray) -> None:
    """(G, p, ...) periods of rows -> `out` (G, q, ...) integer weighted sums: output j = sum of terms[j]."""
    tmp = _scratch(f"area.tmp.{rows.shape[2:]}", rows.shape[:1] + rows.shape[2:], out.dtype)
    for j, groups in enumerate(terms):
        acc = out[:, j]
        for i, (v, ks) in enumerate(groups):  # rows of equal weight are summed first, then scaled once
            dst = acc if i == 0 else tmp
            if len(ks) == 1:
                np.multiply(rows[:, ks[0]], v, out=dst, dtype=out.dtype)
            else:
                np.add(rows[:, ks[0]], rows[:, ks[1]], out=dst, dtype=out.dtype)
                for k in ks[2:]:
                    np.add(dst, rows[:, k], out=dst)
                if v != 1:
                    np.multiply(dst, v, out=dst)
            if i:
                np.add(acc, dst, out=acc)


def _area_exact(img: np.ndarray, size: int, plan_y: tuple, plan_x: tuple) -> np.ndarray:
    """cv2.INTER_AREA of (H, W, C) uint8 to (size, size, C), computed exactly from `_area_plan`s; see there.

    Works through bands of about `_AREA_CHUNK_ROWS` input rows, each staying in the core's cache: vertical
    sums along the rows (contiguous, vectorised), the band transposed so that its columns are rows, then the
    horizontal sums, written to the band's output columns. The sums are integers, the divisor a power of two."""
    (gy, py, ty), (gx, px, tx) = plan_y, plan_x
    h, w, c = img.shape
    qy, qx, den = len(ty), len(tx), px * py
    if 255 * den >= 1 << 24 or 255 * py >= 1 << 16:  # OpenCV's float32 sums would not be exact
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    dtype = np.uint16 if 255 * den + den < 1 << 16 else np.uint32
    rows = img.reshape(gy, py, w * c)
    z = np.empty((gx, qx, c, size), dtype)  # output x, channel, y: weights sum to px * py
    n = max(1, _AREA_CHUNK_ROWS // py)  # periods of rows per band
    for a in range(0, gy, n):
        m = min(n, gy - a)
        v = _scratch("area.v", (m, qy, w * c), np.uint16)
        _weighted_rows(rows[a:a + m], ty, v)  # (m, qy, W*C): the band's vertical sums, weights sum to py
        t = cv2.transpose(v.reshape(m * qy, w * c), dst=_scratch("area.t", (w * c, m * qy), np.uint16))
        _weighted_rows(t.reshape(gx, px, c, m * qy), tx, z[..., a * qy:(a + m) * qy])
    if den > 1:  # round half to even, as cvRound: add half - 1, plus 1 if the quotient is odd
        shift = den.bit_length() - 1
        z += (den >> 1) - 1 + ((z >> shift) & 1)
        z >>= shift
    return cv2.transpose(z.astype(np.uint8).reshape(size * c, size)).reshape(size, size, c)


def _check_pano(pano: np.ndarray) -> tuple[int, int]:
    if not isinstance(pano, np.ndarray) or pano.dtype != np.uint8 or pano.ndim != 3 or pano.shape[2] != 3:
        desc = f"{pano.dtype} array of shape {pano.shape}" if isinstance(pano, np.ndarray) else type(pano).__name__
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {desc}; load images with uti.image.load_image")
    h, w = pano.shape[:2]
    if h < 2 or w < 2:
        raise InputError(f"image of {w}x{h} pixels is too small to sample; need at least 2x2")
    return h, w


def _check_antialias(antialias: int) -> int:
    if isinstance(antialias, bool) or not isinstance(antialias, (int, np.integer)) or not 1 <= antialias <= 8:
        raise InputError(f"antialias must be an integer supersampling factor in [1, 8], got {antialias!r}")
    return int(antialias)
