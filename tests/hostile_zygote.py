"""Fork server for tests/hostile.py: imports the CLIs once, then runs each request in a fresh forked child.

Protocol (one JSON object per line): request {"program", "args", "stdin" (latin-1 str or null), "cwd",
"timeout"} -> reply {"returncode", "stdout", "stderr"} (latin-1 strs). Each child sets its own address-space
cap, its cwd and its standard streams, runs the command line as `python -m PROGRAM` would, and exits; a
child past its timeout is killed (returncode -9). Forking saves the 2-4 s of importing torch per case.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import tempfile
import time

CAP = int(sys.argv[1])


def _child(req: dict, files: dict[str, int]) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))
    if req.get("cwd"):
        os.chdir(req["cwd"])
    os.dup2(files["stdin"], 0)
    os.dup2(files["stdout"], 1)
    os.dup2(files["stderr"], 2)
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    code = 0
    try:
        main = MAINS[req["program"]]
        main.main(args=req["args"], prog_name=req["program"], standalone_mode=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - an uncaught error prints its traceback, as `python -m` would
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve(req: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: os.path.join(tmp, k) for k in ("stdin", "stdout", "stderr")}
        with open(paths["stdin"], "wb") as f:
            f.write((req.get("stdin") or "").encode("latin-1"))
        files = {k: os.open(p, os.O_RDONLY if k == "stdin" else os.O_WRONLY | os.O_CREAT, 0o600) for k, p in paths.items()}
        pid = os.fork()
        if pid == 0:
            _child(req, files)
        for fd in files.values():
            os.close(fd)
        deadline = time.monotonic() + req.get("timeout", 300)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code = -9
                break
            time.sleep(0.005)
        out = {k: open(paths[k], "rb").read().decode("latin-1") for k in ("stdout", "stderr")}
    return {"returncode": code, **out}


def _warm_imports() -> None:
    """Import what the commands import lazily, so each child starts warm (a missing name is skipped)."""
    import importlib

    for name in ("transformers", "peft", "safetensors.torch", "soundfile", "cv2", "PIL.Image", "uti.image.codec",
                 "uti.image.vision", "uti.audio.codec", "tokenlm.generate", "tokenlm.checkpoint", "tokenlm.train",
                 "connectors"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    import transformers

    for cls in ("AutoConfig", "AutoModelForCausalLM", "SiglipVisionModel", "EncodecModel", "Qwen3ForCausalLM"):
        getattr(transformers, cls, None)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    from connectors.cli import main as connectors_main
    from tokenlm.cli import main as tokenlm_main
    from uti.cli import main as uti_main

    MAINS = {"uti": uti_main, "tokenlm": tokenlm_main, "connectors": connectors_main}
    _warm_imports()
    reply = sys.stdout
    sys.stdout = sys.stderr  # nothing the imports print may break the protocol
    reply.write("ready\n")
    reply.flush()
    for line in sys.stdin:
        reply.write(json.dumps(_serve(json.loads(line))) + "\n")
        reply.flush()
