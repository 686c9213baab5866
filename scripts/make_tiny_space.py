"""Make the tiny default token space (token_spaces/tiny/) from a fixed seed, bit for bit.

    python scripts/make_tiny_space.py                    # every asset + token_space.json, into token_spaces/tiny
    python scripts/make_tiny_space.py --out DIR          # the same into DIR (to compare with the shipped one)
    python scripts/make_tiny_space.py --only space       # just rebuild token_space.json from the assets

Steps: byte-level BPE tokenizer (`tokenizers`) and tiny Qwen3 base LM, both on the self-contained tiny corpus;
tiny random SigLIP tower; codebook fit on the CC0 test panoramas; tiny random EnCodec; then `uti space build`
over space.yaml. Every asset is safetensors/JSON; the space pins each by content hash. The makers live in
scripts/tiny_assets/ and read nothing outside the repository.

Bits do not depend on the machine's core count: every step runs on one thread, in its own process, with
the CPU code paths fixed (`STEP_ENV`, read when torch and MKL load). The codebook's features went through
MKL's AVX-512 kernels, so a CPU with AVX-512 reproduces the shipped codebook; the base LM's 400 float32 steps
run with MKL's CPU-independent "compatible" kernels and torch's AVX2 ones, so any x86 CPU with AVX2 does.
The tokenizer, tower and EnCodec do not depend on the CPU (see tiny_assets/encodec.py).
tests/test_tiny_assets.py compares the output with the shipped files (the LM: all but the 400 steps).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "token_spaces" / "tiny"
SEED = 0
BASE_VOCAB = 512  # the base LM's config.vocab_size: larger than the tokenizer, like Qwen3's (space.yaml)
STEPS = ("tokenizer", "vision", "audio", "codebook", "lm", "space")
#: The numeric mode of each step's process (read when torch and MKL load); steps not named: COMPATIBLE_MKL.
COMPATIBLE_MKL = {"MKL_CBWR": "COMPATIBLE"}
STEP_ENV = {"codebook": {"MKL_CBWR": "AVX512"}, "lm": {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "avx2"}}


def run_step(step: str, out: Path) -> None:
    """Make one asset into `out` in this process (which must already run in the step's mode, see make)."""
    import torch
    from transformers.utils import logging as hf_logging

    import tiny_assets as tiny

    hf_logging.disable_progress_bar()  # no "Writing model shards" bars between the step lines
    torch.set_num_threads(1)  # float reductions then do not depend on the machine's core count
    if step == "tokenizer":
        print("tokenizer:", tiny.make_tiny_tokenizer(out, SEED))
    elif step == "vision":
        print("vision tower:", tiny.make_tiny_vision_tower(out / "vision_tower", SEED))
    elif step == "codebook":
        print("codebook:", tiny.make_tiny_codebook(out, SEED))  # K=64 on the CC0 panoramas, tile 64
    elif step == "audio":
        print("audio codec:", tiny.make_tiny_encodec(out / "encodec", SEED))
    elif step == "lm":
        print("base LM:", tiny.make_tiny_lm(out / "lm", out / "tokenizer.json", seed=SEED, vocab_size=BASE_VOCAB))
    elif step == "space":
        from uti.build import build_space_file

        if out.resolve() != SHIPPED.resolve():
            shutil.copyfile(SHIPPED / "space.yaml", out / "space.yaml")
        space = build_space_file(out / "space.yaml", out / "token_space.json")
        print(f"space: {space.path} hash {space.hash} total {space.total}")


def make(out: Path, steps: tuple[str, ...] = STEPS) -> None:
    """Run `steps` in STEPS order into `out`, consecutive steps of one numeric mode in one child process;
    each step reads only what earlier steps wrote into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    groups: list[list[str]] = []
    for step in (s for s in STEPS if s in steps):
        if groups and STEP_ENV.get(groups[-1][0], COMPATIBLE_MKL) == STEP_ENV.get(step, COMPATIBLE_MKL):
            groups[-1].append(step)
        else:
            groups.append([step])
    for group in groups:
        env = {**os.environ, **STEP_ENV.get(group[0], COMPATIBLE_MKL)}
        args = [arg for step in group for arg in ("--step", step)]
        subprocess.run([sys.executable, __file__, "--out", str(out), *args], env=env, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=STEPS, action="append", help="run only this step (repeatable)")
    ap.add_argument("--out", type=Path, default=SHIPPED, help="output folder (default: token_spaces/tiny)")
    ap.add_argument("--step", choices=STEPS, action="append", help=argparse.SUPPRESS)  # internal: in this process
    args = ap.parse_args()
    if args.step:
        sys.path.insert(0, str(REPO))  # the uti package of this checkout, also when it is not installed
        for step in args.step:
            run_step(step, args.out)
    else:
        try:
            make(args.out, tuple(args.only or STEPS))
        except subprocess.CalledProcessError as err:
            sys.exit(f"error: step failed with exit code {err.returncode} (see above)")


if __name__ == "__main__":
    main()
