"""The one training loop of both tracks (token LM rows/LoRA/full, continuous connector), on Hugging Face Accelerate.

A track is a `Task`: it builds the model (what trains has `requires_grad`), collates the batch of a list of
example indices, returns the loss as (sum over tokens, token count), evaluates, saves its trainable state
(rows checkpoint, connector checkpoint) and names the facts a resume must share. `train_loop` owns the rest,
the same for every track:

* Accelerate setup (`make_accelerator`: one CPU process, or `torchrun`/`accelerate launch` with DDP, or with
  FSDP2 (`fsdp=True`, or an Accelerate config with `fsdp_version: 2`): Accelerate's `fully_shard` per decoder
  layer plus the root, frozen and trainable parameters side by side, on GPUs or on CPU with gloo).
* LR: linear warmup, then cosine from `lr` down to `min_lr_ratio * lr` (`lr_at`). Default floor 10 % for
  both tracks: the last steps still learn instead of idling near zero (two of the three old loops already
  decayed to 10 %, the usual choice for LM training); `min_lr_ratio=1` is a constant LR after warmup.
* Data order: `Sampler`, the global batch of step s is positions [s*G, (s+1)*G) of an endless stream of
  seeded per-epoch permutations, a pure function of (seed, step), so resume needs no sampler state. Each
  epoch's permutation is computed once and cached: O(batch) work per step. Micro-batch m of rank r is a
  fixed slice of the global batch, so N processes see what one process sees.
* Loss: each micro-batch's token sum is back-propagated (times the process count, since DDP averages), then
  the gradients are divided by the global token count (one all-reduce): the update is that of the per-token
  mean over the whole global batch, whatever the split into processes and accumulation steps. FSDP2's
  reduce-scatter averages like DDP, so the same holds sharded.
* Checkpoints, one layout for both tracks: `out/checkpoints/step-NNNNNN/` holds the task's checkpoint plus
  `train_state.safetensors` and `train_state.json` (written last; `tokenlm.train_state`), every `save_every`
  steps and at the last step of a call; only the newest `keep_last` stay (`tokenlm.run_dir`). The final
  trainable state goes to `out/` itself, the summary to `out/train_result.json`.
* Resume: the newest complete step folder; other facts (data, seed, global batch, steps, the task's own) are
  refused with one line showing both; optimizer, RNG and loss history are restored, so the resumed run
  reproduces the uninterrupted one exactly.
* FSDP2 checkpoints: the processes gather the full parameters and optimizer state (`DTensor.full_tensor`, one
  tensor at a time, kept on the main process's CPU), the main process writes them: the files an unsharded run
  writes for the same weights. A resume re-shards the optimizer state (`distribute_tensor`) after `fully_shard`.
* A non-empty `out` needs `resume` or `overwrite` (which deletes only what a run writes); leftovers of killed
  runs are cleaned at start. Progress bar (tqdm) on the main process, on a TTY or when asked.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch

from uti.errors import UTIError
from uti.io import atomic_write_json

from .run_dir import check_facts, prepare_out, prune_steps, step_dirs
from .train_state import STATE_FILE, read_train_state, restore_train_state, save_train_state

__all__ = ["Task", "LoopConfig", "TrainResult", "Sampler", "lr_at", "train_loop", "make_accelerator",
           "latest_checkpoint", "peak_memory_bytes", "per_token_mean", "STEP_PATTERN"]

STEP_PATTERN = r"step-(\d+)"
_LOOP_ARTIFACTS = r"checkpoints|train_result\.json|\..*\.tmp|\.deleting-.*"  # what the loop itself writes into out/


class Task(Protocol):
    """What a track gives the loop. `model` arguments are what `build` returned, as prepared by Accelerate."""

    error: type[UTIError]  # raised for refusals (non-empty out, other facts on resume, ...)
    manifest: str  # the file that makes a folder a checkpoint of this task (deleted first by --overwrite)
    artifacts: str  # regex of the names the task's checkpoint writes into a folder

    def num_examples(self) -> int:
        """Training examples (rows, captions) the sampler draws from."""

    def facts(self) -> dict[str, Any]:
        """What a resumed run must share with its checkpoint (data fingerprint, stage, ...), JSON values."""

    def build(self, resume_from: Path | None) -> torch.nn.Module:
        """The model to train (only trained parameters require grad); from `resume_from`'s checkpoint if given."""

    def batch(self, indices: list[int]) -> Any:
        """The collated micro-batch of these example indices."""

    def loss(self, model: Any, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | int]:
        """(loss summed over the batch's target tokens, token count); the sum is part of the autograd graph."""

    def evaluate(self, model: Any, acc: Any) -> dict[str, float] | None:
        """Held-out metrics (same on every process; key "loss" is the per-token loss), None without eval data."""

    def save(self, model: torch.nn.Module, folder: Path, final_eval: dict[str, float] | None) -> None:
        """Write the trainable state of the unwrapped `model` to `folder`.

        `final_eval` is None for step checkpoints; for the final one (in `out`) the last eval's metrics or {}.
        """

    def summary(self) -> dict[str, Any]:
        """Extra fields for the result JSON (e.g. row counts)."""


