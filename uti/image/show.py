"""`uti show`: a picture of what a panorama becomes, for checking a layout by eye.

The panorama is drawn on top with the footprint of every tile (the outline of the tile's frustum projected
onto the equirect, in the tile's colour, labelled with its index); below it are the rendered views, the global
view first, then one line per pitch row, each framed in its colour. Outlines are sampled densely along the four
edges of the tile's image plane and drawn with their longitudes unwrapped, so an outline that crosses the ±180°
seam continues on the other side and one that encloses a pole runs along the whole width.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from pathlib import Path

import click
import cv2
import numpy as np

from ..errors import InputError
from ..io import atomic_write_bytes
from ..space import DEFAULT_SPACE
from .e2p import _lonlat, _rays, is_panorama, render_views
from .layout import Layout, View
from .load import load_image

__all__ = ["draw_views", "footprint", "show_command", "space_layout"]

_PANO_WIDTH = 1536  # pixels of the drawn panorama (smaller inputs are not enlarged)
_THUMB = 192  # pixels of a drawn view (smaller tiles are not enlarged)
_GAP = 8


def footprint(view: View, samples: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Longitude (unwrapped, may leave [-180, 180)) and latitude in degrees along a tile's outline: (4*samples+1,)."""
    t = np.linspace(-1.0, 1.0, samples, endpoint=False)
    ones = np.ones_like(t)
    # clockwise from the top-left corner: top edge, right edge, bottom edge, left edge; then close
    a = np.concatenate([t, ones, -t, -ones, [-1.0]])
    b = np.concatenate([ones, -t, -ones, t, [1.0]])
    scale = math.tan(math.radians(view.fov) / 2)
    lon, lat = _lonlat(_rays(a * scale, b * scale, view.yaw, view.pitch))
    return np.degrees(np.unwrap(lon)), np.degrees(lat)


def draw_views(pano: np.ndarray, layout: Layout, out_path: str | Path, *, antialias: int = 1) -> Path:
    """Draw the tile footprints on `pano` (H, W, 3) uint8 and the rendered views below it; save as PNG atomically."""
    views = render_views(pano, layout, antialias=antialias)  # (N, S, S, 3)
    h, w = pano.shape[:2]
    pw = min(w, _PANO_WIDTH)
    ph = max(1, round(pw * h / w))
    top = cv2.resize(pano, (pw, ph), interpolation=cv2.INTER_AREA)
    specs = layout.views()
    colours = {i: _colour(i, layout.num_tiles) for i in range(layout.num_tiles)}
    for v in specs:
        if v.kind == "tile":
            _draw_footprint(top, v, colours[v.index])
    grid = _views_grid(views, specs, layout, colours, pw)
    canvas = np.full((ph + _GAP + grid.shape[0], max(pw, grid.shape[1]), 3), 255, np.uint8)
    canvas[:ph, :pw] = top
    canvas[ph + _GAP:, :grid.shape[1]] = grid
    ok, png = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"could not encode the preview as PNG ({canvas.shape})")
    out_path = Path(out_path)
    atomic_write_bytes(out_path, png.tobytes())
    return out_path


