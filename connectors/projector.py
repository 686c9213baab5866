"""MLP projector from the resampler width to the LLM width: Linear - GELU - Linear, hidden = 4 x LLM width.

512 -> 16384 -> 4096 has 75,517,952 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import WidthMismatchError

__all__ = ["MLPProjector"]


class MLPProjector(nn.Module):
    """(..., in_dim) -> (..., out_dim) through a hidden layer of `hidden` (default 4 x out_dim) with GELU."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.hidden = hidden or 4 * out_dim
        self.net = nn.Sequential(nn.Linear(in_dim, self.hidden), nn.GELU(), nn.Linear(self.hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_dim) -> (..., out_dim)."""
        if x.shape[-1] != self.in_dim:
            raise WidthMismatchError(f"projector expects width {self.in_dim}, got {x.shape[-1]}")
        return self.net(x)
