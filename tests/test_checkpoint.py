"""Rows checkpoints: round trips (tied, untied, LoRA), refusals, legacy .pt import."""

from __future__ import annotations

import json

import pytest
import torch

from tokenlm.checkpoint import (
    MANIFEST_FILE,
    CheckpointError,
    load_legacy_rows,
    load_rows,
    read_manifest,
    rows_file,
    save_rows,
)
from tokenlm.model import apply_stage, grow_model, load_base, trainable_row_params
from uti.testing import tiny_qwen3, tiny_space
from uti.errors import HashMismatchError, UTIError

from train_fixtures import edit_manifest


@pytest.fixture(scope="module")
def space():
    return tiny_space()


def _trained(space, tied=True, stage="rows", seed=0):
    """A grown model whose trainable tensors were moved away from their init (as training would)."""
    model = apply_stage(grow_model(tiny_qwen3(tied=tied), space), stage)
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def _logits(model, space):
    ids = torch.arange(500, space.ranges["padding"].start).reshape(2, -1)
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_gives_identical_logits_and_small_files(tmp_path, space, tied):
    model = _trained(space, tied)
    save_rows(model, tmp_path, space, base_model="tiny-test")
    man = read_manifest(tmp_path)
    names = [man["files"]["tensors"]["name"], man["files"]["space"]["name"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names + [MANIFEST_FILE])
    assert names[0].startswith("trainable_rows.") and names[1].startswith("token_space.")
    loaded = load_rows(tiny_qwen3(tied=tied), tmp_path)
    torch.testing.assert_close(_logits(loaded, space), _logits(model, space), rtol=0, atol=0)
    man = read_manifest(tmp_path)
    n_rows = space.ranges["padding"].start - 512
    assert man["row_start"] == 512 and man["row_end"] == 512 + n_rows and man["tied"] is tied
    assert man["token_space"]["hash"] == space.hash and man["base_model"] == "tiny-test" and man["stage"] == "rows"
    assert set(man["tensors"]) == ({"embed_rows"} if tied else {"embed_rows", "head_rows"})
    row_bytes = n_rows * 64 * 4 * (1 if tied else 2)
    assert row_bytes <= rows_file(tmp_path).stat().st_size < row_bytes + 1024


def test_lora_round_trip(tmp_path, space):
    model = _trained(space, stage="lora")
    save_rows(model, tmp_path, space)
    man = read_manifest(tmp_path)
    assert man["stage"] == "lora" and man["lora_config"]["r"] == 8 and any("lora_A" in k for k in man["tensors"])
    loaded = load_rows(tiny_qwen3(), tmp_path, space)
    torch.testing.assert_close(_logits(loaded, space), _logits(model, space), rtol=0, atol=0)


def test_refuses_other_base_space_and_dtype(tmp_path, space):
    save_rows(_trained(space), tmp_path, space)
    with pytest.raises(CheckpointError, match="another base model.*fingerprint"):
        load_rows(tiny_qwen3(seed=1), tmp_path)
    with pytest.raises(CheckpointError, match="tied head"):
        load_rows(tiny_qwen3(tied=False), tmp_path)
    other = tiny_space(audio=(3, 16))
    with pytest.raises(HashMismatchError) as err:
        load_rows(tiny_qwen3(), tmp_path, other)
    assert space.hash in str(err.value) and other.hash in str(err.value) and "token_space." in str(err.value)
    with pytest.raises(CheckpointError, match="bfloat16"):
        load_rows(tiny_qwen3(dtype=torch.bfloat16), tmp_path)


def test_refuses_damaged_files(tmp_path, space):
    save_rows(_trained(space), tmp_path, space)
    path = rows_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_rows(tiny_qwen3(), tmp_path)
    edited = bytearray(data)
    edited[-3] ^= 0xFF  # flip bits inside the last tensor's values
    path.write_bytes(bytes(edited))
    with pytest.raises(CheckpointError, match="edited or damaged"):
        load_rows(tiny_qwen3(), tmp_path)
    path.write_bytes(data)
    man = json.loads((tmp_path / MANIFEST_FILE).read_text())
    man["stage"] = "full"
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="content hash"):
        load_rows(tiny_qwen3(), tmp_path)
    (tmp_path / MANIFEST_FILE).unlink()
    with pytest.raises(UTIError, match="not a rows checkpoint"):
        load_rows(tiny_qwen3(), tmp_path)


def test_legacy_pt_import(tmp_path, space):
    ref = _trained(space, tied=False)
    rows = trainable_row_params(ref)
    pad = space.total - space.ranges["padding"].start  # the old layout stored padded rows
    legacy = {"row_start": 512, "row_end": space.total, "base_llm": "tiny-test", "dtype": "torch.float32",
              "embeddings": torch.cat([rows["embed_rows"].detach(), torch.zeros(pad, 64)]),
              "lm_head": torch.cat([rows["head_rows"].detach(), torch.zeros(pad, 64)])}
    torch.save(legacy, tmp_path / "trainable_rows.pt")
    with pytest.raises(CheckpointError, match="older trainable_rows.pt"):
        load_rows(tiny_qwen3(tied=False), tmp_path)
    loaded = load_legacy_rows(tiny_qwen3(tied=False), tmp_path / "trainable_rows.pt", space)
    torch.testing.assert_close(_logits(loaded, space), _logits(ref, space), rtol=0, atol=0)
    legacy["embeddings"] = legacy["embeddings"][:, :32]
    torch.save(legacy, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="shape"):
        load_legacy_rows(tiny_qwen3(tied=False), tmp_path / "bad.pt", space)


