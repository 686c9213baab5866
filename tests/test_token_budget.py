"""The token budget in the ABI: `abi.image.token_grid` pools patch features before quantisation, is validated,
leaves unpooled spaces' hashes alone, and `uti space show` states tokens per view, panorama and audio second."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from test_image_codec import ASSETS, make_image_space
from uti.build import SpaceConfig, TextConfig, build_space
from uti.cli import main
from uti.errors import ConfigError, SpaceError
from uti.image.codec import ImageCodec, from_ids, image_abi_section, to_ids
from uti.image.pool import parse_token_grid, pool_features
from uti.image.e2p import render_views
from uti.image.load import load_image
from uti.space import TokenSpace, token_budget

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _reference_pool(feats: torch.Tensor, gh: int, gw: int, h: int, w: int) -> torch.Tensor:
    """Adaptive average pooling written out: cell (i, j) is the mean over patch rows [floor(i*gh/h),
    ceil((i+1)*gh/h)) and columns likewise (the windows torch documents for adaptive pooling)."""
    grid = feats.reshape(feats.shape[0], gh, gw, -1)
    cells = []
    for i in range(h):
        for j in range(w):
            r0, r1 = (i * gh) // h, -(-((i + 1) * gh) // h)
            c0, c1 = (j * gw) // w, -(-((j + 1) * gw) // w)
            cells.append(grid[:, r0:r1, c0:c1].mean(dim=(1, 2)))
    return torch.stack(cells, dim=1)  # (V, h*w, D)


def test_pool_divisible_is_the_block_mean():
    feats = torch.randn(3, 16, 5, dtype=torch.float64)  # 4x4 patches
    pooled = pool_features(feats, (4, 4), (2, 2))
    blocks = feats.reshape(3, 2, 2, 2, 2, 5).mean(dim=(2, 4)).reshape(3, 4, 5)  # (V, bh, rows, bw, cols, D)
    assert pooled.shape == (3, 4, 5)
    torch.testing.assert_close(pooled, blocks, rtol=0, atol=1e-12)
    assert pool_features(feats, (4, 4), None) is feats


@pytest.mark.parametrize("grid,token", [((27, 27), (13, 13)), ((27, 27), (9, 9)), ((4, 4), (3, 3)), ((6, 4), (4, 1))])
def test_pool_matches_adaptive_windows(grid, token):
    feats = torch.randn(2, grid[0] * grid[1], 3, dtype=torch.float64)
    pooled = pool_features(feats, grid, token)
    assert pooled.shape == (2, token[0] * token[1], 3)
    torch.testing.assert_close(pooled, _reference_pool(feats, *grid, *token), rtol=0, atol=1e-12)


def test_pool_refuses_a_larger_grid():
    with pytest.raises(ConfigError, match="must fit inside"):
        pool_features(torch.zeros(1, 16, 2), (4, 4), (5, 4))


def test_parse_token_grid():
    assert parse_token_grid("13x13") == [13, 13] and parse_token_grid("9") == [9, 9]
    assert parse_token_grid("2X3") == [2, 3]
    for bad in ("0x3", "a", "3x", "1x2x3", "-1"):
        with pytest.raises(Exception, match="not HxW"):
            parse_token_grid(bad)


def _pooled_abi(abi: dict, grid: list[int] | None, per_view: int | None = None) -> dict:
    abi = copy.deepcopy(abi)
    if grid is not None:
        abi["image"]["token_grid"] = grid
    abi["image"]["tokens_per_view"] = per_view if per_view is not None else (grid[0] * grid[1] if grid else 16)
    return abi


@pytest.mark.parametrize("grid,per_view,says", [
    ([5, 4], 20, "larger than the patch grid"),
    ([4, 4], 16, "omit token_grid"),
    ([2, 2], 16, "tokens_per_view is 16, but abi.image.token_grid [2, 2] gives 4"),
    (None, 9, "tokens_per_view is 9, but abi.image.grid [4, 4] gives 16"),
])
def test_abi_refuses_inconsistent_grids(tiny_space, grid, per_view, says):
    with pytest.raises(SpaceError) as err:
        TokenSpace.from_abi(_pooled_abi(tiny_space.abi, grid, per_view), name="x")
    assert says in str(err.value) and "\n" not in str(err.value)


def test_token_grid_needs_the_patch_grid(tiny_space):
    abi = _pooled_abi(tiny_space.abi, [2, 2])
    del abi["image"]["grid"]
    with pytest.raises(SpaceError, match="needs the patch grid"):
        TokenSpace.from_abi(abi, name="x")


def test_unpooled_section_keeps_its_hash(tiny_space):
    """The tiny space (no token_grid) rebuilds to the same image section, hence the same hash, with the
    field absent or equal to the patch grid (one spelling per ABI)."""
    assets = {k: tiny_space.root / v for k, v in tiny_space.assets.items() if k in ("vision_tower", "codebook")}
    for cfg in ({"layout": {"tile_size": 64}}, {"layout": {"tile_size": 64}, "token_grid": [4, 4]}):
        section = image_abi_section(cfg, assets)
        assert "token_grid" not in section
        assert TokenSpace.from_abi({**tiny_space.abi, "image": section}, name="tiny").hash == tiny_space.hash


def test_budget_of_the_shipped_spaces(tiny_space):
    assert token_budget(tiny_space.abi) == {
        "image": {"patch_grid": [4, 4], "token_grid": [4, 4], "tokens_per_view": 16, "views_per_panorama": 9,
                  "tokens_per_panorama": 155, "tokens_per_plain_image": 19},
        "audio": {"frame_rate": 75, "num_codebooks": 4, "tokens_per_second": 300}}
    real = TokenSpace.load("qwen3-siglip2-encodec")
    budget = token_budget(real.abi)
    assert budget["audio"]["tokens_per_second"] == 600 and budget["image"]["patch_grid"] == [27, 27]
    assert budget["image"]["token_grid"] == [13, 13]  # shipped pooled
    assert budget["image"]["tokens_per_panorama"] == 1532


def _real_budget(grid: int) -> dict:
    """The real space's budget with its image features pooled to grid x grid (27: its patch grid, no pooling)."""
    abi = copy.deepcopy(TokenSpace.load("qwen3-siglip2-encodec").abi)
    abi["image"].pop("token_grid", None)
    if grid != abi["image"]["grid"][0]:
        abi["image"]["token_grid"] = [grid, grid]
    abi["image"]["tokens_per_view"] = grid * grid
    return token_budget(TokenSpace.from_abi(abi, name="real").abi)


