"""The benchmark scripts' plumbing on a CPU: bench_gpu.sh's skip line, bench_table's commands and table, the
option checks of bench_rows, and bench_e2p at toy size. The GPU numbers themselves need a GPU (not in CI)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}  # a GPU machine behaves as one without


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_table = _script("bench_table")
bench_rows = _script("bench_rows")


def test_bench_gpu_sh_skips_with_one_line_without_cuda() -> None:
    proc = subprocess.run(["bash", str(SCRIPTS / "bench_gpu.sh")], capture_output=True, text=True, timeout=120,
                          env={**NO_GPU, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout.count("\n") == 1
    assert proc.stdout.startswith("bench_gpu: skipped: no CUDA GPU")


def test_bench_table_commands_are_what_the_scripts_accept(capsys: pytest.CaptureFixture) -> None:
    assert bench_table.main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(bench_table.BENCHES)
    cmds = bench_table.commands("cuda", False, 32, 5)
    encode_flags = set(re.findall(r'add_argument\("(--[a-z0-9-]+)"', (SCRIPTS / "bench_encode.py").read_text()))
    for name in ("encode-fp32", "encode-bf16"):
        argv = cmds[name]
        assert set(a for a in argv if a.startswith("--")) <= encode_flags, argv
        assert argv[argv.index("--device") + 1] == "cuda" and argv[argv.index("--so400m-panoramas") + 1] == "32"
    assert cmds["encode-bf16"][-2:] == ["--dtype", "bfloat16"] and cmds["encode-fp32"][-2:] == ["--dtype", "float32"]
    for name, shape, layers in (("rows-0.6b", "qwen3-0.6b", 28), ("rows-4b", "qwen3-4b", 36)):
        args = bench_rows.parse_args(cmds[name][2:])  # past the interpreter and the script
        assert (args.shape, args.device, args.methods) == (shape, "cuda", ["ours", "peft-tt"])
        assert bench_rows.num_layers(args) == layers
    tiny = bench_table.commands("cpu", True, 32, 1)
    assert bench_rows.parse_args(tiny["rows-4b"][2:]).shape == "tiny"


def _rows(step: float, peak: int, saved: int, losses: list[float], method: str) -> dict:
    return {"method": method, "step_s": step, "peak_extra_bytes": peak, "saved_bytes": saved, "losses": losses,
            "shape": "qwen3-4b", "layers": 36, "tokens_per_step": 2048}


def test_table_has_one_row_per_measure_with_ratios() -> None:
    enc = lambda pps, ms: [{"config": "tiny", "panoramas_per_s": 50.0, "views": 2, "tile": 64, "tower_ms": 1.0,
                            "overhead_vs_tower": 3.0},
                           {"config": "so400m", "panoramas_per_s": pps, "views": 9, "tile": 384, "tower_ms": ms,
                            "overhead_vs_tower": 0.05}]
    results = {"encode-fp32": enc(10.0, 80.0), "encode-bf16": enc(25.0, 40.0),
               "rows-4b": {"ours": _rows(0.5, 4 << 20, 1 << 20, [7.0, 6.5], "ours"),
                           "peft-tt": _rows(0.75, 10 << 20, 2 << 20, [7.0, 6.5001], "peft-tt")}}
    out = bench_table.table(results, {"rows-0.6b": "timed out after 150 s"})
    lines = out.splitlines()
    bf16 = next(line for line in lines if "bfloat16" in line)
    assert "so400m (9 views of 384)" in bf16 and "25.00" in bf16 and bf16.endswith("2.50x")
    towers = [line for line in lines if "tower ms per panorama" in line]
    assert len(towers) == 2 and towers[0].endswith("-") and towers[1].endswith("2.00x")
    step = next(line for line in lines if line.startswith("rows qwen3-4b (36 layers, 2048 tok) step s"))
    assert step.endswith("1.50x")
    assert next(line for line in lines if "peak extra memory" in line).endswith("2.50x")
    assert next(line for line in lines if "saved MiB" in line).endswith("2.00x")
    assert "1.0e-04" in next(line for line in lines if "max |loss" in line)
    assert "failed" in next(line for line in lines if line.startswith("rows-0.6b "))


def test_bench_table_and_bench_rows_refuse_cuda_without_a_gpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_table.main(["--device", "cuda", "--only", "rows-4b"]) == 2
    monkeypatch.setattr(sys, "argv", ["bench_rows.py", "--device", "cuda"])
    with pytest.raises(SystemExit) as exc:
        bench_rows.main()
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 2, out.err
    assert all(line.startswith("error: --device cuda asked for") for line in out.err.splitlines())


@pytest.mark.parametrize("argv,message", [
    (["--methods", "peft-tt"], "must list ours"),
    (["--methods", "ours,lora"], "must list ours"),
    (["--steps", "0"], "must be positive"),
    (["--device", "tpu"], "cpu or cuda"),
    (["--shape", "qwen3-8b"], "invalid choice"),
])
def test_bench_rows_rejects_bad_options(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_rows.parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_bench_table_rejects_unknown_benchmarks(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_table.main(["--only", "rows-8b", "--dry-run"])
    assert exc.value.code == 2 and "--only must name" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_e2p_runs_at_toy_size() -> None:
    pytest.importorskip("py360convert")
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_e2p.py"), "--repeats", "2", "--size", "32",
                           "--pano-width", "256", "--threads", "1"], capture_output=True, text=True, env=NO_GPU,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "global view bit-identical to cv2.INTER_AREA: True" in proc.stdout
    assert re.search(r"py360convert's 8 tiles \(target >= 4x\): best round [\d.]+x, median of per-round ratios "
                     r"[\d.]+x, CPU time [\d.]+x", proc.stdout)


@pytest.mark.slow
def test_tiny_rows_pipeline_on_cpu() -> None:
    """The whole path bench_gpu.sh takes (subprocesses, JSON, table) with a toy model on the CPU."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_table.py"), "--device", "cpu", "--tiny", "--only",
                           "rows-0.6b", "--steps", "1"], capture_output=True, text=True, env=NO_GPU, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert next(line for line in lines if line.startswith("rows tiny (2 layers, 16 tok) step s"))
    loss = next(line for line in lines if "max |loss PEFT TT - ours|" in line)
    assert float(loss.split()[-3]) < 1e-4  # PEFT TrainableTokens trains the same function as ours


