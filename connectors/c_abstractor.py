"""`c_abstractor` resampler: convolutional abstractor with squeeze-excite, after Honeybee's C-Abstractor.

Structure (the patch tokens are a row-major square grid, as in `spatial_pool`):
    x = proj_in(features) -> (B, dim, g, g)          # Linear(in_dim, dim)
    x = depth x ConvSEBlock(x)                         # local mixing at full resolution
    x = adaptive_avg_pool2d(x, grid)                   # (B, dim, grid, grid)
    x = depth x ConvSEBlock(x)                         # mixing at output resolution
    return readout(x)                                  # Linear(dim, dim) - GELU - Linear(dim, dim)

ConvSEBlock (residual, depthwise-separable instead of Honeybee's RegNet bottleneck to keep it small):
    y = GELU(GroupNorm(1, dim)(depthwise k x k conv(x)))    # groups = dim, 'same' padding
    y = pointwise 1x1 conv(y)
    y = y * sigmoid(Linear(s, dim)(ReLU(Linear(dim, s)(mean_hw(y)))))   # squeeze-excite, s = dim // reduction
    return x + y

Parameter count, d = dim, k = kernel, s = d // reduction:
    block = d*k*k + d  +  2d  +  d*d + d  +  d*s + s  +  s*d + d  = d^2 + d*k^2 + 5d + 2ds + s
    total = in_dim*d + d  +  2 * depth * block  +  2 * (d*d + d)
1152-wide input, dim 512, grid 8 (64 tokens), depth 2, kernel 7, reduction 4 -> 2,799,616.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_resampler, require_positive
from .spatial_pool import to_grid

__all__ = ["CAbstractorConfig", "ConvSEBlock", "CAbstractorResampler"]


@dataclass
class CAbstractorConfig:
    """Sizes of the C-Abstractor: `depth` blocks before and after pooling to `grid` x `grid`; odd `kernel`."""

    in_dim: int = 1152
    dim: int = 512
    grid: int = 8
    depth: int = 2
    kernel: int = 7
    reduction: int = 4

    def __post_init__(self) -> None:
        require_positive(self, "in_dim", "dim", "grid", "depth", "kernel", "reduction")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (same-size padding), got {self.kernel}")
        if self.dim // self.reduction < 1:
            raise ValueError(f"reduction must be <= dim ({self.dim}), got {self.reduction}")


class ConvSEBlock(nn.Module):
    """Residual depthwise k x k conv - GroupNorm - GELU - 1x1 conv - squeeze-excite on (B, dim, H, W)."""

    def __init__(self, dim: int, kernel: int, reduction: int) -> None:
        super().__init__()
        squeeze = dim // reduction
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.GroupNorm(1, dim)
        self.pwconv = nn.Conv2d(dim, dim, 1)
        self.se = nn.Sequential(nn.Linear(dim, squeeze), nn.ReLU(), nn.Linear(squeeze, dim), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, dim, H, W) -> (B, dim, H, W)."""
        y = self.pwconv(F.gelu(self.norm(self.dwconv(x))))  # (B, dim, H, W)
        scale = self.se(y.mean(dim=(2, 3)))  # (B, dim)
        return x + y * scale[:, :, None, None]


@register_resampler("c_abstractor")
class CAbstractorResampler(nn.Module):
    """(B, g*g, in_dim) -> conv/SE blocks -> pool to (grid, grid) -> conv/SE blocks -> (B, grid*grid, dim)."""

    Config = CAbstractorConfig

    def __init__(self, config: CAbstractorConfig | None = None, **kwargs: int) -> None:
        super().__init__()
        self.config = config = config or CAbstractorConfig(**kwargs)
        self.in_dim, self.out_dim, self.num_tokens = config.in_dim, config.dim, config.grid * config.grid
        self.proj_in = nn.Linear(config.in_dim, config.dim)
        self.net1 = nn.Sequential(*(ConvSEBlock(config.dim, config.kernel, config.reduction) for _ in range(config.depth)))
        self.net2 = nn.Sequential(*(ConvSEBlock(config.dim, config.kernel, config.reduction) for _ in range(config.depth)))
        self.readout = nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU(), nn.Linear(config.dim, config.dim))

    def forward(self, features: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, T, in_dim), T a square; key_mask is accepted for interface parity (padding must be absent)."""
        to_grid(features, self.in_dim)  # validates width and squareness before any compute
        x = to_grid(self.proj_in(features), self.config.dim)  # (B, dim, g, g)
        x = F.adaptive_avg_pool2d(self.net1(x), self.config.grid)  # (B, dim, grid, grid)
        return self.readout(self.net2(x).flatten(2).transpose(1, 2))  # (B, grid*grid, dim)
