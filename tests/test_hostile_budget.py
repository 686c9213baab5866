"""Hostile token grids: a space file whose `abi.image.token_grid` does not fit its patch grid, a codebook fit or
space build asked for a bad grid: each refused with one `error:` line (exit 2), in a capped subprocess."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from hostile import assert_one_line_error, run_cli
from uti.hashing import hash_json

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "token_spaces" / "tiny"


def _space_with(tmp_path: Path, **image: Any) -> Path:
    """A copy of the tiny space file with `image` keys set (None deletes one), its hash recomputed so the
    grid checks, not the hash, must refuse it."""
    doc = json.loads((TINY / "token_space.json").read_text())
    for key, value in image.items():
        if value is None:
            doc["abi"]["image"].pop(key, None)
        else:
            doc["abi"]["image"][key] = value
    doc["hash"] = hash_json(doc["abi"])
    doc["assets"] = {}
    path = tmp_path / "token_space.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("image,says", [
    ({"token_grid": [5, 2], "tokens_per_view": 10}, "larger than the patch grid"),
    ({"token_grid": [4, 4]}, "omit token_grid"),
    ({"token_grid": [2, 2]}, "tokens_per_view is 16, but abi.image.token_grid [2, 2] gives 4"),
    ({"token_grid": [2, 2], "tokens_per_view": 4, "grid": None}, "needs the patch grid"),
    ({"token_grid": [2, 2, 2], "tokens_per_view": 8}, "token_grid must be a list of 2..2 items"),
    ({"token_grid": [0, 2], "tokens_per_view": 0}, "token_grid[0] must be an integer in [1, 1024]"),
    ({"token_grid": "2x2"}, "token_grid must be a list"),
    ({"token_grid": [10**9, 1], "tokens_per_view": 10**9}, "token_grid[0] must be an integer in [1, 1024]"),
    ({"tokens_per_view": 9}, "tokens_per_view is 9, but abi.image.grid [4, 4] gives 16"),
])
def test_space_show_refuses_bad_token_grids(tmp_path, image, says):
    assert_one_line_error(run_cli("uti", "space", "show", _space_with(tmp_path, **image)), contains=says)


@pytest.mark.parametrize("grid,says", [("0x2", "not HxW"), ("2x2x2", "not HxW"), ("lots", "not HxW"),
                                       ("5x5", "larger than the tower's 4x4 patch grid")])
def test_codebook_fit_refuses_bad_token_grids(tmp_path, grid, says):
    proc = run_cli("uti", "codebook", "fit", "--space", "tiny", "--images", REPO / "tests" / "assets" / "panoramas",
                   "--size", "4", "--out", tmp_path / "cb.safetensors", "--token-grid", grid)
    assert_one_line_error(proc, contains=says)
    assert not (tmp_path / "cb.safetensors").exists()


@pytest.mark.parametrize("grid,says", [("[2]", "image.token_grid must be two positive integers"),
                                       ("[2, true]", "image.token_grid must be two positive integers"),
                                       ("[8, 8]", "larger than the tower's 4x4 patch grid")])
def test_space_build_refuses_bad_token_grids(tmp_path, grid, says):
    for name in ("tokenizer.json", "codebook.safetensors"):
        shutil.copy(TINY / name, tmp_path / name)
    shutil.copytree(TINY / "vision_tower", tmp_path / "vision_tower")
    cfg = tmp_path / "space.yaml"
    cfg.write_text("name: x\ntext: {tokenizer: t, base_vocab_size: 512}\nassets: {tokenizer: tokenizer.json, "
                   "vision_tower: vision_tower, codebook: codebook.safetensors}\n"
                   f"image: {{layout: {{tile_size: 64}}, token_grid: {grid}}}\n")
    assert_one_line_error(run_cli("uti", "space", "build", cfg, "--out", tmp_path), contains=says)
    assert not (tmp_path / "token_space.json").exists()
