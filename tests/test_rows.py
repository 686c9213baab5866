"""Grown embedding/head, chunked cross-entropy, vocabulary growth and training stages (tiny random Qwen3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenlm.model import (
    ChunkedLossLM,
    GrowthError,
    StageError,
    apply_stage,
    grow_model,
    trainable_row_params,
    trained_parameter_names,
)
from tokenlm.rows import GrownEmbedding, GrownHead, chunked_cross_entropy
from uti.testing import tiny_qwen3, tiny_space
from uti.errors import TokenRangeError, UTIError


@pytest.fixture(scope="module")
def space():
    return tiny_space()


def _full_matrix(head: GrownHead) -> torch.Tensor:
    return torch.cat([head.base_weight, head.new_rows])


@pytest.mark.parametrize("tied", [True, False])
def test_chunked_ce_matches_full_logits_values_and_grads(tied, space):
    torch.manual_seed(0)
    model = grow_model(tiny_qwen3(tied=tied), space)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    real = space.ranges["padding"].start
    hidden = torch.randn(3, 11, 64, requires_grad=True)
    labels = torch.randint(0, real, (3, 11))
    labels[0, :5] = -100
    labels[2, 7] = -100
    loss, count = chunked_cross_entropy(hidden, head, labels, chunk_tokens=4)
    grads = torch.autograd.grad(loss, [hidden, head.new_rows])

    hidden2 = hidden.detach().clone().requires_grad_(True)
    logits = hidden2[:, :-1] @ _full_matrix(head).T  # reference: the whole (B, T, V+N) logits at once
    ref = F.cross_entropy(logits.reshape(-1, real), labels[:, 1:].reshape(-1), ignore_index=-100)
    ref_grads = torch.autograd.grad(ref, [hidden2, head.new_rows])
    assert count.item() == int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    assert emb.base.weight.grad is None and head.base_weight.grad is None


def test_chunked_ce_full_stage_grads_base_weight_and_plain_linear():
    torch.manual_seed(1)
    lin = torch.nn.Linear(8, 20, bias=False)
    h = torch.randn(2, 9, 8)
    y = torch.randint(0, 20, (2, 9))
    loss, _ = chunked_cross_entropy(h, lin, y, chunk_tokens=5)
    (g,) = torch.autograd.grad(loss, [lin.weight])
    ref = F.cross_entropy(lin(h[:, :-1]).reshape(-1, 20), y[:, 1:].reshape(-1))
    (rg,) = torch.autograd.grad(ref, [lin.weight])
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(g, rg, rtol=1e-4, atol=1e-6)
    with pytest.raises(TokenRangeError):
        chunked_cross_entropy(h, lin, torch.full((2, 9), 25), chunk_tokens=5)


def test_chunked_loss_lm_matches_transformers_loss(space):
    model = grow_model(tiny_qwen3(tied=False), space)
    ids = torch.randint(0, space.ranges["padding"].start, (2, 12))
    loss, _ = ChunkedLossLM(model, chunk_tokens=5)(ids, ids)
    torch.testing.assert_close(loss, model(ids, labels=ids).loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tied", [True, False])
def test_base_rows_bit_identical_after_training(tied, space):
    model = tiny_qwen3(tied=tied)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model = grow_model(model, space)
    rows = trainable_row_params(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, space.ranges["padding"].start, (2, 10))
    start = {k: p.detach().clone() for k, p in rows.items()}
    for _ in range(2):
        loss, _ = ChunkedLossLM(model)(ids, ids)
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    base_key = {"model.embed_tokens.weight": "model.embed_tokens.base.weight",
                "lm_head.weight": "model.embed_tokens.base.weight" if tied else "lm_head.base_weight"}
    for k, v in before.items():
        assert torch.equal(after[base_key.get(k, k)], v), k
    assert all(not torch.equal(p, start[k]) for k, p in rows.items())  # the rows did move
    state = [s for s in opt.state.values() if s]
    assert sum(s["exp_avg"].numel() for s in state) == sum(p.numel() for p in rows.values())


def test_embedding_and_head_match_full_matrix_and_padding_is_never_sampled(space):
    model = grow_model(tiny_qwen3(), space)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    ids = torch.arange(space.total).reshape(5, -1)
    full = emb.weight
    assert full.shape == (space.total, 64)
    torch.testing.assert_close(emb(ids), F.embedding(ids, full))
    h = torch.randn(4, 64)
    logits = head(h)
    pad = space.ranges["padding"]
    assert logits.shape == (4, space.total) and torch.isneginf(logits[:, pad.start:]).all()
    torch.testing.assert_close(logits[:, :pad.start], h @ full[:pad.start].T)
    torch.manual_seed(0)
    out = model.generate(torch.randint(0, 500, (3, 4)), max_new_tokens=30, do_sample=True, temperature=5.0,
                         pad_token_id=0)
    assert int(out.max()) < pad.start


def test_growth_refuses_wrong_base_and_unknown_options(space):
    with pytest.raises(GrowthError, match="base_vocab_size 512"):
        grow_model(tiny_qwen3(vocab=640), space)
    with pytest.raises(GrowthError, match="unknown init"):
        grow_model(tiny_qwen3(), space, init="hf_mean")
    model = grow_model(tiny_qwen3(), space)
    with pytest.raises(GrowthError, match="already grown"):
        grow_model(model, space)
    with pytest.raises(StageError, match="expected one of rows, lora, full") as err:
        apply_stage(model, "adapter")
    assert isinstance(err.value, UTIError) and "\n" not in str(err.value)


def test_stages_set_requires_grad(space):
    model = grow_model(tiny_qwen3(tied=False), space)
    assert trained_parameter_names(apply_stage(model, "rows")) == ["lm_head.new_rows", "model.embed_tokens.new_rows"]
    assert len(trained_parameter_names(apply_stage(model, "full"))) == len(list(model.parameters()))
    peft_model = apply_stage(model, "lora")
    names = trained_parameter_names(peft_model)
    assert any("lora_A" in n for n in names) and sum("new_rows" in n for n in names) == 2
    assert all("lora_" in n or "new_rows" in n for n in names)


def test_new_row_inits_are_distinct_and_codebook_init_keeps_geometry(space):
    model = grow_model(tiny_qwen3(), space)
    emb = model.get_input_embeddings()
    rows = emb.new_rows.detach()
    base_norm = emb.base.weight.norm(dim=1).median()
    torch.testing.assert_close(rows.norm(dim=1), base_norm.expand(len(rows)), rtol=1e-4, atol=1e-5)
    d = torch.cdist(rows, rows)
    assert d[~torch.eye(len(rows), dtype=torch.bool)].min() > 0.1 * base_norm  # no near-identical copies

    torch.manual_seed(3)
    codebook = torch.randn(64, 16) * 3
    model = grow_model(tiny_qwen3(), space, init="codebook", codebook=codebook)
    img = space.ranges["image"]
    v = space.ranges["text"].stop
    img_rows = model.get_input_embeddings().new_rows.detach()[img.start - v:img.stop - v]
    a, b = torch.pdist(codebook), torch.pdist(img_rows)
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert corr > 0.8, corr  # nearby codes start as nearby rows
    with pytest.raises(GrowthError, match="expected \\(64, dim\\)"):
        grow_model(tiny_qwen3(), space, init="codebook", codebook=torch.randn(10, 16))


def test_grown_modules_are_the_documented_types(space):
    model = grow_model(tiny_qwen3(), space)
    assert isinstance(model.get_input_embeddings(), GrownEmbedding)
    head = model.get_output_embeddings()
    assert isinstance(head, GrownHead) and head.tied and head.new_rows is model.get_input_embeddings().new_rows
    assert model.config.vocab_size == space.total
