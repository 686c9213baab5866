"""FSDP2 (`fully_shard` through Accelerate) on 2 CPU processes (gloo) trains like one process and saves the same files.

One `torchrun --nproc_per_node 2` launch, with the environment `accelerate launch --config_file
scripts/accelerate/fsdp2.yaml` sets (Accelerate's own launcher code reads the file), runs this file as a script
(`_fsdp_runs`): stages rows (with eval, clipping, step checkpoints and a stopped-then-resumed copy), lora and
full on a tied base, rows on an untied one, batch 1 per process and 2 accumulation steps. The test compares them with one process on the same global
batch (batch 2, 2 accumulation steps) and re-saves each sharded checkpoint unsharded: the same files.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from launch import torchrun_beside  # noqa: E402
from train_fixtures import REPO, make_setup  # noqa: E402

CONFIG = REPO / "scripts" / "accelerate" / "fsdp2.yaml"

# stage runs: name -> TrainConfig overrides (the sharded and the one-process run share them)
RUNS = {
    "rows": dict(stage="rows", steps=4, eval_fraction=0.2, eval_every=2, max_grad_norm=0.5, save_every=2),
    "lora": dict(stage="lora", steps=2),
    "full": dict(stage="full", steps=2),
    "untied": dict(stage="rows", steps=2, tied=False),  # the head's own new rows beside its frozen base weight
}


def _cfg(setups: dict, out: Path, processes: int, tied: bool = True, **kw):
    from tokenlm.train import TrainConfig

    setup = setups["tied" if tied else "untied"]
    base = dict(out=str(out), data=(setup["data"],), space=setup["space"], base=setup["base"], max_len=64,
                tasks=("text", "i2t"), lr=1e-2, progress=False, device="cpu", grad_accum=2,
                batch_size=2 // processes)
    return TrainConfig(**{**base, **kw})


def _launch_env(config: Path) -> dict[str, str]:
    """The FSDP settings `accelerate launch --config_file config` hands its processes (Accelerate's own code)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "tokenlm", "train"])
    env = prepare_multi_gpu_env(_validate_launch_command(args)[0])
    return {k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP"))}


def _fsdp_runs(setups: dict, root: Path) -> None:
    """Under torchrun: every stage run sharded, plus rows stopped at step 2 (`cut`) and resumed."""
    from tokenlm.train import train

    for name, kw in RUNS.items():
        train(_cfg(setups, root / name, 2, **kw))
    train(_cfg(setups, root / "cut", 2, **RUNS["rows"], stop_at=2))
    train(_cfg(setups, root / "cut", 2, **RUNS["rows"], resume=True))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, Path, Path]:
    """(setups, sharded runs' root, one-process runs' root); the launch runs while the references train here."""
    from tokenlm.train import train

    tmp = tmp_path_factory.mktemp("fsdp")
    setups = {"tied": make_setup(tmp / "tied"), "untied": make_setup(tmp / "untied", tied=False)}

    def references() -> None:
        for name, kw in RUNS.items():
            train(_cfg(setups, tmp / "one" / name, 1, **kw))

    torchrun_beside([__file__, json.dumps(setups), tmp / "fsdp"], references, timeout=240, env=_launch_env(CONFIG))
    return setups, tmp / "fsdp", tmp / "one"


def _result(out: Path) -> dict:
    return json.loads((out / "train_result.json").read_text())


def _tensors(out: Path) -> dict[str, torch.Tensor]:
    from tokenlm.checkpoint import rows_file

    return load_file(str(rows_file(out)))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_two_sharded_processes_train_like_one(runs, name) -> None:
    """Same losses, evals and trained tensors (rows, LoRA adapters, every weight) as one process."""
    _, fsdp, one = runs
    a, b = _result(fsdp / name), _result(one / name)
    assert (a["processes"], a["parallel"], b["processes"], b["parallel"]) == (2, "fsdp2", 1, "none")
    torch.testing.assert_close(torch.tensor(a["losses"]), torch.tensor(b["losses"]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(a["eval_losses"]), torch.tensor(b["eval_losses"]), rtol=1e-5, atol=1e-6)
    assert a["trainable_params"] == b["trainable_params"]
    ta, tb = _tensors(fsdp / name), _tensors(one / name)
    assert ta.keys() == tb.keys()
    if name == "lora":
        assert any("lora_B" in k for k in ta) and any(not torch.equal(t, torch.zeros_like(t))
                                                    for k, t in ta.items() if "lora_B" in k)  # adapters moved
    if name == "untied":
        assert set(ta) == {"embed_rows", "head_rows"}
    for k in ta:  # DDP on the same split deviates as much (2.8e-6 rows, 6.4e-6 full): float sums in other orders
        torch.testing.assert_close(ta[k], tb[k], rtol=1e-5, atol=1e-5, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_sharded_checkpoint_is_byte_identical_to_an_unsharded_save(runs, name, tmp_path) -> None:
    """Load the sharded run's checkpoint into one unsharded model and save it again: the same files, byte for byte
    (tensor names, shapes, values, base fingerprint, trained names, manifest)."""
    from tokenlm.checkpoint import load_rows, save_rows
    from tokenlm.model import load_base
    from uti.space import TokenSpace

    setups, fsdp, _ = runs
    setup = setups["tied" if RUNS[name].get("tied", True) else "untied"]
    src = fsdp / name
    again = src.parent / f"{name}-resaved"  # same depth: the relative base and space references agree
    model = load_rows(load_base(setup["base"]), src)
    save_rows(model, again, TokenSpace.load(setup["space"]), base_model=setup["base"])
    files = sorted(p.name for p in again.iterdir())
    assert files == sorted(p.name for p in src.iterdir() if p.name in files)  # the data files are content-named
    for f in files:  # the tensors file too: its metadata has one key, so the header's order is fixed
        assert (again / f).read_bytes() == (src / f).read_bytes(), f


@pytest.mark.slow
def test_sharded_resume_reproduces_the_uninterrupted_sharded_run(runs) -> None:
    """Stopped at step 2 and resumed under FSDP2 (optimizer state gathered to the step checkpoint, re-sharded on
    resume): the same losses, evals and rows as the uninterrupted sharded run, exactly."""
    _, fsdp, _ = runs
    full, cut = _result(fsdp / "rows"), _result(fsdp / "cut")
    assert cut["resumed_from"] == 2
    assert cut["losses"] == full["losses"] and cut["evals"] == full["evals"]
    assert torch.equal(_tensors(fsdp / "cut")["embed_rows"], _tensors(fsdp / "rows")["embed_rows"])
    state = load_file(str(fsdp / "cut" / "checkpoints" / "step-000002" / "train_state.safetensors"))
    rows = _tensors(fsdp / "rows")["embed_rows"]
    assert state["optimizer.state.0.exp_avg"].shape == rows.shape  # the full state, not one process's shard


def test_example_config_asks_for_fsdp2_per_decoder_layer(monkeypatch) -> None:
    """What the example config makes `accelerate launch` set is the FSDP2 plugin tokenlm uses; FSDP1 is refused."""
    from tokenlm.train import TrainError
    from tokenlm.trainer import _fsdp2_plugin

    env = _launch_env(CONFIG)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    plugin = _fsdp2_plugin(TrainError)
    assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["Qwen3DecoderLayer"]
    assert plugin.reshard_after_forward is True and not plugin.cpu_ram_efficient_loading
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(TrainError, match="FSDP2 only; set fsdp_version: 2"):
        _fsdp2_plugin(TrainError)


def test_fsdp_option_reaches_the_loop(tmp_path, monkeypatch) -> None:
    """`tokenlm train --fsdp` (the torchrun form) ends up in the loop's config."""
    from click.testing import CliRunner

    from tokenlm.cli import main

    train_mod = importlib.import_module("tokenlm.train")  # the module (the package exports the function by this name)
    seen = []
    monkeypatch.setattr(train_mod, "train",
                        lambda cfg: seen.append(cfg) or train_mod.TrainResult(str(tmp_path), 0, [0.0]))
    res = CliRunner().invoke(main, ["train", "--data", "d.jsonl", "--out", str(tmp_path), "--fsdp", "--json"])
    assert res.exit_code == 0, res.output
    assert seen[0].fsdp is True and train_mod.loop_config(seen[0]).fsdp is True


@pytest.mark.slow
def test_mixed_precision_under_fsdp2_is_one_line() -> None:
    """Accelerate would upcast the trained rows to float32 under FSDP2 mixed precision: refused up front (in a
    fresh process, since Accelerate's state is one per process)."""
    code = ("from tokenlm.train import TrainError\nfrom tokenlm.trainer import make_accelerator\n"
            "try:\n    make_accelerator('cpu', TrainError, fsdp=True)\nexcept TrainError as e:\n    print('refused:', e)")
    env = {**os.environ, "ACCELERATE_MIXED_PRECISION": "bf16", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("refused: FSDP2 with mixed_precision 'bf16' is not supported")
    assert len(proc.stdout.strip().splitlines()) == 1


if __name__ == "__main__":  # the torchrun workers of the `runs` fixture
    torch.set_num_threads(1)
    _fsdp_runs(json.loads(sys.argv[1]), Path(sys.argv[2]))
