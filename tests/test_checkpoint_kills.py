"""Kill a checkpoint save at every file operation: the folder always loads as the old or the new checkpoint.

For rows (`save_rows`) and connector (`save_connector`) checkpoints saved over an existing one, the save is
killed (`os._exit`, no cleanup) before each of its file operations in turn (`tests/killpoints.py`). After
each kill the folder must load, exactly (tensor for tensor), as the old or the new checkpoint, never raise;
and a later successful save leaves only the new checkpoint's files (no temp files pile up).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from connectors import ContinuousVLM
from connectors.checkpoint import MANIFEST, load_connector, read_manifest, save_connector
from connectors.vlm import add_lora
from tokenlm.checkpoint import MANIFEST_FILE, load_rows, save_rows
from tokenlm.checkpoint import read_manifest as read_rows_manifest
from tokenlm.model import apply_stage, grow_model, trainable_row_params
from uti.testing import TINY_FEAT, TINY_IDS, tiny_connector, tiny_llm, tiny_qwen3, tiny_space

sys.path.insert(0, str(Path(__file__).parent))
from killpoints import file_ops, kill_at_each_file_op  # noqa: E402

TOWER = {"name": "tiny-tower", "hidden_size": TINY_FEAT}


def _rows_model(space, seed: int, stage: str = "rows"):
    model = apply_stage(grow_model(tiny_qwen3(), space), stage)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen))
    return model


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad} | \
        {"embed_rows": trainable_row_params(model)["embed_rows"].detach().clone()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run_kills(tmp_path: Path, save_old, save_new, load_state, old_state, new_state, manifest_of,
               manifest_name: str, roles: list[str]) -> list[str]:
    pristine, folder = tmp_path / "pristine", tmp_path / "ckpt"
    save_old(pristine)
    shutil.copytree(pristine, tmp_path / "count")
    shutil.copytree(pristine, folder)
    count = len(file_ops(lambda: save_new(tmp_path / "count")))
    assert count >= 8  # temp writes, fsyncs, renames, cleanup: every one gets a kill
    seen = []
    for k in kill_at_each_file_op(lambda: save_new(folder), count):
        got = load_state(folder)  # must not raise
        which = "old" if _same(got, old_state) else "new" if _same(got, new_state) else None
        assert which is not None, f"kill before file op {k}: the folder loads as neither checkpoint"
        seen.append(which)
        save_new(folder)  # a later successful save clears whatever the kill left
        files = manifest_of(folder)["files"]
        assert {p.name for p in folder.iterdir()} == {manifest_name} | {files[r]["name"] for r in roles}, k
        shutil.rmtree(folder)
        shutil.copytree(pristine, folder)
    assert seen[0] == "old" and seen[-1] == "new" and seen == sorted(seen, key=["old", "new"].index)
    return seen


@pytest.mark.slow
def test_rows_save_killed_at_every_file_op(tmp_path):
    space = tiny_space()
    old, new = _rows_model(space, 1), _rows_model(space, 2, stage="lora")  # the stage changes too

    def load_state(folder):
        return _state(load_rows(tiny_qwen3(), folder))

    _run_kills(tmp_path, lambda d: save_rows(old, d, space), lambda d: save_rows(new, d, space), load_state,
               _state(old), _state(new), read_rows_manifest, MANIFEST_FILE, ["tensors", "space"])


@pytest.mark.slow
def test_connector_save_killed_at_every_file_op(tmp_path):
    old = ContinuousVLM(tiny_llm(), tiny_connector(seed=1), TINY_IDS)
    new = ContinuousVLM(tiny_llm(), tiny_connector(seed=2), TINY_IDS)
    add_lora(new, r=2, alpha=4)
    with torch.no_grad():
        for name, p in new.llm.named_parameters():
            if "lora_B" in name:
                p.normal_()

    def state(vlm) -> dict[str, torch.Tensor]:
        out = {f"c.{k}": v.clone() for k, v in vlm.connector.state_dict().items()}
        if vlm.lora:
            from peft import get_peft_model_state_dict

            out |= {f"l.{k}": v.clone() for k, v in get_peft_model_state_dict(vlm.llm).items()}
        return out

    seen = _run_kills(tmp_path, lambda d: save_connector(old, d, TOWER), lambda d: save_connector(new, d, TOWER),
                      lambda d: state(load_connector(d, tiny_llm(), TOWER)), state(old), state(new), read_manifest,
                      MANIFEST, ["weights", "lora"])
    assert "old" in seen and "new" in seen


def test_pruning_step_folders_killed_at_every_file_op(tmp_path):
    """A prune killed anywhere never leaves a half-deleted step folder that still looks complete."""
    from tokenlm.run_dir import clean_stale, prune_steps, step_dirs

    pristine, root = tmp_path / "pristine", tmp_path / "run"
    for s in range(1, 5):
        for name in ("rows.bin", "opt.bin", "state.json"):
            (pristine / f"step-{s}").mkdir(parents=True, exist_ok=True)
            (pristine / f"step-{s}" / name).write_text(name)

    def prune():
        prune_steps(step_dirs(root, r"step-(\d+)", "state.json"), keep=1)

    shutil.copytree(pristine, tmp_path / "count")
    root_saved, root = root, tmp_path / "count"
    count = len(file_ops(prune))
    root = root_saved
    shutil.copytree(pristine, root)
    for k in kill_at_each_file_op(prune, count):
        for _, d in step_dirs(root, r"step-(\d+)", "state.json"):
            assert sorted(p.name for p in d.iterdir()) == ["opt.bin", "rows.bin", "state.json"], (k, d)
        clean_stale(root)
        assert not [p for p in root.iterdir() if p.name.startswith(".")], k
        shutil.rmtree(root)
        shutil.copytree(pristine, root)
    prune()
    assert [p.name for p in root.iterdir()] == ["step-4"]
