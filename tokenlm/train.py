"""Training on Hugging Face Accelerate: stages rows | lora | full, eval, checkpoints and exact resume.

One code path for one CPU process, `torchrun`/`accelerate launch` with DDP (gloo on CPU, NCCL on GPU):

* Data: every process builds the same packed rows (`tokenlm.data`). Step s takes the global batch
  `batch_size * processes * grad_accum` rows from a seeded per-epoch permutation (a pure function of
  seed and step, so resume needs no sampler state); micro-batch m of rank r is a fixed slice of it.
* Loss: the chunked full-vocabulary cross-entropy of `tokenlm.model.ChunkedLossLM`. Each micro-batch's
  mean is rescaled by `count * processes / global_count` (DDP averages gradients over processes), so the
  gradient is that of the per-token mean over the whole global batch: one process and N processes on the
  same global batch give the same update.
* Checkpoints under `out/checkpoints/step-NNNNNN/`: the rows checkpoint (`tokenlm.checkpoint.save_rows`)
  plus `train_state.safetensors` (optimizer tensors under `optimizer.state.<i>.<name>`, RNG states) and
  `train_state.json` (written last: step, loss history, param groups, and the run's facts: tasks, a
  fingerprint of the built train/eval sequences, global batch, seed, ...). No pickle. Only the newest
  `keep_last` step folders are kept. Resume loads the newest one, refuses other facts (one line showing
  both) and reproduces the uninterrupted run's losses exactly.
* The final rows go to `out/` itself (the folder `tokenlm generate --rows` takes), the summary to
  `out/train_result.json`.
* A non-empty `out` needs `resume` or `overwrite` (which deletes only what a run writes); what killed
  runs left (temp files, half-pruned folders) is cleaned at start (`tokenlm.run_dir`).

FSDP: the model is prepared by Accelerate, so an FSDP `accelerate launch` config wraps it; the optimizer
state written here is then each rank's shard view and resume is supported for DDP/single process only.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uti.errors import UTIError
from uti.io import atomic_save_safetensors, atomic_write_json
from uti.space import TokenSpace

from .checkpoint import MANIFEST_FILE, ROWS_STEM, SPACE_STEM
from .data import build_rows, build_sequences, collate, label_count, load_shard_items, read_records, split_records
from .train_config import TrainConfig
from .run_dir import check_facts, prepare_out, prune_steps, rows_fingerprint, step_dirs
from .train_state import optimizer_state_join, optimizer_state_split

__all__ = ["TrainConfig", "TrainResult", "TrainError", "train", "global_batch_indices", "latest_checkpoint"]

STATE_FORMAT = "tokenlm-train-state"
STEP_PATTERN, STATE_FILE = r"step-(\d+)", "train_state.json"
# what a run writes into out/: anything else makes --overwrite refuse
_ARTIFACT = re.compile(rf"{MANIFEST_FILE}|{ROWS_STEM}\.[0-9a-f]{{16}}\.safetensors|{SPACE_STEM}\.[0-9a-f]{{16}}\.json|"
                       r"train_result\.json|checkpoints|trainable_rows\.safetensors|token_space\.json|\..*\.tmp|"
                       r"\.deleting-.*")


class TrainError(UTIError, ValueError):
    """A run cannot start or resume as configured."""


@dataclass
class TrainResult:
    """What a run did: per-step train losses (whole run, resumed parts included) and eval losses."""

    out: str
    steps: int
    losses: list[float]
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    train_rows: int = 0
    eval_rows: int = 0
    processes: int = 1
    seconds: float = 0.0
    resumed_from: int | None = None

    def to_json(self) -> dict:
        return {"out": self.out, "steps": self.steps, "losses": self.losses,
                "eval_losses": [list(e) for e in self.eval_losses], "final_loss": self.losses[-1] if self.losses else None,
                "final_eval_loss": self.eval_losses[-1][1] if self.eval_losses else None,
                "train_rows": self.train_rows, "eval_rows": self.eval_rows, "processes": self.processes,
                "seconds": round(self.seconds, 3), "resumed_from": self.resumed_from}


# data schedule ----------------------------------------------------------------------------------

def global_batch_indices(step: int, n_rows: int, size: int, seed: int) -> list[int]:
    """Row indices of optimizer step `step`: positions [step*size, (step+1)*size) of the epoch-permutation stream."""
    out: list[int] = []
    perms: dict[int, list[int]] = {}
    for pos in range(step * size, (step + 1) * size):
        epoch, k = divmod(pos, n_rows)
        if epoch not in perms:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            perms[epoch] = torch.randperm(n_rows, generator=gen).tolist()
        out.append(perms[epoch][k])
    return out


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))


# data -------------------------------------------------------------------------------------------

def _load_data(cfg: TrainConfig, space: TokenSpace) -> tuple[list, list]:
    """(train rows, eval rows) from the config's sources."""
    shard_dirs = [p for p in cfg.data + cfg.eval_data if Path(p).is_dir()]
    missing = [p for p in cfg.data + cfg.eval_data if not Path(p).exists()]
    if missing:
        raise TrainError(f"data source(s) not found: {', '.join(missing)}")
    items = load_shard_items(shard_dirs, space) if shard_dirs else {}
    records = [r for p in cfg.data if Path(p).is_file() for r in read_records(p)]
    if not records:
        raise TrainError(f"no records in {', '.join(cfg.data)}; give at least one JSONL file of records")
    train_recs, eval_recs = split_records(records, cfg.eval_fraction, cfg.seed)
    eval_recs += [r for p in cfg.eval_data if Path(p).is_file() for r in read_records(p)]
    train_rows = build_rows(build_sequences(train_recs, space, cfg.tasks, items), space, cfg.max_len, cfg.seed)
    eval_rows = build_rows(build_sequences(eval_recs, space, cfg.tasks, items), space, cfg.max_len, None)
    if not train_rows:
        raise TrainError(f"the records give no sequences for tasks {', '.join(cfg.tasks)}")
    return train_rows, eval_rows