@dataclass
class LoopConfig:
    """The loop's knobs; each track maps its own config onto it. `batch_size` is per process per micro-batch."""

    out: str
    steps: int
    batch_size: int
    lr: float
    grad_accum: int = 1
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # the cosine ends at min_lr_ratio * lr (1.0: constant after warmup)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's
    max_grad_norm: float = 0.0  # 0 disables clipping
    eval_every: int = 0  # 0: evaluate at the end only
    save_every: int = 0  # 0: checkpoint at the last step of the call only
    keep_last: int = 3
    seed: int = 0
    stop_at: int | None = None  # end this call after that step (resumable); the schedule still uses `steps`
    resume: bool = False
    overwrite: bool = False
    progress: bool | None = None  # None: a bar when stderr is a TTY
    device: str = "auto"  # auto | cpu | cuda
    fsdp: bool = False  # shard with FSDP2 (also on when the Accelerate config of `accelerate launch` says FSDP)
    desc: str = "train"  # progress bar label

    @property
    def end_step(self) -> int:
        return self.stop_at or self.steps


@dataclass
class TrainResult:
    """What a run did: per-step train losses (whole run, resumed parts included), evals, cost."""

    out: str
    steps: int
    losses: list[float]
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    final_dir: Path | None = None  # the trainable state the call ended with: `out`, or the last step folder (stop_at)
    processes: int = 1
    parallel: str = "none"  # how the processes shared the model: none (one process) | ddp | fsdp2
    seconds: float = 0.0
    resumed_from: int | None = None
    step_time_s: float = 0.0  # median seconds per optimizer step of this call
    peak_memory_bytes: int = 0
    trainable_params: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # the task's summary

    @property
    def eval_losses(self) -> list[tuple[int, float]]:
        """(step, held-out per-token loss) of every eval."""
        return [(s, e["loss"]) for s, e in self.evals]

    @property
    def eval(self) -> dict[str, float]:
        """The last eval's metrics ({} when none ran)."""
        return self.evals[-1][1] if self.evals else {}

    def to_json(self) -> dict:
        return {"out": self.out, "steps": self.steps, "losses": self.losses,
                "eval_losses": [list(e) for e in self.eval_losses], "evals": [list(e) for e in self.evals],
                "final_loss": self.losses[-1] if self.losses else None,
                "final_eval_loss": self.eval_losses[-1][1] if self.evals else None, "final_dir": str(self.final_dir),
                "processes": self.processes, "parallel": self.parallel, "seconds": round(self.seconds, 3),
                "resumed_from": self.resumed_from, "step_time_s": self.step_time_s,
                "peak_memory_bytes": self.peak_memory_bytes, "trainable_params": self.trainable_params, **self.info}


# schedule and data order ------------------------------------------------------------------------

