"""Batch encoding runs the views of many panoramas through each tower forward, and a panorama's codes stay
bit-identical to encoding it alone, at any batch size.

The tower here is chosen so that batching DOES change float results without the fix in `uti.image.vision`:
9 patches x MLP 132 is not a multiple of 32, so PyTorch's vectorised GELU-tanh computes a batch-size
dependent set of elements with its scalar formula (see the `uti.image.vision` module doc). The default tiny
tower (16 patches x 128) never hits that tail, so it cannot show the difference.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from uti.batch import ordered_map, read_shards, run_batch
from uti.build import SpaceConfig, TextConfig, build_space
from uti.image.codec import ImageCodec, to_ids
from uti.image.load import load_image
from uti.image.vision import VisionTower
from uti.image.vq import Codebook
from uti.io import atomic_write_text
from uti.modalities.image import ImageModality
from uti.space import TokenSpace

ASSETS = Path(__file__).parent / "assets" / "panoramas"
TOKENIZER = Path(__file__).parent.parent / "token_spaces" / "tiny" / "tokenizer.json"
SIZE, PATCH, MLP = 48, 16, 132  # P = 9 patches, 9 * 132 % 32 = 4: a GELU tail inside every view
BATCH_SIZES = [1, 3, 7, 64]


def _odd_tower(folder: Path) -> Path:
    """A tiny random SigLIP tower whose MLP activation is not batch-invariant in plain PyTorch."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(image_size=SIZE, patch_size=PATCH, hidden_size=64, intermediate_size=MLP,
                             num_hidden_layers=2, num_attention_heads=4, vision_use_head=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        SiglipVisionModel(cfg).eval().save_pretrained(folder, safe_serialization=True)
    atomic_write_text(folder / "preprocessor_config.json", json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3,
                                                                        "rescale_factor": 1 / 255}))
    return folder


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> TokenSpace:
    root = tmp_path_factory.mktemp("oddspace")
    _odd_tower(root / "vision_tower")
    Codebook(torch.randn(256, 64, generator=torch.Generator().manual_seed(0))).save(root / "codebook.safetensors")
    shutil.copy(TOKENIZER, root / "tokenizer.json")
    cfg = SpaceConfig(name="oddtest", text=TextConfig(tokenizer="tok", base_vocab_size=512),
                      assets={"tokenizer": "tokenizer.json", "vision_tower": "vision_tower",
                              "codebook": "codebook.safetensors"},
                      image={"layout": {"tile_size": SIZE, "fov": 90.0, "overlap": 0.5}})
    build_space(cfg, root).save(root / "token_space.json")
    return TokenSpace.load(root / "token_space.json")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """Mixed files in sorted order: panoramas of different sizes and content, a plain photo, noise, a corrupt JPEG."""
    folder = tmp_path_factory.mktemp("mixed")
    panos = sorted(ASSETS.glob("*.jpg"))
    for k, p in enumerate(panos):
        shutil.copy(p, folder / f"{k}-pano.jpg")
    from PIL import Image

    Image.fromarray(load_image(panos[0])[:300, :400].copy()).save(folder / "1b-plain.png")
    noise = np.random.default_rng(0).integers(0, 256, (128, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "2b-noise.png")
    (folder / "2c-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return sorted(folder.iterdir())


def _features_by_view(tower: VisionTower, views: np.ndarray) -> torch.Tensor:
    return torch.cat([tower.encode(views[i:i + 1]) for i in range(len(views))])  # one view per forward


def test_tower_features_are_bit_identical_at_any_batch_size(space, inputs) -> None:
    codec = ImageCodec.from_space(space, batch_size=1)
    views = np.concatenate([codec.render(load_image(p))[0] for p in inputs if "broken" not in p.name])
    alone = _features_by_view(codec.tower, views)
    for size in BATCH_SIZES:
        codec.tower.batch_size = size
        assert torch.equal(codec.tower.encode(views), alone), size


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_codes_alone_equal_codes_in_a_mixed_stream(space, inputs, batch_size: int, monkeypatch) -> None:
    """Every panorama, encoded alone, gives the codes (and the features behind them) it gets inside a stream of
    mixed panoramas, plain images and a corrupt file; the corrupt file fails alone."""
    codec = ImageCodec.from_space(space, batch_size=batch_size)
    alone = {p.name: codec.encode(p) for p in inputs if "broken" not in p.name}
    seen = []
    quantize = codec.quantize
    monkeypatch.setattr(codec, "quantize", lambda feats: seen.append(feats) or quantize(feats))
    got = list(codec.encode_stream(inputs, workers=2))
    assert len(got) == len(inputs)
    for path, (enc, err) in zip(inputs, got):
        if "broken" in path.name:
            assert enc is None and "broken" in str(err)
            continue
        assert err is None and torch.equal(enc.codes, alone[path.name].codes) and enc.meta == alone[path.name].meta
    assert max(len(f) for f in seen) == min(batch_size, sum(len(a.codes) for a in alone.values()))
    reference = _features_by_view(codec.tower, np.concatenate([codec.render(load_image(p))[0] for p in inputs
                                                                 if "broken" not in p.name]))
    assert torch.equal(torch.cat(seen), reference)  # the stream's features are those of one view per forward


def test_uti_encode_batches_views_across_panoramas(space, inputs, tmp_path, monkeypatch) -> None:
    """`uti encode DIR --batch-size 7`: forwards hold 7 views from several files; shards hold the codes of each
    file alone; the corrupt file is listed and the exit is 1; a rerun retries only it."""
    from uti.cli import main

    sizes = []
    forward = VisionTower._forward
    monkeypatch.setattr(VisionTower, "_forward", lambda self, px: sizes.append(len(px)) or forward(self, px))
    args = ["encode", str(inputs[0].parent), "--space", str(space.path), "--out", str(tmp_path / "out"),
            "--batch-size", "7", "--shard-size", "4", "--workers", "2", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    summary = json.loads(next(line for line in result.output.splitlines() if line.startswith("{")))
    assert [f["path"] for f in summary["failed"]] == ["2c-broken.jpg"] and summary["ok"] == len(inputs) - 1
    assert sizes[:2] == [7, 7]  # 4 panoramas of 9 views + 2 plain views (shards of 4 files): full forwards
    codec = ImageCodec.from_space(space)
    want = {p.name: to_ids(codec.encode(p), space) for p in inputs if "broken" not in p.name}
    got = {src: sh.item(j).tolist() for sh in read_shards(tmp_path / "out", space) for j, src in enumerate(sh.sources)}
    assert got == want
    sizes.clear()
    rerun = CliRunner().invoke(main, args)
    assert rerun.exit_code == 1 and sizes == []  # the good files are done; the broken one fails before the tower


def test_run_batch_with_a_stream_keeps_order_and_isolates_failures(space, inputs, tmp_path) -> None:
    modality = ImageModality(space, batch_size=5)
    summary = run_batch([str(p) for p in inputs], None, tmp_path / "s", space, shard_size=3, progress=False,
                        stream=lambda paths: modality.encode_stream([Path(p) for p in paths], workers=2))
    broken = next(str(p) for p in inputs if "broken" in p.name)
    assert summary.ok == len(inputs) - 1 and [f["path"] for f in summary.failed] == [broken]
    codec = ImageCodec.from_space(space, batch_size=1)
    sources = [s for sh in read_shards(tmp_path / "s", space) for s in sh.sources]
    assert sources == [str(p) for p in inputs if "broken" not in p.name]
    first = next(iter(read_shards(tmp_path / "s", space)))
    assert first.item(0).tolist() == to_ids(codec.encode(inputs[0]), space)


def test_a_padded_accelerator_forward_gives_the_unpadded_features(space, inputs, monkeypatch) -> None:
    """On an accelerator every forward is padded to batch_size views (one GEMM shape); the pad never leaks."""
    codec = ImageCodec.from_space(space, batch_size=4)
    views = codec.render(load_image(inputs[0]))[0][:6]
    plain, pixels = codec.tower.encode(views), codec.tower.pixel_values(views)
    rows = []
    forward = VisionTower._forward
    monkeypatch.setattr(VisionTower, "device", property(lambda self: torch.device("meta")))  # "not the CPU"
    monkeypatch.setattr(VisionTower, "pixel_values", lambda self, v: pixels)
    monkeypatch.setattr(VisionTower, "_forward", lambda self, px: rows.append(len(px)) or forward(self, px))
    assert torch.equal(codec.tower.encode(views), plain) and rows == [4, 4]


def test_ordered_map_keeps_order_isolates_errors_and_bounds_lookahead() -> None:
    import threading

    started = []
    lock = threading.Lock()

    def fn(x: int) -> int:
        with lock:
            started.append(x)
        if x == 3:
            raise ValueError("three")
        return x * x

    consumed = 0
    for k, (value, err) in enumerate(ordered_map(fn, range(20), workers=3, ahead=4)):
        assert (value, str(err)) == (None, "three") if k == 3 else (value, err) == (k * k, None)
        consumed += 1
        with lock:
            assert len(started) <= consumed + 4  # never more than `ahead` results computed ahead
    assert consumed == 20
    assert list(ordered_map(fn, [1, 3], workers=1))[1][0] is None


def test_bfloat16_on_cpu_is_bit_identical_at_any_batch_size(tmp_path) -> None:
    """bfloat16 linear layers on CPU pick kernels by row count (hidden 1152, 16 patches: measurably different
    rows at batch 3), so such a tower runs one view per forward; its features match at every batch size."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(image_size=64, patch_size=16, hidden_size=1152, intermediate_size=64,
                             num_hidden_layers=1, num_attention_heads=16, vision_use_head=False)
    model = SiglipVisionModel(cfg).to(torch.bfloat16).eval()
    tower = VisionTower(model=model, name="wide", weights_hash="random", feature_layer=-1, image_size=64,
                        patch_size=16, hidden_size=1152, num_layers=1, naflex=False, batch_size=1)
    views = np.random.default_rng(0).integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
    alone = _features_by_view(tower, views)
    for size in BATCH_SIZES:
        tower.batch_size = size
        assert torch.equal(tower.encode(views), alone), size
