"""`spatial_pool` resampler: adaptive average pooling of the square patch grid to a `grid` x `grid` grid, then a
two-layer MLP (LLaVA-style Linear - GELU - Linear, both `dim` wide).

Unlike `mlp` (which pools the flattened token sequence), neighbours are pooled in 2-D, so each output vector
covers a square image region. Tokens are assumed to be a row-major square grid; a non-square count is refused.

Parameter count: in_dim * dim + dim + dim * dim + dim.
1152-wide input, dim 512, grid 8 (64 tokens) -> 852,992.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import WidthMismatchError
from .registry import check_features, register_resampler, require_positive

__all__ = ["SpatialPoolConfig", "SpatialPoolResampler", "to_grid"]


@dataclass
class SpatialPoolConfig:
    """Sizes of the 2-D pool + MLP resampler: `grid` x `grid` output tokens of width `dim`."""

    in_dim: int = 1152
    dim: int = 512
    grid: int = 8

    def __post_init__(self) -> None:
        require_positive(self, "in_dim", "dim", "grid")


def to_grid(features: torch.Tensor, in_dim: int) -> torch.Tensor:
    """(B, T, in_dim) with T = g*g -> (B, in_dim, g, g); a wrong width or non-square T is a one-line error."""
    check_features(features, in_dim)
    b, t, c = features.shape
    g = math.isqrt(t)
    if g * g != t:
        raise WidthMismatchError(f"resampler expects a square patch grid, got {t} tokens; use a square tile size")
    return features.transpose(1, 2).reshape(b, c, g, g)  # row-major patches -> (B, C, g, g)


@register_resampler("spatial_pool")
class SpatialPoolResampler(nn.Module):
    """(B, g*g, in_dim) -> 2-D adaptive average pool to (grid, grid) -> MLP -> (B, grid*grid, dim)."""

    Config = SpatialPoolConfig

    def __init__(self, config: SpatialPoolConfig | None = None, **kwargs: int) -> None:
        super().__init__()
        self.config = config = config or SpatialPoolConfig(**kwargs)
        self.in_dim, self.out_dim, self.num_tokens = config.in_dim, config.dim, config.grid * config.grid
        self.mlp = nn.Sequential(nn.Linear(config.in_dim, config.dim), nn.GELU(), nn.Linear(config.dim, config.dim))

    def forward(self, features: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, T, in_dim), T a square; key_mask is accepted for interface parity (padding must be absent)."""
        x = F.adaptive_avg_pool2d(to_grid(features, self.in_dim), self.config.grid)  # (B, in_dim, grid, grid)
        return self.mlp(x.flatten(2).transpose(1, 2))  # (B, grid*grid, dim)
