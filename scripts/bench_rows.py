"""Benchmark: rows-only training of 16,384 new rows on a Qwen3-0.6B-shaped model, ours vs two PEFT baselines.

    python scripts/bench_rows.py                 # 2 layers, batch 2 x 128 tokens, 3 timed steps
    python scripts/bench_rows.py --json          # machine-readable results
    python scripts/bench_rows.py --device cuda --shape qwen3-4b --layers 0 --methods ours,peft-tt

Model: Qwen3 architecture with Qwen3-0.6B's width and vocabulary (hidden 1024, intermediate 3072, 16 heads,
8 KV heads, head_dim 128, vocab 151936, tied head), random weights, `--layers` decoder layers (0 = the shape's
full depth, 28). `--shape qwen3-4b` is Qwen3-4B's (hidden 2560, intermediate 9728, 32 heads, 8 KV heads,
36 layers, same vocabulary, tied head); `--shape tiny` is a toy for tests (vocab 1024: give it `--new-rows`
a multiple of 128, as 16,384 is, so that PEFT's resized embedding has no padding rows of its own and peft-tt's
losses match ours). No weights are downloaded: the models are built from these configs, directly on
`--device` (float32).

Methods, on the same seeded batches (half text IDs, half new IDs; labels = inputs), AdamW lr 1e-3, no weight
decay, identical initial new rows (tokenlm's mean_noise init):

* ours: `tokenlm.model.grow_model` + stage rows, loss by `chunked_cross_entropy` (`--chunk` tokens).
* peft-tt: embedding resized to the grown size (the new rows copied in), PEFT `TrainableTokensConfig` on
  `embed_tokens` with the 16,384 new indices (PEFT ties the head); loss from the model's own forward.
* peft-mts: same resized model, PEFT `LoraConfig(modules_to_save=["embed_tokens", "lm_head"])`. PEFT needs at
  least one LoRA target, so q_proj gets an r=1 LoRA whose parameters are frozen (its B is zero: a no-op).

Each method runs in its own fresh subprocess, one after another. Measured there:

* step time: median wall time of the timed steps (forward, backward, optimizer step), after one warm-up step.
* peak memory: torch's CPU allocations do not show in tracemalloc, so a thread samples the process RSS from
  /proc/self/statm every 1 ms; we report the peak RSS during the steps (warm-up included, so the optimizer
  state's first allocation counts) minus the RSS just before the first step (the model already built). This
  is the extra memory training needs on top of the loaded model. On CUDA: `torch.cuda.max_memory_allocated`
  during the steps minus `memory_allocated` before them (timings there synchronise the device first).
* trainable params, optimizer-state bytes (all tensors in the optimizer state), saved bytes (our
  trainable_rows.<hash>.safetensors; PEFT's adapter_model.safetensors from save_pretrained).
* loss agreement: per-step losses of each method against ours (peft-tt trains the same function, so its
  losses must match to float rounding; peft-mts also trains the base rows, so it drifts after step 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

METHODS = ("ours", "peft-tt", "peft-mts")
BASE_VOCAB = 151936
QWEN3 = dict(num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=BASE_VOCAB)
SHAPES = {  # Qwen3ForCausalLM config fields; num_hidden_layers is the full depth (`--layers 0`)
    "qwen3-0.6b": dict(QWEN3, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28),
    "qwen3-4b": dict(QWEN3, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=1024),
}


class RssSampler:
    """Samples the resident set size every `interval` seconds in a thread; `peak` is the maximum seen."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def build_space(new_rows: int, base_vocab: int = BASE_VOCAB):
    """A space over `base_vocab` text IDs (Qwen3's 151936) whose new IDs (specials + image codes) number exactly
    `new_rows`."""
    from uti.space import SCHEMA, TokenSpace
    from uti.specials import default_specials

    specials = default_specials(0)
    abi = {"schema": SCHEMA, "text": {"tokenizer": "bench", "tokenizer_hash": None, "base_vocab_size": base_vocab},
           "specials": specials, "image": {"codebook_size": new_rows - len(specials), "layout": {"num_tiles": 0}},
           "pad_to_multiple": 128}
    return TokenSpace.from_abi(abi, name="bench")