def test_cli_rows_import_and_show(tmp_path):
    from click.testing import CliRunner

    from tokenlm.cli import main

    space = tiny_space()
    space.save(tmp_path / "space.json")
    tiny_qwen3().save_pretrained(tmp_path / "base")
    rows = trainable_row_params(_trained(space))["embed_rows"].detach()
    legacy = {"row_start": 512, "row_end": 512 + len(rows), "base_llm": str(tmp_path / "base"),
              "dtype": "float32", "embeddings": rows, "lm_head": None}
    torch.save(legacy, tmp_path / "trainable_rows.pt")
    runner = CliRunner()
    res = runner.invoke(main, ["rows", "import", str(tmp_path / "trainable_rows.pt"), "--space",
                               str(tmp_path / "space.json"), "--out", str(tmp_path / "ckpt")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["rows", "show", str(tmp_path / "ckpt")])
    man = json.loads(res.stdout.strip().splitlines()[-1])
    assert man["base_model"] == "../base" and man["token_space"]["hash"] == space.hash  # relative to ckpt/
    loaded = load_rows(load_base(str(tmp_path / "base")), tmp_path / "ckpt")
    assert torch.equal(trainable_row_params(loaded)["embed_rows"], rows)
    res = runner.invoke(main, ["rows", "show", str(tmp_path)])
    assert res.exit_code == 2 and "older trainable_rows.pt" in res.output


def _edit_manifest(path, rehash: bool, **changes):
    """Edit `trainable_rows.json`; with `rehash` the content hash is recomputed (a forger who knows the scheme)."""
    edit_manifest(path / MANIFEST_FILE, rehash, **changes)


@pytest.mark.parametrize("changes", [
    {"lora_config__lora_alpha": 64},  # loaded silently with another scale before the content hash
    {"lora_config__target_modules": ["q_proj"]},
    {"dtype": "bfloat16"},
    {"base_model": "someone/else"},
    {"init": "normal"},
])
def test_any_manifest_edit_is_refused(tmp_path, space, changes):
    save_rows(_trained(space, stage="lora"), tmp_path, space)
    _edit_manifest(tmp_path, rehash=False, **changes)
    with pytest.raises(CheckpointError, match="content hash .* edited or damaged"):
        load_rows(tiny_qwen3(), tmp_path)


@pytest.mark.parametrize("changes, message", [
    ({"lora_config": None}, "stage lora needs its LoRA config"),  # silently dropped the LoRA before
    ({"lora_config__r": 2_000_000}, "exceeds the hidden size"),  # allocated 8 GB before
    ({"lora_config__rank": 4}, "unknown key.*rank"),
    ({"lora_config__r": True}, "expected int"),
    ({"dtype": "float99"}, "dtype must be one of"),
    ({"hidden_size": 1_000_000}, "hidden_size must be in"),
])
def test_rehashed_manifest_is_bounded_before_building(tmp_path, space, changes, message):
    save_rows(_trained(space, stage="lora"), tmp_path, space)
    _edit_manifest(tmp_path, rehash=True, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_rows(tiny_qwen3(), tmp_path)


def test_base_fingerprint_covers_every_layer(tmp_path, space):
    save_rows(_trained(space), tmp_path, space)
    base = tiny_qwen3()
    with torch.no_grad():
        base.model.layers[1].self_attn.q_proj.weight.add_(0.01)  # another fine-tune of the same architecture
    with pytest.raises(CheckpointError, match="base fingerprint"):
        load_rows(base, tmp_path)
    base = tiny_qwen3()
    base.model.norm.weight.data.mul_(1.5)
    with pytest.raises(CheckpointError, match="base fingerprint"):
        load_rows(base, tmp_path)


def test_base_fingerprint_is_dtype_independent(tmp_path, space):
    """A float32 and a bfloat16 load of the same saved weights agree (through transformers' own loading)."""
    from tokenlm.checkpoint import base_fingerprint

    tiny_qwen3().save_pretrained(tmp_path / "base")
    fp32 = grow_model(load_base(str(tmp_path / "base"), "float32"), space)
    bf16 = grow_model(load_base(str(tmp_path / "base"), "bfloat16"), space)
    assert bf16.get_input_embeddings().base.weight.dtype == torch.bfloat16
    assert base_fingerprint(fp32) == base_fingerprint(bf16)
    assert base_fingerprint(fp32) != base_fingerprint(grow_model(tiny_qwen3(seed=1), space))
    # bf16 rows saved from a bf16 base load onto a bf16 base
    save_rows(apply_stage(bf16, "rows"), tmp_path / "rows", space)
    load_rows(load_base(str(tmp_path / "base"), "bfloat16"), tmp_path / "rows")


def test_full_stage_round_trip(tmp_path, space):
    model = _trained(space, stage="full")
    save_rows(model, tmp_path, space)
    loaded = load_rows(tiny_qwen3(), tmp_path)
    torch.testing.assert_close(_logits(loaded, space), _logits(model, space), rtol=0, atol=0)



def test_rows_checkpoints_are_byte_identical_on_every_save(tmp_path, space):
    """The same rows saved six times: the same bytes in every file. safetensors writes a 2+-key metadata map in
    a random order on each save (a Rust HashMap), so the tensors file keeps one key; with the old two-key map
    all six agree with probability 1/32."""
    model = _trained(space, tied=False)
    outs = [tmp_path / str(k) for k in range(6)]
    for out in outs:
        save_rows(model, out, space, base_model="tiny-test")
    for out in outs[1:]:
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in outs[0].iterdir())
        for f in out.iterdir():
            assert f.read_bytes() == (outs[0] / f.name).read_bytes(), f.name