def lr_at(step: int, lr: float, steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1) -> float:
    """LR of optimizer step `step` (0-based): linear warmup to `lr`, then cosine down to `min_lr_ratio * lr`.

    After warmup this is `transformers.get_cosine_with_min_lr_schedule_with_warmup`'s curve; the warmup starts
    at lr/warmup_steps rather than 0, so no step is wasted at LR 0.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t)))


class Sampler:
    """Example indices of each step: a pure function of (seed, step), O(batch) work per step.

    The stream is epoch 0's permutation, then epoch 1's, ...; step s takes positions [s*size, (s+1)*size).
    A permutation (`torch.randperm`, seeded by seed and epoch) is computed once per epoch and cached; epochs
    the stream has passed are dropped.
    """

    def __init__(self, n: int, size: int, seed: int) -> None:
        if n < 1 or size < 1:
            raise ValueError(f"need n >= 1 examples and size >= 1, got n={n}, size={size}")
        self.n, self.size, self.seed = n, size, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=gen).tolist()
        return self._perms[epoch]

    def indices(self, step: int) -> list[int]:
        """The global batch of `step` (`size` indices)."""
        pos, end = step * self.size, (step + 1) * self.size
        for old in [e for e in self._perms if e < pos // self.n]:
            del self._perms[old]
        out: list[int] = []
        while pos < end:
            epoch, k = divmod(pos, self.n)
            take = min(end - pos, self.n - k)
            out += self._perm(epoch)[k:k + take]
            pos += take
        return out

    def micro_batches(self, step: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
        """Rank `rank`'s micro-batches of `step`: micro-batch m is slice [rank*b, (rank+1)*b) of block m of b*world."""
        idx, block = self.indices(step), batch_size * world
        return [idx[m:m + block][rank * batch_size:(rank + 1) * batch_size] for m in range(0, len(idx), block)]


# accelerator, folders -----------------------------------------------------------------------------

def _has_accelerator() -> bool:
    """A GPU (or other torch accelerator) is present (torch >= 2.6 API, CUDA check before)."""
    api = getattr(torch, "accelerator", None)
    return bool(api.is_available()) if api is not None else torch.cuda.is_available()


def _fsdp2_plugin(error: type[UTIError]) -> Any:
    """Accelerate's FSDP2 plugin: `FSDP_*` settings of an Accelerate config win, else one unit per decoder layer
    (the model's `_no_split_modules`) plus the root, resharded after forward."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    version = os.environ.get("FSDP_VERSION", "2")
    if version != "2":
        raise error(f"the Accelerate config asks for FSDP version {version}, but tokenlm trains with FSDP2 only; "
                    "set fsdp_version: 2 in the config (see scripts/accelerate/fsdp2.yaml)")
    return FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy=os.environ.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP"))


def make_accelerator(device: str = "auto", error: type[UTIError] = UTIError, fsdp: bool = False) -> Any:
    """Accelerate on `device` (auto | cpu | cuda): `cuda` without a visible GPU is a one-line `error`.

    With `fsdp` (or `ACCELERATE_USE_FSDP` set by `accelerate launch --config_file`) and several processes, the
    model is sharded with FSDP2 by `acc.prepare`.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, parse_flag_from_env

    if device == "cuda" and not torch.cuda.is_available():
        raise error("--device cuda asked for, but torch sees no CUDA GPU (torch.cuda.is_available() is "
                    "False); use --device cpu or install a CUDA build of torch")
    plugin = _fsdp2_plugin(error) if fsdp or parse_flag_from_env("ACCELERATE_USE_FSDP") else None
    # Without a GPU/XPU/... we must say cpu=True, or Accelerate ignores torchrun's WORLD_SIZE (no gloo group).
    acc = Accelerator(cpu=device == "cpu" or not _has_accelerator(), fsdp_plugin=plugin)
    if plugin is not None and acc.distributed_type == DistributedType.MULTI_CPU:
        # Accelerate turns FSDP on for GPU-type process groups only; FSDP2 (`fully_shard`) runs on gloo as well,
        # so CPU processes get the state Accelerate's GPU branch sets (AcceleratorState.__init__, which also
        # mirrors the type into PartialState's shared state, whence each later AcceleratorState() copies it).
        acc.state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        acc.state.fsdp_plugin = plugin
    if plugin is not None and acc.mixed_precision != "no":  # Accelerate would upcast the trained rows to float32
        raise error(f"FSDP2 with mixed_precision {acc.mixed_precision!r} is not supported: the rows would be saved "
                    "in another dtype than the model's; set mixed_precision: 'no' and load the model in --dtype")
    return acc


