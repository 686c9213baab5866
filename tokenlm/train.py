"""`tokenlm train`: the token-LM track as a task of the shared training loop (`tokenlm.trainer`).

Stages rows | lora | full. Every process builds the same packed rows (`tokenlm.data`); the loss is the
chunked full-vocabulary cross-entropy of `tokenlm.model.ChunkedLossLM`. Batches, LR schedule, DDP loss
normalisation, step checkpoints under `out/checkpoints/step-NNNNNN/`, exact resume, the `--out` rules and
`out/train_result.json` are the loop's (see `tokenlm.trainer`). The trainable state is a rows checkpoint
(`tokenlm.checkpoint.save_rows`); the final one goes to `out/` itself, the folder `tokenlm generate --rows`
takes. A resume also refuses another stage, task set, packing length, token space or data.

FSDP2 (`fsdp: true` / `--fsdp`, or `accelerate launch --config_file scripts/accelerate/fsdp2.yaml`): Accelerate
shards each decoder layer and the root (embedding and head with their frozen base rows and trainable new rows,
LoRA adapters beside frozen projections) with `fully_shard`; checkpoints and resume are the loop's, the files
those of an unsharded run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from uti.errors import UTIError
from uti.space import TokenSpace

from .checkpoint import MANIFEST_FILE, ROWS_STEM, SPACE_STEM
from .data import build_rows, build_sequences, collate, load_shard_items, read_records, split_records
from .run_dir import rows_fingerprint
from .train_config import TrainConfig
from .trainer import LoopConfig, TrainResult, latest_checkpoint, per_token_mean, train_loop

__all__ = ["TrainConfig", "TrainResult", "TrainError", "TokenLMTask", "train", "latest_checkpoint"]


class TrainError(UTIError, ValueError):
    """A run cannot start or resume as configured."""


class TokenLMTask:
    """The token-LM track for `tokenlm.trainer.train_loop`: packed rows, a grown LM under a stage, rows checkpoints.

    `make_model()` returns the grown LM (stage not applied yet); `facts` adds what the caller's data means
    (e.g. tasks, max_len) to the resume checks.
    """

    error = TrainError
    manifest = MANIFEST_FILE
    artifacts = (rf"{MANIFEST_FILE}|{ROWS_STEM}\.[0-9a-f]{{16}}\.safetensors|{SPACE_STEM}\.[0-9a-f]{{16}}\.json|"
                 r"trainable_rows\.safetensors|token_space\.json")

    def __init__(self, space: TokenSpace, rows: Sequence[Any], eval_rows: Sequence[Any],
                 make_model: Callable[[], torch.nn.Module], stage: str = "rows", base_ref: str | None = None,
                 chunk_tokens: int = 1024, eval_batch_size: int = 8, facts: dict[str, Any] | None = None) -> None:
        self.space, self.rows, self.eval_rows, self.make_model = space, list(rows), list(eval_rows), make_model
        self.stage, self.base_ref, self.chunk_tokens, self.eval_batch_size = stage, base_ref, chunk_tokens, eval_batch_size
        self.extra_facts = dict(facts or {})

    def num_examples(self) -> int:
        return len(self.rows)

    def facts(self) -> dict[str, Any]:
        data = rows_fingerprint((r.input_ids, r.labels, r.position_ids) for r in self.rows + self.eval_rows)
        return {"stage": self.stage, **self.extra_facts, "data_hash": data, "train_rows": len(self.rows),
                "eval_rows": len(self.eval_rows), "token_space_hash": self.space.hash}

    def build(self, resume_from: Path | None) -> torch.nn.Module:
        """Grown LM with the stage applied (fresh) or the checkpoint's rows patched back (resume), loss-wrapped."""
        from .checkpoint import load_rows
        from .model import ChunkedLossLM, _unwrap, apply_stage

        model = self.make_model()
        model = apply_stage(model, self.stage) if resume_from is None else load_rows(model, resume_from, self.space)
        model.train()
        wrapper = ChunkedLossLM(model, chunk_tokens=self.chunk_tokens)
        # FSDP2's transformer-based wrap reads the prepared module's `_no_split_modules`: the decoder layers
        wrapper._no_split_modules = list(getattr(_unwrap(model), "_no_split_modules", None) or [])
        return wrapper

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return collate([self.rows[i] for i in indices])

    def loss(self, model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        mean, count = model(**{n: t.to(device) for n, t in batch.items()})
        return mean * count, count

    def evaluate(self, model: Any, acc: Any) -> dict[str, float] | None:
        """{"loss": per-token mean loss over the eval rows}, or None without eval rows."""
        return {"loss": self.mean_loss(model, acc, self.eval_rows)} if self.eval_rows else None

    def mean_loss(self, model: Any, acc: Any, rows: Sequence[Any]) -> float:
        """Per-token mean loss over `rows` (split across processes); leaves `model` in eval mode."""
        model.eval()
        return per_token_mean(rows, self.eval_batch_size, lambda chunk: self.loss(model, collate(chunk), acc.device),
                              acc.device, acc)

    def save(self, model: torch.nn.Module, folder: Path, final_eval: dict[str, float] | None) -> None:
        from .checkpoint import save_rows

        save_rows(model.lm, folder, self.space, base_model=self.base_ref)

    def summary(self) -> dict[str, Any]:
        return {"train_rows": len(self.rows), "eval_rows": len(self.eval_rows)}


def _load_data(cfg: TrainConfig, space: TokenSpace) -> tuple[list, list]:
    """(train rows, eval rows) from the config's sources."""
    shard_dirs = [p for p in cfg.data + cfg.eval_data if Path(p).is_dir()]
    missing = [p for p in cfg.data + cfg.eval_data if not Path(p).exists()]
    if missing:
        raise TrainError(f"data source(s) not found: {', '.join(missing)}")
    items = load_shard_items(shard_dirs, space) if shard_dirs else {}
    records = [r for p in cfg.data if Path(p).is_file() for r in read_records(p)]
    if not records:
        raise TrainError(f"no records in {', '.join(cfg.data)}; give at least one JSONL or CSV file of records")
    train_recs, eval_recs = split_records(records, cfg.eval_fraction, cfg.seed)
    eval_recs += [r for p in cfg.eval_data if Path(p).is_file() for r in read_records(p)]
    train_rows = build_rows(build_sequences(train_recs, space, cfg.tasks, items), space, cfg.max_len, cfg.seed)
    eval_rows = build_rows(build_sequences(eval_recs, space, cfg.tasks, items), space, cfg.max_len, None)
    if not train_rows:
        raise TrainError(f"the records give no sequences for tasks {', '.join(cfg.tasks)}")
    return train_rows, eval_rows


def _base_ref(cfg: TrainConfig, space: TokenSpace) -> str:
    if cfg.base:
        return cfg.base
    if "base_model" not in space.assets:
        raise TrainError(f"space {space.name!r} names no base_model asset; pass --base (hub id or folder)")
    return str(space.asset("base_model"))


def loop_config(cfg: TrainConfig) -> LoopConfig:
    """The shared loop's settings of a `TrainConfig` (`schedule: constant` is a floor of 1)."""
    return LoopConfig(out=str(cfg.out), steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, grad_accum=cfg.grad_accum,
                      warmup_steps=cfg.warmup_steps, min_lr_ratio=1.0 if cfg.schedule == "constant" else cfg.min_lr_ratio,
                      weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, eval_every=cfg.eval_every,
                      save_every=cfg.save_every, keep_last=cfg.keep_last, seed=cfg.seed, stop_at=cfg.stop_at,
                      resume=cfg.resume, overwrite=cfg.overwrite, progress=cfg.progress, device=cfg.device,
                      fsdp=cfg.fsdp, desc=f"train {cfg.stage}")


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) training as configured; see the module docstring. Returns the losses."""
    from .model import grow_model, load_base
    from .trainer import make_accelerator

    acc = make_accelerator(config.device, TrainError, config.fsdp)  # before the data: `--device cuda` fails fast
    space = TokenSpace.load(config.space)
    train_rows, eval_rows = _load_data(config, space)
    base = _base_ref(config, space)

    def make_model() -> torch.nn.Module:
        return grow_model(load_base(base, config.dtype), space, init=config.init, seed=config.seed)

    task = TokenLMTask(space, train_rows, eval_rows, make_model, config.stage, base, config.chunk_tokens,
                       config.batch_size, facts={"tasks": sorted(config.tasks), "max_len": config.max_len})
    return train_loop(task, loop_config(config), acc)
