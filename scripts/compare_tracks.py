"""Discrete image tokens vs a continuous connector: same data, same base LM, same step budget.

    python scripts/compare_tracks.py                      # tiny default, CPU, a few minutes
    python scripts/compare_tracks.py --steps 200 --base-lm path/or/hub-id --tower google/siglip2-...

Data: synthetic 2:1 panoramas, each with one coloured shape at a compass direction, captioned like
"a red square to the north." (the tiny LM's caption grammar); held-out scenes are new draws. Both tracks
see the same views of the same vision tower. The discrete track quantises the features with a k-means
codebook (the tiny space's codebook when the widths match) and trains only the new embedding rows of
the grown LM (`tokenlm`); the continuous track trains a Perceiver connector (`connectors`). Both are tasks
of the one training loop (`tokenlm.trainer`) with the same settings: AdamW, LR schedule, batch size, data
order, steps. Each track runs in its own process so its peak memory
is its own (max RSS on CPU, max allocated on CUDA).

Held-out i2t loss is the mean cross-entropy (nats) over the caption's text tokens only (both tracks use
the same tokenizer); the gap is the same loss with each caption paired with another scene's image minus
the own-image loss: how much the model actually reads the image.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tiny_assets.corpus import COLOURS, DIRECTIONS, SHAPES, caption  # noqa: E402

YAW = {"north": 0.0, "east": 90.0, "south": 180.0, "west": -90.0}
RGB = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 220), "yellow": (235, 215, 40)}


def scene(colour: str, shape: str, direction: str, rng: np.random.Generator, w: int = 256) -> np.ndarray:
    """A (w/2, w, 3) uint8 equirect: noisy sky/ground gradient plus one shape centred at `direction`."""
    import cv2

    h = w // 2
    y = np.linspace(0, 1, h)[:, None, None]
    img = (1 - y) * rng.uniform(120, 200, 3) + y * rng.uniform(40, 110, 3) + rng.normal(0, 8, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    cx, cy, r = int((YAW[direction] / 360.0 + 0.5) * w) % w, h // 2, w // 14
    col = RGB[colour]
    for x0 in (cx - w, cx, cx + w):  # draw wrapped copies so a shape at the seam stays whole
        if shape == "square":
            cv2.rectangle(img, (x0 - r, cy - r), (x0 + r, cy + r), col, -1)
        elif shape == "circle":
            cv2.circle(img, (x0, cy), r, col, -1)
        elif shape == "triangle":
            pts = np.array([[x0, cy - r], [x0 - r, cy + r], [x0 + r, cy + r]], np.int32)
            cv2.fillPoly(img, [pts], col)
        else:
            cv2.line(img, (x0 - r, cy), (x0 + r, cy), col, r // 2)
            cv2.line(img, (x0, cy - r), (x0, cy + r), col, r // 2)
    return img


def make_data(n: int, seed: int) -> list[tuple[np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c, s, d = COLOURS[rng.integers(4)], SHAPES[rng.integers(4)], DIRECTIONS[rng.integers(4)]
        out.append((scene(c, s, d, rng), caption(c, s, d)))
    return out


def load_pieces(args: Any) -> dict[str, Any]:
    """Tower, layout, view features, codebook, text codec, base LM and the token space shared by both tracks."""
    from uti.testing import tiny_qwen3
    from uti.image import Layout
    from uti.image.e2p import render_views
    from uti.image.vision import VisionTower
    from uti.image.vq import Codebook, fit_codebook
    from uti.space import SCHEMA, TokenSpace
    from uti.specials import default_specials
    from uti.text import TextCodec

    tiny = TokenSpace.load("tiny")
    tower = VisionTower.from_pretrained(args.tower or tiny.root / "vision_tower")
    layout = Layout(tile_size=tower.image_size)
    data = make_data(args.train + args.held_out, args.seed)
    views = [layout.views() for _ in data][0]
    feats = [tower.encode(render_views(img, layout)) for img, _ in data]  # each (V, P, D)
    cb_path = tiny.root / "codebook.safetensors"
    codebook = Codebook.load(cb_path) if cb_path.is_file() and args.codebook_size == 0 else None
    if codebook is None or codebook.dim != tower.hidden_size:
        codebook = fit_codebook(torch.cat(feats[: args.train]).flatten(0, 1), args.codebook_size or 64, seed=args.seed)
    text = TextCodec.from_space(tiny)
    base = args.base_lm or ("" if tiny.missing_assets(["base_model"]) else str(tiny.asset("base_model")))
    if base:
        from tokenlm.model import load_base

        lm = load_base(base)
    else:  # the tiny space ships no base LM yet: a random one (losses then stay near log(vocab))
        lm = tiny_qwen3(vocab=tiny.abi["text"]["base_vocab_size"], seed=args.seed)
    space = TokenSpace.from_abi({
        "schema": SCHEMA, "text": {**tiny.abi["text"], "base_vocab_size": int(lm.config.vocab_size)},
        "image": {"codebook_size": codebook.size, "grid": [tower.grid] * 2, "tokens_per_view": tower.num_patches,
                  "layout": layout.abi()},
        "specials": default_specials(layout.num_tiles), "pad_to_multiple": 128}, name="compare")
    return {"tower": tower, "views": views, "feats": feats, "codebook": codebook, "text": text, "lm": lm,
            "space": space, "captions": [c for _, c in data]}


def _checkpoint_bytes(folder: Path) -> int:
    """Bytes of the trainable-state checkpoint in `folder` (its own files, not step checkpoints or the summary)."""
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file() and f.name != "train_result.json")


def _train_config(args: Any) -> Any:
    from connectors.train import ConnectorTrainConfig

    return ConnectorTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                warmup_steps=max(1, args.steps // 10), seed=args.seed)


def _loop_config(args: Any, out: Path) -> Any:
    """The shared loop's settings, the same for both tracks (a fresh run in `out`)."""
    from connectors.train import loop_config

    return loop_config(_train_config(args), out, resume=False, overwrite=True, stop_at=None)


