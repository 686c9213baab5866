"""Training of the continuous track on Hugging Face Accelerate (one CPU process up to many GPUs).

Stage `connector` trains the connector only (tower features are precomputed, the LLM is frozen); stage
`lora` adds peft LoRA on the LLM. Progress bar (tqdm), periodic held-out eval (own image vs shuffled
image), step checkpoints with exact resume (same data order, optimizer state in safetensors) and a final
connector-only checkpoint in `out_dir/final`.

Run folders follow `tokenlm.run_dir` like the token-LM loop: only the newest `keep_checkpoints` step
folders stay; a resume refuses another stage, data, seed or global batch (one line showing both); a
non-empty `out_dir` without `resume` needs `overwrite`; temp files of killed runs are cleaned at start.

Under `torchrun`/`accelerate launch` (DDP; gloo on CPU) each process takes its share of the global batch
and its per-token mean loss is rescaled by `count * processes / global_count`, so N processes and one
process on the same global batch make the same update (`tests/test_connectors_ddp.py` checks it).
"""

from __future__ import annotations

import math
import re
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import xxhash

from tokenlm.run_dir import check_facts, prepare_out
from uti.config import to_dict
from uti.hashing import canonical_json, hash_tensors
from uti.io import atomic_write_text
from uti.sequence import IGNORE_INDEX as IGNORE

from .checkpoint import checkpoint_tensors, save_connector
from .data import CaptionExample, collate_captions, shuffled_images
from .errors import ConnectorError
from .train_state import latest_step_dir, load_optimizer, prune_step_dirs, read_state, save_optimizer, write_state
from .vlm import ContinuousVLM, add_lora

__all__ = [
    "ConnectorTrainConfig", "TrainResult", "train_connector", "evaluate_captions", "peak_memory_bytes", "lr_at",
    "batch_indices",
]

STAGES = ("connector", "lora")


@dataclass
class ConnectorTrainConfig:
    """Hyper-parameters of a connector run; `batch_size` is per process."""

    stage: str = "connector"
    steps: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 0  # 0: only at the end
    save_every: int = 0  # 0: only the final checkpoint
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("steps and batch_size must be >= 1 and lr > 0")


@dataclass
class TrainResult:
    """What a run produced: final checkpoint, last eval, losses and cost."""

    final_dir: Path
    eval: dict[str, float]
    losses: list[float] = field(default_factory=list)
    step_time_s: float = 0.0  # median seconds per optimizer step
    peak_memory_bytes: int = 0
    trainable_params: int = 0


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory so far: CUDA max allocated on GPU, the process's max RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def lr_at(step: int, cfg: ConnectorTrainConfig) -> float:
    """Linear warm-up then cosine decay to 10 % of `lr`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(t, 1.0))))


def batch_indices(step: int, n: int, cfg: ConnectorTrainConfig, rank: int = 0, world: int = 1) -> list[int]:
    """This process's example indices for `step`: epochs are seeded permutations, so resume replays them."""
    glob = cfg.batch_size * world
    out = []
    for pos in range(step * glob + rank, (step + 1) * glob, world):
        epoch, i = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        out.append(int(perm[i]))
    return out


@torch.no_grad()
def evaluate_captions(
    vlm: ContinuousVLM, examples: Sequence[CaptionExample], encode: Callable[[str], list[int]],
    batch_size: int = 8, eos_id: int | None = None,
) -> dict[str, float]:
    """Token-weighted held-out loss with each example's own image and with a shuffled image; gap = shuffled - own."""
    was_training = vlm.training
    vlm.eval()
    device = next(vlm.parameters()).device
    out = {}
    for name, data in (("loss", list(examples)), ("shuffled_loss", shuffled_images(examples))):
        total, count = 0.0, 0
        for i in range(0, len(data), batch_size):
            batch = collate_captions(data[i : i + batch_size], encode, vlm.ids, vlm.tokens_per_image(1), eos_id)
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            res = vlm(batch["input_ids"].to(device), [im.to(device) for im in batch["images"]],
                      attention_mask=batch["attention_mask"].to(device), labels=batch["labels"].to(device))
            total, count = total + float(res.loss) * n, count + n
        out[name] = total / max(count, 1)
    out["gap"] = out["shuffled_loss"] - out["loss"]
    vlm.train(was_training)
    return out


