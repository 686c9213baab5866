"""Make the tiny default token space (token_spaces/tiny/) from a fixed seed, bit for bit.

    python scripts/make_tiny_space.py                    # every asset + token_space.json, into token_spaces/tiny
    python scripts/make_tiny_space.py --out DIR          # the same into DIR (to compare with the shipped one)
    python scripts/make_tiny_space.py --only space       # just rebuild token_space.json from the assets

Steps: byte-level BPE tokenizer (`tokenizers`) and tiny Qwen3 base LM, both on the self-contained tiny corpus;
tiny random SigLIP tower; codebook fit on the CC0 test panoramas; tiny random EnCodec; then `uti space build`
over space.yaml. Every asset is safetensors/JSON; the space pins each by content hash. The makers live in
scripts/tiny_assets/ and read nothing outside the repository; torch runs on one thread, so the thread count
of the machine does not change a bit (tests/test_tiny_assets.py checks the output against the shipped files).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the uti package of this checkout, also when it is not installed

from tiny_assets import (  # noqa: E402
    make_tiny_codebook,
    make_tiny_encodec,
    make_tiny_lm,
    make_tiny_tokenizer,
    make_tiny_vision_tower,
)

SHIPPED = REPO / "token_spaces" / "tiny"
SEED = 0
BASE_VOCAB = 512  # the base LM's config.vocab_size: larger than the tokenizer, like Qwen3's (space.yaml)
STEPS = ("tokenizer", "vision", "codebook", "audio", "lm", "space")


def make(out: Path, steps: tuple[str, ...] = STEPS) -> None:
    """Run `steps` (in STEPS order) into `out`; each step reads only what earlier steps wrote into `out`."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bars between the step lines
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float reductions then do not depend on the machine's core count
    try:
        if "tokenizer" in steps:
            print("tokenizer:", make_tiny_tokenizer(out, SEED))
        if "vision" in steps:
            print("vision tower:", make_tiny_vision_tower(out / "vision_tower", SEED))
        if "codebook" in steps:
            print("codebook:", make_tiny_codebook(out, SEED))  # K=64 on the CC0 panoramas, tile 64
        if "audio" in steps:
            print("audio codec:", make_tiny_encodec(out / "encodec", SEED))
        if "lm" in steps:
            print("base LM:", make_tiny_lm(out / "lm", out / "tokenizer.json", seed=SEED, vocab_size=BASE_VOCAB))
        if "space" in steps:
            from uti.build import build_space_file

            if out.resolve() != SHIPPED.resolve():
                shutil.copyfile(SHIPPED / "space.yaml", out / "space.yaml")
            space = build_space_file(out / "space.yaml", out / "token_space.json")
            print(f"space: {space.path} hash {space.hash} total {space.total}")
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=STEPS, action="append", help="run only this step (repeatable)")
    ap.add_argument("--out", type=Path, default=SHIPPED, help="output folder (default: token_spaces/tiny)")
    args = ap.parse_args()
    make(args.out, tuple(args.only or STEPS))


if __name__ == "__main__":
    main()
