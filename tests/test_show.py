"""`uti show`: tile footprints on the panorama and the rendered views, written as one PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from uti.cli import main
from uti.image.layout import Layout, View
from uti.image.load import load_image
from uti.image.show import draw_views, footprint

PANO = Path(__file__).parent / "assets" / "panoramas" / "courtyard.jpg"


def test_footprint_outlines_the_frustum() -> None:
    lon, lat = footprint(View("tile", 0, 0.0, 0.0, 90.0), samples=32)
    assert lon.shape == lat.shape == (129,) and lon[0] == lon[-1] and lat[0] == lat[-1]  # closed
    assert math.isclose(lon.min(), -45) and math.isclose(lon.max(), 45)
    assert math.isclose(lat.max(), 45) and math.isclose(lat[0], math.degrees(math.atan(1 / math.sqrt(2))))  # corner
    seam_lon, _ = footprint(View("tile", 0, -180.0, 0.0, 90.0))
    assert np.abs(np.diff(seam_lon)).max() < 10  # unwrapped: continuous across the seam
    assert math.isclose(seam_lon.max() - seam_lon.min(), 90)
    pole_lon, pole_lat = footprint(View("tile", 0, 0.0, 90.0, 90.0))
    assert math.isclose(abs(pole_lon[-1] - pole_lon[0]), 360) and (pole_lat > 35).all()  # goes round the pole


def test_draw_views_writes_a_png(tmp_path: Path) -> None:
    pano = load_image(PANO)
    layout = Layout(pitches=(0, 60), tile_size=64)
    out = draw_views(pano, layout, tmp_path / "views.png")
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[1] >= pano.shape[1] and img.shape[0] > pano.shape[0] + 3 * 64
    top = img[: pano.shape[0], : pano.shape[1]].astype(int)
    assert (np.abs(top - pano) > 40).any(axis=-1).mean() > 0.01  # outlines drawn on the panorama
    assert [p.name for p in tmp_path.iterdir()] == ["views.png"]  # atomic: no temp file left


def test_cli_show(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["show", str(PANO), "--out", str(tmp_path / "v.png"), "--pitches", "0,-45",
                               "--tile-size", "32", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["layout"]["num_tiles"] == len(doc["views"]) - 1 and (tmp_path / "v.png").stat().st_size > 0

    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "square.png")
    res = runner.invoke(main, ["show", str(tmp_path / "square.png"), "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 2 and "not a 2:1" in res.output and not (tmp_path / "s.png").exists()
    res = runner.invoke(main, ["show", str(PANO), "--out", str(tmp_path / "s.png"), "--pitches", "up"])
    assert res.exit_code == 2 and "--pitches" in res.output
    res = runner.invoke(main, ["show", str(PANO), "--out", str(tmp_path / "s.png"), "--fov", "200"])
    assert res.exit_code == 2 and "fov" in res.output and len(res.output.strip().splitlines()) == 1
