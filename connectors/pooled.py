"""`mlp` baseline resampler: average-pool the patch tokens to a fixed count, then a two-layer MLP.

No attention and no learned queries, so it shows what the Perceiver's cross-attention adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .registry import check_features, register_resampler, require_positive

__all__ = ["PooledMLPConfig", "PooledMLPResampler"]


@dataclass
class PooledMLPConfig:
    """Sizes of the pool + MLP baseline (hidden width = `mult` x `dim`)."""

    in_dim: int = 1152
    dim: int = 512
    num_latents: int = 64
    mult: int = 4

    def __post_init__(self) -> None:
        require_positive(self, "in_dim", "dim", "num_latents", "mult")


@register_resampler("mlp")
class PooledMLPResampler(nn.Module):
    """(B, T, in_dim) -> adaptive average pool over T to num_latents -> Linear-GELU-Linear -> (B, num_latents, dim)."""

    Config = PooledMLPConfig

    def __init__(self, config: PooledMLPConfig | None = None, **kwargs: int) -> None:
        super().__init__()
        self.config = config = config or PooledMLPConfig(**kwargs)
        self.in_dim, self.out_dim, self.num_tokens = config.in_dim, config.dim, config.num_latents
        hidden = config.mult * config.dim
        self.mlp = nn.Sequential(nn.Linear(config.in_dim, hidden), nn.GELU(), nn.Linear(hidden, config.dim))

    def forward(self, features: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, T, in_dim); key_mask is accepted for interface parity (padding must be absent)."""
        check_features(features, self.in_dim)
        pooled = F.adaptive_avg_pool1d(features.transpose(1, 2), self.num_tokens).transpose(1, 2)  # (B, L, in_dim)
        return self.mlp(pooled)
