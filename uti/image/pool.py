"""The image token budget: patch features average-pooled to the space's `image.token_grid` before quantisation.

A space whose `abi.image` sets `token_grid: [h, w]` quantises each view's g x g patch features pooled to h x w
(`pool_features`), so a view costs h*w codes instead of g*g (SigLIP2 SO400M/14 at 384 px: 27x27 = 729, pooled
13x13 = 169 or 9x9 = 81, as Tar does). Without the key nothing is pooled, and such spaces keep their hash. The
codebook must be fit on the same pooled features: `uti codebook fit --token-grid` records the grid in its
report, and `check_fit_grid` refuses building a space over a codebook fit on another.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, InputError
from ..schema import read_json_file

__all__ = ["canonical_token_grid", "check_fit_grid", "parse_token_grid", "pool_features"]


def pool_features(feats: torch.Tensor, grid: Sequence[int], token_grid: Sequence[int] | None) -> torch.Tensor:
    """Patch features (V, gh*gw, D) in row-major patch order -> (V, h*w, D) average-pooled to `token_grid`
    [h, w] (`torch.nn.functional.adaptive_avg_pool2d`: deterministic, and the exact mean over gh/h x gw/w
    blocks when they divide); `token_grid` None returns `feats` unchanged."""
    if token_grid is None:
        return feats
    (gh, gw), (h, w) = (int(v) for v in grid), (int(v) for v in token_grid)
    v, p, d = feats.shape
    if p != gh * gw or not (1 <= h <= gh and 1 <= w <= gw):
        raise ConfigError(f"cannot pool {p} patch features of a {gh}x{gw} grid to {h}x{w}; the token grid must fit "
                          "inside the patch grid")
    x = feats.reshape(v, gh, gw, d).permute(0, 3, 1, 2)  # (V, D, gh, gw)
    x = torch.nn.functional.adaptive_avg_pool2d(x, (h, w))  # (V, D, h, w)
    return x.permute(0, 2, 3, 1).reshape(v, h * w, d)


def parse_token_grid(text: str) -> list[int]:
    """A command line's token grid: "HxW" (e.g. "13x13") or "N" (N x N) -> [h, w]."""
    parts = text.lower().split("x") if "x" in text.lower() else [text, text]
    if len(parts) != 2 or not all(p.strip().isdigit() and 1 <= int(p) <= 4096 for p in parts):
        raise InputError(f"token grid {text[:40]!r} is not HxW or N with positive integers (e.g. 13x13 or 13)")
    return [int(parts[0]), int(parts[1])]


def canonical_token_grid(patch_grid: int, token_grid: Sequence[int] | None) -> list[int] | None:
    """The pooled grid a space records for a tower of `patch_grid` x `patch_grid` patches: None when absent or
    equal to the patch grid (no pooling; one spelling per ABI); one larger than the patch grid is refused."""
    if token_grid is None or list(token_grid) == [patch_grid, patch_grid]:
        return None
    h, w = (int(v) for v in token_grid)
    if h > patch_grid or w > patch_grid:
        raise ConfigError(f"image.token_grid {[h, w]} is larger than the tower's {patch_grid}x{patch_grid} patch grid; "
                          "pooling only shrinks, give at most the patch grid")
    return [h, w]


def check_fit_grid(codebook: Path, pooled: list[int] | None) -> None:
    """Refuse a codebook whose fit report (`<codebook>.report.json` from `uti codebook fit`, when present) says
    it was fit on features pooled to another grid than the space quantises (absent in both: no pooling)."""
    report = Path(f"{codebook}.report.json")
    if not report.is_file():
        return
    fitted = read_json_file(report, 1 << 20, ConfigError, "codebook fit report")
    fitted = fitted.get("token_grid") if isinstance(fitted, dict) else None
    if fitted != pooled:
        def say(grid: Any) -> str:
            return "unpooled patch features" if grid is None else f"features pooled to {str(grid)[:40]}"

        raise ConfigError(f"codebook {codebook.name} was fit on {say(fitted)} but the space quantises {say(pooled)}; "
                          "re-fit it with `uti codebook fit --token-grid` matching image.token_grid")
