"""ImageCodec: panorama/plain encode, strict ID parsing, decode geometry, space identity checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from uti.build import SpaceConfig, TextConfig, build_space
from uti.errors import HashMismatchError, InputError, MissingAssetError, TokenRangeError
from uti.image.codec import ImageCodec, from_ids, to_ids
from uti.image.load import load_image
from tiny_assets import make_tiny_vision_tower
from uti.image.vq import Codebook
from uti.sequence import build_sequence
from uti.space import TokenSpace

ASSETS = Path(__file__).parent / "assets" / "panoramas"
TOKENIZER = Path(__file__).parent.parent / "token_spaces" / "tiny" / "tokenizer.json"
LAYOUT = {"tile_size": 64, "fov": 90.0, "overlap": 0.5}


def make_image_space(root: Path, codebook_size: int = 32) -> TokenSpace:
    """A space with a tiny tower and a random codebook in `root` (written to root/token_space.json)."""
    root.mkdir(parents=True, exist_ok=True)
    make_tiny_vision_tower(root / "vision_tower", seed=0)
    Codebook(torch.randn(codebook_size, 64, generator=torch.Generator().manual_seed(0))).save(root / "codebook.safetensors")
    shutil.copy(TOKENIZER, root / "tokenizer.json")
    cfg = SpaceConfig(name="imgtest", text=TextConfig(tokenizer="tok", base_vocab_size=512),
                      assets={"tokenizer": "tokenizer.json", "vision_tower": "vision_tower",
                              "codebook": "codebook.safetensors"},
                      image={"layout": LAYOUT})
    space = build_space(cfg, root)
    space.save(root / "token_space.json")
    return TokenSpace.load(root / "token_space.json")


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    return make_image_space(tmp_path_factory.mktemp("space"))


@pytest.fixture(scope="module")
def codec(space):
    return ImageCodec.from_space(space)


@pytest.fixture(scope="module")
def pano():
    return load_image(ASSETS / "courtyard.jpg")


def test_abi_section(space):
    sec = space.abi["image"]
    assert sec["layout"]["num_tiles"] == 8 and sec["codebook_size"] == 32 == sec["codebook"]["size"]
    assert sec["codebook"]["dim"] == 64 and sec["image_size"] == 64 and sec["patch_size"] == 16
    assert sec["tower"]["weights_hash"] and sec["feature_layer"] == -1 and sec["tokens_per_view"] == 16


def test_panorama_roundtrip(space, codec, pano):
    enc = codec.encode(pano)
    assert enc.codes.shape == (9, 16) and enc.codes.dtype == torch.long
    assert enc.meta["kind"] == "panorama" and enc.meta["input_size"] == [512, 1024]
    assert [v["yaw"] for v in enc.meta["views"][1:]] == [-180.0 + 45.0 * k for k in range(8)]
    # the codes are the nearest codebook entries of the tower's features of the rendered views
    views, _ = codec.render(pano)
    assert torch.equal(enc.codes, codec.codebook.quantize(codec.tower.encode(views)))
    ids = to_ids(enc, space)
    assert len(ids) == 2 + 9 * 17
    assert ids[0] == space.special_id("<|image_start|>") and ids[-1] == space.special_id("<|image_end|>")
    assert ids[1] == space.special_id("<|view_global|>") and ids[18] == space.special_id("<|view_0|>")
    assert all(i in space.ranges["image"] for i in ids[2:18])
    back = from_ids(ids, space)
    assert torch.equal(back.codes, enc.codes)
    seq = build_sequence(space, "i2t", target=[1, 2, 3], condition=ids)  # the LM's sequence builder accepts it
    assert seq.input_ids[:len(ids)] == tuple(ids)
    dec = codec.decode(back)
    torch.testing.assert_close(dec["features"], codec.codebook.embed[enc.codes])
    assert dec["lon"].shape == (9, 4, 4) and dec["views"][3]["yaw"] == -90.0
    # tile 4 looks at yaw 0: its patch centres straddle longitude 0 symmetrically
    assert float(dec["lon"][5].mean()) == pytest.approx(0.0, abs=1e-9)


def test_plain_image(space, codec, pano):
    enc = codec.encode(np.ascontiguousarray(pano[:, :600]))
    assert enc.codes.shape == (1, 16) and enc.meta["kind"] == "plain"
    ids = to_ids(enc, space)
    assert len(ids) == 2 + 17 and ids[1] == space.special_id("<|view_global|>")
    assert codec.decode(from_ids(ids, space))["kind"] == "plain"


def test_strict_parse(space, codec, pano):
    ids = to_ids(codec.encode(pano), space)
    bad_cases = {
        "missing end": ids[:-1],
        "wrong count": ids[:-2] + ids[-1:],
        "swapped view markers": ids[:18] + [space.special_id("<|view_1|>")] + ids[19:],
        "text id as code": ids[:2] + [5] + ids[3:],
        "out of range": ids[:2] + [space.total + 3] + ids[3:],
    }
    for bad in bad_cases.values():
        with pytest.raises(TokenRangeError):
            from_ids(bad, space)
    with pytest.raises(TokenRangeError):
        codec.decode(type(codec.encode(pano))(torch.zeros(9, 15, dtype=torch.long)))


def test_bad_inputs(codec, tmp_path):
    with pytest.raises(InputError, match="patch"):
        codec.encode(np.zeros((8, 40, 3), np.uint8))
    with pytest.raises(InputError):
        codec.encode(np.zeros((64, 64), np.float32))
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError):
        codec.encode(tmp_path / "empty.jpg")


def test_from_space_refuses_changed_assets(space, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(space.root, root)
    Codebook(torch.randn(32, 64, generator=torch.Generator().manual_seed(1))).save(root / "codebook.safetensors")
    with pytest.raises(HashMismatchError, match="codebook.hash"):
        ImageCodec.from_space(TokenSpace.load(root / "token_space.json"))
    shutil.rmtree(root / "vision_tower")
    with pytest.raises(MissingAssetError, match="vision_tower"):
        ImageCodec.from_space(TokenSpace.load(root / "token_space.json"))


def test_cli_encode_decode_batch_and_fit(space, tmp_path):
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from uti.cli import main

    sp, run = str(space.path), CliRunner()
    r = run.invoke(main, ["encode", str(ASSETS / "city.jpg"), "--space", sp, "--out", str(tmp_path / "c.json")])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["modality"] == "image" and len(doc["ids"]) == 155 and doc["token_space"]["hash"] == space.hash
    r = run.invoke(main, ["decode", str(tmp_path / "c.json"), "--space", sp, "--out", str(tmp_path / "d.safetensors")])
    assert r.exit_code == 0, r.output
    dec = load_file(str(tmp_path / "d.safetensors"))
    assert dec["features"].shape == (9, 16, 64) and dec["lon"].shape == (9, 4, 4)
    # batch: two images plus a corrupt one in a folder; the bad file is listed, the rest is encoded
    src = tmp_path / "imgs"
    src.mkdir()
    for name in ("city.jpg", "forest.jpg"):
        shutil.copy(ASSETS / name, src / name)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    r = run.invoke(main, ["encode", str(src), "--space", sp, "--out", str(tmp_path / "sh"), "--json"])
    assert r.exit_code == 1, r.output  # a batch with a failed input exits 1 and lists it
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["ok"] == 2 and summary["failed"][0]["path"].endswith("broken.jpg")
    # codebook fit on the folder (the broken file is skipped and reported)
    out = tmp_path / "cb" / "codebook.safetensors"
    r = run.invoke(main, ["codebook", "fit", "--space", sp, "--images", str(src), "--size", "8", "--out", str(out),
                          "--held-out", "0.5", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["held_out"]["codebook_size"] == 8 and len(report["failed"]) == 1
    assert Codebook.load(out).size == 8
    r = run.invoke(main, ["codebook", "fit", "--space", sp, "--images", str(src), "--size", "100000", "--out",
                          str(tmp_path / "x.safetensors")])
    assert r.exit_code == 2 and "at least size=100000" in r.output and not (tmp_path / "x.safetensors").exists()


def test_tower_in_renamed_folder_is_accepted(space, tmp_path):
    root = tmp_path / "renamed"
    shutil.copytree(space.root, root)
    (root / "vision_tower").rename(root / "my_siglip")
    doc = json.loads((root / "token_space.json").read_text())
    doc["assets"]["vision_tower"] = "my_siglip"  # assets are outside the abi: the hash is unchanged
    (root / "token_space.json").write_text(json.dumps(doc))
    assert ImageCodec.from_space(TokenSpace.load(root / "token_space.json")).tower.name == "my_siglip"
