"""VICReg (variance-invariance-covariance regularisation, Bardes et al. 2022) between paired embeddings.

Used on the features of tile patches that look in the same direction (`uti.image.overlap.overlap_pairs`):
row i of `z_a` and row i of `z_b` are two views of one direction. For z of shape (N, D):

    invariance = mean((z_a - z_b) ** 2)                                   # MSE over all N * D entries
    variance   = sum over z in (z_a, z_b) of mean_d relu(1 - sqrt(var_d(z) + eps))   # unbiased var over N
    covariance = sum over z in (z_a, z_b) of sum_{i != j} C(z)_ij ** 2 / D,  C = (z - mean)^T (z - mean) / (N - 1)
    total      = inv * invariance + var * variance + cov * covariance    # weights 25 / 25 / 1 by default

The two branches' variance and covariance terms are summed (the reference code averages them, i.e. halves
them; with the default weights that only rescales those terms).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConnectorError

__all__ = ["vicreg"]


def vicreg(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    inv: float = 25.0,
    var: float = 25.0,
    cov: float = 1.0,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted VICReg loss of paired rows of z_a, z_b (N, D), N >= 2; returns (total, unweighted terms).

    The terms dict has "invariance", "variance" and "covariance" (scalar tensors, in the graph)."""
    if z_a.ndim != 2 or z_a.shape != z_b.shape or z_a.shape[0] < 2:
        raise ConnectorError(
            f"vicreg needs two (N, D) tensors of the same shape with N >= 2 pairs, got {tuple(z_a.shape)}"
            f" and {tuple(z_b.shape)}; pass the paired patch features of overlapping tiles"
        )
    terms = {
        "invariance": F.mse_loss(z_a, z_b),
        "variance": _variance(z_a, eps) + _variance(z_b, eps),
        "covariance": _covariance(z_a) + _covariance(z_b),
    }
    total = inv * terms["invariance"] + var * terms["variance"] + cov * terms["covariance"]
    return total, terms


def _variance(z: torch.Tensor, eps: float) -> torch.Tensor:
    """mean over dims of relu(1 - std), std = sqrt(unbiased variance over the batch + eps)."""
    return F.relu(1.0 - torch.sqrt(z.var(dim=0) + eps)).mean()


def _covariance(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal entries of the (D, D) covariance over the batch, divided by D."""
    n, d = z.shape
    zc = z - z.mean(dim=0)
    c = zc.T @ zc / (n - 1)  # (D, D)
    return (c.pow(2).sum() - c.diagonal().pow(2).sum()) / d