def test_readme_states_the_real_budgets():
    """The README's budget table lists, per token grid of the real space, the numbers its ABI gives."""
    for grid in (27, 13, 9):
        b = _real_budget(grid)
        row = (f"| {grid}×{grid} | {b['image']['tokens_per_view']:,} | {b['image']['tokens_per_panorama']:,} | "
               f"{b['audio']['tokens_per_second']:,} |")
        assert row in README, row
    assert [_real_budget(g)["image"]["tokens_per_panorama"] for g in (27, 13, 9)] == [6572, 1532, 740]


def test_space_show_prints_the_budget(tiny_space):
    runner = CliRunner()
    out = runner.invoke(main, ["space", "show", "tiny"], catch_exceptions=False).output
    assert "image: 16 tokens per view = 4x4; 155 per panorama (9 views, markers included)" in out
    assert "audio: 300 tokens per second (75 frames/s x 4 codebooks" in out
    info = json.loads(runner.invoke(main, ["space", "show", "tiny", "--json"], catch_exceptions=False).output)
    assert info["budget"]["image"]["tokens_per_panorama"] == 155 and info["budget"]["audio"]["tokens_per_second"] == 300


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    """An image space whose tiny tower's 4x4 patches are pooled to 2x2 before a 16-code codebook."""
    root = tmp_path_factory.mktemp("pooled")
    make_image_space(root, codebook_size=16)
    cfg = SpaceConfig(name="pooled", text=TextConfig(tokenizer="tok", base_vocab_size=512),
                      assets={"tokenizer": "tokenizer.json", "vision_tower": "vision_tower",
                              "codebook": "codebook.safetensors"},
                      image={"layout": {"tile_size": 64, "fov": 90.0, "overlap": 0.5}, "token_grid": [2, 2]})
    build_space(cfg, root).save(root / "token_space.json")
    return TokenSpace.load(root / "token_space.json")


