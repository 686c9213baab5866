"""`uti show` draws the layout of a token space (default tiny, like `uti encode`), not a hard-coded one."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from conftest import ASSETS
from uti.cli import main

PANO = str(ASSETS / "panoramas" / "courtyard.jpg")


def test_show_draws_the_default_space_layout(tmp_path, tiny_space):
    res = CliRunner().invoke(main, ["show", PANO, "--out", str(tmp_path / "v.png"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["layout"] == tiny_space.abi["image"]["layout"]  # tile_size 64, not 384
    thumbs = np.asarray(Image.open(tmp_path / "v.png")).shape[0] - 512  # tiles below the panorama
    assert thumbs == 8 + 2 * (64 + 8)  # gap + two lines of 64-pixel views (global, then the 8 tiles); 384: 408


def test_show_takes_a_space_path_and_overrides(tmp_path):
    from uti.testing import tiny_space

    space = tiny_space()  # fov 90, overlap 0: 4 tiles of 16 pixels
    space.save(tmp_path / "space.json")
    runner = CliRunner()
    res = runner.invoke(main, ["show", PANO, "--out", str(tmp_path / "a.png"), "--space", str(tmp_path / "space.json"),
                               "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["layout"] == space.abi["image"]["layout"] and len(doc["views"]) == 5
    res = runner.invoke(main, ["show", PANO, "--out", str(tmp_path / "b.png"), "--space", str(tmp_path / "space.json"),
                               "--pitches", "0,45", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["layout"]["pitches"] == [0.0, 45.0]


def test_show_space_without_images_is_one_line(tmp_path):
    from uti.testing import tiny_space

    tiny_space(image_codes=None).save(tmp_path / "s.json")
    res = CliRunner().invoke(main, ["show", PANO, "--out", str(tmp_path / "v.png"), "--space", str(tmp_path / "s.json")])
    assert res.exit_code == 2 and "no image section" in res.output and len(res.output.strip().splitlines()) == 1
