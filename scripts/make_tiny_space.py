"""Make the tiny default token space in token_spaces/tiny/ from a fixed seed.

    python scripts/make_tiny_space.py            # everything
    python scripts/make_tiny_space.py --only space   # just rebuild token_space.json from the assets

Steps: byte-level BPE tokenizer (`tokenizers`), tiny SigLIP tower, codebook fit on the CC0 panoramas,
tiny EnCodec, tiny Qwen3 base LM pretrained on the tiny corpus, then `uti space build` over space.yaml.
Every asset is safetensors/JSON; the space pins each by content hash.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

OUT = REPO / "token_spaces" / "tiny"
SEED = 0
TOKENIZER_SIZE = 500  # tokens incl. <|endoftext|>
BASE_VOCAB = 512  # the base LM's config.vocab_size: larger than the tokenizer, like Qwen3's (space.yaml)


def make_tiny_tokenizer(out: Path, vocab_size: int = TOKENIZER_SIZE) -> Path:
    """Byte-level BPE (all 256 bytes + merges) trained on the tiny corpus; lossless for any Unicode string."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    from tokenlm.tiny_corpus import corpus

    tok.train_from_iterator(corpus(SEED), trainer=trainer)
    path = out / "tokenizer.json"
    from uti.io import atomic_write_text

    atomic_write_text(path, tok.to_str(pretty=True))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["tokenizer", "vision", "codebook", "audio", "lm", "space"], action="append")
    args = ap.parse_args()
    steps = args.only or ["tokenizer", "vision", "codebook", "audio", "lm", "space"]
    OUT.mkdir(parents=True, exist_ok=True)
    if "tokenizer" in steps:
        print("tokenizer:", make_tiny_tokenizer(OUT))
    if "vision" in steps:
        from uti.image.vision import make_tiny_vision_tower

        print("vision tower:", make_tiny_vision_tower(OUT / "vision_tower", SEED))
    if "codebook" in steps:
        from uti.image.fit import make_tiny_codebook

        print("codebook:", make_tiny_codebook(OUT, SEED))  # K=64 on the CC0 panoramas, tile 64
    if "audio" in steps:
        from uti.audio.encodec import make_tiny_encodec

        print("audio codec:", make_tiny_encodec(OUT / "encodec", SEED))
    if "lm" in steps:
        from tokenlm.tiny import make_tiny_lm

        print("base LM:", make_tiny_lm(OUT / "lm", OUT / "tokenizer.json", seed=SEED, vocab_size=BASE_VOCAB))
    if "space" in steps:
        from uti.build import build_space_file

        space = build_space_file(OUT / "space.yaml", OUT / "token_space.json")
        print(f"space: {space.path} hash {space.hash} total {space.total}")


if __name__ == "__main__":
    main()
