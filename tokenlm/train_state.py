"""Train state of a step checkpoint without pickle: optimizer tensors and RNG states in safetensors, the rest in JSON.

`save_train_state` writes `train_state.safetensors` (optimizer tensors under `optimizer.state.<i>.<name>`,
`rng.torch`, `rng.cuda`) and then `train_state.json` (step, loss and eval history, param groups, optimizer
scalars, Python RNG state, the run's facts): the JSON is written last, so only folders holding it are
complete. Used by the one training loop (`tokenlm.trainer`) for both tracks.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from uti.errors import UTIError
from uti.io import atomic_save_safetensors, atomic_write_json

from .ckpt_store import read_json

__all__ = ["STATE_FILE", "TENSORS_FILE", "optimizer_state_split", "optimizer_state_join", "save_train_state",
           "read_train_state", "restore_train_state"]

STATE_FORMAT, STATE_VERSION = "tokenlm-train-state", 2
STATE_FILE, TENSORS_FILE = "train_state.json", "train_state.safetensors"
MAX_STATE_BYTES = 256 << 20  # the loss history grows ~25 bytes per step
_KEYS = ("step", "losses", "evals", "param_groups", "optimizer_scalars", "python_random", "facts")


def optimizer_state_split(opt: torch.optim.Optimizer, prefix: str = "optimizer.state.") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """`opt.state_dict()` as (tensors named `{prefix}{param}.{key}`, JSON part with param_groups and scalars)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{prefix}{pid}.{name}"] = val
            else:
                scalars[f"{pid}.{name}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_state_join(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any],
                         prefix: str = "optimizer.state.") -> None:
    """Load what `optimizer_state_split` produced back into `opt` (same parameters, same order)."""
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        if key.startswith(prefix):
            pid, name = key.removeprefix(prefix).split(".", 1)
            state.setdefault(int(pid), {})[name] = t
    for key, val in info["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def save_train_state(folder: Path, optimizer: Any, step: int, losses: list, evals: list, facts: dict) -> None:
    """Write the train state of `step` into `folder` (tensors first, the JSON that completes it last)."""
    tensors, opt_json = optimizer_state_split(getattr(optimizer, "optimizer", optimizer))  # Accelerate wraps it
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    py_state = random.getstate()
    atomic_save_safetensors(folder / TENSORS_FILE, tensors, metadata={"format": STATE_FORMAT})
    atomic_write_json(folder / STATE_FILE, {
        "format": STATE_FORMAT, "version": STATE_VERSION, "step": step, "losses": losses,
        "evals": [list(e) for e in evals], "param_groups": opt_json["param_groups"],
        "optimizer_scalars": opt_json["scalars"], "python_random": [py_state[0], list(py_state[1]), py_state[2]],
        "facts": facts,
    })


def read_train_state(folder: Path, error: type[UTIError]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON part, tensors) of `folder`'s train state; unreadable or foreign files raise `error` (one line)."""
    from safetensors.torch import load_file

    hint = "delete this checkpoint folder to resume from an earlier one"
    meta = read_json(folder / STATE_FILE, error, MAX_STATE_BYTES)
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or meta.get("version") != STATE_VERSION:
        raise error(f"{folder / STATE_FILE} is not a {STATE_FORMAT} version {STATE_VERSION} file; {hint}")
    missing = [k for k in _KEYS if k not in meta]
    if missing:
        raise error(f"{folder / STATE_FILE} lacks {', '.join(missing)}; {hint}")
    try:
        tensors = load_file(str(folder / TENSORS_FILE))
    except Exception as err:  # missing, truncated or garbled file
        raise error(f"{folder}: cannot read train state ({str(err).splitlines()[0]}); {hint}") from None
    return meta, tensors


def restore_train_state(optimizer: Any, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Load optimizer and RNG states read by `read_train_state`; returns the JSON part."""
    optimizer_state_join(optimizer, tensors, {"param_groups": meta["param_groups"], "scalars": meta["optimizer_scalars"]})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    v, s, g = meta["python_random"]
    random.setstate((v, tuple(s), g))
    return meta
