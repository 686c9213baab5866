"""scripts/make_tiny_space.py makes the shipped tiny space (token_spaces/tiny/) bit for bit.

The makers run into a temporary folder and every file they write is compared byte for byte with the shipped
one (and safetensors also by `hash_safetensors`, the hash the space pins), so a change of seed, library
default or input shows up here instead of as a space whose assets no longer match their pins. The base LM's
400 pretraining steps take minutes, so its test runs the maker for two steps and checks everything that does
not depend on the training: the corpus (hash, token count), the config files and the parameter count. The
weights themselves: `python scripts/make_tiny_space.py --out DIR --only tokenizer --only lm` and compare
`hash_safetensors(DIR/lm)` with the shipped one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tiny_assets import make_tiny_lm
from uti.hashing import hash_safetensors

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "token_spaces" / "tiny"
NOT_LM = ("tokenizer", "vision", "codebook", "audio", "space")
FILES = ["tokenizer.json", "vision_tower/config.json", "vision_tower/model.safetensors",
         "vision_tower/preprocessor_config.json", "codebook.safetensors", "codebook.safetensors.report.json",
         "encodec/config.json", "encodec/model.safetensors", "token_space.json"]
# The codebook is a mean of tower features that went through MKL's AVX-512 kernels (scripts/make_tiny_space.py):
# other CPUs round them differently in the last bits, and the space file pins the codebook's hash.
NEEDS_AVX512 = {"codebook.safetensors", "codebook.safetensors.report.json", "token_space.json"}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """The maker's output, run as users run it (its own process: it sets MKL's mode before torch loads)."""
    out = tmp_path_factory.mktemp("tiny")
    steps = [arg for step in NOT_LM for arg in ("--only", step)]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_tiny_space.py"), "--out", str(out), *steps],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_every_shipped_asset_is_checked():
    shipped = sorted(str(p.relative_to(SHIPPED)) for p in SHIPPED.rglob("*") if p.is_file())
    lm = [f"lm/{name}" for name in ("config.json", "generation_config.json", "model.safetensors", "tiny_lm_maker.json")]
    assert shipped == sorted(FILES + lm + ["space.yaml"])


@pytest.mark.slow
@pytest.mark.parametrize("name", FILES)
def test_maker_reproduces_the_shipped_file(made, name):
    if name in NEEDS_AVX512 and torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("the shipped codebook is reproducible only on a CPU with AVX-512")
    ours, shipped = made / name, SHIPPED / name
    if name.endswith(".safetensors"):
        assert hash_safetensors(ours) == hash_safetensors(shipped), f"{name}: tensors differ from the shipped ones"
        assert _safetensors_parts(ours) == _safetensors_parts(shipped), f"{name}: header or data bytes differ"
    else:
        assert ours.read_bytes() == shipped.read_bytes(), f"{name}: bytes differ from the shipped file"


def _safetensors_parts(path: Path) -> tuple[dict, bytes]:
    """(header as a dict, data bytes): the file's bytes up to the order of keys in `__metadata__`, which
    safetensors writes from a Rust HashMap, so it changes from process to process."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


@pytest.mark.slow
def test_lm_maker_reproduces_the_shipped_setup(made, tmp_path):
    """Same corpus, config files and size as the shipped LM (the weights need the full 400 steps)."""
    shipped = json.loads((SHIPPED / "lm" / "tiny_lm_maker.json").read_text())
    summary = make_tiny_lm(tmp_path / "lm", made / "tokenizer.json", seed=shipped["seed"], steps=2,
                           vocab_size=shipped["vocab_size"], progress=False)
    for key in ("seed", "vocab_size", "corpus_tokens", "corpus_hash", "parameters"):
        assert summary[key] == shipped[key], key
    for name in ("config.json", "generation_config.json"):
        assert (tmp_path / "lm" / name).read_bytes() == (SHIPPED / "lm" / name).read_bytes(), name