def test_a_timed_out_benchmark_is_killed_with_its_workers(tmp_path: Path) -> None:
    """bench_rows runs each method in a worker process: a timeout must not leave one holding the device."""
    pid_file, worker = tmp_path / "pid", tmp_path / "worker.py"
    worker.write_text(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    child = (f"import subprocess as s, sys; s.run([sys.executable, {str(worker)!r}], stdout=s.DEVNULL, "
             "stderr=s.DEVNULL)")  # the worker does not hold the pipes: nothing but the kill ends it
    doc, err = bench_table.run([sys.executable, "-c", child], timeout=3)
    assert doc is None and err == "timed out after 3 s"
    pid = int(pid_file.read_text())
    stat = Path(f"/proc/{pid}/stat")
    for _ in range(50):  # the orphan is reaped by init shortly after the kill
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in "ZX":
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the worker outlived its timed-out benchmark")


def test_benchmarks_past_the_budget_are_skipped(capsys: pytest.CaptureFixture) -> None:
    assert bench_table.main(["--device", "cpu", "--tiny", "--budget", "5"]) == 1  # nothing starts with < 10 s left
    out = capsys.readouterr().out
    assert out.count("skipped: the 5 s budget") == 4 and "rows tiny" not in out


def test_parse_json_takes_the_document_after_notes() -> None:
    doc = [{"config": "so400m", "panoramas_per_s": 3.0}]
    text = "(tiny space unusable: no image section)\n" + json.dumps(doc, indent=2) + "\n"
    assert bench_table.parse_json(text) == doc
    assert bench_table.parse_json('note\n{"ours": {"step_s": 1}}') == {"ours": {"step_s": 1}}
    with pytest.raises(ValueError, match="no JSON"):
        bench_table.parse_json("error: nothing measured")
