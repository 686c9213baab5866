"""Resampler configs from three numbers (input width, output width, vectors per view), for the CLI and scripts.

Each built-in resampler has its own keys (`num_latents`, `grid`, `heads`, ...); `resampler_config` maps
(in_dim, dim, tokens) onto them with the family's defaults otherwise: attention heads of 64 wide (at least
one), the grid resamplers pool to sqrt(tokens) x sqrt(tokens). A plugin resampler gets `in_dim` and `dim`.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConnectorError
from .registry import resampler_class

__all__ = ["resampler_config"]

_LATENTS = ("perceiver", "mlp", "masked_drop", "qformer", "bimamba")
_GRID = ("spatial_pool", "c_abstractor")


def resampler_config(name: str, in_dim: int, dim: int = 512, tokens: int = 64) -> dict[str, Any]:
    """The config keys of resampler `name` (registered) for width in_dim -> dim and `tokens` vectors per view."""
    resampler_class(name)  # an unknown name: one line listing the registered ones
    if dim < 1 or tokens < 1 or in_dim < 1:
        raise ConnectorError(f"resampler sizes must be >= 1, got in_dim={in_dim}, dim={dim}, tokens={tokens}")
    cfg: dict[str, Any] = {"in_dim": int(in_dim), "dim": int(dim)}
    if name in _LATENTS:
        cfg["num_latents"] = int(tokens)
    if name in ("perceiver", "qformer"):
        heads = max(1, dim // 64)
        while dim % heads:
            heads -= 1
        cfg["heads"] = heads
        if name == "perceiver":
            cfg["head_dim"] = dim // heads
    if name in _GRID:
        grid = math.isqrt(tokens)
        if grid * grid != tokens:
            raise ConnectorError(f"resampler {name!r} pools to a square grid, so tokens must be a square number, "
                                 f"got {tokens}; use e.g. {grid * grid or 1} or {(grid + 1) ** 2}")
        cfg["grid"] = grid
        if name == "c_abstractor":
            cfg["kernel"] = 7 if grid >= 4 else 3
    return cfg
