"""`TrainConfig`: every knob of `tokenlm.train.train`, checked on construction.

Build it from a dict or a YAML/JSON file with `uti.config.from_dict(TrainConfig, d)` (unknown keys are
errors listing the valid ones). Batch semantics follow Hugging Face: `batch_size` rows per process per
micro-batch, so one optimizer step sees `batch_size * processes * grad_accum` packed rows (the global
batch). The loss of a step is the per-token mean over the whole global batch, whatever the split.
"""

from __future__ import annotations

from dataclasses import dataclass

from uti.errors import ConfigError
from uti.sequence import TASKS

__all__ = ["TrainConfig", "SCHEDULES", "DEVICES"]

SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Configuration of a training run (see module docstring for batch semantics)."""

    out: str  # output folder: final rows checkpoint, checkpoints/step-N/, train_result.json
    data: tuple[str, ...]  # JSONL/CSV record files and/or shard folders (see tokenlm.data)
    space: str = "tiny"  # token space name or path
    base: str | None = None  # base model hub id or folder; default: the space's base_model asset
    stage: str = "rows"  # rows | lora | full
    tasks: tuple[str, ...] = ("text", "i2t", "a2t", "t2i", "t2a")
    init: str = "mean_noise"  # new-row initialisation (tokenlm.model.INITS)
    dtype: str = "float32"  # dtype the base model is loaded in (the rows follow it)
    device: str = "auto"  # auto | cpu | cuda (auto: the GPU when there is one)
    fsdp: bool = False  # shard with FSDP2 when launched on several processes (tokenlm.trainer)
    steps: int = 100  # optimizer steps of the whole run
    batch_size: int = 8  # packed rows per process per micro-batch
    grad_accum: int = 1
    max_len: int = 2048  # packing length; fits a 4 s clip of the tiny space's audio (1182 IDs) with its caption
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"  # constant | cosine (after linear warmup)
    min_lr_ratio: float = 0.1  # the cosine ends at min_lr_ratio * lr (tokenlm.trainer.lr_at)
    warmup_steps: int = 0
    max_grad_norm: float = 0.0  # 0 disables clipping
    chunk_tokens: int = 1024  # tokens per chunk of the full-vocabulary loss
    eval_data: tuple[str, ...] = ()  # held-out JSONL/CSV files (same format as data)
    eval_fraction: float = 0.0  # or hold out this fraction of the data records (seeded)
    eval_every: int = 0  # 0: evaluate only at the end
    save_every: int = 0  # 0: checkpoint only at the end
    seed: int = 0
    resume: bool = False  # continue from the newest checkpoint under out/checkpoints
    overwrite: bool = False  # delete the run already in `out` first (only files a run writes)
    keep_last: int = 3  # step checkpoints kept under out/checkpoints (the newest ones; out/ itself always)
    stop_at: int | None = None  # end this run after this step (as if interrupted); the schedule still uses `steps`
    progress: bool | None = None  # progress bar: None shows it on a TTY

    def __post_init__(self) -> None:
        from tokenlm.model import INITS, STAGES

        if isinstance(self.data, str):
            self.data = (self.data,)
        if isinstance(self.eval_data, str):
            self.eval_data = (self.eval_data,)
        self.data, self.eval_data, self.tasks = tuple(self.data), tuple(self.eval_data), tuple(self.tasks)
        checks = [
            (self.stage in STAGES, f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}"),
            (self.init in INITS, f"init must be one of {', '.join(INITS)}, got {self.init!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (all(t in TASKS for t in self.tasks) and self.tasks, f"tasks must be a non-empty subset of {', '.join(TASKS)}"),
            (len(self.data) > 0, "data needs at least one JSONL/CSV file or shard folder"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be >= 1"),
            (self.max_len >= 2, f"max_len must be >= 2, got {self.max_len}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.chunk_tokens >= 1, f"chunk_tokens must be >= 1, got {self.chunk_tokens}"),
            (0.0 <= self.eval_fraction < 1.0, f"eval_fraction must be in [0, 1), got {self.eval_fraction}"),
            (min(self.eval_every, self.save_every, self.warmup_steps) >= 0, "eval_every, save_every, warmup_steps must be >= 0"),
            (self.stop_at is None or 1 <= self.stop_at <= self.steps, f"stop_at must be in [1, steps], got {self.stop_at}"),
            (self.dtype in ("float32", "bfloat16", "float16"), f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}"),
            (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
            (self.keep_last >= 1, f"keep_last must be >= 1, got {self.keep_last}"),
            (not (self.resume and self.overwrite), "give either --resume (resume: true) or --overwrite, not both"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    @property
    def end_step(self) -> int:
        """The step this run ends at (`stop_at` or `steps`)."""
        return self.stop_at or self.steps