_ARTIFACT = re.compile(r"step-\d+|final|losses\.json|\..*\.tmp|\.deleting-.*")  # what a run writes into out_dir


def data_fingerprint(examples: Sequence[CaptionExample]) -> str:
    """xxh3-128 hex of the examples in order: prompt, target and image tensors of each."""
    h = xxhash.xxh3_128()
    for ex in examples:
        h.update(canonical_json([ex.prompt, ex.target]))
        h.update(hash_tensors({"f": ex.image.features, "y": ex.image.yaw_pitch, "g": ex.image.is_global}).encode())
    return h.hexdigest()


def _facts(cfg: ConnectorTrainConfig, world: int, train: Sequence[CaptionExample]) -> dict[str, Any]:
    """What a resumed run must share with its step checkpoint."""
    return {"stage": cfg.stage, "data_hash": data_fingerprint(train), "global_batch": cfg.batch_size * world,
            "seed": cfg.seed, "steps": cfg.steps}


def _resume(vlm: ContinuousVLM, opt: torch.optim.Optimizer, out_dir: Path, facts: dict) -> tuple[int, list[float]]:
    step_dir = latest_step_dir(out_dir)
    if step_dir is None:
        return 0, []
    state = read_state(step_dir)
    check_facts(step_dir, state.get("facts", {}), facts, ConnectorError)
    weights, lora = checkpoint_tensors(step_dir)
    vlm.connector.load_state_dict(weights)
    if vlm.lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(vlm.llm, lora)
    load_optimizer(opt, step_dir, state["optimizer"])
    return int(state["step"]), list(state["losses"])


def _save_step(vlm: ContinuousVLM, opt: torch.optim.Optimizer, out_dir: Path, step: int, losses: list[float],
               cfg: ConnectorTrainConfig, tower: dict[str, Any], space_hash: str | None, facts: dict) -> None:
    step_dir = out_dir / f"step-{step}"
    save_connector(vlm, step_dir, tower, space_hash=space_hash)
    opt_info = save_optimizer(opt, step_dir)
    write_state(step_dir, {"step": step, "losses": losses, "config": to_dict(cfg), "optimizer": opt_info,
                           "facts": facts})
    prune_step_dirs(out_dir, cfg.keep_checkpoints)


def _label_count(labels: torch.Tensor) -> int:
    """Tokens that carry a loss in `labels` (B, S): the LLM predicts position t + 1 from t, so column 0 never does."""
    return int((labels[:, 1:] != IGNORE).sum())


