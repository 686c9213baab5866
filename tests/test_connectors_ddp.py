"""Connector training under torchrun (2 CPU processes, gloo, DDP) makes the same update as one process."""

from __future__ import annotations

import json

import torch

from connectors.checkpoint import checkpoint_tensors
from connectors.train import ConnectorTrainConfig
from launch import REPO, torchrun_beside
from toy_connector_train import run_toy  # scripts/ (on sys.path via conftest)
from uti.testing import tiny_connector


def test_two_cpu_processes_match_one(tmp_path) -> None:
    """Batch 1 on each of 2 processes == batch 2 on one process; the toy captions differ in token count, so a
    plain mean of per-process means would give other gradients than the per-token mean over the global batch."""
    args = [REPO / "scripts" / "toy_connector_train.py", "--out", tmp_path / "ddp", "--steps", "3", "--batch-size", "1",
            "--examples", "6", "--float64", "--json"]
    cfg = ConnectorTrainConfig(steps=3, batch_size=2, lr=1e-2, warmup_steps=1)
    one, out = torchrun_beside(args, lambda: run_toy(tmp_path / "one", cfg, examples=6, dtype=torch.float64))
    ddp = json.loads(out.strip().splitlines()[-1])
    assert ddp["processes"] == 2
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(one.losses), rtol=1e-5, atol=1e-6)
    a, b = checkpoint_tensors(tmp_path / "ddp")[0], checkpoint_tensors(one.final_dir)[0]
    assert a.keys() == b.keys() and len(a) > 0
    start = tiny_connector(resampler="perceiver").state_dict()  # the seeded weights both runs start from
    assert any(not torch.equal(start[k], a[k]) for k in a)  # training moved the weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
