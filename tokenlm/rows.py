"""Frozen-base + new-rows embedding and LM head, and a chunked full-vocabulary cross-entropy.

A grown vocabulary is the base vocabulary `[0, V)` (frozen, never copied, bit-identical) followed by the
token space's new IDs `[V, V + N)` (their own small `nn.Parameter` of shape (N, D)) and padding IDs
`[V + N, total)` that have no parameters at all: they embed to zeros and get `-inf` logits, so they can
never be sampled. Gradients and optimizer state therefore only ever exist for the (N, D) new rows.

`chunked_cross_entropy` computes the full-vocabulary loss a chunk of tokens at a time and forms each
chunk's gradient in the same pass (softmax minus one-hot), so peak memory is one chunk's logits and the
head's large matmul runs once forward and once backward, never a second time for a recompute.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from uti.errors import TokenRangeError
from uti.sequence import IGNORE_INDEX

__all__ = ["GrownEmbedding", "GrownHead", "chunked_cross_entropy"]


class GrownEmbedding(nn.Module):
    """Input embedding over `[0, total)`: base rows from the frozen `base`, new rows from `new_rows`.

    `base` (V, D) is kept as is (same module, same storage) and frozen; `new_rows` is an (N, D)
    Parameter; IDs in `[V + N, total)` (padding) embed to zeros.
    """

    def __init__(self, base: nn.Embedding, new_rows: torch.Tensor, num_padding: int = 0) -> None:
        super().__init__()
        if new_rows.dim() != 2 or new_rows.shape[1] != base.embedding_dim:
            raise ValueError(f"new_rows must be (N, {base.embedding_dim}), got {tuple(new_rows.shape)}")
        self.base = base
        self.base.weight.requires_grad_(False)
        self.new_rows = new_rows if isinstance(new_rows, nn.Parameter) else nn.Parameter(new_rows)
        self.num_padding = int(num_padding)

    @property
    def base_vocab_size(self) -> int:
        return self.base.num_embeddings

    @property
    def num_new(self) -> int:
        return self.new_rows.shape[0]

    @property
    def num_embeddings(self) -> int:
        """Padded total, like `nn.Embedding.num_embeddings`."""
        return self.base_vocab_size + self.num_new + self.num_padding

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    @property
    def weight(self) -> torch.Tensor:
        """The full (total, D) matrix, materialised on demand (for export and inspection, never in forward)."""
        pad = self.new_rows.new_zeros(self.num_padding, self.embedding_dim)
        return torch.cat([self.base.weight, self.new_rows.to(self.base.weight.dtype), pad.to(self.base.weight.dtype)])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids (...,) -> (..., D)
        v = self.base_vocab_size
        is_new = ids >= v
        out = self.base(ids.masked_fill(is_new, 0))
        if self.num_new == 0:
            return out.masked_fill(is_new.unsqueeze(-1), 0.0)
        local = ids - v
        real = is_new & (local < self.num_new)  # padding IDs are new but not real: they embed to zero
        new = F.embedding(local.clamp(0, self.num_new - 1), self.new_rows).to(out.dtype)
        new = new * real.unsqueeze(-1).to(out.dtype)
        return torch.where(is_new.unsqueeze(-1), new, out)

    def extra_repr(self) -> str:
        return f"base={self.base_vocab_size}, new={self.num_new}, padding={self.num_padding}, dim={self.embedding_dim}"


class GrownHead(nn.Module):
    """LM head over `[0, total)`: logits from the frozen base weight, the new rows, and `-inf` for padding.

    `base` is either the base `nn.Linear` head (untied: `new_rows` is then the head's own (N, D) Parameter)
    or the `GrownEmbedding` (tied: the base weight and the new rows are the embedding's own Parameters,
    so one update moves both, exactly as a tied matrix would).
    """

    def __init__(self, base: nn.Linear | GrownEmbedding, new_rows: torch.Tensor | None = None) -> None:
        super().__init__()
        if isinstance(base, GrownEmbedding):
            self.tied = True
            self.base_weight = base.base.weight  # same Parameter object as the embedding's
            self.new_rows = base.new_rows
            self.num_padding = base.num_padding
        else:
            if getattr(base, "bias", None) is not None:
                raise ValueError("GrownHead supports bias-free LM heads only (as in Qwen3)")
            if new_rows is None:
                raise ValueError("an untied head needs its own new_rows")
            self.tied = False
            self.base_weight = base.weight
            self.new_rows = new_rows if isinstance(new_rows, nn.Parameter) else nn.Parameter(new_rows)
            self.num_padding = 0
        self.base_weight.requires_grad_(False)

    def set_padding(self, num_padding: int) -> None:
        self.num_padding = int(num_padding)

    @property
    def base_vocab_size(self) -> int:
        return self.base_weight.shape[0]

    @property
    def num_new(self) -> int:
        return self.new_rows.shape[0]

    @property
    def num_real(self) -> int:
        """IDs with a row (base + new); logits beyond are padding."""
        return self.base_vocab_size + self.num_new

    @property
    def out_features(self) -> int:
        return self.num_real + self.num_padding

    @property
    def in_features(self) -> int:
        return self.base_weight.shape[1]

    @property
    def weight(self) -> torch.Tensor:
        """The full (total, D) matrix with zero padding rows, materialised on demand (export only)."""
        pad = self.base_weight.new_zeros(self.num_padding, self.in_features)
        return torch.cat([self.base_weight, self.new_rows.to(self.base_weight.dtype), pad])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., total)
        parts = [F.linear(hidden, self.base_weight), F.linear(hidden, self.new_rows.to(hidden.dtype))]
        if self.num_padding:
            parts.append(hidden.new_full((*hidden.shape[:-1], self.num_padding), float("-inf")))
        return torch.cat(parts, dim=-1)

    def extra_repr(self) -> str:
        return f"base={self.base_vocab_size}, new={self.num_new}, padding={self.num_padding}, tied={self.tied}"


def _head_weights(head: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(base weight (V, D), new rows (N, D) or None) of a head the fused loss understands, else None."""
    if isinstance(head, GrownHead):
        return head.base_weight, head.new_rows
    if isinstance(head, nn.Linear) and head.bias is None:
        return head.weight, None
    return None


class _FusedLinearCE(torch.autograd.Function):
    """Sum of token cross-entropies of `h @ [w_base; w_new].T`, chunk by chunk, with gradients formed in forward.

    For each chunk the logits (n, V + N) are built, their log-sum-exp gives the loss, and
    `softmax - onehot` (the gradient of the summed loss wrt the logits) is folded straight into the
    gradients of h, w_base and w_new. Backward only scales them by the incoming scalar gradient.
    """

    @staticmethod
    def forward(ctx, h, w_base, w_new, labels, chunk):  # h (M, D), labels (M,)
        need_h, need_b, need_n = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        v = w_base.shape[0]
        gh = torch.zeros_like(h) if need_h else None
        gb = torch.zeros(w_base.shape, dtype=torch.float32, device=h.device) if need_b else None
        gn = torch.zeros(w_new.shape, dtype=torch.float32, device=h.device) if need_n else None
        w_new_c = w_new.to(h.dtype)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, h.shape[0], chunk):
            hc, yc = h[s:s + chunk], labels[s:s + chunk]
            logits = torch.cat([hc @ w_base.T, hc @ w_new_c.T], dim=1).float()  # (n, V+N)
            lse = torch.logsumexp(logits, dim=1)
            total += (lse - logits.gather(1, yc[:, None]).squeeze(1)).sum()
            if need_h or need_b or need_n:
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place
                grad[torch.arange(len(yc), device=h.device), yc] -= 1.0
                grad = grad.to(h.dtype)
                if need_h:
                    gh[s:s + chunk] = grad[:, :v] @ w_base + grad[:, v:] @ w_new_c
                if need_b:
                    gb += grad[:, :v].T.float() @ hc.float()
                if need_n:
                    gn += grad[:, v:].T.float() @ hc.float()
        ctx.save_for_backward(*(t for t in (gh, gb, gn) if t is not None))
        ctx.which = (need_h, need_b, need_n)
        ctx.dtypes = (h.dtype, w_base.dtype, w_new.dtype)
        return total

    @staticmethod
    def backward(ctx, g):
        saved = iter(ctx.saved_tensors)
        need_h, need_b, need_n = ctx.which
        gh = (next(saved) * g).to(ctx.dtypes[0]) if need_h else None
        gb = (next(saved) * g).to(ctx.dtypes[1]) if need_b else None
        gn = (next(saved) * g).to(ctx.dtypes[2]) if need_n else None
        return gh, gb, gn, None, None


