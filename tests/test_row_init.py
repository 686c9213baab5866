"""New-row initialisation from code vectors: the `projection` (moment-matching) map and its wiring."""

from __future__ import annotations

import pytest
import torch

from tokenlm.model import INITS, GrowthError, _projection_rows, grow_model, growth_info
from uti.testing import tiny_qwen3, tiny_space


@pytest.fixture(scope="module")
def space():
    return tiny_space()


def _anisotropic(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -1.5, d)  # a decaying spectrum, like trained embeddings and codebooks
    return 0.3 + torch.randn(n, d, generator=g) * scales @ torch.linalg.qr(torch.randn(d, d, generator=g))[0]


def _centred_orthonormal(n: int, d: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.linalg.qr(x - x.mean(0))[0]  # (n, d), centred columns, Q.T @ Q = I


def test_projection_matches_the_base_rows_mean_and_leading_covariance():
    w, codes = _anisotropic(300, 32, 0), _anisotropic(64, 16, 1) * 5 + 2
    rows = _projection_rows(w, codes)
    assert rows.shape == (64, 32)
    torch.testing.assert_close(rows.mean(0), w.mean(0), atol=1e-5, rtol=0)
    ev_w = torch.linalg.eigvalsh(torch.cov(w.T.double())).flip(0)  # descending
    ev_rows = torch.linalg.eigvalsh(torch.cov(rows.T.double())).flip(0)
    torch.testing.assert_close(ev_rows[:16], ev_w[:16], rtol=1e-3, atol=1e-7)  # the codes' rank: 16
    assert ev_rows[16:].abs().max() < 1e-6 * ev_w[0]
    # the rows' covariance is w's restricted to w's 16 leading principal axes (not just the same spectrum)
    evals, evecs = torch.linalg.eigh(torch.cov(w.T.double()))
    top = evecs[:, -16:]
    torch.testing.assert_close(torch.cov(rows.T.double()), top @ torch.diag(evals[-16:]) @ top.T, rtol=0, atol=1e-5)


def test_projection_is_a_scaled_rotation_for_white_codes_and_isotropic_rows():
    # codes with identity-like covariance and base rows with sigma^2 I: the map must keep distances proportional
    codes = (_centred_orthonormal(64, 16, 2) * 63 ** 0.5 * 4.0 + 1.0).float()
    w = (_centred_orthonormal(400, 32, 3) * 399 ** 0.5 * 0.05 - 0.2).float()
    rows = _projection_rows(w, codes)
    ratio = torch.pdist(rows.double()) / torch.pdist(codes.double())
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.05 / 4.0), rtol=1e-4, atol=0)


def test_projection_is_deterministic_and_follows_the_codes_not_their_order():
    w, codes = _anisotropic(300, 32, 4), _anisotropic(64, 16, 5)
    rows = _projection_rows(w, codes)
    assert torch.equal(rows, _projection_rows(w.clone(), codes.clone()))
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_projection_rows(w, codes[perm]), rows[perm], atol=1e-5, rtol=1e-4)


def test_projection_of_a_rank_deficient_codebook_adds_no_noise_axes():
    # 64 codes in 16 dims spanning only 5 directions (duplicated and linearly dependent codes, as a k-means
    # codebook with dead codes has): the rows must span 5 directions with w's 5 leading variances, not 16
    g = torch.Generator().manual_seed(7)
    codes = (torch.randn(64, 5, generator=g) * torch.tensor([5.0, 3, 2, 1, 0.5])) @ torch.randn(5, 16, generator=g)
    codes[40:] = codes[:24]
    w = _anisotropic(300, 32, 8)
    rows = _projection_rows(w, codes)
    ev_rows = torch.linalg.eigvalsh(torch.cov(rows.T.double())).flip(0)
    ev_w = torch.linalg.eigvalsh(torch.cov(w.T.double())).flip(0)
    torch.testing.assert_close(ev_rows[:5], ev_w[:5], rtol=1e-3, atol=1e-7)
    assert ev_rows[5:].abs().max() < 1e-6 * ev_w[0]


@pytest.mark.parametrize("tied", [True, False])
def test_grow_model_projection_fills_the_image_rows_from_the_codebook(space, tied):
    codebook = _anisotropic(64, 16, 6)
    model = grow_model(tiny_qwen3(tied=tied), space, init="projection", codebook=codebook)
    assert growth_info(model)["init"] == "projection"
    v, img = space.ranges["text"].stop, space.ranges["image"]
    emb = model.get_input_embeddings()
    got = emb.new_rows.detach()[img.start - v:img.stop - v]
    torch.testing.assert_close(got, _projection_rows(emb.base.weight, codebook))
    mean_noise = grow_model(tiny_qwen3(tied=tied), space, init="mean_noise").get_input_embeddings().new_rows
    outside = torch.ones(emb.new_rows.shape[0], dtype=torch.bool)
    outside[img.start - v:img.stop - v] = False
    torch.testing.assert_close(emb.new_rows.detach()[outside], mean_noise.detach()[outside])  # specials, audio
    if not tied:
        head = model.get_output_embeddings()
        torch.testing.assert_close(head.new_rows.detach()[img.start - v:img.stop - v],
                                   _projection_rows(head.base_weight, codebook))


def test_projection_refuses_bad_codebooks(space):
    with pytest.raises(GrowthError, match="expected \\(64, dim\\)"):
        grow_model(tiny_qwen3(), space, init="projection", codebook=torch.randn(10, 16))
    bad = torch.randn(64, 16)
    bad[3, 2] = float("nan")
    with pytest.raises(GrowthError, match="NaN or infinite"):
        grow_model(tiny_qwen3(), space, init="projection", codebook=bad)
    with pytest.raises(GrowthError, match="init='projection' needs a codec with code vectors"):
        grow_model(tiny_qwen3(), tiny_space(image_codes=None), init="projection")


def test_train_cli_offers_every_init():
    from tokenlm.train_cli import train_command

    opt = next(p for p in train_command.params if p.name == "init")
    assert tuple(opt.type.choices) == INITS