def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest `out/checkpoints/step-N` folder holding a complete train state, or None."""
    found = step_dirs(Path(out) / "checkpoints", STEP_PATTERN, STATE_FILE)
    return found[-1][1] if found else None


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory so far: CUDA max allocated on GPU, the process's max RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _prepare_out(cfg: LoopConfig, task: Task, acc: Any) -> None:
    """Every process checks `out` (non-empty needs resume/overwrite), then the main one clears/cleans it."""
    if cfg.resume and cfg.overwrite:
        raise task.error("give either resume or overwrite, not both")
    artifact = re.compile(f"{task.artifacts}|{_LOOP_ARTIFACTS}")
    args = (cfg.out, cfg.resume, cfg.overwrite, lambda p: bool(artifact.fullmatch(p.name)), task.error)
    prepare_out(*args, first=(task.manifest,), act=False)
    acc.wait_for_everyone()
    if acc.is_main_process:
        prepare_out(*args, first=(task.manifest,))
    acc.wait_for_everyone()


# one step ---------------------------------------------------------------------------------------

def _step(task: Task, model: Any, optimizer: Any, acc: Any, micro: list[list[int]], cfg: LoopConfig) -> float:
    """Forward/backward of this rank's micro-batches, one optimizer step; returns the global per-token mean loss."""
    local = torch.zeros(2, dtype=torch.float64, device=acc.device)  # (loss sum, tokens)
    for m, idx in enumerate(micro):
        with contextlib.nullcontext() if m == len(micro) - 1 else acc.no_sync(model):
            total, count = task.loss(model, task.batch(idx), acc.device)
            acc.backward(total * acc.num_processes)  # DDP/FSDP2 average over processes: undo it, divide by tokens
        local += torch.stack([total.detach().double(), torch.as_tensor(count, dtype=torch.float64, device=acc.device)])
    total, tokens = acc.reduce(local, "sum").tolist()
    if tokens == 0:
        raise task.error("a global batch has no target tokens; check the tasks and give every example a target")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for p in params:
        if p.grad is not None:
            p.grad.div_(tokens)
    if cfg.max_grad_norm > 0:
        acc.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / tokens


@torch.no_grad()
def per_token_mean(items: Sequence[Any], batch_size: int, loss_of: Callable[[list], tuple[torch.Tensor, Any]],
                   device: torch.device, acc: Any = None) -> float:
    """Per-token mean of `loss_of(chunk) -> (loss sum, tokens)` over `items` in chunks of `batch_size`; with
    `acc`, each process takes every N-th item and the sums are all-reduced (same result on every process).

    Every process runs as many forwards as the busiest one (the extra ones on the first item, not counted):
    a sharded model's forward is a collective (FSDP all-gathers), so the counts must match."""
    items = list(items)
    mine = items[acc.process_index::acc.num_processes] if acc is not None else items
    chunks = math.ceil(math.ceil(len(items) / acc.num_processes) / batch_size) if acc is not None else 0
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, tokens)
    for k in range(0, len(mine), batch_size):
        loss, count = loss_of(mine[k:k + batch_size])
        total += torch.stack([loss.double(), torch.as_tensor(count, dtype=torch.float64, device=device)])
    for _ in range(chunks - math.ceil(len(mine) / batch_size)):
        loss_of(items[:1])
    total = acc.reduce(total, "sum") if acc is not None else total
    return (total[0] / total[1].clamp_min(1)).item()


def _evaluate(task: Task, model: Any, acc: Any, evals: list, step: int, bar: Any) -> None:
    metrics = task.evaluate(model, acc)
    model.train()
    if metrics is not None:
        evals.append((step, metrics))
        if not bar.disable:
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


# the loop ---------------------------------------------------------------------------------------

@dataclass
class _Run:
    """A run after setup: prepared model and optimizer, data order, facts, and the history a resume restored."""

    model: Any
    optimizer: Any
    params: list
    sampler: Sampler
    facts: dict[str, Any]
    start: int = 0
    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    resumed: bool = False


