"""Training with Accelerate: config checks, exact resume, two CPU processes == one, stages, CLI errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tokenlm.checkpoint import MANIFEST_FILE, rows_file
from tokenlm.train import TrainConfig, TrainError, train
from tokenlm.trainer import Sampler
from uti.config import from_dict
from uti.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from launch import torchrun_beside  # noqa: E402
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
    stream = [i for s in range(5) for i in Sampler(n, size, seed=1).indices(s)]  # 15 = 3 epochs
    for e in range(3):
        assert sorted(stream[e * n:(e + 1) * n]) == list(range(n))
    assert Sampler(n, size, 1).indices(2) == Sampler(n, size, 1).indices(2)
    assert stream[:n] != [i for s in range(2) for i in Sampler(n, size, 2).indices(s)][:n]


def test_resume_reproduces_uninterrupted_losses(setup, tmp_path):
    full = train(_cfg(setup, tmp_path / "full", eval_fraction=0.2, eval_every=2))
    part = train(_cfg(setup, tmp_path / "cut", eval_fraction=0.2, eval_every=2, stop_at=2))
    assert len(part.losses) == 2 and not (tmp_path / "cut" / MANIFEST_FILE).exists()
    resumed = train(_cfg(setup, tmp_path / "cut", eval_fraction=0.2, eval_every=2, resume=True))
    assert resumed.resumed_from == 2
    assert resumed.losses == full.losses  # exactly, not approximately
    assert resumed.eval_losses == full.eval_losses
    a = load_file(str(rows_file(tmp_path / "full")))
    b = load_file(str(rows_file(tmp_path / "cut")))
    assert torch.equal(a["embed_rows"], b["embed_rows"])
    assert full.losses[-1] < full.losses[0]
    # resuming with another global batch is refused
    with pytest.raises(Exception, match="global_batch"):
        train(_cfg(setup, tmp_path / "cut", eval_fraction=0.2, eval_every=2, batch_size=3, resume=True, steps=4))


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
    one, out = torchrun_beside(["-m", "tokenlm.train_cli", *args, "--out", tmp_path / "ddp", "--batch-size", "1"],
                               lambda: train(_cfg(setup, tmp_path / "one", steps=3, batch_size=2, grad_accum=2)),
                               timeout=300)
    ddp = json.loads(out.strip().splitlines()[-1])
    assert ddp["processes"] == 2
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(one.losses), rtol=1e-5, atol=1e-6)
    a = load_file(str(rows_file(tmp_path / "ddp")))["embed_rows"]
    b = load_file(str(rows_file(tmp_path / "one")))["embed_rows"]
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
    """The maker trains on the shared loop: its first loss is the fresh seeded model's on the Sampler's first
    batch (chunks drawn without replacement), and only the model files and the summary reach `out_dir`."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from tiny_assets import make_tiny_lm
    from tiny_assets.corpus import corpus
    from tiny_assets.lm import TinyLMTask, _token_stream

    tok_path = REPO / "token_spaces" / "tiny" / "tokenizer.json"
    summary = make_tiny_lm(tmp_path / "lm", tok_path, seed=0, steps=3, vocab_size=512, batch_size=2, seq_len=32,
                           progress=False)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    assert model.config.model_type == "qwen3" and model.config.vocab_size == 512 and model.config.tie_word_embeddings
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tiny_lm_maker.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm"]  # the loop's temporary folder is gone
    assert "transformers_version" not in (tmp_path / "lm" / "config.json").read_text()
    assert summary["steps"] == 3 and torch.isfinite(torch.tensor(summary["last_loss"]))
    stream = _token_stream(Tokenizer.from_file(str(tok_path)), corpus(0))  # [N]
    chunks = stream[: (len(stream) - 1) // 32 * 32].view(-1, 32)  # [n, 32]
    task = TinyLMTask(chunks, 512, 0, "")
    first = chunks[Sampler(len(chunks), 2, 0).indices(0)]  # [2, 32]
    with torch.no_grad():
        total, count = task.loss(task.build(None), first, torch.device("cpu"))
    assert summary["first_loss"] == pytest.approx((total / count).item(), rel=1e-6)


def _steps(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def test_keep_last_prunes_step_checkpoints(setup, tmp_path):
    train(_cfg(setup, tmp_path / "o", steps=4, save_every=1, keep_last=2))
    assert _steps(tmp_path / "o") == ["step-000003", "step-000004"]
    with pytest.raises(ConfigError, match="keep_last"):
        _cfg(setup, tmp_path / "x", keep_last=0)


def test_resume_refuses_other_tasks_or_data(setup, tmp_path):
    out = tmp_path / "o"
    train(_cfg(setup, out, stop_at=2, save_every=1))
    with pytest.raises(TrainError, match=r"tasks=\['i2t', 'text'\], this run has \['i2t'\]"):
        train(_cfg(setup, out, tasks=("i2t",), resume=True))
    other = tmp_path / "other.jsonl"
    lines = Path(setup["data"]).read_text().splitlines()
    other.write_text("\n".join(lines[:-1] + [lines[-1].replace("a", "the")]) + "\n")  # same count, other content
    with pytest.raises(TrainError, match="data_hash="):
        train(_cfg(setup, out, data=(str(other),), resume=True))
    assert train(_cfg(setup, out, resume=True)).resumed_from == 2


def test_non_empty_out_needs_resume_or_overwrite(setup, tmp_path):
    out = tmp_path / "o"
    train(_cfg(setup, out, steps=3, save_every=1))
    with pytest.raises(TrainError, match="pass --resume to continue it or --overwrite to replace it"):
        train(_cfg(setup, out, steps=1))
    (out / ".trainable_rows.json.x1.tmp").write_text("")  # left by a killed run
    train(_cfg(setup, out, steps=1, overwrite=True))
    assert _steps(out) == ["step-000001"] and not list(out.rglob("*.tmp"))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TrainError, match="notes.txt, which no training run writes"):
        train(_cfg(setup, out, steps=1, overwrite=True))
    assert (out / MANIFEST_FILE).is_file() and _steps(out) == ["step-000001"]  # nothing deleted


def test_stale_temp_files_are_cleaned_at_start(setup, tmp_path):
    out = tmp_path / "o"
    train(_cfg(setup, out, stop_at=2, save_every=1))
    step = out / "checkpoints" / "step-000002"
    (step / ".train_state.json.abc.tmp").write_text("")
    (out / "checkpoints" / ".deleting-step-000001").mkdir()
    train(_cfg(setup, out, resume=True))
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob(".deleting-*"))


def test_cli_dtype_and_device(setup, tmp_path):
    from click.testing import CliRunner

    from tokenlm.checkpoint import read_manifest
    from tokenlm.cli import main

    args = ["train", "--data", setup["data"], "--space", setup["space"], "--base", setup["base"], "--steps", "1",
            "--max-len", "64", "--batch-size", "2", "--task", "text", "--no-progress"]
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "bf"), "--dtype", "bfloat16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert read_manifest(tmp_path / "bf")["dtype"] == "bfloat16"
    if not torch.cuda.is_available():
        res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "gpu"), "--device", "cuda"])
        assert res.exit_code == 2 and "--device cuda" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "bf")])
    assert res.exit_code == 2 and "--overwrite" in res.output
