"""Perceiver resampler: a fixed set of learned latents reads a view's patch features by cross-attention.

Structure (pre-LayerNorm, no output norm):
    x = proj_in(LN_in?(features))                    # (B, T, in_dim) -> (B, T, dim)
    for each block:
        kv = LN_attn([x; latents])                   # latents also see themselves (Flamingo style)
        latents = latents + Attn(q=LN_attn(latents), kv)
        latents = latents + FF(LN_ff(latents))       # Linear(dim, 4 dim) - GELU - Linear(4 dim, dim)
    return latents                                    # (B, num_latents, dim)

Parameter count with all linear biases, two LayerNorms per block and the optional input LayerNorm off:
1152-wide input, 64 latents of 512, depth 2, 8 heads of 64 -> 6,927,872 (input LayerNorm: +2,304).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .registry import check_features, register_resampler, require_positive

__all__ = ["PerceiverConfig", "MultiHeadCrossAttention", "PerceiverBlock", "PerceiverResampler"]


@dataclass
class PerceiverConfig:
    """Sizes of a Perceiver resampler; defaults are the source design (SigLIP2 SO400M input)."""

    in_dim: int = 1152
    dim: int = 512
    num_latents: int = 64
    depth: int = 2
    heads: int = 8
    head_dim: int = 64
    ff_mult: int = 4
    input_norm: bool = False

    def __post_init__(self) -> None:
        require_positive(self, "in_dim", "dim", "num_latents", "depth", "heads", "head_dim", "ff_mult")


class MultiHeadCrossAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (all with bias), using SDPA.

    Same parameters and result as `nn.MultiheadAttention(dim, heads)` when heads * head_dim == dim.
    """

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # (B, N, H*Dh) -> (B, H, N, Dh)
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """q: (B, Nq, dim), kv: (B, Nk, dim), key_mask: (B, Nk) bool, True = attend. Returns (B, Nq, dim)."""
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, Nk)
        out = F.scaled_dot_product_attention(
            self._split(self.to_q(q)), self._split(self.to_k(kv)), self._split(self.to_v(kv)), attn_mask=attn_mask
        )  # (B, H, Nq, Dh)
        b, _, nq, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, nq, self.heads * self.head_dim))


class PerceiverBlock(nn.Module):
    """Pre-LN block: latents cross-attend to [inputs; latents], then a x`ff_mult` GELU feed-forward."""

    def __init__(self, dim: int, heads: int, head_dim: int, ff_mult: int) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = MultiHeadCrossAttention(dim, heads, head_dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))

    def forward(self, latents: torch.Tensor, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """latents: (B, L, dim), x: (B, T, dim), key_mask: (B, T) bool or None. Returns (B, L, dim)."""
        kv = self.norm_attn(torch.cat([x, latents], dim=1))  # (B, T+L, dim)
        if key_mask is not None:
            ones = key_mask.new_ones(key_mask.shape[0], latents.shape[1])
            key_mask = torch.cat([key_mask, ones], dim=1)  # (B, T+L)
        latents = latents + self.attn(kv[:, x.shape[1]:], kv, key_mask)
        return latents + self.ff(self.norm_ff(latents))


@register_resampler("perceiver")
class PerceiverResampler(nn.Module):
    """(B, T, in_dim) patch features -> (B, num_latents, dim) vectors; T may differ between calls."""

    Config = PerceiverConfig

    def __init__(self, config: PerceiverConfig | None = None, **kwargs: int | bool) -> None:
        super().__init__()
        self.config = config = config or PerceiverConfig(**kwargs)
        self.in_dim, self.out_dim, self.num_tokens = config.in_dim, config.dim, config.num_latents
        self.input_norm = nn.LayerNorm(config.in_dim) if config.input_norm else nn.Identity()
        self.proj_in = nn.Linear(config.in_dim, config.dim)
        self.latents = nn.Parameter(torch.empty(config.num_latents, config.dim))  # (L, dim)
        if not self.latents.is_meta:  # meta tensors (shape-only builds) hold no values; random init there is slow
            nn.init.normal_(self.latents, std=0.02)
        self.blocks = nn.ModuleList(
            PerceiverBlock(config.dim, config.heads, config.head_dim, config.ff_mult) for _ in range(config.depth)
        )

    def forward(self, features: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, T, in_dim); key_mask: (B, T) bool, True = real patch. Returns (B, num_latents, dim)."""
        check_features(features, self.in_dim)
        x = self.proj_in(self.input_norm(features))  # (B, T, dim)
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, L, dim)
        for block in self.blocks:
            latents = block(latents, x, key_mask)
        return latents
