"""`qformer` resampler: learned queries that self-attend, then cross-attend to the patch features (Q-Former style).

Structure (pre-LayerNorm, torch `nn.MultiheadAttention`, a final LayerNorm):
    x = proj_in(features)                              # (B, T, in_dim) -> (B, T, dim)
    q = queries                                         # (B, L, dim) learned
    for each layer:
        q = q + SelfAttn(LN_self(q))
        q = q + CrossAttn(LN_cross(q), x)               # keys/values: the projected patches (masked by key_mask)
        q = q + FF(LN_ff(q))                            # Linear(dim, ff_mult dim) - GELU - Linear(ff_mult dim, dim)
    return LN_out(q)                                    # (B, L, dim)

Unlike `perceiver`, the queries do not join the keys of the cross-attention; they mix in a separate
self-attention, as in BLIP-2's Q-Former (without its text branch).

Parameter count, d = dim, f = ff_mult (each attention: 4d^2 + 4d):
    layer = 2 (4d^2 + 4d) + 3 * 2d + (d*f d + f d + f d*d + d) = (8 + 2f) d^2 + (15 + f) d
    total = L*d + in_dim*d + d + depth * layer + 2d
1152-wide input, dim 512, 64 queries, depth 2, 8 heads, ff_mult 4 -> 9,032,192.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .registry import check_features, register_resampler, require_positive

__all__ = ["QFormerConfig", "QFormerLayer", "QFormerResampler"]


@dataclass
class QFormerConfig:
    """Sizes of the Q-Former resampler: `num_latents` queries of width `dim`, `heads` must divide `dim`."""

    in_dim: int = 1152
    dim: int = 512
    num_latents: int = 64
    depth: int = 2
    heads: int = 8
    ff_mult: int = 4

    def __post_init__(self) -> None:
        require_positive(self, "in_dim", "dim", "num_latents", "depth", "heads", "ff_mult")
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")


class QFormerLayer(nn.Module):
    """Pre-LN: query self-attention, cross-attention to the features, GELU feed-forward; all residual."""

    def __init__(self, dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))

    def forward(self, q: torch.Tensor, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """q: (B, L, dim), x: (B, T, dim), pad: (B, T) bool, True = padding (ignored). Returns (B, L, dim)."""
        h = self.norm_self(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        q = q + self.cross_attn(self.norm_cross(q), x, x, key_padding_mask=pad, need_weights=False)[0]
        return q + self.ff(self.norm_ff(q))


@register_resampler("qformer")
class QFormerResampler(nn.Module):
    """(B, T, in_dim) patch features -> (B, num_latents, dim) query outputs; T may differ between calls."""

    Config = QFormerConfig

    def __init__(self, config: QFormerConfig | None = None, **kwargs: int) -> None:
        super().__init__()
        self.config = config = config or QFormerConfig(**kwargs)
        self.in_dim, self.out_dim, self.num_tokens = config.in_dim, config.dim, config.num_latents
        self.proj_in = nn.Linear(config.in_dim, config.dim)
        self.queries = nn.Parameter(torch.empty(config.num_latents, config.dim))  # (L, dim)
        if not self.queries.is_meta:
            nn.init.normal_(self.queries, std=0.02)
        self.layers = nn.ModuleList(QFormerLayer(config.dim, config.heads, config.ff_mult) for _ in range(config.depth))
        self.norm_out = nn.LayerNorm(config.dim)

    def forward(self, features: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, T, in_dim); key_mask: (B, T) bool, True = real patch. Returns (B, num_latents, dim)."""
        check_features(features, self.in_dim)
        x = self.proj_in(features)  # (B, T, dim)
        pad = None if key_mask is None else ~key_mask.bool()  # (B, T), True = ignore
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, L, dim)
        for layer in self.layers:
            q = layer(q, x, pad)
        return self.norm_out(q)
