"""Train the tiny seeded toy VLM's connector (no downloads) on synthetic captions.

    python scripts/toy_connector_train.py --out /tmp/toy --steps 3
    python -m torch.distributed.run --standalone --nproc_per_node 2 scripts/toy_connector_train.py --out ...

A runnable end-to-end example of `train_connector`, and the program the multi-process test launches with
`torchrun --nproc_per_node N` to check that N processes make the same update as one on the same global
batch (`--batch-size` is per process, so N processes with b equal one process with N x b).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run from a checkout

from connectors.train import ConnectorTrainConfig, TrainResult, train_connector  # noqa: E402
from connectors.vlm import ContinuousVLM  # noqa: E402
from uti.testing import TINY_FEAT, TINY_IDS, byte_encode, tiny_connector, tiny_llm, toy_captions  # noqa: E402

__all__ = ["TOY_TOWER", "run_toy", "main"]

TOY_TOWER = {"name": "toy", "hidden_size": TINY_FEAT}


def run_toy(out_dir: str | Path, config: ConnectorTrainConfig, examples: int = 16, resampler: str = "perceiver",
            accelerator: Any = None, dtype: torch.dtype = torch.float32) -> TrainResult:
    """Train a fresh tiny VLM (seeded, so every process starts from the same weights) on `examples` captions.

    `dtype=torch.float64` lets runs with other batch shapes agree closely: in float32, rounding noise in a
    gradient that is zero in exact arithmetic (e.g. a key bias) is amplified by AdamW to lr-sized steps.
    """
    vlm = ContinuousVLM(tiny_llm(), tiny_connector(resampler=resampler), TINY_IDS).to(dtype)
    return train_connector(vlm, toy_captions(examples, 0), [], encode=byte_encode, config=config,
                           out_dir=out_dir, tower=TOY_TOWER, accelerator=accelerator, resume=False, overwrite=True)


@click.command()
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--steps", default=3, show_default=True, help="Optimizer steps.")
@click.option("--batch-size", default=2, show_default=True, help="Examples per process per step.")
@click.option("--lr", default=1e-2, show_default=True, help="Peak learning rate.")
@click.option("--examples", default=16, show_default=True, help="Number of synthetic training captions.")
@click.option("--resampler", default="perceiver", show_default=True, help="Registered resampler name.")
@click.option("--float64", is_flag=True, help="Train in float64 (exact comparisons between runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line (main process only).")
def main(out_dir: Path, steps: int, batch_size: int, lr: float, examples: int, resampler: str, float64: bool,
         as_json: bool) -> None:
    """Train the tiny toy VLM's connector; the final checkpoint goes to OUT."""
    from tokenlm.trainer import make_accelerator

    torch.set_num_threads(1)
    acc = make_accelerator("auto")  # on CPU: cpu=True, so torchrun's WORLD_SIZE gives a gloo group
    cfg = ConnectorTrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=1)
    dtype = torch.float64 if float64 else torch.float32
    res = run_toy(out_dir, cfg, examples, resampler, accelerator=acc, dtype=dtype)
    if acc.is_main_process:
        summary = {"processes": acc.num_processes, "losses": res.losses, "final_dir": str(res.final_dir)}
        click.echo(json.dumps(summary) if as_json else f"losses {res.losses} -> {res.final_dir}")


if __name__ == "__main__":
    main()
