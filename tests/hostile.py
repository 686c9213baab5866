"""Run a CLI on a hostile input the way a user would, in a fresh process capped at 2 GB of address space.

`run_cli("uti", "decode", path)` returns the finished process; `assert_one_line_error(proc)` checks the
contract for bad input: exit code 2, exactly one `error: ...` line on stderr, no Python traceback.
Hostile-input tests of every area use these two, so the contract is stated once.

Each call runs in its own process: a fork of a server that imported torch and the CLIs once
(tests/hostile_zygote.py), so a case costs milliseconds of start-up instead of seconds. The child sets the
address-space cap itself, so a command that tries to allocate gigabytes fails inside the cap.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEMORY_CAP = 2 * 1024**3  # bytes of address space: torch + a tiny model fit, a huge allocation does not
_server: subprocess.Popen | None = None
_lock = threading.Lock()


def _env() -> dict[str, str]:
    path = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path)}


def _zygote() -> subprocess.Popen:
    global _server
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("hostile_zygote.py")), str(MEMORY_CAP)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env(), text=True)
        assert _server.stdout.readline().strip() == "ready", "hostile-test fork server did not start"
        atexit.register(_server.kill)
    return _server


def run_cli(program: str, *args: str | os.PathLike, stdin: bytes | None = None, cwd: str | os.PathLike | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m PROGRAM ARGS` (PROGRAM is `uti`, `tokenlm` or `connectors`) in a fresh process under the memory cap."""
    req = {"program": program, "args": [str(a) for a in args], "cwd": str(cwd) if cwd else None, "timeout": timeout,
           "stdin": stdin.decode("latin-1") if stdin is not None else None}
    with _lock:
        server = _zygote()
        server.stdin.write(json.dumps(req) + "\n")
        server.stdin.flush()
        reply = json.loads(server.stdout.readline())
    return subprocess.CompletedProcess([program, *req["args"]], reply["returncode"],
                                       reply["stdout"].encode("latin-1"), reply["stderr"].encode("latin-1"))


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
