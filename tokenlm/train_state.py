"""Optimizer state without pickle: tensors go to safetensors, the rest (param groups, scalars) to JSON.

Shared by the token-LM and connector training loops so both resume the same way.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["optimizer_state_split", "optimizer_state_join"]


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
