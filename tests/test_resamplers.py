"""The resampler family: parameter-count formulas, shapes, registry errors, checkpoint round trips."""

from __future__ import annotations

import pytest
import torch

from connectors import ContinuousVLM, expand_image_placeholders
from connectors.checkpoint import load_connector, save_connector
from connectors.registry import build_resampler, resampler_names
from connectors.vlm import Connector, ConnectorConfig
from uti.config import ConfigError
from uti.errors import UTIError
from uti.testing import TINY_FEAT as FEAT
from uti.testing import TINY_IDS as IDS
from uti.testing import byte_encode as encode
from uti.testing import synthetic_image, tiny_llm

TOWER = {"name": "tiny-tower", "weights_hash": "ab" * 16, "hidden_size": FEAT, "feature_layer": -1}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _round_trip(tmp_path, name: str, cfg: dict, patches: int = 9) -> None:
    """Save a ContinuousVLM using resampler `name`, load it back, and compare logits exactly."""
    torch.manual_seed(1)
    connector = Connector(ConnectorConfig(llm_width=64, resampler=name, resampler_cfg={"in_dim": FEAT} | cfg))
    vlm = ContinuousVLM(tiny_llm(), connector, IDS).eval()
    save_connector(vlm, tmp_path, TOWER)
    loaded = load_connector(tmp_path, tiny_llm(), TOWER).eval()
    img = synthetic_image(views=3, patches=patches)
    n = 3 * connector.resampler.num_tokens
    ids = torch.tensor([expand_image_placeholders("<image> this is", encode, IDS, [n])])
    torch.testing.assert_close(loaded(ids, [img]).logits, vlm(ids, [img]).logits, rtol=0, atol=0)


def test_registry_lists_family_and_refuses_bad_keys() -> None:
    names = set(resampler_names())
    assert names == {"perceiver", "mlp", "spatial_pool", "c_abstractor", "masked_drop", "qformer", "bimamba"}
    for name in names:
        with pytest.raises(ConfigError) as err:
            build_resampler(name, in_dim=8, bogus=1)
        msg = str(err.value)
        assert isinstance(err.value, UTIError) and "\n" not in msg and "bogus" in msg and "in_dim" in msg


# --- spatial_pool -------------------------------------------------------------------------------------------------

def _spatial_pool_formula(in_dim: int, dim: int, grid: int) -> int:
    return in_dim * dim + dim + dim * dim + dim


@pytest.mark.parametrize("cfg", [dict(in_dim=1152, dim=512, grid=8), dict(in_dim=24, dim=16, grid=3)])
def test_spatial_pool_count(cfg) -> None:
    assert _count(build_resampler("spatial_pool", **cfg)) == _spatial_pool_formula(**cfg)


def test_spatial_pool_shapes_and_grid() -> None:
    m = build_resampler("spatial_pool", in_dim=8, dim=16, grid=2)
    assert m(torch.randn(3, 36, 8)).shape == (3, 4, 16) and m.num_tokens == 4
    # pooling is 2-D: a feature constant per image quadrant comes out exactly per output token
    x = torch.zeros(1, 8, 4, 4)
    x[0, 0, :2, 2:] = 1.0  # top-right quadrant only
    mlp_in = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(2).transpose(1, 2)
    got = m(x.flatten(2).transpose(1, 2))
    torch.testing.assert_close(got, m.mlp(mlp_in))
    assert mlp_in[0, 1, 0] == 1.0 and mlp_in[0, [0, 2, 3], 0].abs().sum() == 0
    with pytest.raises(UTIError, match="square patch grid, got 6 tokens"):
        m(torch.randn(1, 6, 8))


def test_spatial_pool_round_trip(tmp_path) -> None:
    _round_trip(tmp_path, "spatial_pool", {"dim": 32, "grid": 2})


# --- c_abstractor -------------------------------------------------------------------------------------------------

def _c_abstractor_formula(in_dim: int, dim: int, grid: int, depth: int, kernel: int, reduction: int) -> int:
    d, s = dim, dim // reduction
    block = d * d + d * kernel * kernel + 5 * d + 2 * d * s + s
    return in_dim * d + d + 2 * depth * block + 2 * (d * d + d)


@pytest.mark.parametrize("cfg", [dict(in_dim=1152, dim=512, grid=8, depth=2, kernel=7, reduction=4),
                                 dict(in_dim=24, dim=16, grid=3, depth=1, kernel=3, reduction=2)])
def test_c_abstractor_count(cfg) -> None:
    assert _count(build_resampler("c_abstractor", **cfg)) == _c_abstractor_formula(**cfg)


def test_c_abstractor_shapes_and_refusals() -> None:
    m = build_resampler("c_abstractor", in_dim=8, dim=16, grid=2, depth=1)
    assert m(torch.randn(3, 36, 8)).shape == (3, 4, 16) and m.num_tokens == 4
    assert (m.config.kernel, m.config.reduction) == (7, 4)  # Honeybee's defaults
    with pytest.raises(UTIError, match="square patch grid"):
        m(torch.randn(1, 6, 8))
    with pytest.raises(UTIError, match="kernel must be odd"):
        build_resampler("c_abstractor", kernel=4)


def test_c_abstractor_round_trip(tmp_path) -> None:
    _round_trip(tmp_path, "c_abstractor", {"dim": 32, "grid": 2, "depth": 1, "kernel": 3})


# --- masked_drop --------------------------------------------------------------------------------------------------

def _masked_drop_formula(in_dim: int, dim: int, num_latents: int, mult: int, keep_ratio: float) -> int:
    h = mult * dim
    return in_dim * h + h + h * dim + dim


