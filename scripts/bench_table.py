"""The GPU benchmarks as one table with ratios: `uti encode` panoramas/s with an SO400M-shaped tower in float32
and bfloat16, and rows-only training (ours against PEFT TrainableTokens) at Qwen3-0.6B's full 28 layers and
at Qwen3-4B's shape (36 layers).

    scripts/bench_gpu.sh                                   # = python scripts/bench_table.py --device cuda
    python scripts/bench_table.py --dry-run                # the commands it would run, nothing else
    python scripts/bench_table.py --device cpu --tiny --only rows-0.6b   # the pipeline at toy sizes (tests)

Each benchmark is its own subprocess printing JSON: `bench_encode.py --json` (random SO400M-shaped tower,
`--panoramas` 2048 x 1024 panoramas, 9 views each) once per dtype, and `bench_rows.py --json --layers 0
--methods ours,peft-tt` once per shape (random weights built on the device, float32, AdamW; each method in a
fresh process, timings synchronised, peak memory from torch.cuda.max_memory_allocated). A benchmark that
fails or passes its `--timeout` becomes a "failed" row; the others still run, within `--budget` (290 s: the
whole table takes under 5 minutes; what would start past it is skipped). Sized so that on one H200 all four
fit (most of the time is process start-up and model construction).

Ratios: for encode, bfloat16 panoramas/s over float32's and float32 tower time over bfloat16's; for rows,
PEFT TrainableTokens' step time / peak extra memory / saved bytes over ours (above 1: ours is faster /
smaller).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
BENCHES = ("encode-fp32", "encode-bf16", "rows-0.6b", "rows-4b")
MIB = 1 << 20

__all__ = ["BENCHES", "commands", "parse_json", "table"]


def commands(device: str, tiny: bool, panoramas: int, steps: int) -> dict[str, list[str]]:
    """{benchmark: argv} for every benchmark in BENCHES. `tiny`: toy models, so that a CPU runs it in seconds."""
    py = sys.executable
    encode = [py, str(SCRIPTS / "bench_encode.py"), "--json", "--device", device]
    if tiny:  # the shipped tiny space's tower only
        encode += ["--tiny-panoramas", "1", "--so400m-panoramas", "0"]
    else:
        encode += ["--tiny-panoramas", "1", "--so400m-panoramas", str(panoramas)]
    rows = [py, str(SCRIPTS / "bench_rows.py"), "--json", "--device", device, "--layers", "0",
            "--methods", "ours,peft-tt", "--steps", str(steps)]
    if tiny:
        rows += ["--batch", "1", "--seq", "16", "--new-rows", "256", "--threads", "1"]
        shapes = {"rows-0.6b": "tiny", "rows-4b": "tiny"}
    else:
        rows += ["--batch", "4", "--seq", "512"]
        shapes = {"rows-0.6b": "qwen3-0.6b", "rows-4b": "qwen3-4b"}
    out = {"encode-fp32": encode + ["--dtype", "float32"], "encode-bf16": encode + ["--dtype", "bfloat16"]}
    out.update({name: rows + ["--shape", shape] for name, shape in shapes.items()})
    return out


def parse_json(stdout: str) -> object:
    """The JSON document a benchmark printed last (bench_encode prints an indented list, perhaps after notes)."""
    lines = stdout.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i][:1] in "[{":
            try:
                return json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON document in the benchmark's output")


def run(argv: list[str], timeout: float) -> tuple[object | None, str]:
    """(parsed JSON, "") or (None, one line saying why not).

    The benchmark runs in its own process group, killed whole on timeout: bench_rows' per-method workers
    must not outlive it and hold the GPU while the next benchmark runs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, f"timed out after {timeout:.0f} s"
    if proc.returncode != 0:
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["(no stderr)"]
        return None, f"exit {proc.returncode}: {tail[0][:160]}"
    try:
        return parse_json(stdout), ""
    except ValueError as err:
        return None, str(err)


def _encode_row(doc: object) -> dict | None:
    """The SO400M-shaped row of bench_encode's JSON, else its tiny row (`--tiny`)."""
    rows = {r["config"]: r for r in doc} if isinstance(doc, list) else {}
    return rows.get("so400m") or rows.get("tiny")


