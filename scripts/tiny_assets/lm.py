"""The tiny default base LM: a small Qwen3-architecture model pretrained from a fixed seed on the tiny corpus.

`make_tiny_lm(out_dir, tokenizer_path, seed, steps)` builds a Qwen3 config (hidden 128, 4 layers, 4 heads,
2 KV heads, tied embeddings), trains it for `steps` AdamW steps on next-token prediction over the corpus
(a minute or two on a laptop CPU) and writes it with `save_pretrained` (safetensors) so that
`AutoModelForCausalLM.from_pretrained(out_dir)` loads it. Its text is not noise: it learns the corpus'
English well enough that a caption scores far better than shuffled words.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tokenizers import Tokenizer

from uti.hashing import hash_json
from uti.io import atomic_write_json

from .corpus import corpus
from .hf import unstamp

__all__ = ["tiny_qwen3_config", "make_tiny_lm"]


def tiny_qwen3_config(vocab_size: int, max_positions: int = 2048):
    """The tiny base LM's `Qwen3Config` (tied head, ~0.8M parameters plus the embedding)."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=max_positions,
        tie_word_embeddings=True, rope_theta=10000.0, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )


def _token_stream(tok: Tokenizer, docs: list[str]) -> torch.Tensor:
    """All documents encoded and joined by `<|endoftext|>` (a newline if the tokenizer lacks it): LongTensor [N]."""
    eot = tok.token_to_id("<|endoftext|>")
    sep = [eot] if eot is not None else tok.encode("\n").ids
    ids: list[int] = []
    for enc in tok.encode_batch(docs):
        ids += enc.ids + sep
    return torch.tensor(ids, dtype=torch.long)


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def make_tiny_lm(
    out_dir: Path,
    tokenizer_path: Path,
    seed: int = 0,
    steps: int = 400,
    vocab_size: int | None = None,
    batch_size: int = 16,
    seq_len: int = 128,
    lr: float = 3e-3,
    progress: bool = True,
) -> dict:
    """Pretrain the tiny Qwen3 on the tiny corpus from `seed` and `save_pretrained` it into `out_dir`.

    vocab_size: the model's `config.vocab_size` (the space's base vocabulary; defaults to the tokenizer's
    size and must not be smaller). Returns a summary (first/last loss, parameters, corpus hash) that is
    also written to `out_dir/tiny_lm_maker.json`.
    """
    from transformers import Qwen3ForCausalLM

    tok = Tokenizer.from_file(str(tokenizer_path))
    vocab_size = vocab_size or tok.get_vocab_size()
    if vocab_size < tok.get_vocab_size():
        raise ValueError(f"vocab_size {vocab_size} < tokenizer size {tok.get_vocab_size()}")
    docs = corpus(seed)
    stream = _token_stream(tok, docs)  # [N]
    n_chunks = (len(stream) - 1) // seq_len
    chunks = stream[: n_chunks * seq_len].view(n_chunks, seq_len)  # [n_chunks, T]

    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(tiny_qwen3_config(vocab_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    from tqdm.auto import tqdm

    for step in tqdm(range(steps), desc="pretrain tiny LM", disable=not progress, mininterval=5):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, warmup=max(1, steps // 20))
        batch = chunks[torch.randint(0, n_chunks, (batch_size,), generator=gen)]  # [B, T]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    unstamp(out_dir)
    summary = {
        "seed": seed, "steps": steps, "vocab_size": vocab_size, "corpus_tokens": int(len(stream)),
        "corpus_hash": hash_json(docs), "first_loss": losses[0], "last_loss": sum(losses[-20:]) / min(20, steps),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    atomic_write_json(out_dir / "tiny_lm_maker.json", summary)
    return summary