def _setup(task: Task, cfg: LoopConfig, acc: Any) -> _Run:
    """Facts, sampler, model and optimizer; from the newest step checkpoint when resuming (facts checked first)."""
    gsize = cfg.batch_size * acc.num_processes * cfg.grad_accum
    facts = {**task.facts(), "global_batch": gsize, "seed": cfg.seed, "steps": cfg.steps}
    resume_dir = latest_checkpoint(cfg.out) if cfg.resume else None
    state = read_train_state(resume_dir, task.error) if resume_dir is not None else None
    if state is not None:
        check_facts(resume_dir, state[0].get("facts", {}), facts, task.error)
    wrapper = task.build(resume_dir)
    optimizer = torch.optim.AdamW([p for p in wrapper.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.betas,
                                  weight_decay=cfg.weight_decay)
    run = _Run(wrapper, optimizer, [], Sampler(task.num_examples(), gsize, cfg.seed), facts)
    sharded = _is_fsdp2(acc)
    if state is not None and not sharded:
        _restore(run, restore_train_state(optimizer, *state))
    # FSDP2: `fully_shard` replaces the parameters in place by DTensors (and Accelerate the optimizer's), so no
    # reference to the full ones is kept here
    run.model, run.optimizer = acc.prepare(wrapper, optimizer)
    run.params = [p for g in run.optimizer.param_groups for p in g["params"]]
    if state is not None and sharded:  # the optimizer state is per parameter, so it can only be cut now
        inner = getattr(run.optimizer, "optimizer", run.optimizer)
        _restore(run, restore_train_state(inner, state[0], _shard_state(run.params, state[1])))
    return run


def _restore(run: _Run, meta: dict[str, Any]) -> None:
    run.start, run.losses, run.resumed = meta["step"], list(meta["losses"]), True
    run.evals = [(s, e) for s, e in meta["evals"]]


# FSDP2: full tensors for checkpoints, shards for resume -------------------------------------------

def _is_fsdp2(acc: Any) -> bool:
    return bool(getattr(acc, "is_fsdp2", False))


def _parallel(acc: Any) -> str:
    """none | ddp | fsdp2, for the result."""
    return "fsdp2" if _is_fsdp2(acc) else "ddp" if acc.num_processes > 1 else "none"


def _shard_state(params: list, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Train-state tensors with each full optimizer tensor of an FSDP2 parameter cut to this process's shard
    (`distribute_tensor` with the parameter's mesh and placements, sliced locally: every process read the file)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    out = dict(tensors)
    for key, t in tensors.items():
        m = re.fullmatch(r"optimizer\.state\.(\d+)\.\w+", key)
        p = params[int(m.group(1))] if m and int(m.group(1)) < len(params) else None
        if isinstance(p, DTensor) and t.shape == p.shape:
            out[key] = distribute_tensor(t.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
    return out


@contextlib.contextmanager
def _full_parameters(model: Any, acc: Any):
    """Under FSDP2, inside this the main process's model holds full plain parameters (`DTensor.full_tensor`, a
    collective on every process, one parameter at a time, kept on the CPU), so the task's save writes what an
    unsharded run writes; the shards are put back after. The other processes keep their shards.

    Fresh tensors rather than FSDP's own unsharded buffers (`FSDPModule.unshard`): a save that exports a buffer to
    numpy (hashing, safetensors) pins its storage, and FSDP could not free it again. For the same reason every
    unit is resharded first (the root stays unsharded after a forward without backward, e.g. an eval).
    """
    if not _is_fsdp2(acc):
        yield
        return
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    for unit in model.modules():
        if isinstance(unit, FSDPModule):
            unit.reshard()
    slots = [(m, name, p) for m in model.modules() for name, p in m._parameters.items() if isinstance(p, DTensor)]
    full: dict[int, torch.nn.Parameter | None] = {}
    with torch.no_grad():
        for _, _, p in slots:  # the same order on every process; a shared (tied) parameter is gathered once
            if id(p) not in full:
                t = p.full_tensor()
                full[id(p)] = torch.nn.Parameter(t.cpu(), requires_grad=p.requires_grad) if acc.is_main_process \
                    else None
                del t
    swapped = [(m, name, p) for m, name, p in slots if full[id(p)] is not None]
    try:
        for m, name, p in swapped:
            m._parameters[name] = full[id(p)]
        yield
    finally:
        for m, name, p in swapped:
            m._parameters[name] = p


class _FullOptimizer:
    """Stands in for the optimizer in `save_train_state`: its state_dict with the DTensors gathered."""

    def __init__(self, state_dict: dict[str, Any]) -> None:
        self._sd = state_dict

    def state_dict(self) -> dict[str, Any]:
        return self._sd


def _full_optimizer(optimizer: Any, acc: Any) -> Any:
    """The optimizer to save: under FSDP2 every process gathers each state tensor (`DTensor.full_tensor`, a
    collective), the main process keeps them on the CPU."""
    if not _is_fsdp2(acc):
        return optimizer
    from torch.distributed.tensor import DTensor

    sd = getattr(optimizer, "optimizer", optimizer).state_dict()
    state: dict[int, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        full = {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in st.items()}
        if acc.is_main_process:
            state[pid] = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in full.items()}
    return _FullOptimizer({"state": state, "param_groups": sd["param_groups"]})


def _checkpoint(task: Task, run: _Run, acc: Any, cfg: LoopConfig, step: int, folder: Path,
                final_eval: dict | None = None) -> None:
    """The task's checkpoint into `folder`; for a step folder also the train state, then prune old steps."""
    acc.wait_for_everyone()
    step_folder = folder != Path(cfg.out)
    with _full_parameters(run.model, acc):
        optimizer = _full_optimizer(run.optimizer, acc) if step_folder else None
        if acc.is_main_process:
            task.save(acc.unwrap_model(run.model), folder, final_eval)
            if step_folder:
                save_train_state(folder, optimizer, step, run.losses, run.evals, run.facts)
                prune_steps(step_dirs(folder.parent, STEP_PATTERN, STATE_FILE), cfg.keep_last)
    acc.wait_for_everyone()


def train_loop(task: Task, cfg: LoopConfig, accelerator: Any = None) -> TrainResult:
    """Run (or resume) `task` as configured; see the module docstring. Returns the losses and evals."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    acc = accelerator or make_accelerator(cfg.device, task.error, cfg.fsdp)
    _prepare_out(cfg, task, acc)
    set_seed(cfg.seed)
    run = _setup(task, cfg, acc)
    bar = tqdm(total=cfg.end_step, initial=run.start, desc=cfg.desc, unit="step",
               disable=True if not acc.is_main_process else (None if cfg.progress is None else not cfg.progress))
    times: list[float] = []
    for step in range(run.start, cfg.end_step):
        t1 = time.perf_counter()
        for g in run.optimizer.param_groups:
            g["lr"] = lr_at(step, cfg.lr, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
        micro = run.sampler.micro_batches(step, cfg.batch_size, acc.process_index, acc.num_processes)
        run.losses.append(_step(task, run.model, run.optimizer, acc, micro, cfg))
        times.append(time.perf_counter() - t1)
        bar.update(1)
        bar.set_postfix(loss=f"{run.losses[-1]:.4f}")
        done = step + 1
        if cfg.eval_every and done % cfg.eval_every == 0 or done == cfg.steps:
            _evaluate(task, run.model, acc, run.evals, done, bar)
        if cfg.save_every and done % cfg.save_every == 0 or done == cfg.end_step:
            _checkpoint(task, run, acc, cfg, done, Path(cfg.out) / "checkpoints" / f"step-{done:06d}")
    bar.close()
    final = Path(cfg.out) if cfg.end_step == cfg.steps else latest_checkpoint(cfg.out)
    if cfg.end_step == cfg.steps:
        last = run.evals[-1][1] if run.evals and run.evals[-1][0] == cfg.steps else {}
        _checkpoint(task, run, acc, cfg, cfg.steps, final, last)
    result = TrainResult(out=str(cfg.out), steps=cfg.end_step, losses=run.losses, evals=run.evals, final_dir=final,
                         processes=acc.num_processes, parallel=_parallel(acc), seconds=time.perf_counter() - t0,
                         resumed_from=run.start if run.resumed else None,
                         step_time_s=statistics.median(times) if times else 0.0,
                         peak_memory_bytes=peak_memory_bytes(acc.device),
                         trainable_params=sum(p.numel() for p in run.params), info=task.summary())
    if acc.is_main_process:
        # the saved summary travels with the folder: `out` is "." and `final_dir` relative to it, never absolute
        rel = os.path.relpath(final, cfg.out) if final is not None else None
        atomic_write_json(Path(cfg.out) / "train_result.json",
                          {**result.to_json(), "out": ".", "final_dir": None if rel is None else Path(rel).as_posix()})
    acc.wait_for_everyone()
    return result