def table(results: dict[str, object], errors: dict[str, str]) -> str:
    """One text table of whatever ran: the value (ours, or bfloat16), its baseline, the ratio (module docstring)."""
    lines = [f"{'benchmark':<56}{'value':>16}{'baseline':>30}{'ratio':>9}", "-" * 111]

    def add(label: str, ours: str, base: str = "-", ratio: float | None = None) -> None:
        lines.append(f"{label:<56}{ours:>16}{base:>30}{'-' if ratio is None else f'{ratio:.2f}x':>9}")

    enc = {k: _encode_row(results[k]) for k in ("encode-fp32", "encode-bf16") if k in results}
    for key, dtype in (("encode-fp32", "float32"), ("encode-bf16", "bfloat16")):
        if key in errors:
            add(f"{key} (uti encode, {dtype})", "failed", errors[key][:30])
        elif enc.get(key):
            r, fp32 = enc[key], enc.get("encode-fp32") if key == "encode-bf16" else None
            label = f"uti encode {r['config']} ({r['views']} views of {r['tile']}), {dtype}, pano/s"
            if fp32:
                add(label, f"{r['panoramas_per_s']:.2f}", f"float32 {fp32['panoramas_per_s']:.2f}",
                    r["panoramas_per_s"] / fp32["panoramas_per_s"])
                add("  tower ms per panorama", f"{r['tower_ms']:.1f}", f"float32 {fp32['tower_ms']:.1f}",
                    fp32["tower_ms"] / r["tower_ms"])
            else:
                add(label, f"{r['panoramas_per_s']:.2f}")
                add("  tower ms per panorama", f"{r['tower_ms']:.1f}")
            add("  (io + e2p + vq) / tower", f"{r['overhead_vs_tower']:.1%}")
    for key in ("rows-0.6b", "rows-4b"):
        if key in errors:
            add(key, "failed", errors[key][:30])
            continue
        res = results.get(key)
        if not isinstance(res, dict) or "ours" not in res or "peft-tt" not in res:
            continue
        ours, tt = res["ours"], res["peft-tt"]
        name = f"rows {ours['shape']} ({ours['layers']} layers, {ours['tokens_per_step']} tok)"
        add(f"{name} step s", f"{ours['step_s']:.3f}", f"PEFT TT {tt['step_s']:.3f}", tt["step_s"] / ours["step_s"])
        peak = ours["peak_extra_bytes"]
        add("  peak extra memory MiB", f"{peak / MIB:.0f}", f"PEFT TT {tt['peak_extra_bytes'] / MIB:.0f}",
            tt["peak_extra_bytes"] / peak if peak > 0 else None)
        add("  saved MiB", f"{ours['saved_bytes'] / MIB:.2f}", f"PEFT TT {tt['saved_bytes'] / MIB:.2f}",
            tt["saved_bytes"] / ours["saved_bytes"])
        diff = max(abs(a - b) for a, b in zip(ours["losses"], tt["losses"]))
        add("  max |loss PEFT TT - ours| per step", f"{diff:.1e}")
    lines.append("ratio: bfloat16 over float32 (> 1: bfloat16 is faster); PEFT TrainableTokens over ours for step "
                 "time, memory, saved bytes (> 1: ours is faster / smaller)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--tiny", action="store_true", help="toy models (to test the pipeline without a GPU)")
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ", ".join(BENCHES))
    ap.add_argument("--panoramas", type=int, default=32, help="SO400M-shaped encode: panoramas per dtype")
    ap.add_argument("--steps", type=int, default=5, help="rows: timed steps per method")
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds per benchmark")
    ap.add_argument("--budget", type=float, default=290.0, help="seconds for all; later benchmarks are skipped")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON after the table")
    args = ap.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    if not only or any(b not in BENCHES for b in only):
        ap.error(f"--only must name some of {', '.join(BENCHES)}, got {args.only!r}")
    if args.panoramas < 1 or args.steps < 1 or args.timeout <= 0 or args.budget <= 0:
        ap.error("--panoramas, --steps, --timeout and --budget must be positive")
    cmds = {k: v for k, v in commands(args.device, args.tiny, args.panoramas, args.steps).items() if k in only}
    if args.dry_run:
        for name, argv_ in cmds.items():
            print(f"{name}: {' '.join(argv_)}")
        return 0
    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            print(f"error: --device {args.device} asked for, but torch sees no CUDA GPU; use scripts/bench_gpu.sh "
                  "on a GPU machine, or --device cpu --tiny to test the pipeline", file=sys.stderr)
            return 2
        where = f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    else:
        where = "CPU"
    results: dict[str, object] = {}
    errors: dict[str, str] = {}
    t0 = time.perf_counter()
    for name, argv_ in cmds.items():
        left = args.budget - (time.perf_counter() - t0)
        if left < 10:
            errors[name] = f"skipped: the {args.budget:.0f} s budget is spent"
            continue
        print(f"[{time.perf_counter() - t0:6.1f} s] {name} ...", file=sys.stderr, flush=True)
        doc, err = run(argv_, min(args.timeout, left))
        if err:
            errors[name] = err
        else:
            results[name] = doc
    print(f"GPU benchmarks ({where}{', toy sizes' if args.tiny else ''}), {time.perf_counter() - t0:.0f} s in all")
    print(table(results, errors))
    if args.json:
        print(json.dumps({"results": results, "errors": errors}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