def _colour(i: int, n: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((i / max(n, 1)) % 1.0, 0.9, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _draw_footprint(img: np.ndarray, view: View, colour: tuple[int, int, int]) -> None:
    """Outline of `view` on the equirect image `img` (in place), repeated one width left and right for the seam."""
    h, w = img.shape[:2]
    lon, lat = footprint(view)
    x = (lon / 360.0 + 0.5) * w
    y = (0.5 - lat / 180.0) * h
    shift = 4  # cv2 fixed-point sub-pixel bits, for smooth outlines
    pts = np.round(np.stack([x, y], axis=-1) * (1 << shift)).astype(np.int32)
    for dx in (-w, 0, w):
        moved = pts + np.array([dx << shift, 0], np.int32)
        cv2.polylines(img, [moved], False, colour, 2, cv2.LINE_AA, shift)
    cx = int(((view.yaw / 360.0 + 0.5) * w) % w)
    cy = int(np.clip((0.5 - view.pitch / 180.0) * h, 12, h - 4))
    _label(img, str(view.index), (cx - 6, cy + 6), colour)


def _label(img: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """`text` in `colour` on a dark box whose bottom-left corner is `org`."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    x, y = org
    cv2.rectangle(img, (x - 2, y - th - 3), (x + tw + 2, y + base), (20, 20, 20), cv2.FILLED)
    cv2.putText(img, text, (x, y), font, scale, colour, 1, cv2.LINE_AA)


def _views_grid(
    views: np.ndarray, specs: list[View], layout: Layout, colours: dict[int, tuple[int, int, int]], width: int
) -> np.ndarray:
    """The rendered views as a picture: the global view on its own line, then one line per pitch row."""
    lines: list[list[tuple[np.ndarray, View]]] = []
    if layout.global_view:
        lines.append([(views[0], specs[0])])
    k = int(layout.global_view)
    for _, yaws in layout.rows:
        lines.append([(views[k + j], specs[k + j]) for j in range(len(yaws))])
        k += len(yaws)
    cols = max(len(line) for line in lines)
    t = min(layout.tile_size, _THUMB, max(48, (width - _GAP * (cols - 1)) // cols))
    out = np.full((len(lines) * (t + _GAP), cols * (t + _GAP), 3), 255, np.uint8)
    for r, line in enumerate(lines):
        for c, (img, spec) in enumerate(line):
            y0, x0 = r * (t + _GAP), c * (t + _GAP)
            out[y0:y0 + t, x0:x0 + t] = cv2.resize(img, (t, t), interpolation=cv2.INTER_AREA)
            colour = colours[spec.index] if spec.kind == "tile" else (40, 40, 40)
            cv2.rectangle(out, (x0, y0), (x0 + t - 1, y0 + t - 1), colour, 3)
            name = f"{spec.index}  {spec.yaw:g}/{spec.pitch:g}" if spec.kind == "tile" else "global"
            _label(out, name, (x0 + 6, y0 + 18), (255, 255, 255) if spec.kind == "global" else colour)
    return out


def space_layout(space_ref: str) -> tuple[Layout, int]:
    """(layout, antialias) of a token space's image section; a space without images is a one-line error."""
    from ..space import TokenSpace

    sp = TokenSpace.load(space_ref)
    if "image" not in sp.abi:
        raise InputError(f"token space {sp.name!r} has no image section, so no layout to draw; pick a space with "
                         "images (--space)")
    section = sp.abi["image"]
    return Layout.from_abi(section["layout"]), int(section.get("antialias", 1))


def _parse_pitches(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise InputError(f"--pitches must be comma-separated degrees such as 0,60,-60, got {text!r}") from None


@click.command("show")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file to write (atomically).")
@click.option("--space", "space_ref", default=DEFAULT_SPACE, show_default=True,
              help="Token space whose image layout (and antialiasing) is drawn: a name or a token_space.json path.")
@click.option("--fov", type=float, help="Override the space's field of view of each tile, degrees.")
@click.option("--overlap", type=float, help="Override the space's fraction of a tile shared with its neighbour.")
@click.option("--pitches", help="Override the space's tile rows: comma-separated pitches, degrees.")
@click.option("--tile-size", type=int, help="Override the space's pixels per tile side.")
@click.option("--grid", type=click.Choice(["centers", "edges"]), help="Override the space's pixel-centre convention.")
@click.option("--no-global", is_flag=True, help="Leave out the global view.")
@click.option("--antialias", type=click.IntRange(1), help="Override the space's supersampling factor per axis.")
@click.option("--json", "as_json", is_flag=True, help="Print the layout and views as JSON.")
def show_command(image: Path, out: Path, space_ref: str, fov: float | None, overlap: float | None,
                 pitches: str | None, tile_size: int | None, grid: str | None, no_global: bool,
                 antialias: int | None, as_json: bool) -> None:
    """Draw the E2P tile footprints of panorama IMAGE and the rendered views into a PNG.

    The layout is the token space's (`--space`, default the tiny space), so the picture shows exactly the
    views `uti encode --space` tokenises; the layout options override single fields of it.
    """
    from ..cli_base import emit_json

    layout, space_antialias = space_layout(space_ref)
    given = {"fov": fov, "overlap": overlap, "tile_size": tile_size, "grid": grid,
             "pitches": None if pitches is None else _parse_pitches(pitches), "global_view": False if no_global else None}
    layout = dataclasses.replace(layout, **{k: v for k, v in given.items() if v is not None})  # checks again
    antialias = space_antialias if antialias is None else antialias
    pano = load_image(image)
    if not is_panorama(*pano.shape[:2]):
        raise InputError(f"{image}: {pano.shape[1]}x{pano.shape[0]} is not a 2:1 equirectangular panorama;"
                         " `uti show` draws panorama tiles")
    path = draw_views(pano, layout, out, antialias=antialias)
    if as_json:
        emit_json({"out": str(path), "layout": layout.abi(),
                   "views": [{"kind": v.kind, "index": v.index, "yaw": v.yaw, "pitch": v.pitch, "fov": v.fov}
                             for v in layout.views()]})
    else:
        click.echo(f"wrote {path}: {layout.num_tiles} tiles{' + global view' if layout.global_view else ''}")
