"""Every registered resampler on the tiny space, with and without the vision stage: one table.

    python scripts/compare_resamplers.py                   # tiny space, CPU, a few minutes
    python scripts/compare_resamplers.py --steps 200 --json

Data: the synthetic captioned panoramas of `compare_tracks.py` (one coloured shape at a compass direction,
"a red square to the north."), held-out scenes are new draws. For each resampler, stage `resampler`
(connector only, LLM frozen) trains with the same loop settings on (a) the tiny tower as shipped and (b) the
tower after one stage-`vision` run (VICReg on the overlap pairs of the tiles, its last `--blocks` layers).
The vision stage does not touch the connector, so it runs once and every resampler starts from the tuned
tower (`connectors.load_vision_blocks`). Columns: trainable parameters, median step time, held-out i2t loss
(nats per caption token) and the own-vs-shuffled image gap (how much the model reads the image).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from compare_tracks import make_data  # noqa: E402

__all__ = ["run", "table", "main"]


def _pieces(seed: int) -> dict[str, Any]:
    """Tiny space: tower, layout, base LLM, text codec, image IDs."""
    from connectors.inject import ImageTokenIds
    from tokenlm.model import load_base
    from uti.image.layout import Layout
    from uti.image.vision import VisionTower
    from uti.space import TokenSpace
    from uti.text import TextCodec

    tiny = TokenSpace.load("tiny")
    tower = VisionTower.from_pretrained(tiny.asset("vision_tower"))
    return {"space": tiny, "tower": tower, "layout": Layout.from_abi(tiny.abi["image"]["layout"]),
            "lm": load_base(str(tiny.asset("base_model"))), "text": TextCodec.from_space(tiny),
            "ids": ImageTokenIds.from_space(tiny)}


def _examples(p: dict[str, Any], data: list, cut: int = 0) -> list:
    from connectors.data import CaptionExample
    from connectors.views import image_view_features

    return [CaptionExample(image_view_features(img, p["layout"], p["tower"], cut), cap) for img, cap in data]


def _config(args: dict[str, Any], **kw: Any) -> Any:
    from connectors.train import ConnectorTrainConfig

    base = {"steps": args["steps"], "batch_size": args["batch_size"], "lr": args["lr"],
            "warmup_steps": max(1, args["steps"] // 10), "seed": args["seed"], "progress": False, "device": "cpu"}
    return ConnectorTrainConfig(**(base | kw))


def _train(p: dict[str, Any], name: str, train: list, held: list, args: dict, out: Path, **kw: Any) -> Any:
    import copy

    from connectors.presets import resampler_config
    from connectors.train import train_connector
    from connectors.vlm import Connector, ConnectorConfig, ContinuousVLM

    torch.manual_seed(args["seed"])
    rcfg = resampler_config(name, p["tower"].hidden_size, args["dim"], args["tokens"])
    conn = Connector(ConnectorConfig(llm_width=int(p["lm"].config.hidden_size), resampler=name, resampler_cfg=rcfg))
    vlm = ContinuousVLM(copy.deepcopy(p["lm"]), conn, p["ids"])
    return train_connector(vlm, train, held, encode=p["text"].encode, config=_config(args, **kw), out_dir=out,
                           tower=p["tower"].abi(), space_hash=p["space"].hash, resume=False, overwrite=True,
                           vision=p["tower"] if kw.get("vision_trainable_blocks") else None)


def run(args: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """The table's rows: every resampler without, then with, the vision stage."""
    from connectors.checkpoint import load_vision_blocks
    from connectors.registry import resampler_names

    p = _pieces(args["seed"])
    data = make_data(args["train"] + args["held_out"], args["seed"])
    n, rows = args["train"], []
    for tuned in (False, True):
        if tuned:  # one vision stage; its connector is untouched, so any resampler will do
            cut = args["blocks"]
            ex = _examples(p, data, cut)
            vis = _train(p, "mlp", ex[:n], ex[n:], {**args, "steps": args["vision_steps"]}, out / "vision",
                         stage="vision", vision_trainable_blocks=cut)
            load_vision_blocks(vis.final_dir, p["tower"])
        ex = _examples(p, data)
        for name in args["resamplers"] or resampler_names():
            res = _train(p, name, ex[:n], ex[n:], args, out / f"{name}-{'vision' if tuned else 'plain'}")
            rows.append({"resampler": name, "vision_stage": tuned, "trainable_params": res.trainable_params,
                         "step_time_s": res.step_time_s, "held_out_loss": res.eval["loss"], "gap": res.eval["gap"]})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per resampler, held-out loss and gap without / with the vision stage."""
    plain = {r["resampler"]: r for r in rows if not r["vision_stage"]}
    tuned = {r["resampler"]: r for r in rows if r["vision_stage"]}
    lines = ["| resampler | trainable params | step time (ms) | held-out loss | gap | held-out loss, vision stage "
             "| gap, vision stage |", "|---|---|---|---|---|---|---|"]
    for name, a in plain.items():
        b = tuned.get(name, {"held_out_loss": float("nan"), "gap": float("nan")})
        lines.append(f"| {name} | {a['trainable_params']:,} | {a['step_time_s'] * 1000:.1f} | {a['held_out_loss']:.4f}"
                     f" | {a['gap']:+.4f} | {b['held_out_loss']:.4f} | {b['gap']:+.4f} |")
    return "\n".join(lines)


@click.command()
@click.option("--train", default=48, show_default=True, help="Training panoramas.")
@click.option("--held-out", default=16, show_default=True, help="Held-out panoramas.")
@click.option("--steps", default=60, show_default=True, help="Steps of each resampler run.")
@click.option("--vision-steps", default=30, show_default=True, help="Steps of the vision stage.")
@click.option("--blocks", default=1, show_default=True, help="Tower layers the vision stage tunes.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--lr", default=3e-3, show_default=True)
@click.option("--dim", default=64, show_default=True, help="Resampler width.")
@click.option("--tokens", default=4, show_default=True, help="Vectors per view.")
@click.option("--seed", default=0, show_default=True)
@click.option("--resampler", "resamplers", multiple=True, help="Only these resamplers (repeatable). [default: all]")
@click.option("--threads", default=1, show_default=True, help="Torch CPU threads.")
@click.option("--out", default=None, help="Folder for the runs. [default: a temporary folder]")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as one JSON document.")
def main(out: str | None, as_json: bool, threads: int, **args: Any) -> None:
    """Train every resampler with and without the vision stage; print one table."""
    torch.set_num_threads(threads)
    args["resamplers"] = list(args["resamplers"])
    out_dir = Path(out or tempfile.mkdtemp(prefix="compare_resamplers_"))
    rows = run(args, out_dir)
    print(json.dumps({"settings": args, "rows": rows}) if as_json else table(rows))


if __name__ == "__main__":
    main()
