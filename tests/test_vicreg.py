"""VICReg terms against a direct numpy formula, weights, gradients and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from connectors.errors import ConnectorError
from connectors.vicreg import vicreg


def _slow(a: np.ndarray, b: np.ndarray, eps: float) -> tuple[float, float, float]:
    """The textbook definition with explicit loops over dimensions (float64)."""
    n, d = a.shape
    inv = float(np.mean((a - b) ** 2))
    var = cov = 0.0
    for z in (a, b):
        zc = z - z.mean(axis=0)
        var += np.mean([max(0.0, 1.0 - np.sqrt(np.sum(zc[:, j] ** 2) / (n - 1) + eps)) for j in range(d)])
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov += (np.sum(zc[:, i] * zc[:, j]) / (n - 1)) ** 2 / d
    return inv, var, cov


@pytest.mark.parametrize("n, d, scale", [(8, 5, 0.3), (32, 16, 1.5), (2, 3, 0.8)])
def test_terms_match_direct_formula(n: int, d: int, scale: float) -> None:
    rng = np.random.default_rng(n * d)
    a = rng.normal(size=(n, d)) * scale
    b = a + rng.normal(size=(n, d)) * 0.2
    b[:, 0] *= 3.0  # one dimension above unit std: its variance hinge is zero
    total, terms = vicreg(torch.tensor(a), torch.tensor(b), eps=1e-4)
    inv, var, cov = _slow(a, b, 1e-4)
    assert terms["invariance"].item() == pytest.approx(inv, rel=1e-10)
    assert terms["variance"].item() == pytest.approx(var, rel=1e-10)
    assert terms["covariance"].item() == pytest.approx(cov, rel=1e-10)
    assert total.item() == pytest.approx(25 * inv + 25 * var + cov, rel=1e-10)


def test_weights_configurable() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    _, t = vicreg(a, b)
    total, _ = vicreg(a, b, inv=1.0, var=0.0, cov=2.0)
    assert total.item() == pytest.approx(t["invariance"].item() + 2 * t["covariance"].item(), rel=1e-6)


def test_gradients_finite_even_for_collapsed_inputs() -> None:
    a = torch.zeros(8, 4, requires_grad=True)  # collapsed: std 0, the eps keeps sqrt differentiable
    b = torch.randn(8, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    total, _ = vicreg(a, b)
    total.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all() and a.grad.abs().sum() > 0


@pytest.mark.parametrize("sa, sb", [((8, 4), (8, 5)), ((1, 4), (1, 4)), ((8,), (8,)), ((2, 3, 4), (2, 3, 4))])
def test_bad_shapes(sa, sb) -> None:
    with pytest.raises(ConnectorError, match="vicreg needs"):
        vicreg(torch.zeros(sa), torch.zeros(sb))