def _track_result(name: str, res: Any) -> dict[str, Any]:
    return {"track": name, "trainable_params": res.trainable_params, "saved_bytes": _checkpoint_bytes(res.final_dir),
            "step_time_s": res.step_time_s, "peak_memory_bytes": res.peak_memory_bytes,
            "held_out_loss": res.eval["loss"], "shuffled_loss": res.eval["shuffled_loss"], "gap": res.eval["gap"],
            "losses": res.losses}


def run_discrete(p: dict[str, Any], args: Any, out: Path) -> dict[str, Any]:
    """Rows-only training of the grown LM on i2t sequences of quantised views (`tokenlm.train.TokenLMTask`)."""
    import copy
    import dataclasses

    from tokenlm.model import grow_model
    from tokenlm.train import TokenLMTask
    from tokenlm.trainer import train_loop
    from uti.sequence import IGNORE_INDEX, build_sequence, pad_row

    space, n, h = p["space"], args.train, args.held_out
    image_ids = [space.ranges["image"].to_global(p["codebook"].quantize(f).flatten().tolist()) for f in p["feats"]]
    caps = [p["text"].encode(c) for c in p["captions"]]
    seqs = {(i, j): build_sequence(space, "i2t", target=caps[i], condition=image_ids[j])
            for i in range(len(caps)) for j in (i, n + (i - n + 1) % h if i >= n else i)}
    max_len, pad = max(len(s) for s in seqs.values()), space.special_id("<|pad|>")
    base_vocab = space.abi["text"]["base_vocab_size"]

    def row(i: int, j: int, caption_only: bool = False) -> Any:
        r = pad_row([seqs[(i, j)]], max_len, pad)
        if not caption_only:
            return r
        return dataclasses.replace(r, labels=tuple(y if 0 <= y < base_vocab else IGNORE_INDEX for y in r.labels))

    own = [row(i, i, True) for i in range(n, n + h)]
    shuffled = [row(i, n + (i - n + 1) % h, True) for i in range(n, n + h)]

    class DiscreteTask(TokenLMTask):
        """Held-out eval as the continuous track's: caption text only, own image vs another scene's image."""

        def evaluate(self, model: Any, acc: Any) -> dict[str, float]:
            loss, shuf = self.mean_loss(model, acc, own), self.mean_loss(model, acc, shuffled)
            return {"loss": loss, "shuffled_loss": shuf, "gap": shuf - loss}

    task = DiscreteTask(space, [row(i, i) for i in range(n)], [], lambda: grow_model(copy.deepcopy(p["lm"]), space))
    return _track_result("discrete rows", train_loop(task, _loop_config(args, out / "discrete")))


