"""Training of the continuous track: a task of the shared training loop (`tokenlm.trainer`).

Stage `connector` trains the connector only (tower features are precomputed, the LLM is frozen); stage
`lora` adds peft LoRA on the LLM. The loss is the LLM's cross-entropy over the target tokens; eval is the
held-out loss with each example's own image and with a shuffled image (`evaluate_captions`). Everything
else is the loop's, the same as for the token-LM track: data order, LR schedule, gradient accumulation,
DDP loss normalisation, step checkpoints under `out_dir/checkpoints/step-NNNNNN/` (the connector checkpoint
plus the train state) with exact resume, the `out_dir` rules, the final connector checkpoint in `out_dir`
itself and `out_dir/train_result.json`. A resume also refuses another stage or other data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import xxhash

from tokenlm.trainer import LoopConfig, TrainResult, peak_memory_bytes, per_token_mean, train_loop
from uti.config import to_dict
from uti.hashing import canonical_json, hash_tensors
from uti.sequence import IGNORE_INDEX as IGNORE

from .checkpoint import LORA_STEM, MANIFEST, WEIGHTS_STEM, checkpoint_tensors, save_connector
from .data import CaptionExample, collate_captions, shuffled_images
from .errors import ConnectorError
from .vlm import ContinuousVLM, add_lora

__all__ = ["ConnectorTrainConfig", "TrainResult", "ConnectorTask", "train_connector", "evaluate_captions",
           "peak_memory_bytes", "data_fingerprint"]

STAGES = ("connector", "lora")


@dataclass
class ConnectorTrainConfig:
    """Hyper-parameters of a connector run; `batch_size` is per process per micro-batch."""

    stage: str = "connector"
    steps: int = 100
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # the cosine ends at min_lr_ratio * lr (tokenlm.trainer.lr_at)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 0  # 0: only at the end
    save_every: int = 0  # 0: a step checkpoint only at the last step of a call
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    device: str = "auto"  # auto | cpu | cuda
    progress: bool | None = None  # progress bar: None shows it on a TTY

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.lr <= 0:
            raise ValueError("steps, batch_size and grad_accum must be >= 1 and lr > 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0 or self.keep_checkpoints < 1:
            raise ValueError("min_lr_ratio must be in [0, 1] and keep_checkpoints >= 1")


def _label_count(labels: torch.Tensor) -> int:
    """Tokens that carry a loss in `labels` (B, S): the LLM predicts position t + 1 from t, so column 0 never does."""
    return int((labels[:, 1:] != IGNORE).sum())


def _forward(model: Any, batch: dict, device: torch.device) -> tuple[torch.Tensor, int]:
    """(loss summed over the batch's target tokens, their count); a batch without targets gives a graph-connected 0."""
    count = _label_count(batch["labels"])
    res = model(input_ids=batch["input_ids"].to(device), images=[im.to(device) for im in batch["images"]],
                attention_mask=batch["attention_mask"].to(device), labels=batch["labels"].to(device))
    return (res.loss * count if count else res.logits.sum() * 0.0), count


@torch.no_grad()
def evaluate_captions(
    vlm: ContinuousVLM, examples: Sequence[CaptionExample], encode: Callable[[str], list[int]],
    batch_size: int = 8, eos_id: int | None = None, accelerator: Any = None,
) -> dict[str, float]:
    """Token-weighted held-out loss with each example's own image and with a shuffled image; gap = shuffled - own.

    With `accelerator`, each process scores its share and the sums are all-reduced (same result everywhere).
    """
    was_training = vlm.training
    vlm.eval()
    device = next(vlm.parameters()).device

    def loss_of(chunk: list) -> tuple[torch.Tensor, int]:
        return _forward(vlm, collate_captions(chunk, encode, vlm.ids, vlm.tokens_per_image(1), eos_id), device)

    out = {name: per_token_mean(data, batch_size, loss_of, device, accelerator)
           for name, data in (("loss", list(examples)), ("shuffled_loss", shuffled_images(examples)))}
    out["gap"] = out["shuffled_loss"] - out["loss"]
    vlm.train(was_training)
    return out


def data_fingerprint(examples: Sequence[CaptionExample]) -> str:
    """xxh3-128 hex of the examples in order: prompt, target and image tensors of each."""
    h = xxhash.xxh3_128()
    for ex in examples:
        h.update(canonical_json([ex.prompt, ex.target]))
        h.update(hash_tensors({"f": ex.image.features, "y": ex.image.yaw_pitch, "g": ex.image.is_global}).encode())
    return h.hexdigest()


class ConnectorTask:
    """The continuous track for `tokenlm.trainer.train_loop`: caption examples, a VLM, connector checkpoints."""

    error = ConnectorError
    manifest = MANIFEST
    # the connector checkpoint's files, and what runs before the shared loop wrote (step-N, final, losses.json)
    artifacts = (rf"{MANIFEST}|{WEIGHTS_STEM}\.[0-9a-f]{{16}}\.safetensors|{LORA_STEM}\.[0-9a-f]{{16}}\.safetensors|"
                 r"step-\d+|final|losses\.json")

    def __init__(self, vlm: ContinuousVLM, train: Sequence[CaptionExample], held_out: Sequence[CaptionExample],
                 encode: Callable[[str], list[int]], config: ConnectorTrainConfig, tower: dict[str, Any],
                 space_hash: str | None = None, eos_id: int | None = None) -> None:
        if not train:
            raise ConnectorError("no training examples given; pass at least one CaptionExample")
        self.vlm, self.train, self.held_out, self.encode = vlm, list(train), list(held_out), encode
        self.cfg, self.tower, self.space_hash, self.eos_id = config, tower, space_hash, eos_id

    def num_examples(self) -> int:
        return len(self.train)

    def facts(self) -> dict[str, Any]:
        return {"stage": self.cfg.stage, "data_hash": data_fingerprint(self.train)}

    def build(self, resume_from: Path | None) -> torch.nn.Module:
        """The VLM with LoRA added for stage `lora`; connector (and LoRA) weights from `resume_from` if given."""
        vlm, cfg = self.vlm, self.cfg
        if cfg.stage == "lora" and vlm.lora is None:
            add_lora(vlm, r=cfg.lora_r, alpha=cfg.lora_alpha, target_modules=cfg.lora_targets)
        if resume_from is not None:
            weights, lora = checkpoint_tensors(resume_from)
            vlm.connector.load_state_dict(weights)
            if vlm.lora:
                from peft import set_peft_model_state_dict

                set_peft_model_state_dict(vlm.llm, lora)
        return vlm.train()

    def batch(self, indices: list[int]) -> dict[str, Any]:
        vlm = self.vlm
        return collate_captions([self.train[i] for i in indices], self.encode, vlm.ids, vlm.tokens_per_image(1),
                                self.eos_id)

    def loss(self, model: Any, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, int]:
        return _forward(model, batch, device)

    def evaluate(self, model: Any, acc: Any) -> dict[str, float] | None:
        if not self.held_out:
            return None
        return evaluate_captions(acc.unwrap_model(model), self.held_out, self.encode, eos_id=self.eos_id,
                                 accelerator=acc)

    def save(self, model: torch.nn.Module, folder: Path, final_eval: dict[str, float] | None) -> None:
        extra = None if final_eval is None else {"train": to_dict(self.cfg), "eval": final_eval}
        save_connector(model, folder, self.tower, space_hash=self.space_hash, extra=extra)

    def summary(self) -> dict[str, Any]:
        return {"train_examples": len(self.train), "held_out_examples": len(self.held_out)}


def loop_config(cfg: ConnectorTrainConfig, out_dir: str | Path, resume: bool, overwrite: bool,
                stop_at: int | None) -> LoopConfig:
    """The shared loop's settings of a connector run."""
    return LoopConfig(out=str(out_dir), steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, grad_accum=cfg.grad_accum,
                      warmup_steps=cfg.warmup_steps, min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay,
                      max_grad_norm=cfg.max_grad_norm, eval_every=cfg.eval_every, save_every=cfg.save_every,
                      keep_last=cfg.keep_checkpoints, seed=cfg.seed,
                      stop_at=None if stop_at is None else min(stop_at, cfg.steps), resume=resume,
                      overwrite=overwrite, progress=cfg.progress, device=cfg.device, desc=f"connector/{cfg.stage}")


def train_connector(
    vlm: ContinuousVLM, train: Sequence[CaptionExample], held_out: Sequence[CaptionExample], *,
    encode: Callable[[str], list[int]], config: ConnectorTrainConfig, out_dir: str | Path,
    tower: dict[str, Any], space_hash: str | None = None, eos_id: int | None = None,
    accelerator: Any = None, resume: bool = True, stop_at: int | None = None, overwrite: bool = False,
) -> TrainResult:
    """Train `vlm` per `config`, resuming from the newest step checkpoint under `out_dir` when `resume`.

    `stop_at` ends this call after that step (saving a resumable step checkpoint first), e.g. for time-limited
    jobs. `overwrite` (instead of `resume`) deletes the run already in `out_dir` first (only what a run writes).
    The final connector checkpoint is `result.final_dir` (`out_dir` once all steps ran); `result.eval` holds the
    last held-out eval.
    """
    task = ConnectorTask(vlm, train, held_out, encode, config, tower, space_hash, eos_id)
    return train_loop(task, loop_config(config, out_dir, resume, overwrite, stop_at), accelerator)
