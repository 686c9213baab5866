"""Run a CLI on a hostile input the way a user would, in a subprocess capped at 2 GB of address space.

`run_cli("uti", "decode", path)` returns the finished process; `assert_one_line_error(proc)` checks the
contract for bad input: exit code 2, exactly one `error: ...` line on stderr, no Python traceback.
Hostile-input tests of every area use these two, so the contract is stated once.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEMORY_CAP = 2 * 1024**3  # bytes of address space: torch + a tiny model fit, a huge allocation does not


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_cli(program: str, *args: str | os.PathLike, stdin: bytes | None = None, cwd: str | os.PathLike | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m PROGRAM ARGS` (PROGRAM is `uti` or `tokenlm`) under the memory cap, one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    return subprocess.run([sys.executable, "-m", program, *map(str, args)], input=stdin, capture_output=True,
                          cwd=cwd, env=env, timeout=timeout, preexec_fn=_cap_memory)


def assert_one_line_error(proc: subprocess.CompletedProcess, contains: str | None = None) -> str:
    """Exit 2, one `error: ...` line on stderr, no traceback; returns that line."""
    err = proc.stderr.decode(errors="replace")
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 2, f"exit {proc.returncode}, stderr: {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    if contains is not None:
        assert contains in lines[0], lines[0]
    return lines[0]