def run_continuous(p: dict[str, Any], args: Any, out: Path) -> dict[str, Any]:
    """Stage-1 connector training (LLM frozen) on the same views, captions and loop settings."""
    import copy

    from connectors import CaptionExample, Connector, ConnectorConfig, ContinuousVLM, ImageTokenIds, ViewFeatures
    from connectors.train import ConnectorTask
    from tokenlm.trainer import train_loop

    views, tower, lm, n = p["views"], p["tower"], p["lm"], args.train
    yaw_pitch = torch.tensor([[v.yaw, v.pitch] for v in views], dtype=torch.float32)
    is_global = torch.tensor([v.kind == "global" for v in views])
    ex = [CaptionExample(ViewFeatures(f, yaw_pitch, is_global), c) for f, c in zip(p["feats"], p["captions"])]
    dim = args.latent_dim
    rcfg = {"in_dim": tower.hidden_size, "dim": dim, "num_latents": args.latents, "depth": 2, "heads": 4,
            "head_dim": dim // 4}
    connector = Connector(ConnectorConfig(llm_width=int(lm.config.hidden_size), resampler_cfg=rcfg))
    vlm = ContinuousVLM(copy.deepcopy(lm), connector, ImageTokenIds.from_space(p["space"]))
    task = ConnectorTask(vlm, ex[:n], ex[n:], p["text"].encode, _train_config(args), tower.abi(), p["space"].hash)
    return _track_result("continuous connector", train_loop(task, _loop_config(args, out / "continuous")))


COLUMNS = [("trainable_params", "trainable params", "{:,}"), ("saved_bytes", "saved bytes", "{:,}"),
           ("step_time_s", "step time (ms)", "x1000"), ("peak_memory_bytes", "peak memory (MiB)", "MiB"),
           ("held_out_loss", "held-out i2t loss", "{:.4f}"), ("gap", "own-vs-shuffled gap", "{:+.4f}")]


def _fmt(value: float, how: str) -> str:
    if how == "x1000":
        return f"{value * 1000:.1f}"
    if how == "MiB":
        return f"{value / 2**20:.0f}"
    return how.format(value)


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table, one row per track, plus the ratio continuous / discrete for each numeric column."""
    head = "| track | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for r in results:
        lines.append(f"| {r['track']} | " + " | ".join(_fmt(r[k], how) for k, _, how in COLUMNS) + " |")
    if len(results) == 2:
        a, b = results
        ratio = [f"{b[k] / a[k]:.2f}x" if a[k] > 0 and b[k] > 0 else "n/a" for k, _, _ in COLUMNS]  # gaps may be < 0
        lines.append(f"| {b['track']} / {a['track']} | " + " | ".join(ratio) + " |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> str:
    """Training-loss curves and the held-out bars as a PNG; returns a note when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'uti-toolkit[bench]'); no plot written"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        ax1.plot(r["losses"], label=r["track"])
    ax1.set(xlabel="step", ylabel="train loss", title="training loss")
    ax1.legend()
    x = np.arange(len(results))
    ax2.bar(x - 0.2, [r["held_out_loss"] for r in results], 0.4, label="own image")
    ax2.bar(x + 0.2, [r["shuffled_loss"] for r in results], 0.4, label="shuffled image")
    ax2.set_xticks(x, [r["track"] for r in results])
    ax2.set(ylabel="held-out i2t loss (nats/token)", title="does the model read the image?")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return f"plot written to {path}"


