"""The tiny default base LM: a small Qwen3-architecture model pretrained from a fixed seed on the tiny corpus.

`make_tiny_lm(out_dir, tokenizer_path, seed, steps)` builds a Qwen3 config (hidden 128, 4 layers, 4 heads,
2 KV heads, tied embeddings), trains it for `steps` AdamW steps of next-token prediction over the corpus
with the toolkit's one training loop (`tokenlm.trainer.train_loop`; a minute or two on a laptop CPU) and
writes it with `save_pretrained` (safetensors) so that `AutoModelForCausalLM.from_pretrained(out_dir)` loads
it. Its text is not noise: it learns the corpus'
English well enough that a caption scores far better than shuffled words.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from tokenlm.trainer import LoopConfig, train_loop
from uti.errors import UTIError
from uti.hashing import hash_json
from uti.io import atomic_write_json

from .corpus import corpus
from .hf import unstamp

__all__ = ["tiny_qwen3_config", "TinyLMTask", "make_tiny_lm"]


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


class TinyLMTask:
    """Next-token prediction over fixed corpus chunks, as a `tokenlm.trainer.Task`: a fresh seeded tiny Qwen3,
    no eval data, `save_pretrained` checkpoints (without the transformers version stamp)."""

    error = UTIError
    manifest = "config.json"
    artifacts = r"config\.json|model\.safetensors|generation_config\.json|tiny_lm_maker\.json"

    def __init__(self, chunks: torch.Tensor, vocab_size: int, seed: int, corpus_hash: str) -> None:
        self.chunks, self.vocab_size, self.seed, self.corpus_hash = chunks, vocab_size, seed, corpus_hash  # [n, T]

    def num_examples(self) -> int:
        return len(self.chunks)

    def facts(self) -> dict[str, Any]:
        return {"corpus_hash": self.corpus_hash, "chunks": list(self.chunks.shape), "vocab_size": self.vocab_size}

    def build(self, resume_from: Path | None) -> torch.nn.Module:
        """The tiny Qwen3 from `seed` (the maker always starts fresh: `resume_from` is None)."""
        from transformers import Qwen3ForCausalLM

        torch.manual_seed(self.seed)
        model = Qwen3ForCausalLM(tiny_qwen3_config(self.vocab_size))
        model.train()
        return model

    def batch(self, indices: list[int]) -> torch.Tensor:
        return self.chunks[indices]  # [B, T]

    def loss(self, model: Any, batch: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, int]:
        batch = batch.to(device)
        count = batch[:, 1:].numel()  # every position but the first is a target (token ids are never -100)
        return model(input_ids=batch, labels=batch).loss * count, count

    def evaluate(self, model: Any, acc: Any) -> None:
        return None

    def save(self, model: torch.nn.Module, folder: Path, final_eval: dict[str, float] | None) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        unstamp(folder)

    def summary(self) -> dict[str, Any]:
        return {}


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

    Training is `tokenlm.trainer.train_loop` on one CPU process: AdamW (betas 0.9/0.95, weight decay 0.01),
    gradients clipped at 1, linear warmup over `steps // 20` steps then cosine down to 0, each step a batch
    of `batch_size` corpus chunks of `seq_len` tokens drawn without replacement (seeded per-epoch permutations).
    The loop runs in a temporary folder beside `out_dir`; only the model files move into `out_dir`.
    vocab_size: the model's `config.vocab_size` (the space's base vocabulary; defaults to the tokenizer's
    size and must not be smaller). Returns a summary (first/last loss, parameters, corpus hash) that is
    also written to `out_dir/tiny_lm_maker.json`.
    """
    tok = Tokenizer.from_file(str(tokenizer_path))
    vocab_size = vocab_size or tok.get_vocab_size()
    if vocab_size < tok.get_vocab_size():
        raise ValueError(f"vocab_size {vocab_size} < tokenizer size {tok.get_vocab_size()}")
    docs = corpus(seed)
    stream = _token_stream(tok, docs)  # [N]
    n_chunks = (len(stream) - 1) // seq_len
    chunks = stream[: n_chunks * seq_len].view(n_chunks, seq_len)  # [n_chunks, T]
    task = TinyLMTask(chunks, vocab_size, seed, hash_json(docs))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tiny-lm-", dir=out_dir.parent) as tmp:
        cfg = LoopConfig(out=tmp, steps=steps, batch_size=batch_size, lr=lr, warmup_steps=max(1, steps // 20),
                         min_lr_ratio=0.0, weight_decay=0.01, betas=(0.9, 0.95), max_grad_norm=1.0, seed=seed,
                         overwrite=True, progress=progress, device="cpu", desc="pretrain tiny LM")
        result = train_loop(task, cfg)
        for path in Path(tmp).iterdir():
            if path.is_file() and re.fullmatch(task.artifacts, path.name):
                os.replace(path, out_dir / path.name)  # same file system: each file appears whole
    losses = result.losses
    summary = {
        "seed": seed, "steps": steps, "vocab_size": vocab_size, "corpus_tokens": int(len(stream)),
        "corpus_hash": task.corpus_hash, "first_loss": losses[0], "last_loss": sum(losses[-20:]) / min(20, steps),
        "parameters": result.trainable_params,
    }
    atomic_write_json(out_dir / "tiny_lm_maker.json", summary)
    return summary
