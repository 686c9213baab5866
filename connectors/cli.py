"""The `connectors` command line: train the continuous track's three stages on image-caption manifests.

    connectors train --stage vision --data train.jsonl --val val.jsonl --out runs/vision --vision-trainable-blocks 2
    connectors train --stage resampler --data train.jsonl --val val.jsonl --out runs/resampler \\
        --init-from runs/vision --vision-trainable-blocks 2 --vicreg-weight 0.1
    connectors train --stage finetune --data train.jsonl --val val.jsonl --out runs/finetune --init-from runs/resampler

A thin layer over `connectors.run.train_stage`. Exit codes: 0 success, 2 bad input (one-line `error: ...`).
"""

from __future__ import annotations

from typing import Any

import click

from uti.cli_base import ErrorHandlingGroup, emit_json

__all__ = ["main"]

# option name -> ConnectorTrainConfig key, for the options that map one to one
_TRAIN = ("stage", "steps", "batch_size", "grad_accum", "lr", "warmup_steps", "min_lr_ratio", "eval_every",
          "save_every", "seed", "lora_r", "lora_alpha", "vision_trainable_blocks", "vicreg_weight", "vicreg_inv",
          "vicreg_var", "vicreg_cov", "device", "progress")


@click.group(cls=ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="uti-toolkit")
def main() -> None:
    """Continuous track: train a resampler connector (and the tower's last layers, and LoRA) for an LLM."""


@main.command("train")
@click.option("--stage", required=True, type=click.Choice(["vision", "resampler", "finetune", "connector", "lora"]),
              help="vision: VICReg on overlapping tiles, tower's last layers; resampler: connector (+ w x VICReg); "
                   "finetune: + LoRA on the LLM. connector / lora are aliases of resampler / finetune.")
@click.option("--data", multiple=True, required=True, help="Image-caption manifest (.jsonl/.csv), repeatable.")
@click.option("--val", multiple=True, help="Held-out manifest, repeatable.")
@click.option("--out", required=True, help="Output folder (connector checkpoint, checkpoints/, train_result.json).")
@click.option("--init-from", help="Start from this checkpoint of the previous stage (vision -> resampler -> finetune).")
@click.option("--resampler", help="Registered resampler name. [default: --init-from's, else perceiver]")
@click.option("--dim", type=click.IntRange(1), default=512, show_default=True, help="Resampler width.")
@click.option("--tokens", type=click.IntRange(1), default=64, show_default=True, help="Vectors per view.")
@click.option("--space", default="tiny", show_default=True, help="Token space name or path (tower, LLM, layout).")
@click.option("--base", help="Base LLM hub id or folder. [default: the space's base_model asset]")
@click.option("--vision-trainable-blocks", type=click.IntRange(0),
              help="The tower's last encoder layers that train (>= 1 in stage vision). [default: 0]")
@click.option("--vicreg-weight", type=click.FloatRange(0), help="w of LM loss + w x VICReg. [default: 0]")
@click.option("--vicreg-inv", type=click.FloatRange(0), help="VICReg invariance weight. [default: 25]")
@click.option("--vicreg-var", type=click.FloatRange(0), help="VICReg variance weight. [default: 25]")
@click.option("--vicreg-cov", type=click.FloatRange(0), help="VICReg covariance weight. [default: 1]")
@click.option("--steps", type=click.IntRange(1), help="Optimizer steps. [default: 100]")
@click.option("--batch-size", type=click.IntRange(1), help="Examples per process per micro-batch. [default: 4]")
@click.option("--grad-accum", type=click.IntRange(1), help="Micro-batches per step. [default: 1]")
@click.option("--lr", type=click.FloatRange(0, min_open=True), help="Peak learning rate. [default: 1e-3]")
@click.option("--warmup-steps", type=click.IntRange(0), help="Linear warmup steps. [default: 10]")
@click.option("--min-lr-ratio", type=click.FloatRange(0, 1), help="Cosine floor as a fraction of --lr. [default: 0.1]")
@click.option("--eval-every", type=click.IntRange(0), help="Evaluate every N steps (0: at the end).")
@click.option("--save-every", type=click.IntRange(0), help="Checkpoint every N steps (0: at the end).")
@click.option("--seed", type=int, help="Seed of init and data order. [default: 0]")
@click.option("--lora-r", type=click.IntRange(1), help="LoRA rank (finetune). [default: 8]")
@click.option("--lora-alpha", type=click.IntRange(1), help="LoRA alpha (finetune). [default: 16]")
@click.option("--stop-at", type=click.IntRange(1), help="End this run after step N (continue later with --resume).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where to train. [default: auto]")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint under --out.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in --out (only files a run writes).")
@click.option("--progress/--no-progress", default=None, help="Progress bar. [default: on a terminal]")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def train_command(as_json: bool, **opts: Any) -> None:
    """Train one stage of the continuous track; the checkpoint goes to --out."""
    from uti.config import from_dict

    from .run import StageRun, train_stage
    from .train import ConnectorTrainConfig

    if as_json and opts["progress"] is None:
        opts["progress"] = False
    cfg = from_dict(ConnectorTrainConfig, {k: opts[k] for k in _TRAIN if opts.get(k) is not None},
                    where="connectors train options")
    run = from_dict(StageRun, {"data": tuple(opts["data"]), "val": tuple(opts["val"]), "out": opts["out"],
                               "space": opts["space"], "base": opts["base"], "init_from": opts["init_from"],
                               "resampler": opts["resampler"], "dim": opts["dim"], "tokens": opts["tokens"],
                               "resume": opts["resume"], "overwrite": opts["overwrite"], "stop_at": opts["stop_at"]},
                    where="connectors train options")
    result = train_stage(run, cfg)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    doc = {**result.to_json(), "stage": cfg.stage}
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"stage {cfg.stage}: {doc['steps']} steps, final loss {doc['final_loss']:.4f}, eval "
                   f"{result.eval or '-'}; checkpoint in {result.final_dir}")