def _run_track(track: str, opts: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run one track in a fresh process so its peak memory is its own."""
    result = out / f"{track}.json"
    cmd = [sys.executable, __file__, "--track", track, "--out", str(out)]
    for key, value in opts.items():
        if value not in (None, "") and key not in ("track", "out", "as_json"):
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    subprocess.run(cmd, check=True)
    return json.loads(result.read_text())


def _default_base_lm(out_dir: Path, seed: int, steps: int) -> str:
    """The tiny space's base LM; when it ships none, pretrain the tiny Qwen3 on the tiny corpus once (cached)."""
    from uti.space import TokenSpace

    tiny = TokenSpace.load("tiny")
    if not tiny.missing_assets(["base_model"]):
        return str(tiny.asset("base_model"))
    path = out_dir / "tiny_lm"
    if not (path / "config.json").is_file():
        from tiny_assets import make_tiny_lm

        make_tiny_lm(path, Path(tiny.asset("tokenizer")), seed=seed, steps=steps,
                     vocab_size=int(tiny.abi["text"]["base_vocab_size"]))
    return str(path)


def _main(track: str | None, out: str | None, as_json: bool, **opts: Any) -> None:
    from uti.io import atomic_write_json

    torch.manual_seed(opts["seed"])
    out_dir = Path(out or tempfile.mkdtemp(prefix="compare_tracks_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    args = type("Args", (), opts)()
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    if track:  # child process: one track
        pieces = load_pieces(args)
        res = (run_discrete if track == "discrete" else run_continuous)(pieces, args, out_dir)
        atomic_write_json(out_dir / f"{track}.json", res)
        return
    if not opts["base_lm"]:
        opts["base_lm"] = _default_base_lm(out_dir, opts["seed"], opts["pretrain_steps"])
    results = [_run_track(t, opts, out_dir) for t in ("discrete", "continuous")]
    atomic_write_json(out_dir / "compare_tracks.json", {"settings": opts, "results": results})
    note = plot(results, out_dir / "compare_tracks.png")
    if as_json:
        print(json.dumps({"settings": opts, "results": [{k: v for k, v in r.items() if k != "losses"} for r in results],
                          "plot": note, "out": str(out_dir)}))
    else:
        print(table(results))
        print(f"\n{note}; results in {out_dir / 'compare_tracks.json'}")


def cli() -> None:
    import click

    @click.command(help=__doc__.split("\n\n")[0])
    @click.option("--steps", default=300, show_default=True, help="Optimizer steps for each track.")
    @click.option("--batch-size", default=8, show_default=True)
    @click.option("--lr", default=3e-3, show_default=True)
    @click.option("--train", default=48, show_default=True, help="Training scenes.")
    @click.option("--held-out", default=16, show_default=True, help="Held-out scenes.")
    @click.option("--seed", default=0, show_default=True)
    @click.option("--base-lm", default="", help="Base LM (hub id or folder); default: the tiny space's base_model.")
    @click.option("--pretrain-steps", default=300, show_default=True,
                  help="If the tiny space ships no base LM: pretraining steps of a tiny Qwen3 made on the fly.")
    @click.option("--tower", default="", help="Vision tower (hub id or folder); default: the tiny space's tower.")
    @click.option("--codebook-size", default=0, show_default=True,
                  help="Fit a k-means codebook of this size (0: the tiny space's codebook when it fits).")
    @click.option("--latents", default=8, show_default=True, help="Connector vectors per view.")
    @click.option("--latent-dim", default=64, show_default=True, help="Connector latent width.")
    @click.option("--threads", default=0, show_default=True, help="torch CPU threads per track (0: torch default).")
    @click.option("--out", default=None, help="Folder for checkpoints, results JSON and plot.")
    @click.option("--track", type=click.Choice(["discrete", "continuous"]), default=None, hidden=True)
    @click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
    def main(**kw: Any) -> None:
        _main(**kw)

    main()


if __name__ == "__main__":
    cli()
