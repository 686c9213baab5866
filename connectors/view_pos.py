"""View positional encoding from a view's yaw and pitch, continuous across 360 degrees.

Features are sin/cos of integer multiples of yaw and pitch (radians), so yaw and yaw + 360 give the same
vector and nearby yaws on either side of 0/360 give nearby vectors. A linear layer maps them to the
resampler width; the result is added to every output vector of that view. The global view (the whole
panorama) has no direction and gets its own learned vector instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["fourier_angles", "ViewPositionEncoding"]


def fourier_angles(yaw_pitch_deg: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """(V, 2) yaw, pitch in degrees -> (V, 4F): [sin k yaw, cos k yaw, sin k pitch, cos k pitch] for k = 1..F."""
    k = torch.arange(1, num_freqs + 1, dtype=torch.float32, device=yaw_pitch_deg.device)  # (F,)
    ang = yaw_pitch_deg.float()[:, :, None] * (math.pi / 180.0) * k  # (V, 2, F)
    return torch.cat([ang[:, 0].sin(), ang[:, 0].cos(), ang[:, 1].sin(), ang[:, 1].cos()], dim=-1)


class ViewPositionEncoding(nn.Module):
    """(V, 2) tile yaw/pitch in degrees -> (V, dim) offsets for each tile's vectors."""

    def __init__(self, dim: int, num_freqs: int = 4) -> None:
        super().__init__()
        self.num_freqs = num_freqs
        self.proj = nn.Linear(4 * num_freqs, dim)

    def forward(self, yaw_pitch_deg: torch.Tensor) -> torch.Tensor:
        """yaw_pitch_deg: (V, 2) float -> (V, dim)."""
        return self.proj(fourier_angles(yaw_pitch_deg, self.num_freqs).to(self.proj.weight.dtype))  # (V, dim)
