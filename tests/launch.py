"""Two-process launches for the multi-process tests: `torchrun` runs while the one-process reference runs here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]


def torchrun_beside(args: Sequence[str], reference: Callable[[], Any], timeout: float = 120,
                    env: dict[str, str] | None = None) -> tuple[Any, str]:
    """(reference(), the launch's stdout) of `python -m torch.distributed.run --standalone --nproc_per_node 2 ARGS`
    (one torch thread per process, the repo on PYTHONPATH, `env` added) started before `reference` runs here.

    Asserts the launch exited 0 (its stderr tail is the message). Whatever happens, the launcher and its workers
    are not left behind: asked to stop first (torchrun passes it on), then killed with their session.
    """
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # the launch sets its own
        full.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]
    proc = subprocess.Popen(cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    try:
        result = reference()
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    assert proc.returncode == 0, err[-4000:]
    return result, out
