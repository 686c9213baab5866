"""Connector training under torchrun (2 CPU processes, gloo, DDP) makes the same update as one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from connectors.checkpoint import checkpoint_tensors
from connectors.train import ConnectorTrainConfig
from toy_connector_train import run_toy  # scripts/ (on sys.path via conftest)
from uti.testing import tiny_connector

REPO = Path(__file__).resolve().parents[1]


def test_two_cpu_processes_match_one(tmp_path) -> None:
    """Batch 1 on each of 2 processes == batch 2 on one process; the toy captions differ in token count, so a
    plain mean of per-process means would give other gradients than the per-token mean over the global batch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "scripts" / "toy_connector_train.py"), "--out", str(tmp_path / "ddp"), "--steps", "3",
           "--batch-size", "1", "--examples", "6", "--float64", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    try:  # the one-process reference runs here while the two processes start up
        cfg = ConnectorTrainConfig(steps=3, batch_size=2, lr=1e-2, warmup_steps=1)
        one = run_toy(tmp_path / "one", cfg, examples=6, dtype=torch.float64)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never leave the launcher and its workers behind (they share its session)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    ddp = json.loads(out.strip().splitlines()[-1])
    assert ddp["processes"] == 2
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(one.losses), rtol=1e-5, atol=1e-6)
    a, b = checkpoint_tensors(tmp_path / "ddp")[0], checkpoint_tensors(one.final_dir)[0]
    assert a.keys() == b.keys() and len(a) > 0
    start = tiny_connector(resampler="perceiver").state_dict()  # the seeded weights both runs start from
    assert any(not torch.equal(start[k], a[k]) for k in a)  # training moved the weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
