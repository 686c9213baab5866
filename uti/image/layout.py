"""Tile layout of a 360° panorama: which perspective views (one global view + E2P tiles) an image becomes.

A `Layout` is part of the token-space ABI (`Layout.abi()` goes into `abi["image"]["layout"]`), so every
field that changes the pixels of a view, or the number and order of views, is in it.

Tiles are arranged in pitch rows. In each row the yaws are evenly spaced around the full circle, starting at
yaw -180° (the ±180° seam, the left edge of the equirect) and increasing to the right, so tile order reads
the panorama left to right, row by row in the order of `pitches`. The number of yaws in a row follows from
the fov and the overlap: neighbouring tiles overlap by `overlap` of the longitude span a tile covers along
its centre row, `2 * atan(tan(fov / 2) / cos(pitch))` (this is `fov` at pitch 0 and widens towards the
poles, so high rows need fewer tiles). A row at pitch ±90° is a single tile. With the defaults (fov 90,
overlap 0.5, pitch 0) the step is 45° and a row has 8 tiles.

Angles are degrees. Yaw is longitude, positive to the right (east); pitch is latitude, positive up. Yaw 0 is
the centre column of the equirect (the same convention as `py360convert.e2p`'s `u_deg`/`v_deg`).

`grid` chooses where the pixel centres of a tile lie in the image plane:

* ``"centers"`` (default): pixel i of S covers [i, i+1)/S of the fov and its centre is at (i+0.5)/S. Pixels
  tile the fov exactly, as in a real camera and in every image resampler (PIL, OpenCV, torch with
  align_corners=False), so patches of a view cover equal, non-overlapping parts of the frustum, the fov is
  exactly `fov`, and supersampled antialiasing averages exactly each pixel's footprint.
* ``"edges"``: the first and last pixel centres lie on the fov edge (i/(S-1)), as in `py360convert`. This
  makes the effective fov slightly wider (by one pixel) and is kept for comparison with that reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["GRIDS", "Layout", "View", "row_yaws"]

GRIDS = ("centers", "edges")
_ABI_KEYS = ("fov", "overlap", "pitches", "tile_size", "global_view", "grid", "num_tiles")


@dataclass(frozen=True)
class View:
    """One view of a layout. `index` counts within its kind (the global view is index 0 of kind "global")."""

    kind: Literal["global", "tile"]
    index: int
    yaw: float  # degrees, longitude of the view centre; positive = right/east
    pitch: float  # degrees, latitude of the view centre; positive = up
    fov: float  # degrees; 360 for the global view (it shows the whole equirect)


def row_yaws(fov: float, overlap: float, pitch: float) -> tuple[float, ...]:
    """Evenly spaced yaws (degrees, ascending from -180) of one pitch row; see the module docstring."""
    if abs(pitch) >= 90.0:
        return (0.0,)
    half = math.radians(fov) / 2
    span = 2 * math.degrees(math.atan(math.tan(half) / math.cos(math.radians(pitch))))
    step = span * (1.0 - overlap)
    n = max(1, math.ceil(360.0 / step - 1e-9))
    return tuple(-180.0 + k * 360.0 / n for k in range(n))


@dataclass(frozen=True)
class Layout:
    """Views of a panorama: an optional global view, then E2P tiles row by row (see module docstring)."""

    fov: float = 90.0  # degrees, horizontal = vertical fov of each square tile; in (0, 180)
    overlap: float = 0.5  # fraction of a tile's longitude span shared with its neighbour; in [0, 1)
    pitches: tuple[float, ...] = (0.0,)  # degrees, one tile row per pitch, in this order; each in [-90, 90]
    tile_size: int = 384  # pixels, side of every square view (global view included)
    global_view: bool = True  # prepend one view of the whole panorama
    grid: str = "centers"  # pixel-centre convention, "centers" or "edges"

    def __post_init__(self) -> None:
        object.__setattr__(self, "pitches", tuple(float(p) for p in _as_tuple(self.pitches)))
        object.__setattr__(self, "fov", _number("fov", self.fov))
        object.__setattr__(self, "overlap", _number("overlap", self.overlap))
        if not 0.0 < self.fov < 180.0:
            raise ConfigError(f"layout fov must be in (0, 180) degrees for a pinhole view, got {self.fov}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"layout overlap must be in [0, 1), got {self.overlap}")
        if not self.pitches:
            raise ConfigError("layout pitches must name at least one pitch row, e.g. [0]")
        bad = [p for p in self.pitches if not -90.0 <= p <= 90.0 or math.isnan(p)]
        if bad:
            raise ConfigError(f"layout pitches must lie in [-90, 90] degrees, got {bad}")
        if len(set(self.pitches)) != len(self.pitches):
            raise ConfigError(f"layout pitches must be distinct, got {list(self.pitches)}")
        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int) or not 8 <= self.tile_size <= 8192:
            raise ConfigError(f"layout tile_size must be an integer in [8, 8192] pixels, got {self.tile_size!r}")
        if not isinstance(self.global_view, bool):
            raise ConfigError(f"layout global_view must be true or false, got {self.global_view!r}")
        if self.grid not in GRIDS:
            raise ConfigError(f"layout grid must be one of {', '.join(GRIDS)}, got {self.grid!r}")

    @property
    def rows(self) -> tuple[tuple[float, tuple[float, ...]], ...]:
        """(pitch, yaws) per tile row, in tile order."""
        return tuple((p, row_yaws(self.fov, self.overlap, p)) for p in self.pitches)

    @property
    def num_tiles(self) -> int:
        """Number of E2P tiles (the global view not counted)."""
        return sum(len(yaws) for _, yaws in self.rows)

    @property
    def num_views(self) -> int:
        """Number of rendered views: tiles plus the global view if enabled."""
        return self.num_tiles + int(self.global_view)

    def views(self) -> list[View]:
        """All views in render order: the global view first (if enabled), then tiles row by row."""
        out = [View("global", 0, 0.0, 0.0, 360.0)] if self.global_view else []
        for pitch, yaws in self.rows:
            out.extend(View("tile", len(out) - int(self.global_view), y, pitch, self.fov) for y in yaws)
        return out

    def abi(self) -> dict[str, Any]:
        """JSON-ready identity of the layout (all fields plus `num_tiles`), stable across runs."""
        return {
            "fov": self.fov,
            "overlap": self.overlap,
            "pitches": list(self.pitches),
            "tile_size": self.tile_size,
            "global_view": self.global_view,
            "grid": self.grid,
            "num_tiles": self.num_tiles,
        }

    @classmethod
    def from_abi(cls, d: dict[str, Any]) -> Layout:
        """Inverse of `abi()`; unknown keys, missing keys or a `num_tiles` that does not match are errors."""
        if not isinstance(d, dict):
            raise ConfigError(f"image layout: expected a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_ABI_KEYS))
        missing = [k for k in _ABI_KEYS if k not in d]
        if unknown or missing:
            raise ConfigError(
                f"image layout: unknown key(s) {unknown}, missing key(s) {missing}; valid keys: {', '.join(_ABI_KEYS)}"
            )
        fields = {k: v for k, v in d.items() if k != "num_tiles"}
        layout = cls(**fields)
        if d["num_tiles"] != layout.num_tiles:
            raise ConfigError(
                f"image layout: num_tiles is {d['num_tiles']} but fov/overlap/pitches give {layout.num_tiles};"
                " the layout was written by an incompatible version or edited by hand"
            )
        return layout


def _as_tuple(value: Any) -> tuple:
    if isinstance(value, (int, float)):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise ConfigError(f"layout pitches must be a list of degrees, got {value!r}") from None


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"layout {name} must be a number, got {value!r}")
    return float(value)