def _train_step(acc: Any, model: Any, opt: Any, params: list, batch: dict, lr: float, max_norm: float) -> float:
    """One optimizer step on this process's share of the global batch; returns the global per-token mean loss.

    The LLM's loss is this process's per-token mean. It is rescaled by `count * processes / global_count`
    (DDP averages gradients over processes), so the gradient is that of the per-token mean over the whole
    global batch: N processes and one process on the same global batch make the same update.
    """
    for group in opt.param_groups:
        group["lr"] = lr
    dev = acc.device
    count = _label_count(batch["labels"])
    global_count = int(acc.reduce(torch.tensor(count, dtype=torch.float64, device=dev), reduction="sum"))
    if global_count == 0:
        raise ConnectorError("a global batch has no target tokens; give every example a non-empty target")
    res = model(input_ids=batch["input_ids"].to(dev), images=[im.to(dev) for im in batch["images"]],
                attention_mask=batch["attention_mask"].to(dev), labels=batch["labels"].to(dev))
    # A share without targets has a NaN mean; it still joins the backward (DDP all-reduce) with a zero loss.
    loss = res.loss * (count * acc.num_processes / global_count) if count else res.logits.sum() * 0.0
    acc.backward(loss)
    if max_norm > 0:
        acc.clip_grad_norm_(params, max_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    local = res.loss.detach().double() * count if count else torch.zeros((), dtype=torch.float64, device=dev)
    return float(acc.reduce(local, reduction="sum")) / global_count


def train_connector(
    vlm: ContinuousVLM, train: Sequence[CaptionExample], held_out: Sequence[CaptionExample], *,
    encode: Callable[[str], list[int]], config: ConnectorTrainConfig, out_dir: str | Path,
    tower: dict[str, Any], space_hash: str | None = None, eos_id: int | None = None,
    accelerator: Any = None, resume: bool = True, stop_at: int | None = None, overwrite: bool = False,
) -> TrainResult:
    """Train `vlm` per `config`, resuming from the newest `out_dir/step-N` when `resume`; see module doc.

    `stop_at` ends this call after that step (saving a resumable `step-N` first), e.g. for time-limited jobs.
    `overwrite` (instead of `resume`) deletes the run already in `out_dir` first (only what a run writes).
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    if not train:
        raise ConnectorError("no training examples given; pass at least one CaptionExample")
    if resume and overwrite:
        raise ConnectorError("give either resume or overwrite, not both")
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    cfg, out = config, Path(out_dir)
    args = (out, resume, overwrite, lambda p: bool(_ARTIFACT.fullmatch(p.name)), ConnectorError)
    prepare_out(*args, first=("final",), act=False)
    acc.wait_for_everyone()
    if acc.is_main_process:
        prepare_out(*args, first=("final",))
    acc.wait_for_everyone()
    facts = _facts(cfg, acc.num_processes, train)
    if cfg.stage == "lora" and vlm.lora is None:
        add_lora(vlm, r=cfg.lora_r, alpha=cfg.lora_alpha, target_modules=cfg.lora_targets)
    vlm.to(acc.device).train()
    params = [p for p in vlm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, losses = _resume(vlm, opt, out, facts) if resume else (0, [])
    model, opt = acc.prepare(vlm, opt)
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    times: list[float] = []
    bar = tqdm(total=cfg.steps, initial=start, disable=not acc.is_local_main_process, desc=f"connector/{cfg.stage}")
    for step in range(start, end):
        t0 = time.perf_counter()
        idx = batch_indices(step, len(train), cfg, acc.process_index, acc.num_processes)
        batch = collate_captions([train[i] for i in idx], encode, vlm.ids, vlm.tokens_per_image(1), eos_id)
        losses.append(_train_step(acc, model, opt, params, batch, lr_at(step, cfg), cfg.max_grad_norm))
        times.append(time.perf_counter() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        done = step + 1
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps and acc.is_main_process:
            bar.write(f"step {done}: {evaluate_captions(vlm, held_out, encode, eos_id=eos_id)}")
        if (cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps) or done == stop_at:
            if acc.is_main_process:
                inner = opt.optimizer if hasattr(opt, "optimizer") else opt  # Accelerate's wrapper -> torch optimizer
                _save_step(vlm, inner, out, done, losses, cfg, tower, space_hash, facts)
            acc.wait_for_everyone()
    bar.close()
    median = statistics.median(times) if times else 0.0
    trainable = sum(p.numel() for p in params)
    if end < cfg.steps:
        return TrainResult(out / f"step-{end}", {}, losses, median, peak_memory_bytes(acc.device), trainable)
    result = TrainResult(out / "final", {}, losses, median, peak_memory_bytes(acc.device), trainable)
    if acc.is_main_process:
        result.eval = evaluate_captions(vlm, held_out, encode, eos_id=eos_id) if held_out else {}
        extra = {"train": to_dict(cfg), "eval": result.eval}
        save_connector(vlm, result.final_dir, tower, space_hash=space_hash, extra=extra)
        atomic_write_text(out / "losses.json", "[" + ", ".join(f"{x:.6f}" for x in losses) + "]\n")
    acc.wait_for_everyone()
    return result
