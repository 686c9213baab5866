"""Training of the continuous track: a task of the shared training loop (`tokenlm.trainer`), in three stages.

* `vision`: VICReg (`connectors.vicreg`) between the tower features of tile patches that look in the same
  direction (`ViewFeatures.pairs`, from `uti.image.overlap.overlap_pairs`); only the tower's last
  `vision_trainable_blocks` encoder layers train. The connector stays frozen in this stage: VICReg is taken
  on patch features, before any resampler (which mixes patches), so no connector weight gets a gradient.
* `resampler`: the LLM's cross-entropy over the target tokens + `vicreg_weight` x VICReg; the connector
  trains, and so do the tower's last `vision_trainable_blocks` layers if set (VICReg needs them: it has no
  gradient otherwise). Alias `connector` (the former stage 1).
* `finetune`: `resampler` plus peft LoRA on the LLM. Alias `lora` (the former stage 2).

The LLM is always frozen (but for LoRA). Tower features are precomputed once: the tower's frozen lower
layers run once per image (`VisionTower.encode_below`) and only the trainable last layers run per step
(`VisionTower.top`, set as `ContinuousVLM.tower_top`); this is exact because the lower layers are frozen.
A stage can start from the checkpoint of the previous one (`init_from`): its connector, its LoRA (finetune
only) and its tuned tower layers, which must already be in the tower the features were computed with
(`connectors.load_vision_blocks`). Checkpoints carry every tuned tower layer so far (`VisionBlocks`).

Eval: the held-out loss with each example's own image and with a shuffled image (`evaluate_captions`);
stage `vision`, the held-out VICReg. Everything else is the loop's, the same as for the token-LM track:
data order, LR schedule, gradient accumulation, DDP loss normalisation, step checkpoints under
`out_dir/checkpoints/step-NNNNNN/` with exact resume, the `out_dir` rules, the final connector checkpoint in
`out_dir` itself and `out_dir/train_result.json`. A resume also refuses another stage, other data or
other stage settings. VICReg is a statistic of a batch of pairs, so under several processes it is taken over the
pairs of the whole global micro-batch (`pair_vicreg(gather=True)`): N processes with batch b train as one with N x b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import xxhash
from torch import nn

from tokenlm.trainer import LoopConfig, TrainResult, peak_memory_bytes, per_token_mean, train_loop
from uti.config import to_dict
from uti.hashing import canonical_json, hash_tensors
from uti.sequence import IGNORE_INDEX as IGNORE

from .checkpoint import (LORA_STEM, MANIFEST, VISION_STEM, WEIGHTS_STEM, VisionBlocks, checkpoint_tensors,
                         read_manifest, save_connector, vision_tensors)
from .data import CaptionExample, collate_captions, shuffled_images
from .errors import ConnectorError
from .inject import ViewFeatures
from .vicreg import vicreg
from .vlm import ContinuousVLM, add_lora

__all__ = ["ConnectorTrainConfig", "TrainResult", "ConnectorTask", "StageModel", "train_connector",
           "evaluate_captions", "pair_vicreg", "peak_memory_bytes", "data_fingerprint", "STAGES", "STAGE_ALIASES"]

STAGES = ("vision", "resampler", "finetune")
STAGE_ALIASES = {"connector": "resampler", "lora": "finetune"}  # the former names, still accepted


@dataclass
class ConnectorTrainConfig:
    """Hyper-parameters of a connector run; `batch_size` is per process per micro-batch."""

    stage: str = "resampler"  # vision | resampler | finetune (aliases: connector, lora)
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
    vision_trainable_blocks: int = 0  # the tower's last encoder layers that train (>= 1 in stage vision)
    vicreg_weight: float = 0.0  # w of the VICReg term in stages resampler/finetune (stage vision: VICReg alone)
    vicreg_inv: float = 25.0
    vicreg_var: float = 25.0
    vicreg_cov: float = 1.0
    device: str = "auto"  # auto | cpu | cuda
    progress: bool | None = None  # progress bar: None shows it on a TTY

    def __post_init__(self) -> None:
        self.stage = STAGE_ALIASES.get(self.stage, self.stage)
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)} (or the aliases connector, lora), "
                             f"got {self.stage!r}")
        k = self.vision_trainable_blocks
        if isinstance(k, bool) or not isinstance(k, int) or k < 0 or (self.stage == "vision" and k < 1):
            raise ValueError(f"vision_trainable_blocks must be an integer >= 0 (>= 1 in stage vision), got {k!r}")
        weights = (self.vicreg_weight, self.vicreg_inv, self.vicreg_var, self.vicreg_cov)
        if not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(f"vicreg_weight, vicreg_inv, vicreg_var, vicreg_cov must be finite and >= 0, got {weights}")
        if self.vicreg_weight > 0 and k < 1:
            raise ValueError("vicreg_weight > 0 needs vision_trainable_blocks >= 1: VICReg on frozen tower features "
                             "has no gradient")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.lr <= 0:
            raise ValueError("steps, batch_size and grad_accum must be >= 1 and lr > 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0 or self.keep_checkpoints < 1:
            raise ValueError("min_lr_ratio must be in [0, 1] and keep_checkpoints >= 1")


def _label_count(labels: torch.Tensor) -> int:
    """Tokens that carry a loss in `labels` (B, S): the LLM predicts position t + 1 from t, so column 0 never does."""
    return int((labels[:, 1:] != IGNORE).sum())


def _forward(model: Any, batch: dict, device: torch.device, tuned: bool = False) -> tuple[torch.Tensor, int]:
    """(loss summed over the batch's target tokens, their count); a batch without targets gives a graph-connected 0."""
    count = _label_count(batch["labels"])
    images = batch["images"] if tuned else [im.to(device) for im in batch["images"]]
    res = model(input_ids=batch["input_ids"].to(device), images=images, tuned=tuned,
                attention_mask=batch["attention_mask"].to(device), labels=batch["labels"].to(device))
    return (res.loss * count if count else res.logits.sum() * 0.0), count


def _rank_world() -> tuple[int, int]:
    """(this process's rank, process count) of the default process group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather_rows(z: torch.Tensor) -> torch.Tensor:
    """This process's rows (M, D) -> every process's rows (sum of M, D) in rank order, in the autograd graph: the
    backward sums each process's gradient of its rows over all processes (`torch.distributed.nn.all_gather`).
    The row counts may differ: each process pads to the largest, the padding is cut off again."""
    from torch.distributed.nn.functional import all_gather

    world = _rank_world()[1]
    sizes = [torch.zeros(1, dtype=torch.long, device=z.device) for _ in range(world)]
    torch.distributed.all_gather(sizes, torch.tensor([len(z)], device=z.device))
    rows = [int(n) for n in sizes]
    padded = torch.cat([z, z.new_zeros(max(rows) - len(z), z.shape[1])])  # (max M, D)
    return torch.cat([part[:n] for part, n in zip(all_gather(padded), rows)])


def pair_vicreg(images: Sequence[ViewFeatures], inv: float = 25.0, var: float = 25.0,
                cov: float = 1.0, gather: bool = False) -> tuple[torch.Tensor, int]:
    """(weighted VICReg over the overlap pairs of all `images`, pair count). Row i of z_a and z_b are the
    features (D,) of pair i's two patches; fewer than 2 pairs give a graph-connected 0.

    With `gather` (training under several processes), the pairs are those of every process's `images`, in rank
    order: VICReg's variance and covariance are statistics of the whole global micro-batch, as on one process
    with it all; every process gets the same value and count."""
    za, zb = [], []
    for img in images:
        if img.pairs is not None and len(img.pairs):
            p = img.pairs.to(img.features.device)  # (M, 4) view_a, patch_a, view_b, patch_b
            za.append(img.features[p[:, 0], p[:, 1]])  # (M, D)
            zb.append(img.features[p[:, 2], p[:, 3]])
    zero = sum((img.features.sum() * 0.0 for img in images), torch.zeros(()))  # keeps every tower input in the graph
    if gather and _rank_world()[1] > 1:
        empty = images[0].features.new_zeros(0, images[0].features.shape[-1])
        za = [_gather_rows(torch.cat(za) if za else empty)]
        zb = [_gather_rows(torch.cat(zb) if zb else empty)]
    n = sum(len(z) for z in za)
    if n < 2:
        return zero, n
    dtype = torch.promote_types(za[0].dtype, torch.float32)  # at least float32 statistics (bf16 towers)
    return vicreg(torch.cat(za).to(dtype), torch.cat(zb).to(dtype), inv, var, cov)[0] + zero, n


class StageModel(nn.Module):
    """What the loop trains: the VLM (with its tower top) and the stage's loss in one `forward`, so DDP wraps
    everything that trains. forward(batch, device) -> (loss sum, count) as `tokenlm.trainer.Task.loss`."""

    def __init__(self, vlm: ContinuousVLM, config: "ConnectorTrainConfig") -> None:
        super().__init__()
        self.vlm, self.cfg = vlm, config

    def forward(self, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, int]:
        cfg = self.cfg
        images = self.vlm.tune([im.to(device) for im in batch["images"]])  # tower top applied once
        # VICReg over the global micro-batch (all processes' pairs, `gather`), the same value on every process;
        # each process weights it by its own share, so the shares sum to the one-process loss and the gradients
        # (summed back over the processes by the gather, then averaged by DDP and undone by the loop) to its gradient
        if cfg.stage == "vision":  # VICReg alone; one "token" per global micro-batch: the step loss is the mean
            loss, n = pair_vicreg(images, cfg.vicreg_inv, cfg.vicreg_var, cfg.vicreg_cov, gather=True)
            if n < 2:
                raise ConnectorError(f"stage vision needs overlap pairs but a micro-batch has {n}; train it on "
                                     "panoramas (their tiles overlap), with a batch size of at least 1 panorama")
            share = int(_rank_world()[0] == 0)  # the main process counts it, the others add 0 x VICReg
            return loss * share, share
        total, count = _forward(self.vlm, {**batch, "images": images}, device, tuned=True)
        if cfg.vicreg_weight > 0:  # token-weighted, so the step loss is mean LM loss + w * VICReg
            total = total + cfg.vicreg_weight * count * pair_vicreg(images, cfg.vicreg_inv, cfg.vicreg_var,
                                                                    cfg.vicreg_cov, gather=True)[0]
        return total, count


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
        if ex.image.pairs is not None:
            h.update(hash_tensors({"p": ex.image.pairs}).encode())
    return h.hexdigest()


class ConnectorTask:
    """The continuous track for `tokenlm.trainer.train_loop`: caption examples, a VLM, connector checkpoints.

    `vision` is the `VisionTower` whose last `config.vision_trainable_blocks` layers train (then the examples'
    features are its hidden states entering those layers, `image_view_features(..., cut=k)`), also needed
    when `init_from` carries tuned tower layers. `tower` is its `abi()` as recorded in checkpoints."""

    error = ConnectorError
    manifest = MANIFEST
    # the connector checkpoint's files, and what runs before the shared loop wrote (step-N, final, losses.json)
    artifacts = (rf"{MANIFEST}|({WEIGHTS_STEM}|{LORA_STEM}|{VISION_STEM})\.[0-9a-f]{{16}}\.safetensors|"
                 r"step-\d+|final|losses\.json")

    def __init__(self, vlm: ContinuousVLM, train: Sequence[CaptionExample], held_out: Sequence[CaptionExample],
                 encode: Callable[[str], list[int]], config: ConnectorTrainConfig, tower: dict[str, Any],
                 space_hash: str | None = None, eos_id: int | None = None, *, vision: Any = None,
                 init_from: str | Path | None = None) -> None:
        if not train:
            raise ConnectorError("no training examples given; pass at least one CaptionExample")
        self.vlm, self.train, self.held_out, self.encode = vlm, list(train), list(held_out), encode
        self.cfg, self.tower, self.space_hash, self.eos_id = config, tower, space_hash, eos_id
        self.vision, self.init_from = vision, None if init_from is None else Path(init_from)
        self.init = read_manifest(self.init_from) if self.init_from is not None else None
        init_tuned = self.init["vision"]["tuned_blocks"] if self.init and self.init["vision"] else 0
        if (config.vision_trainable_blocks or init_tuned) and vision is None:
            raise ConnectorError("tuning (or starting from tuned) vision tower layers needs the VisionTower; pass vision=")
        if self.init and self.init["lora"] and config.stage != "finetune":
            raise ConnectorError(f"{self.init_from} is a finetune checkpoint (with LoRA); start stage {config.stage} "
                                 "from a vision or resampler checkpoint")
        self.tuned = max(config.vision_trainable_blocks, init_tuned)  # tuned tower layers the checkpoints carry

    def num_examples(self) -> int:
        return len(self.train)

    def facts(self) -> dict[str, Any]:
        cfg, facts = self.cfg, {"stage": self.cfg.stage, "data_hash": data_fingerprint(self.train)}
        if cfg.vision_trainable_blocks:
            facts["vision_trainable_blocks"] = cfg.vision_trainable_blocks
        if cfg.stage == "vision" or cfg.vicreg_weight:
            facts["vicreg"] = [cfg.vicreg_weight, cfg.vicreg_inv, cfg.vicreg_var, cfg.vicreg_cov]
        if self.init is not None:
            facts["init_from"] = self.init["content_hash"]
        return facts

    def build(self, resume_from: Path | None) -> torch.nn.Module:
        """The stage's model: LoRA added (finetune), tower top set, connector frozen in stage vision; weights
        from `resume_from` (a step checkpoint of this run) or else `init_from` (the previous stage's)."""
        vlm, cfg = self.vlm, self.cfg
        if cfg.stage == "finetune" and vlm.lora is None:
            add_lora(vlm, r=cfg.lora_r, alpha=cfg.lora_alpha, target_modules=cfg.lora_targets)
        if cfg.vision_trainable_blocks:
            vlm.tower_top = self.vision.top(cfg.vision_trainable_blocks)
        for p in vlm.connector.parameters():
            p.requires_grad_(cfg.stage != "vision")
        if resume_from is not None or self.init_from is not None:
            self._load(resume_from or self.init_from, resume=resume_from is not None)
        return StageModel(vlm, cfg).train()

    def _load(self, src: Path, resume: bool) -> None:
        """Connector, LoRA and tuned tower layers of checkpoint `src` into the model (see `build`)."""
        vlm = self.vlm
        weights, lora = checkpoint_tensors(src)
        vlm.connector.load_state_dict(weights)
        if lora is not None and vlm.lora is not None:
            from peft import set_peft_model_state_dict

            if read_manifest(src)["lora"] != vlm.lora:
                raise ConnectorError(f"{src}: its LoRA settings {read_manifest(src)['lora']} differ from this run's "
                                     f"{vlm.lora}; use the same lora_r, lora_alpha and lora_targets")
            set_peft_model_state_dict(vlm.llm, lora)
        tensors = vision_tensors(src, self.vision) if self.vision is not None else {}
        if not resume:  # the features were computed with these layers in the tower: they must be there
            own = self.vision.block_state(read_manifest(src)["vision"]["tuned_blocks"]) if tensors else {}
            if any(not torch.equal(own[k], t) for k, t in tensors.items()):
                raise ConnectorError(f"the vision tower does not hold the tuned layers of {src}; put them in with "
                                     "connectors.load_vision_blocks before computing the features")
        elif tensors:
            self.vision.load_block_state(tensors)

    def batch(self, indices: list[int]) -> dict[str, Any]:
        vlm, examples = self.vlm, [self.train[i] for i in indices]
        if self.cfg.stage == "vision":
            return {"images": [e.image for e in examples]}
        return collate_captions(examples, self.encode, vlm.ids, vlm.tokens_per_image(1), self.eos_id)

    def loss(self, model: Any, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, int]:
        return model(batch, device)

    def evaluate(self, model: Any, acc: Any) -> dict[str, float] | None:
        if not self.held_out:
            return None
        vlm = acc.unwrap_model(model).vlm
        if self.cfg.stage != "vision":
            return evaluate_captions(vlm, self.held_out, self.encode, eos_id=self.eos_id, accelerator=acc)
        cfg, device = self.cfg, next(vlm.parameters()).device

        def loss_of(chunk: list) -> tuple[torch.Tensor, int]:
            images = vlm.tune([e.image.to(device) for e in chunk])
            return pair_vicreg(images, cfg.vicreg_inv, cfg.vicreg_var, cfg.vicreg_cov)[0], 1

        return {"loss": per_token_mean(self.held_out, 8, loss_of, device, acc)}  # held-out VICReg

    def save(self, model: torch.nn.Module, folder: Path, final_eval: dict[str, float] | None) -> None:
        extra = None if final_eval is None else {"train": to_dict(self.cfg), "eval": final_eval}
        blocks = None
        if self.vision is not None:
            blocks = VisionBlocks(self.cfg.vision_trainable_blocks, self.tuned, self.vision.kept_layers,
                                  self.vision.block_state(self.tuned))
        save_connector(model.vlm, folder, self.tower, space_hash=self.space_hash, extra=extra, stage=self.cfg.stage,
                       vision=blocks)

    def summary(self) -> dict[str, Any]:
        return {"train_examples": len(self.train), "held_out_examples": len(self.held_out), "stage": self.cfg.stage}


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
    vision: Any = None, init_from: str | Path | None = None,
) -> TrainResult:
    """Train `vlm` per `config`, resuming from the newest step checkpoint under `out_dir` when `resume`.

    `stop_at` ends this call after that step (saving a resumable step checkpoint first), e.g. for time-limited
    jobs. `overwrite` (instead of `resume`) deletes the run already in `out_dir` first (only what a run writes).
    The final connector checkpoint is `result.final_dir` (`out_dir` once all steps ran); `result.eval` holds the
    last held-out eval. `vision` and `init_from`: see `ConnectorTask`.
    """
    task = ConnectorTask(vlm, train, held_out, encode, config, tower, space_hash, eos_id, vision=vision,
                         init_from=init_from)
    return train_loop(task, loop_config(config, out_dir, resume, overwrite, stop_at), accelerator)
