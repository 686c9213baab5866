"""`tokenlm train`: a thin click command over `tokenlm.train.train`.

    tokenlm train --stage rows --space tiny --data captions.jsonl --data shards/ --out runs/rows
    accelerate launch --num_processes 2 --cpu -m tokenlm.train_cli --config cfg.yaml --out runs/ddp
    torchrun --nproc_per_node 2 -m tokenlm.train_cli --data d.jsonl --out runs/ddp
    accelerate launch --config_file scripts/accelerate/fsdp2.yaml -m tokenlm train --data d.jsonl --out runs/fsdp

Options given on the command line override the `--config` file (YAML or JSON with TrainConfig keys).
"""

from __future__ import annotations

from typing import Any

import click

from uti.cli_base import ErrorHandlingGroup, emit_json

__all__ = ["train_command"]

# option name -> TrainConfig key, for the options that map one to one
_SIMPLE = ("stage", "space", "base", "steps", "batch_size", "grad_accum", "max_len", "lr", "eval_every", "save_every",
           "seed", "chunk_tokens", "eval_fraction", "schedule", "min_lr_ratio", "warmup_steps", "init", "stop_at", "dtype",
           "device", "keep_last", "progress")


@click.command("train")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML/JSON file of TrainConfig keys; command-line options override it.")
@click.option("--data", multiple=True,
              help="JSONL or CSV record file (see README: Training records) or uti-encode shard folder (repeatable). [required unless --config has data:]")
@click.option("--eval-data", multiple=True, help="Held-out JSONL or CSV record file (repeatable).")
@click.option("--out", help="Output folder (rows checkpoint, checkpoints/, train_result.json). "
              "[required unless --config has out:]")
@click.option("--stage", type=click.Choice(["rows", "lora", "full"]), help="What trains. [default: rows]")
@click.option("--space", help="Token space name or path. [default: tiny]")
@click.option("--base", help="Base model hub id or folder. [default: the space's base_model asset]")
@click.option("--task", "tasks", multiple=True, type=click.Choice(["text", "i2t", "a2t", "t2i", "t2a"]),
              help="Tasks to build sequences for (repeatable). [default: all]")
@click.option("--steps", type=click.IntRange(1), help="Optimizer steps. [default: 100]")
@click.option("--batch-size", type=click.IntRange(1), help="Rows per process per micro-batch. [default: 8]")
@click.option("--grad-accum", type=click.IntRange(1), help="Micro-batches per step. [default: 1]")
@click.option("--max-len", type=click.IntRange(2), help="Packing length in tokens. [default: 2048]")
@click.option("--lr", type=float, help="Peak learning rate. [default: 1e-3]")
@click.option("--schedule", type=click.Choice(["constant", "cosine"]), help="LR schedule. [default: cosine]")
@click.option("--min-lr-ratio", type=click.FloatRange(0, 1),
              help="The cosine schedule ends at this fraction of --lr. [default: 0.1]")
@click.option("--warmup-steps", type=click.IntRange(0), help="Linear warmup steps. [default: 0]")
@click.option("--init", type=click.Choice(["mean_noise", "codebook", "projection", "normal"]),
              help="New-row init (tokenlm.model docstring). [default: mean_noise]")
@click.option("--eval-every", type=click.IntRange(0), help="Evaluate every N steps (0: at the end).")
@click.option("--eval-fraction", type=float, help="Hold out this fraction of the records for eval.")
@click.option("--save-every", type=click.IntRange(0), help="Checkpoint every N steps (0: at the end).")
@click.option("--chunk-tokens", type=click.IntRange(1), help="Tokens per chunk of the full-vocabulary loss.")
@click.option("--seed", type=int, help="Seed of init, data order and sampling. [default: 0]")
@click.option("--stop-at", type=click.IntRange(1), help="End this run after step N (resume later with --resume).")
@click.option("--keep-last", type=click.IntRange(1), help="Step checkpoints to keep (newest). [default: 3]")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Dtype to load the base model in (the new rows follow it). [default: float32]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where to train; auto takes the GPU when there is one. [default: auto]")
@click.option("--fsdp", is_flag=True, default=None,
              help="Shard the model with FSDP2 across the launched processes (torchrun); `accelerate launch "
                   "--config_file scripts/accelerate/fsdp2.yaml` turns it on by itself.")
@click.option("--resume", is_flag=True, default=None, help="Continue from the newest checkpoint under --out.")
@click.option("--overwrite", is_flag=True, default=None,
              help="Replace the run already in --out (deletes only files a training run writes).")
@click.option("--progress/--no-progress", default=None, help="Progress bar. [default: on a terminal]")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def train_command(config_file: str | None, as_json: bool, **opts: Any) -> None:
    """Train new rows (or LoRA + rows, or everything) on a token space's sequences with Accelerate."""
    from uti.config import from_dict, read_config_file

    from .train import train
    from .train_config import TrainConfig

    cfg = read_config_file(config_file) if config_file else {}
    for key in ("data", "eval_data", "tasks"):
        if opts.get(key):
            cfg[key] = list(opts[key])
    for key in _SIMPLE + ("out", "resume", "overwrite", "fsdp"):
        if opts.get(key) is not None:
            cfg[key] = opts[key]
    if as_json and opts.get("progress") is None:
        cfg["progress"] = False
    if "out" not in cfg:
        raise click.UsageError("--out is required (or `out:` in --config)")
    if "data" not in cfg:
        raise click.UsageError("--data is required (or `data:` in --config)")
    result = train(from_dict(TrainConfig, cfg, where="train config"))
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    if as_json:
        emit_json(result.to_json())
    else:
        doc = result.to_json()
        click.echo(f"trained {doc['steps']} steps on {doc['processes']} process(es): final loss "
                   f"{doc['final_loss']:.4f}, eval {doc['final_eval_loss']}; rows in {doc['out']}")


@click.group(cls=ErrorHandlingGroup)
def _standalone() -> None:
    """Entry for `python -m tokenlm.train_cli` (torchrun / accelerate launch)."""


_standalone.add_command(train_command)

if __name__ == "__main__":
    import sys

    _standalone(["train", *sys.argv[1:]])
