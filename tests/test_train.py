"""Training with Accelerate: config checks, exact resume, two CPU processes == one, stages, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tokenlm.train import TrainConfig, global_batch_indices, train
from uti.config import from_dict
from uti.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import REPO, make_setup  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return make_setup(tmp_path_factory.mktemp("train"))


def _cfg(setup: dict, out: Path, **kw) -> TrainConfig:
    base = dict(out=str(out), data=(setup["data"],), space=setup["space"], base=setup["base"], steps=4,
                batch_size=2, max_len=64, tasks=("text", "i2t"), lr=1e-2, progress=False)
    return TrainConfig(**{**base, **kw})


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ConfigError, match="unknown key.*valid keys"):
        from_dict(TrainConfig, {"out": "x", "data": ["d"], "learning_rate": 1})
    with pytest.raises(ConfigError, match="stage"):
        from_dict(TrainConfig, {"out": "x", "data": ["d"], "stage": "embeddings"})
    with pytest.raises(ConfigError, match="stop_at"):
        TrainConfig(out="x", data=("d",), steps=3, stop_at=5)


def test_global_batches_walk_epoch_permutations():
    n, size = 5, 3
    stream = [i for s in range(5) for i in global_batch_indices(s, n, size, seed=1)]  # 15 = 3 epochs
    for e in range(3):
        assert sorted(stream[e * n:(e + 1) * n]) == list(range(n))
    assert global_batch_indices(2, n, size, 1) == global_batch_indices(2, n, size, 1)
    assert stream[:n] != [i for s in range(2) for i in global_batch_indices(s, n, size, 2)][:n]


def test_resume_reproduces_uninterrupted_losses(setup, tmp_path):
    full = train(_cfg(setup, tmp_path / "full", eval_fraction=0.2, eval_every=2))
    part = train(_cfg(setup, tmp_path / "cut", eval_fraction=0.2, eval_every=2, stop_at=2))
    assert len(part.losses) == 2 and not (tmp_path / "cut" / "trainable_rows.safetensors").exists()
    resumed = train(_cfg(setup, tmp_path / "cut", eval_fraction=0.2, eval_every=2, resume=True))
    assert resumed.resumed_from == 2
    assert resumed.losses == full.losses  # exactly, not approximately
    assert resumed.eval_losses == full.eval_losses
    a = load_file(str(tmp_path / "full" / "trainable_rows.safetensors"))
    b = load_file(str(tmp_path / "cut" / "trainable_rows.safetensors"))
    assert torch.equal(a["embed_rows"], b["embed_rows"])
    assert full.losses[-1] < full.losses[0]
    # resuming with another global batch is refused
    with pytest.raises(Exception, match="global_batch"):
        train(_cfg(setup, tmp_path / "cut", batch_size=3, resume=True, steps=4))


def test_rows_stage_leaves_base_bit_identical(setup, tmp_path):
    from tokenlm.checkpoint import load_rows
    from tokenlm.model import load_base

    train(_cfg(setup, tmp_path / "o", steps=2))
    before = load_base(setup["base"]).get_input_embeddings().weight.detach().clone()
    model = load_rows(load_base(setup["base"]), tmp_path / "o")
    emb = model.get_input_embeddings()
    assert torch.equal(emb.base.weight, before)
    manifest = json.loads((tmp_path / "o" / "trainable_rows.json").read_text())
    assert manifest["stage"] == "rows" and set(manifest["tensors"]) == {"embed_rows"}


def test_two_cpu_processes_match_one(setup, tmp_path):
    """torchrun --nproc_per_node 2 (gloo, DDP) with batch 1 each == one process with batch 2 (same global batch)."""
    args = ["--data", setup["data"], "--space", setup["space"], "--base", setup["base"], "--steps", "3",
            "--max-len", "64", "--task", "text", "--task", "i2t", "--lr", "0.01", "--grad-accum", "2", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tokenlm.train_cli", *args, "--out", str(tmp_path / "ddp"), "--batch-size", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ddp["processes"] == 2
    one = train(_cfg(setup, tmp_path / "one", steps=3, batch_size=2, grad_accum=2))
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(one.losses), rtol=1e-5, atol=1e-6)
    a = load_file(str(tmp_path / "ddp" / "trainable_rows.safetensors"))["embed_rows"]
    b = load_file(str(tmp_path / "one" / "trainable_rows.safetensors"))["embed_rows"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lora_stage_trains_adapters_and_rows(setup, tmp_path):
    res = train(_cfg(setup, tmp_path / "lora", steps=2, stage="lora"))
    manifest = json.loads((tmp_path / "lora" / "trainable_rows.json").read_text())
    assert manifest["stage"] == "lora" and any("lora_" in n for n in manifest["tensors"])
    assert len(res.losses) == 2


def test_cli_bad_config_is_one_line_exit_2(setup, tmp_path):
    from click.testing import CliRunner

    from tokenlm.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("learning_rate: 0.1\n")
    res = CliRunner().invoke(main, ["train", "--config", str(cfg), "--data", setup["data"], "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "unknown key(s) learning_rate" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"),
                                    "--space", setup["space"], "--base", setup["base"]])
    assert res.exit_code == 2 and "not found" in res.output


def test_make_tiny_lm_writes_a_loadable_qwen3(tmp_path):
    from transformers import AutoModelForCausalLM

    from tiny_assets import make_tiny_lm

    summary = make_tiny_lm(tmp_path / "lm", REPO / "token_spaces" / "tiny" / "tokenizer.json", seed=0, steps=3,
                           vocab_size=512, batch_size=2, seq_len=32, progress=False)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    assert model.config.model_type == "qwen3" and model.config.vocab_size == 512 and model.config.tie_word_embeddings
    assert (tmp_path / "lm" / "model.safetensors").is_file() and summary["steps"] == 3
    assert torch.isfinite(torch.tensor(summary["last_loss"]))
