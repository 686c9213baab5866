"""Connector modules: exact parameter counts, attention against torch's reference, registry, view encoding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from connectors import (
    ConnectorError,
    MLPProjector,
    PerceiverResampler,
    ViewPositionEncoding,
    WidthMismatchError,
    build_resampler,
    register_resampler,
    resampler_names,
)
from connectors.perceiver import MultiHeadCrossAttention
from connectors.view_pos import fourier_angles
from uti.errors import ConfigError, UTIError


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_source_design_parameter_counts() -> None:
    with torch.device("meta"):  # no memory, instant
        resampler = build_resampler("perceiver", in_dim=1152, dim=512, num_latents=64, depth=2, heads=8, head_dim=64)
        with_norm = build_resampler("perceiver", in_dim=1152, input_norm=True)
        projector = MLPProjector(512, 4096)
    assert n_params(resampler) == 6_927_872
    assert n_params(projector) == 75_517_952
    assert projector.hidden == 16384
    assert n_params(with_norm) - n_params(resampler) == 2_304


def _copy_into_mha(attn: MultiHeadCrossAttention, dim: int, heads: int) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([attn.to_q.weight, attn.to_k.weight, attn.to_v.weight]))
        ref.in_proj_bias.copy_(torch.cat([attn.to_q.bias, attn.to_k.bias, attn.to_v.bias]))
        ref.out_proj.weight.copy_(attn.to_out.weight)
        ref.out_proj.bias.copy_(attn.to_out.bias)
    return ref.eval()


def test_attention_matches_torch_multihead_attention() -> None:
    torch.manual_seed(0)
    attn = MultiHeadCrossAttention(32, heads=4, head_dim=8)
    ref = _copy_into_mha(attn, 32, 4)
    assert n_params(attn) == n_params(ref)
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    want, _ = ref(q, kv, kv, key_padding_mask=~mask, need_weights=False)
    torch.testing.assert_close(attn(q, kv, mask), want, atol=1e-5, rtol=1e-5)


def test_perceiver_shape_order_invariance_and_padding_mask() -> None:
    torch.manual_seed(0)
    r = PerceiverResampler(in_dim=24, dim=16, num_latents=3, depth=2, heads=2, head_dim=8).eval()
    x = torch.randn(2, 7, 24)
    out = r(x)
    assert out.shape == (2, 3, 16)
    # cross-attention reads a set: shuffling patches does not change the latents
    torch.testing.assert_close(r(x[:, torch.randperm(7)]), out, atol=1e-5, rtol=1e-5)
    # padded patches masked out == patches absent
    padded = torch.cat([x, torch.randn(2, 4, 24)], dim=1)
    mask = torch.cat([torch.ones(2, 7), torch.zeros(2, 4)], dim=1).bool()
    torch.testing.assert_close(r(padded, mask), out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(r(padded), out)


def test_wrong_feature_width_is_a_one_line_error() -> None:
    r = PerceiverResampler(in_dim=24, dim=16, num_latents=3, depth=1, heads=2, head_dim=8)
    with pytest.raises(WidthMismatchError, match="24") as err:
        r(torch.randn(1, 5, 32))
    assert isinstance(err.value, UTIError) and "\n" not in str(err.value)
    with pytest.raises(WidthMismatchError):
        MLPProjector(16, 64)(torch.randn(2, 8))


def test_registry_builtin_unknown_and_plugin(monkeypatch) -> None:
    assert {"perceiver", "mlp"} <= set(resampler_names())
    mlp = build_resampler("mlp", in_dim=24, dim=16, num_latents=4)
    assert mlp(torch.randn(2, 10, 24)).shape == (2, 4, 16)
    with pytest.raises(ConnectorError, match="perceiver"):
        build_resampler("nope")
    with pytest.raises(ConfigError, match="valid keys.*num_latents"):
        build_resampler("perceiver", latents=3)

    from dataclasses import dataclass

    import connectors.registry

    monkeypatch.setattr(connectors.registry, "_REGISTRY", dict(connectors.registry._REGISTRY))  # no leak to other tests

    @register_resampler("test_first_token")
    class FirstToken(nn.Module):
        @dataclass
        class Config:
            in_dim: int = 8

        def __init__(self, config: "FirstToken.Config") -> None:
            super().__init__()
            self.in_dim = self.out_dim = config.in_dim
            self.num_tokens = 1

        def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
            return x[:, :1]

    assert build_resampler("test_first_token", in_dim=4)(torch.ones(1, 3, 4)).shape == (1, 1, 4)
    with pytest.raises(ConnectorError, match="already registered"):
        register_resampler("perceiver")(FirstToken)


def test_view_encoding_is_continuous_across_360_degrees() -> None:
    torch.manual_seed(0)
    enc = ViewPositionEncoding(16, num_freqs=4)
    angles = torch.tensor([[0.0, 0.0], [360.0, 0.0], [-180.0, 10.0], [180.0, 10.0], [359.9, 0.0], [90.0, 0.0]])
    out = enc(angles)
    torch.testing.assert_close(out[0], out[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2], out[3], atol=1e-5, rtol=0)
    assert (out[4] - out[0]).norm() < 0.01 * (out[5] - out[0]).norm()  # close across the wrap, far at 90 deg
    feats = fourier_angles(angles, 4)
    assert feats.shape == (6, 16) and torch.allclose(feats.norm(dim=1), torch.full((6,), 8**0.5))