# model ------------------------------------------------------------------------------------------

def _base_ref(cfg: TrainConfig, space: TokenSpace) -> str:
    if cfg.base:
        return cfg.base
    if "base_model" not in space.assets:
        raise TrainError(f"space {space.name!r} names no base_model asset; pass --base (hub id or folder)")
    return str(space.asset("base_model"))


def _build_model(cfg: TrainConfig, space: TokenSpace, resume_dir: Path | None) -> torch.nn.Module:
    """Base -> grown -> stage applied (fresh) or rows patched back (resume); wrapped for the chunked loss."""
    from .checkpoint import load_rows, read_manifest
    from .model import ChunkedLossLM, apply_stage, grow_model, load_base

    model = grow_model(load_base(_base_ref(cfg, space), cfg.dtype), space, init=cfg.init, seed=cfg.seed)
    if resume_dir is None:
        model = apply_stage(model, cfg.stage)
    else:
        stage = read_manifest(resume_dir)["stage"]
        if stage != cfg.stage:
            raise TrainError(f"{resume_dir} was trained with stage {stage!r}, this run asks for {cfg.stage!r}")
        model = load_rows(model, resume_dir, space)
    model.train()
    return ChunkedLossLM(model, chunk_tokens=cfg.chunk_tokens)


# train state (optimizer + step + RNG), no pickle -------------------------------------------------

