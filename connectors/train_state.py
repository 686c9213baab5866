"""Resume state of a connector training run without pickle: optimizer tensors in safetensors, the rest in JSON.

A step folder holds the connector checkpoint (`save_connector`), `optimizer.safetensors` and
`trainer_state.json`; the JSON is written last, so only folders that have it are complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from tokenlm.run_dir import prune_steps, step_dirs
from tokenlm.train_state import optimizer_state_join, optimizer_state_split
from uti.io import atomic_save_safetensors, atomic_write_json

__all__ = ["STATE_FILE", "save_optimizer", "load_optimizer", "latest_step_dir", "prune_step_dirs", "read_state"]

STATE_FILE, OPT_FILE = "trainer_state.json", "optimizer.safetensors"
STEP_PATTERN = r"step-(\d+)"


def save_optimizer(opt: torch.optim.Optimizer, step_dir: Path) -> dict[str, Any]:
    """Tensors of the optimizer state to `optimizer.safetensors`; returns the JSON part (groups, scalars)."""
    tensors, info = optimizer_state_split(opt, prefix="state.")
    atomic_save_safetensors(step_dir / OPT_FILE, tensors)
    return info


def load_optimizer(opt: torch.optim.Optimizer, step_dir: Path, info: dict[str, Any]) -> None:
    """Restore what `save_optimizer` wrote into `opt` (same parameters in the same order)."""
    optimizer_state_join(opt, load_file(str(step_dir / OPT_FILE)), info, prefix="state.")


def write_state(step_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_json(step_dir / STATE_FILE, state)


def read_state(step_dir: Path) -> dict[str, Any]:
    return json.loads((step_dir / STATE_FILE).read_text(encoding="utf-8"))


def latest_step_dir(out_dir: Path) -> Path | None:
    """The newest complete `step-N` folder under `out_dir`, or None."""
    dirs = step_dirs(Path(out_dir), STEP_PATTERN, STATE_FILE)
    return dirs[-1][1] if dirs else None


def prune_step_dirs(out_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` complete step folders (kill-safe, see `tokenlm.run_dir`)."""
    prune_steps(step_dirs(Path(out_dir), STEP_PATTERN, STATE_FILE), keep)
