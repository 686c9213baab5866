"""Codebook: quantize against a slow exact nearest neighbour, fit, save/load, health report."""

from __future__ import annotations

import pytest
import torch

from uti.errors import TokenRangeError
from uti.hashing import hash_safetensors
from uti.image.vq import Codebook, CodebookError, fit_codebook, health_report


def _slow_nearest(feats, embed, metric):
    """Exact nearest code by an explicit loop in float64."""
    out = []
    for f in feats.double():
        if metric == "cosine":
            sims = [float(torch.dot(f / f.norm(), e / e.norm())) for e in embed.double()]
            out.append(max(range(len(sims)), key=sims.__getitem__))
        else:
            dists = [float(((f - e) ** 2).sum()) for e in embed.double()]
            out.append(min(range(len(dists)), key=dists.__getitem__))
    return torch.tensor(out)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_quantize_matches_exact_nearest(metric):
    g = torch.Generator().manual_seed(0)
    cb = Codebook(torch.randn(37, 12, generator=g), metric)
    feats = torch.randn(3, 50, 12, generator=g) * 2
    codes = cb.quantize(feats)
    assert codes.shape == (3, 50) and codes.dtype == torch.long
    assert torch.equal(codes.reshape(-1), _slow_nearest(feats.reshape(-1, 12), cb.embed, metric))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_quantize_is_exact_between_near_duplicate_codes(metric):
    # 4 codes 2e-3 apart at norm ~40 (as k-means leaves when it splits one tight cluster) among far ones: the
    # matmul score's float32 error (~eps |x||e|) exceeds their distance gaps, the exact distance does not
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 16, generator=g) * 10
    embed = torch.cat([base + 2e-3 * torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g) * 10])
    feats = base + 2e-3 * torch.randn(500, 16, generator=g)
    x, e = feats.double(), embed.double()
    if metric == "cosine":
        x, e = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(e, dim=-1)
    assert torch.equal(Codebook(embed, metric).quantize(feats), torch.cdist(x, e).argmin(-1))


@pytest.mark.parametrize("init_budget", [1 << 26, 8 * 60])  # all vectors / a 60-vector init subset
def test_fit_recovers_clusters_and_is_seeded(init_budget):
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(8, 16, generator=g) * 10
    # noise 0.3, not 0.01: when a random init puts two codes in one cluster that tight, float32 distances cannot
    # separate its points (|x|^2 ~ 1600), so the split never settles and the fixed-point check depends on the seed
    feats = centres.repeat_interleave(40, 0) + 0.3 * torch.randn(320, 16, generator=g)
    a = fit_codebook(feats, 8, iters=30, seed=3, init_budget=init_budget)
    b = fit_codebook(feats, 8, iters=30, seed=3, init_budget=init_budget)
    assert torch.equal(a.embed, b.embed) and a.content_hash() == b.content_hash()
    codes = a.quantize(feats)
    for k in codes.unique():  # Lloyd fixed point: every used code is the mean of its members
        torch.testing.assert_close(a.embed[k], feats[codes == k].mean(0), atol=1e-4, rtol=1e-4)
    assert health_report(a, feats)["mse"] < 0.5 * feats.var(0).mean()
    with pytest.raises(CodebookError, match="at least"):
        fit_codebook(feats[:4], 8)


def test_health_report_counts_dead_codes():
    cb = Codebook(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [50.0, 50.0]]))
    feats = torch.tensor([[0.1, 0.0], [9.0, 0.0], [0.0, 9.5], [0.2, 0.1]])
    r = health_report(cb, feats)
    assert r["dead_codes"] == 1 and r["utilisation"] == 0.75
    p = torch.tensor([0.5, 0.25, 0.25])
    assert r["perplexity"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())))


def test_save_load_hash_and_lookup(tmp_path):
    cb = Codebook(torch.randn(5, 3), "cosine")
    cb.save(tmp_path / "cb.safetensors")
    back = Codebook.load(tmp_path / "cb.safetensors")
    assert torch.equal(back.embed, cb.embed) and back.metric == "cosine"
    assert cb.content_hash() == hash_safetensors(tmp_path / "cb.safetensors")
    assert torch.equal(cb.lookup(torch.tensor([[4, 0]])), cb.embed[[4, 0]][None])
    with pytest.raises(TokenRangeError, match="outside"):
        cb.lookup(torch.tensor([5]))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CodebookError, match="cannot read"):
        Codebook.load(tmp_path / "junk.safetensors")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