def num_layers(args) -> int:
    """`--layers`, or the shape's full depth when it is 0."""
    return args.layers or SHAPES[args.shape]["num_hidden_layers"]


def build_base(layers: int, shape: str = "qwen3-0.6b", device: str = "cpu"):
    """The random-weight base model, built on `device` (a 4B model initialises in seconds there, not minutes)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(**{**SHAPES[shape], "num_hidden_layers": layers}, tie_word_embeddings=True,
                      max_position_embeddings=4096, attn_implementation="sdpa")
    torch.manual_seed(0)  # seeds the CUDA generators too: every method's subprocess builds the same weights
    with torch.device(device):
        return Qwen3ForCausalLM(cfg)


def batches(space, steps: int, batch: int, seq: int):
    import torch

    gen = torch.Generator().manual_seed(1)
    v, stop = space.ranges["text"].stop, space.ranges["padding"].start
    out = []
    for _ in range(steps):
        text = torch.randint(0, v, (batch, seq), generator=gen)
        new = torch.randint(v, stop, (batch, seq), generator=gen)
        ids = torch.where(torch.rand(batch, seq, generator=gen) < 0.5, text, new)
        out.append(ids)
    return out


def prepare(method: str, args, space):
    """(loss_fn(ids) -> loss, model, save_fn(dir) -> saved file) for `method`."""
    import torch

    from tokenlm.model import ChunkedLossLM, apply_stage, grow_model, init_new_rows

    model = build_base(num_layers(args), args.shape, args.device)
    base_vocab = SHAPES[args.shape]["vocab_size"]
    emb = model.get_input_embeddings()
    if method == "ours":
        emb.to("cpu")  # tokenlm grows a model on the CPU (its row init draws from a CPU generator), then moves it
        model = apply_stage(grow_model(model, space), "rows").to(args.device)
        wrapped = ChunkedLossLM(model, chunk_tokens=args.chunk)

        def save(d):
            from tokenlm.checkpoint import rows_file, save_rows
            save_rows(model, d, space)
            return rows_file(d)

        return (lambda ids: wrapped(ids, ids)[0]), model, save
    from peft import LoraConfig, TrainableTokensConfig, get_peft_model

    rows = init_new_rows(emb.weight.detach().cpu(), space, "mean_noise", None, 1.0, 0)  # the same rows as ours
    model.resize_token_embeddings(space.total, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[base_vocab:space.ranges["padding"].start] = rows.to(args.device)
    if method == "peft-tt":
        cfg = TrainableTokensConfig(target_modules=["embed_tokens"],
                                    token_indices=list(range(base_vocab, space.ranges["padding"].start)))
        model = get_peft_model(model, cfg)
    else:
        cfg = LoraConfig(r=1, target_modules=["q_proj"], modules_to_save=["embed_tokens", "lm_head"])
        model = get_peft_model(model, cfg)
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.requires_grad_(False)

    def save(d):
        model.save_pretrained(d)
        return Path(d) / "adapter_model.safetensors"

    return (lambda ids: model(input_ids=ids, labels=ids).loss), model, save


class CudaPeak:
    """Peak CUDA allocation during a block (the RssSampler interface): `rss()` is what is allocated now."""

    def rss(self) -> int:
        import torch

        return torch.cuda.memory_allocated()

    def __enter__(self) -> "CudaPeak":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.peak = self.rss()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated()


def worker(method: str, args) -> dict:
    import gc

    import torch

    torch.set_num_threads(args.threads) if args.threads else None
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(args.device)  # the memory statistics and synchronisation below are the current device's
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    space = build_space(args.new_rows, SHAPES[args.shape]["vocab_size"])
    loss_fn, model, save = prepare(method, args, space)
    model.train()
    params = {id(p): p for p in model.parameters() if p.requires_grad}
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3, weight_decay=0.0)
    data = [ids.to(args.device) for ids in batches(space, args.steps + 1, args.batch, args.seq)]
    losses, times = [], []
    gc.collect()
    with CudaPeak() if cuda else RssSampler() as mem:
        before = mem.rss()
        for ids in data:
            sync()
            t0 = time.perf_counter()
            loss = loss_fn(ids)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            times.append(time.perf_counter() - t0)
            losses.append(float(loss))
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                      if torch.is_tensor(t) and t.dim() > 0)
    with tempfile.TemporaryDirectory() as d:
        saved = save(d).stat().st_size
    return {"method": method, "step_s": statistics.median(times[1:]), "peak_extra_bytes": mem.peak - before,
            "rss_before_bytes": before, "trainable_params": sum(p.numel() for p in params.values()),
            "optimizer_state_bytes": state_bytes, "saved_bytes": saved, "losses": losses,
            "threads": torch.get_num_threads(), "device": args.device, "shape": args.shape,
            "layers": num_layers(args), "tokens_per_step": args.batch * args.seq}


def run_all(args) -> dict[str, dict]:
    results = {}
    for method in args.methods:
        cmd = [sys.executable, __file__, "--worker", method, "--layers", str(args.layers), "--new-rows",
               str(args.new_rows), "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
               "--chunk", str(args.chunk), "--threads", str(args.threads), "--shape", args.shape,
               "--device", args.device]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
        results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def table(results: dict[str, dict]) -> str:
    ours = results["ours"]
    methods = [m for m in METHODS if m in results]
    mib = 1 << 20
    rows = [("step time (s)", "step_s", 1.0, "{:.2f}"), ("peak extra memory (MiB)", "peak_extra_bytes", mib, "{:.0f}"),
            ("trainable params", "trainable_params", 1.0, "{:,.0f}"),
            ("optimizer state (MiB)", "optimizer_state_bytes", mib, "{:.1f}"),
            ("saved bytes (MiB)", "saved_bytes", mib, "{:.2f}")]
    head = f"{'metric':<26}" + "".join(f"{m:>14}" for m in methods) + "".join(f"{m + '/ours':>16}" for m in methods[1:])
    lines = [head, "-" * len(head)]
    for label, key, scale, fmt in rows:
        vals = [results[m][key] for m in methods]
        cells = "".join(f"{fmt.format(v / scale):>14}" for v in vals)
        ratios = "".join(f"{(v / ours[key] if ours[key] else float('nan')):>15.2f}x" for v in vals[1:])
        lines.append(f"{label:<26}{cells}{ratios}")
    for m in methods[1:]:
        diffs = [abs(a - b) for a, b in zip(results[m]["losses"], ours["losses"])]
        lines.append(f"loss |{m} - ours| per step: " + ", ".join(f"{d:.2e}" for d in diffs))
    lines.append("losses ours: " + ", ".join(f"{x:.4f}" for x in ours["losses"]))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; bad values (an unknown method, no `ours`, `--steps 0`) exit 2 with one line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b", help="model config (random weights)")
    ap.add_argument("--layers", type=int, default=2, help="decoder layers (0 = the shape's full depth)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    ap.add_argument("--new-rows", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    ap.add_argument("--chunk", type=int, default=512, help="tokens per logits chunk (ours)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad or "ours" not in args.methods:
        ap.error(f"--methods must list ours and any of {', '.join(METHODS[1:])}, got {','.join(args.methods)}")
    if args.steps < 1 or args.layers < 0 or min(args.batch, args.seq, args.new_rows, args.chunk) < 1:
        ap.error("--steps, --batch, --seq, --new-rows and --chunk must be positive and --layers >= 0")
    if args.device != "cpu" and not (args.device == "cuda" or args.device.startswith("cuda:")):
        ap.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    return args


def main() -> None:
    args = parse_args()
    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            print(f"error: --device {args.device} asked for, but torch sees no CUDA GPU "
                  "(torch.cuda.is_available() is False); use --device cpu", file=sys.stderr)
            sys.exit(2)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    results = run_all(args)
    if args.json:
        print(json.dumps(results))
        return
    cfg = SHAPES[args.shape]
    print(f"{args.shape}-shaped, {num_layers(args)} layers, vocab {cfg['vocab_size']} + {args.new_rows} new rows, "
          f"tied; batch {args.batch} x {args.seq} tokens, {args.steps} timed steps, "
          f"{results['ours']['threads']} threads, {args.device}")
    print(table(results))


if __name__ == "__main__":
    main()
