"""`bimamba` resampler: bidirectional state-space mixing of the patch sequence, then pooling to a fixed count.

Built on transformers' `MambaMixer` (its PyTorch reference scan runs on CPU; the `mamba_ssm` kernels are used
when installed) rather than a hand-written scan. Structure (pre-LayerNorm, Vision-Mamba style):
    x = proj_in(features)                                         # (B, T, in_dim) -> (B, T, dim)
    for each layer:
        h = LN(x)
        x = x + fwd_mixer(h) + flip(bwd_mixer(flip(h)))           # two mixers, own weights; summed
    x = LN_out(x)
    return adaptive_avg_pool1d over T to num_latents              # (B, num_latents, dim)

A causal mixer alone lets token t see only tokens <= t; the reversed pass gives every token the whole view.

Parameter count, d = dim, e = expand * d, n = state_size, k = conv_kernel, r = ceil(d / 16) (Mamba's dt rank),
with Mamba's defaults (conv bias on, linear biases off):
    mixer = 3de + ek + e(2r + 3n) + 3e       # in_proj 2de, out_proj ed, conv ek + e, x_proj e(r + 2n),
                                              # dt_proj re + e, A_log en, D e
    total = in_dim*d + d  +  depth * (2 * mixer + 2d)  +  2d
1152-wide input, dim 512, 64 tokens, depth 2, state 16, expand 2, conv 4 -> 7,372,288.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .registry import check_features, register_resampler, require_positive

__all__ = ["BiMambaConfig", "BiMambaLayer", "BiMambaResampler"]


@dataclass
class BiMambaConfig:
    """Sizes of the bidirectional Mamba resampler (the mixer's sizes follow `transformers.MambaConfig`)."""

    in_dim: int = 1152
    dim: int = 512
    num_latents: int = 64
    depth: int = 2
    state_size: int = 16
    expand: int = 2
    conv_kernel: int = 4

    def __post_init__(self) -> None:
        require_positive(self, "in_dim", "dim", "num_latents", "depth", "state_size", "expand", "conv_kernel")


def _mixer(config: BiMambaConfig) -> nn.Module:
    """One transformers `MambaMixer` of width `dim`."""
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    cfg = MambaConfig(hidden_size=config.dim, state_size=config.state_size, expand=config.expand,
                      conv_kernel=config.conv_kernel, num_hidden_layers=1)
    return MambaMixer(cfg, layer_idx=0)


class BiMambaLayer(nn.Module):
    """Pre-LN residual layer: a forward and a reversed Mamba mixer over the sequence, summed."""

    def __init__(self, config: BiMambaConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.dim)
        self.fwd, self.bwd = _mixer(config), _mixer(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, dim) -> (B, T, dim)."""
        h = self.norm(x)
        return x + self.fwd(h) + self.bwd(h.flip(1)).flip(1)


@register_resampler("bimamba")
class BiMambaResampler(nn.Module):
    """(B, T, in_dim) -> bidirectional Mamba layers -> pool over T -> (B, num_latents, dim); T may vary."""

    Config = BiMambaConfig

    def __init__(self, config: BiMambaConfig | None = None, **kwargs: int) -> None:
        super().__init__()
        self.config = config = config or BiMambaConfig(**kwargs)
        self.in_dim, self.out_dim, self.num_tokens = config.in_dim, config.dim, config.num_latents
        self.proj_in = nn.Linear(config.in_dim, config.dim)
        self.layers = nn.ModuleList(BiMambaLayer(config) for _ in range(config.depth))
        self.norm_out = nn.LayerNorm(config.dim)

    def forward(self, features: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, T, in_dim); key_mask is accepted for interface parity (padding must be absent)."""
        check_features(features, self.in_dim)
        x = self.proj_in(features)  # (B, T, dim)
        for layer in self.layers:
            x = layer(x)
        x = self.norm_out(x)
        return F.adaptive_avg_pool1d(x.transpose(1, 2), self.num_tokens).transpose(1, 2)  # (B, L, dim)