@pytest.mark.parametrize("cfg", [dict(in_dim=1152, dim=512, num_latents=64, mult=4, keep_ratio=0.5),
                                 dict(in_dim=24, dim=16, num_latents=3, mult=2, keep_ratio=0.25)])
def test_masked_drop_count(cfg) -> None:
    assert _count(build_resampler("masked_drop", **cfg)) == _masked_drop_formula(**cfg)


def test_masked_drop_train_drops_eval_does_not() -> None:
    torch.manual_seed(0)
    m = build_resampler("masked_drop", in_dim=8, dim=16, num_latents=4, keep_ratio=0.25)
    x = torch.randn(3, 40, 8)
    ref = m.mlp(torch.nn.functional.adaptive_avg_pool1d(x.transpose(1, 2), 4).transpose(1, 2))  # no-drop path
    m.eval()
    torch.testing.assert_close(m(x), ref, rtol=0, atol=0)
    torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)
    m.train()
    kept = m.drop(x)
    assert kept.shape == (3, 10, 8)
    for b in range(3):  # each kept token is one of the sample's own tokens, in order, no repeats
        rows = [int((x[b] == row).all(dim=1).nonzero()) for row in kept[b]]
        assert rows == sorted(set(rows))
    assert m(x).shape == (3, 4, 16) and not torch.equal(m(x), ref)
    torch.manual_seed(5)
    a = m(x)
    torch.manual_seed(5)
    torch.testing.assert_close(m(x), a, rtol=0, atol=0)  # seeded by the global RNG
    with pytest.raises(UTIError, match="keep_ratio"):
        build_resampler("masked_drop", keep_ratio=0.0)


def test_masked_drop_round_trip(tmp_path) -> None:
    _round_trip(tmp_path, "masked_drop", {"dim": 32, "num_latents": 4}, patches=6)


# --- qformer ------------------------------------------------------------------------------------------------------

def _qformer_formula(in_dim: int, dim: int, num_latents: int, depth: int, heads: int, ff_mult: int) -> int:
    d, f = dim, ff_mult
    layer = (8 + 2 * f) * d * d + (15 + f) * d
    return num_latents * d + in_dim * d + d + depth * layer + 2 * d


@pytest.mark.parametrize("cfg", [dict(in_dim=1152, dim=512, num_latents=64, depth=2, heads=8, ff_mult=4),
                                 dict(in_dim=24, dim=16, num_latents=3, depth=3, heads=2, ff_mult=2)])
def test_qformer_count(cfg) -> None:
    assert _count(build_resampler("qformer", **cfg)) == _qformer_formula(**cfg)


def test_qformer_shapes_and_key_mask() -> None:
    torch.manual_seed(0)
    m = build_resampler("qformer", in_dim=8, dim=16, num_latents=3, depth=2, heads=2).eval()
    x = torch.randn(2, 7, 8)
    assert m(x).shape == (2, 3, 16) and m(torch.randn(2, 11, 8)).shape == (2, 3, 16)
    # masked patches are ignored: padding with junk under a False mask gives the unpadded result
    padded = torch.cat([x, 100 * torch.randn(2, 4, 8)], dim=1)
    mask = torch.arange(11)[None].expand(2, -1) < 7
    torch.testing.assert_close(m(padded, mask), m(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(m(padded), m(x))
    with pytest.raises(UTIError, match="must divide dim"):
        build_resampler("qformer", dim=10, heads=4)


def test_qformer_round_trip(tmp_path) -> None:
    _round_trip(tmp_path, "qformer", {"dim": 32, "num_latents": 4, "depth": 1, "heads": 2}, patches=6)


# --- bimamba ------------------------------------------------------------------------------------------------------

def _bimamba_formula(in_dim: int, dim: int, num_latents: int, depth: int, state_size: int, expand: int,
                     conv_kernel: int) -> int:
    d, e, n, k, r = dim, expand * dim, state_size, conv_kernel, -(-dim // 16)
    mixer = 3 * d * e + e * k + e * (2 * r + 3 * n) + 3 * e
    return in_dim * d + d + depth * (2 * mixer + 2 * d) + 2 * d


@pytest.mark.parametrize("cfg", [dict(in_dim=1152, dim=512, num_latents=64, depth=2, state_size=16, expand=2,
                                      conv_kernel=4),
                                 dict(in_dim=24, dim=20, num_latents=3, depth=1, state_size=4, expand=3,
                                      conv_kernel=2)])
def test_bimamba_count(cfg) -> None:
    assert _count(build_resampler("bimamba", **cfg)) == _bimamba_formula(**cfg)


def test_bimamba_shapes_and_both_directions() -> None:
    torch.manual_seed(0)
    m = build_resampler("bimamba", in_dim=8, dim=16, num_latents=3, depth=1, state_size=4).eval()
    x = torch.randn(2, 9, 8)
    assert m(x).shape == (2, 3, 16) and m(torch.randn(2, 5, 8)).shape == (2, 3, 16)
    layer, h = m.layers[0], m.proj_in(x)
    last = h.clone()
    last[:, -1] += torch.randn(16)  # change only the last token (not by a constant: LayerNorm removes that)
    first = h.clone()
    first[:, 0] += torch.randn(16)  # change only the first token
    with torch.no_grad():  # token 0 sees the last token (reversed pass), the last token sees token 0 (forward pass)
        assert not torch.allclose(layer(last)[:, 0], layer(h)[:, 0])
        assert not torch.allclose(layer(first)[:, -1], layer(h)[:, -1])
        assert torch.allclose(layer.fwd(layer.norm(last))[:, 0], layer.fwd(layer.norm(h))[:, 0])  # fwd is causal


def test_bimamba_round_trip(tmp_path) -> None:
    _round_trip(tmp_path, "bimamba", {"dim": 32, "num_latents": 4, "depth": 1, "state_size": 4}, patches=6)
