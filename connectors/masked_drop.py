"""`masked_drop` resampler: random patch-token dropping in training (none at eval), then pool + MLP.

In training each sample keeps a random `round(keep_ratio * T)` of its T tokens (at least 1, original order
kept), drawn from the global torch RNG (`torch.manual_seed` makes runs reproducible; no generator state is
stored, so checkpoints hold weights only). In eval mode nothing is dropped, so eval outputs are deterministic
and equal the no-drop path. The kept tokens are average-pooled over the sequence to `num_latents` and passed
through Linear - GELU - Linear (hidden = `mult` x `dim`), as in `mlp`; dropping is a regulariser on top.

Parameter count, h = mult * dim: in_dim * h + h + h * dim + dim.
1152-wide input, dim 512, 64 tokens, mult 4 -> 3,410,432.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .pooled import PooledMLPConfig, PooledMLPResampler
from .registry import check_features, register_resampler

__all__ = ["MaskedDropConfig", "MaskedDropResampler"]


@dataclass
class MaskedDropConfig(PooledMLPConfig):
    """The `mlp` resampler's sizes plus `keep_ratio` in (0, 1], the training-time kept fraction of tokens."""

    keep_ratio: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < float(self.keep_ratio) <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")


@register_resampler("masked_drop")
class MaskedDropResampler(PooledMLPResampler):
    """(B, T, in_dim) -> [train: keep a random subset of tokens] -> the `mlp` resampler -> (B, L, dim)."""

    Config = MaskedDropConfig

    def __init__(self, config: MaskedDropConfig | None = None, **kwargs: int | float) -> None:
        super().__init__(config or MaskedDropConfig(**kwargs))

    def kept_count(self, tokens: int) -> int:
        """How many of `tokens` tokens a training step keeps (all of them in eval mode)."""
        if not self.training:
            return tokens
        return max(1, min(tokens, round(self.config.keep_ratio * tokens)))

    def drop(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, in_dim) -> (B, kept_count(T), in_dim): a random per-sample subset in original order."""
        b, t, c = features.shape
        keep = self.kept_count(t)
        if keep == t:
            return features
        idx = torch.rand(b, t, device=features.device).argsort(dim=1)[:, :keep].sort(dim=1).values  # (B, keep)
        return features.gather(1, idx[:, :, None].expand(b, keep, c))

    def forward(self, features: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, T, in_dim); key_mask is accepted for interface parity (padding must be absent)."""
        check_features(features, self.in_dim)
        return super().forward(self.drop(features))  # (B, K, in_dim) -> (B, L, dim)