def _save_train_state(folder: Path, optimizer: Any, step: int, losses: list, evals: list, facts: dict) -> None:
    tensors, opt_json = optimizer_state_split(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    py_state = random.getstate()
    atomic_save_safetensors(folder / "train_state.safetensors", tensors, metadata={"format": STATE_FORMAT})
    atomic_write_json(folder / STATE_FILE, {
        "format": STATE_FORMAT, "version": 1, "step": step, "losses": losses, "eval_losses": evals,
        "param_groups": opt_json["param_groups"], "optimizer_scalars": opt_json["scalars"],
        "python_random": [py_state[0], list(py_state[1]), py_state[2]], **facts,
    })


def _load_train_state(folder: Path, optimizer: Any, facts: dict) -> dict:
    from safetensors.torch import load_file

    try:
        meta = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / "train_state.safetensors"))
    except Exception as err:  # missing, truncated or garbled files
        raise TrainError(f"{folder}: cannot read train state ({str(err).splitlines()[0]}); "
                         "delete this checkpoint folder to resume from an earlier one") from None
    check_facts(folder, meta, facts, TrainError)
    optimizer_state_join(optimizer, tensors, {"param_groups": meta["param_groups"], "scalars": meta["optimizer_scalars"]})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    v, s, g = meta["python_random"]
    random.setstate((v, tuple(s), g))
    return meta


