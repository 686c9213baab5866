"""The tiny space's tokenizer: byte-level BPE trained with `tokenizers` on the tiny corpus."""

from __future__ import annotations

from pathlib import Path

from uti.io import atomic_write_text

from .corpus import corpus

__all__ = ["TOKENIZER_SIZE", "make_tiny_tokenizer"]

TOKENIZER_SIZE = 500  # tokens incl. <|endoftext|>


def make_tiny_tokenizer(out_dir: str | Path, seed: int = 0, vocab_size: int = TOKENIZER_SIZE) -> Path:
    """Write `out_dir/tokenizer.json`: byte-level BPE (all 256 bytes + merges) trained on `corpus(seed)`;
    lossless for any Unicode string. Returns the path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    path = Path(out_dir) / "tokenizer.json"
    atomic_write_text(path, tok.to_str(pretty=True))
    return path