def _generic_chunk_loss(head: Callable, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(h).float(), y, reduction="sum")


def chunked_cross_entropy(
    hidden: torch.Tensor,
    head: nn.Module,
    labels: torch.Tensor,
    chunk_tokens: int = 1024,
    shift: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean token cross-entropy over the full vocabulary, never holding more than one chunk's logits.

    hidden (B, T, D) are the final (normed) hidden states, `head` the LM head, labels (B, T) with
    `IGNORE_INDEX` (-100) where no loss is taken. With `shift=True` (Hugging Face causal-LM convention)
    position t predicts labels[t + 1]. Only labelled positions are projected. Returns (mean loss, number
    of labelled tokens); the mean is 0 (still differentiable) when there are none.

    `GrownHead` and bias-free `nn.Linear` heads use a fused pass (gradients formed during the forward, no
    recompute); any other head falls back to activation checkpointing per chunk.
    """
    if chunk_tokens <= 0:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    if shift:
        hidden, labels = hidden[:, :-1], labels[:, 1:]
    h = hidden.reshape(-1, hidden.shape[-1])  # (B*T, D)
    y = labels.reshape(-1).to(h.device)
    keep = y != IGNORE_INDEX
    idx = keep.nonzero().squeeze(1)
    h, y = h.index_select(0, idx), y.index_select(0, idx)  # (M, D), (M,)
    count = torch.tensor(len(y), device=h.device)
    if len(y) == 0:
        return hidden.sum() * 0.0, count
    weights = _head_weights(head)
    num_real = head.num_real if isinstance(head, GrownHead) else getattr(head, "out_features", None)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_real is not None and hi >= num_real):
        bad = lo if lo < 0 else hi
        raise TokenRangeError(f"label {bad} is outside the real IDs [0, {num_real}) of the head "
                              "(padding IDs are never targets)")
    if weights is not None:
        w_base, w_new = weights
        if w_new is None:
            w_new = w_base.new_zeros(0, w_base.shape[1])
        total = _FusedLinearCE.apply(h, w_base, w_new, y, chunk_tokens)
    else:
        from torch.utils.checkpoint import checkpoint

        total = sum(checkpoint(_generic_chunk_loss, head, h[s:s + chunk_tokens], y[s:s + chunk_tokens],
                               use_reentrant=False) for s in range(0, len(y), chunk_tokens))
    return total / len(y), count