def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest `out/checkpoints/step-N` folder holding a complete train state, or None."""
    found = step_dirs(Path(out) / "checkpoints", STEP_PATTERN, STATE_FILE)
    return found[-1][1] if found else None


# the loop ---------------------------------------------------------------------------------------

def _evaluate(model: Any, acc: Any, rows: list, batch_size: int) -> float | None:
    """Per-token mean loss over `rows` (split across processes, summed with all-reduce)."""
    if not rows:
        return None
    mine = rows[acc.process_index::acc.num_processes]
    total = torch.zeros(2, dtype=torch.float64, device=acc.device)  # (loss sum, tokens)
    model.eval()
    with torch.no_grad():
        for k in range(0, len(mine), batch_size):
            batch = {n: t.to(acc.device) for n, t in collate(mine[k:k + batch_size]).items()}
            loss, count = model(**batch)
            total += torch.stack([loss.double() * count, count.double()])
    model.train()
    total = acc.reduce(total, "sum")
    return (total[0] / total[1].clamp_min(1)).item()


def _step(model: Any, acc: Any, rows: list, idx: list[int], cfg: TrainConfig) -> float:
    """Forward/backward of one global batch (all micro-batches of this rank); returns the global mean loss."""
    world, rank, b = acc.num_processes, acc.process_index, cfg.batch_size
    global_count = label_count([rows[i] for i in idx])
    if global_count == 0:
        raise TrainError("a global batch has no labelled tokens; check tasks and data")
    local = torch.zeros((), dtype=torch.float64, device=acc.device)
    for m in range(cfg.grad_accum):
        chunk = idx[m * b * world:(m + 1) * b * world][rank * b:(rank + 1) * b]
        batch = {n: t.to(acc.device) for n, t in collate([rows[i] for i in chunk]).items()}
        sync = m == cfg.grad_accum - 1
        with contextlib.nullcontext() if sync else acc.no_sync(model):
            loss, count = model(**batch)
            acc.backward(loss * (count * world / global_count))
        local += loss.detach().double() * count
    return (acc.reduce(local, "sum") / global_count).item()


def _has_accelerator() -> bool:
    """A GPU (or other torch accelerator) is present (torch >= 2.6 API, CUDA check before)."""
    api = getattr(torch, "accelerator", None)
    return bool(api.is_available()) if api is not None else torch.cuda.is_available()


def _accelerator(config: TrainConfig) -> Any:
    """Accelerate on the configured device: `cuda` without a visible GPU is a one-line error."""
    from accelerate import Accelerator

    if config.device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda asked for, but torch sees no CUDA GPU (torch.cuda.is_available() is "
                         "False); use --device cpu or install a CUDA build of torch")
    # Without a GPU/XPU/... we must say cpu=True, or Accelerate ignores torchrun's WORLD_SIZE (no gloo group).
    return Accelerator(cpu=config.device == "cpu" or not _has_accelerator())


def _prepare_out(config: TrainConfig, acc: Any) -> None:
    """Every process checks `out` (non-empty needs resume/overwrite), then the main one clears/cleans it."""
    args = (config.out, config.resume, config.overwrite, lambda p: bool(_ARTIFACT.fullmatch(p.name)), TrainError)
    prepare_out(*args, first=(MANIFEST_FILE,), act=False)
    acc.wait_for_everyone()
    if acc.is_main_process:
        prepare_out(*args, first=(MANIFEST_FILE,))
    acc.wait_for_everyone()


def _facts(config: TrainConfig, space: TokenSpace, gsize: int, train_rows: list, eval_rows: list) -> dict:
    """What a resumed run must share with its checkpoint (checked by `check_facts`)."""
    data = rows_fingerprint((r.input_ids, r.labels, r.position_ids) for r in train_rows + eval_rows)
    return {"tasks": sorted(config.tasks), "data_hash": data, "global_batch": gsize, "seed": config.seed,
            "train_rows": len(train_rows), "eval_rows": len(eval_rows), "max_len": config.max_len,
            "steps": config.steps, "token_space_hash": space.hash}


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) training as configured; see the module docstring. Returns the losses."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from .checkpoint import save_rows

    t0 = time.perf_counter()
    acc = _accelerator(config)
    _prepare_out(config, acc)
    set_seed(config.seed)
    space = TokenSpace.load(config.space)
    train_rows, eval_rows = _load_data(config, space)
    gsize = config.batch_size * acc.num_processes * config.grad_accum
    facts = _facts(config, space, gsize, train_rows, eval_rows)
    resume_dir = latest_checkpoint(config.out) if config.resume else None
    wrapper = _build_model(config, space, resume_dir)
    params = [p for p in wrapper.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    start, losses, evals = 0, [], []
    if resume_dir is not None:
        meta = _load_train_state(resume_dir, optimizer, facts)
        start, losses, evals = meta["step"], list(meta["losses"]), [tuple(e) for e in meta["eval_losses"]]
    model, optimizer = acc.prepare(wrapper, optimizer)
    base_ref = _base_ref(config, space)

    def checkpoint(step: int, folder: Path) -> None:
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_rows(acc.unwrap_model(model).lm, folder, space, base_model=base_ref)
            if folder.name.startswith("step-"):
                _save_train_state(folder, optimizer, step, losses, evals, facts)
                prune_steps(step_dirs(folder.parent, STEP_PATTERN, STATE_FILE), config.keep_last)
        acc.wait_for_everyone()

    bar = tqdm(total=config.end_step, initial=start, desc=f"train {config.stage}", unit="step",
               disable=not (config.progress and acc.is_main_process))
    for step in range(start, config.end_step):
        for g in optimizer.param_groups:
            g["lr"] = _lr_at(config, step)
        losses.append(_step(model, acc, train_rows, global_batch_indices(step, len(train_rows), gsize, config.seed),
                            config))
        if config.max_grad_norm > 0:
            acc.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        done = step + 1
        if config.eval_every and done % config.eval_every == 0 and done != config.steps:
            evals.append((done, _evaluate(model, acc, eval_rows, config.batch_size)))
        if config.save_every and done % config.save_every == 0 or done == config.end_step:
            if done == config.steps and eval_rows:
                evals.append((done, _evaluate(model, acc, eval_rows, config.batch_size)))
            checkpoint(done, Path(config.out) / "checkpoints" / f"step-{done:06d}")
    bar.close()
    if config.end_step == config.steps:
        checkpoint(config.steps, Path(config.out))
    result = TrainResult(out=str(config.out), steps=config.end_step, losses=losses,
                         eval_losses=[e for e in evals if e[1] is not None], train_rows=len(train_rows),
                         eval_rows=len(eval_rows), processes=acc.num_processes, seconds=time.perf_counter() - t0,
                         resumed_from=start if resume_dir is not None else None)
    if acc.is_main_process:
        atomic_write_json(Path(config.out) / "train_result.json", result.to_json())
    acc.wait_for_everyone()
    return result
