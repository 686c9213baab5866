#!/usr/bin/env bash
# The GPU benchmarks in one command (issue 12 item 4), one table with ratios, under 5 minutes on one H200:
# `uti encode` panoramas/s with an SO400M-shaped tower in float32 and bfloat16, and rows-only training against
# PEFT TrainableTokens at Qwen3-0.6B's full 28 layers and at Qwen3-4B's shape. See scripts/bench_table.py.
#
#   scripts/bench_gpu.sh [bench_table.py options, e.g. --only rows-4b]    PYTHON=... picks the interpreter
#
# Without a CUDA GPU it prints one line saying so and exits 0 (skipped; never required in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    echo "bench_gpu: skipped: no CUDA GPU visible to torch (torch.cuda.is_available() is False); run it on a GPU machine"
    exit 0
fi
exec "$py" scripts/bench_table.py --device cuda "$@"