def test_pooled_space_encodes_pooled_codes(pooled):
    sec = pooled.abi["image"]
    assert sec["grid"] == [4, 4] and sec["token_grid"] == [2, 2] and sec["tokens_per_view"] == 4
    codec = ImageCodec.from_space(pooled)
    pano = load_image(ASSETS / "courtyard.jpg")
    enc = codec.encode(pano)
    feats = codec.tower.encode(render_views(pano, codec.layout))  # (9, 16, 64)
    blocks = feats.reshape(9, 2, 2, 2, 2, 64).mean(dim=(2, 4)).reshape(9, 4, 64)
    assert enc.codes.shape == (9, 4) and enc.meta["grid"] == [2, 2]
    assert torch.equal(enc.codes, codec.codebook.quantize(blocks).cpu())
    ids = to_ids(enc, pooled)
    assert len(ids) == 9 * 5 + 2 == token_budget(pooled.abi)["image"]["tokens_per_panorama"]
    assert torch.equal(from_ids(ids, pooled).codes, enc.codes)
    dec = codec.decode(enc)
    assert dec["grid"] == [2, 2] and dec["features"].shape == (9, 4, 64) and dec["lon"].shape == (9, 2, 2)


def test_pooled_document_decodes_with_the_pooled_grid(pooled, tmp_path):
    runner = CliRunner()
    doc = tmp_path / "p.json"
    res = runner.invoke(main, ["encode", str(ASSETS / "courtyard.jpg"), "--space", str(pooled.path), "--out", str(doc)],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(doc.read_text())["meta"]["grid"] == [2, 2]
    res = runner.invoke(main, ["decode", str(doc), "--space", str(pooled.path), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["grid"] == [2, 2]


def test_build_refuses_a_grid_larger_than_the_tower(pooled):
    cfg = {"layout": {"tile_size": 64}, "token_grid": [8, 2]}
    assets = {"vision_tower": pooled.root / "vision_tower", "codebook": pooled.root / "codebook.safetensors"}
    with pytest.raises(ConfigError, match="larger than the tower's 4x4 patch grid"):
        image_abi_section(cfg, assets)


def test_codebook_fit_pools_and_build_checks_its_report(tmp_path):
    """`uti codebook fit --token-grid 2x2` fits on pooled features and says so in its report; building a space
    whose token grid differs from the report's is refused in one line."""
    root = tmp_path / "s"
    make_image_space(root, codebook_size=8)
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("courtyard.jpg", "forest.jpg"):
        shutil.copy(ASSETS / name, images / name)
    cb = root / "codebook.safetensors"
    res = CliRunner().invoke(main, ["codebook", "fit", "--space", str(root / "token_space.json"), "--images",
                                    str(images), "--size", "8", "--out", str(cb), "--token-grid", "2x2", "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads(Path(f"{cb}.report.json").read_text())
    assert report["token_grid"] == [2, 2]
    assert report["fit"]["num_vectors"] == 9 * 4 == report["held_out"]["num_vectors"]  # one panorama each, 2x2 per view
    assets = {"vision_tower": root / "vision_tower", "codebook": cb}
    assert image_abi_section({"layout": {"tile_size": 64}, "token_grid": [2, 2]}, assets)["token_grid"] == [2, 2]
    with pytest.raises(ConfigError) as err:
        image_abi_section({"layout": {"tile_size": 64}}, assets)
    assert re.search(r"fit on features pooled to \[2, 2\] but the space quantises unpooled", str(err.value))
