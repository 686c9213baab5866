"""Discrete image tokens vs a continuous connector: same data, same base LM, same loop, several seeds.

    python scripts/compare_tracks.py --threads 1 --out runs/compare      # 5 arms x 3 seeds: ~10 CPU-minutes
    python scripts/compare_tracks.py --arms rows,connector --seeds 1 --steps 50

Data: synthetic 2:1 panoramas, each with one coloured shape at a compass direction, captioned like
"a red square to the north." (the tiny LM's caption grammar); held-out scenes are new draws. Both tracks
see the same views of the same vision tower. The discrete track quantises the features with a k-means
codebook (the tiny space's codebook when the widths match) and trains new embedding rows of the grown LM
(`tokenlm`); the continuous track trains a Perceiver connector (`connectors`). Both are tasks of the one
training loop (`tokenlm.trainer`) with the same settings: AdamW, LR schedule, batch size, data order, steps.

Arms (`--arms`): `rows` (new rows only); `rows+lora` (stage 2: continues from `rows`' final rows with the
token LM's stage `lora`, r=8 on every projection); `connector`; `connector+lora` (stage 2 from `connector`'s
checkpoint, r=8 on q/k/v/o); `rows+lora-matched` (rows plus a LoRA whose rank is chosen so the trainable
count matches `connector`'s, from the start, same steps as `connector`). A staged arm's stage 2 runs
`--stage2-steps` more steps; its curve continues its stage-1 arm's.

Fairness: everything a step needs is built before the loop (the discrete track's image codes, captions and
padded rows; the continuous track's view features, and its caption/prompt token IDs, pre-encoded so the
collate function only looks them up: `encode_calls_in_loop` in the results proves it). Step time is the
loop's median per optimizer step. Each (arm, seed) runs in its own process, so its peak memory (max RSS on
CPU, max allocated on CUDA) is its own; it includes the process's base LM, tower and features.

Held-out i2t loss is the mean cross-entropy (nats) over the caption's text tokens only (both tracks use
the same tokenizer); the gap is the same loss with each caption paired with another scene's image minus
the own-image loss: how much the model actually reads the image. It is evaluated every `--eval-every`
steps; the plot (`--plot`, default OUT/compare_tracks.png) draws the gap against steps per arm, mean over
seeds with a +-1 sd band. Table cells are mean +- sd over seeds (sample sd).
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


# arm -> (track, stage, the arm whose final state its stage 2 starts from)
ARMS: dict[str, tuple[str, str, str | None]] = {
    "rows": ("discrete", "rows", None),
    "rows+lora": ("discrete", "lora", "rows"),
    "connector": ("continuous", "connector", None),
    "connector+lora": ("continuous", "lora", "connector"),
    "rows+lora-matched": ("discrete", "lora", None),
}
MATCHED = "rows+lora-matched"


def arm_order(wanted: list[str]) -> list[str]:
    """The arms to run, stage-1 arms before the staged arms that start from them (those are added)."""
    bad = [a for a in wanted if a not in ARMS]
    if bad:
        raise ValueError(f"unknown arm(s) {', '.join(bad)}; expected some of {', '.join(ARMS)}")
    need = set(wanted) | {ARMS[a][2] for a in wanted if ARMS[a][2]}
    return [a for a in ARMS if a in need]


def _checkpoint_bytes(folder: Path) -> int:
    """Bytes of the trainable-state checkpoint in `folder` (its own files, not step checkpoints or the summary)."""
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file() and f.name != "train_result.json")


def _steps(args: Any, arm: str) -> int:
    return (getattr(args, "stage2_steps", 0) or args.steps) if ARMS[arm][2] else args.steps


def _train_config(args: Any, stage: str = "connector", steps: int | None = None) -> Any:
    from connectors.train import ConnectorTrainConfig

    steps = steps or args.steps
    return ConnectorTrainConfig(stage=stage, steps=steps, batch_size=args.batch_size, lr=args.lr,
                                warmup_steps=max(1, steps // 10), seed=args.seed,
                                eval_every=getattr(args, "eval_every", 0) or 0)


def _loop_config(args: Any, out: Path, steps: int | None = None) -> Any:
    """The shared loop's settings, the same for every arm (a fresh run in `out`)."""
    from connectors.train import loop_config

    return loop_config(_train_config(args, steps=steps), out, resume=False, overwrite=True, stop_at=None)


def _arm_result(arm: str, res: Any, start_step: int = 0, **extra: Any) -> dict[str, Any]:
    ev = [[s + start_step, e["loss"], e["gap"]] for s, e in res.evals]
    return {"arm": arm, "track": ARMS[arm][0], "stage": ARMS[arm][1], "start_step": start_step, "steps": res.steps,
            "trainable_params": res.trainable_params, "saved_bytes": _checkpoint_bytes(res.final_dir),
            "step_time_s": res.step_time_s, "peak_memory_bytes": res.peak_memory_bytes,
            "held_out_loss": res.eval["loss"], "shuffled_loss": res.eval["shuffled_loss"], "gap": res.eval["gap"],
            "evals": ev, "losses": res.losses, **extra}


def lora_params_per_rank(model: torch.nn.Module, targets: list[str]) -> int:
    """LoRA parameters per unit of rank on the Linear layers named `targets`: sum of (in + out) features."""
    return sum(m.in_features + m.out_features for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets)


def matched_rank(target: int, rows: int, per_rank: int) -> int:
    """The LoRA rank r >= 1 whose rows + r * per_rank is nearest to `target` trainable parameters."""
    return max(1, round((target - rows) / per_rank))


def _grow(p: dict[str, Any], args: Any) -> Any:
    """A fresh grown copy of the base LM; `--init` (when given) goes to `grow_model`."""
    import copy

    from tokenlm.model import grow_model

    kw: dict[str, Any] = {"seed": args.seed}
    init = getattr(args, "init", None)
    if init:
        kw["init"] = init
        if init not in ("mean_noise", "normal"):  # inits from code vectors: the comparison's own codebook
            kw["codebook"] = p["codebook"].embed
    return grow_model(copy.deepcopy(p["lm"]), p["space"], **kw)


def run_discrete(p: dict[str, Any], args: Any, out: Path, arm: str = "rows") -> dict[str, Any]:
    """Train the grown LM on i2t sequences of quantised views (`tokenlm.train.TokenLMTask`) as `arm` says."""
    import dataclasses

    from peft import LoraConfig, get_peft_model

    from tokenlm.checkpoint import load_rows
    from tokenlm.model import LORA_TARGETS
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

    _, stage, parent = ARMS[arm]
    extra: dict[str, Any] = {}
    lora = None
    if arm == MATCHED:
        grown = _grow(p, args)
        rows = sum(t.numel() for t in grown.parameters() if t.requires_grad)
        target = sum(t.numel() for t in _connector(p, args).parameters())
        r = matched_rank(target, rows, lora_params_per_rank(grown, LORA_TARGETS))
        lora = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=LORA_TARGETS)
        extra = {"lora_r": r, "matched_to": target}

    def make_model() -> Any:
        model = _grow(p, args)
        if parent:
            model = load_rows(model, out / parent, space)
        return get_peft_model(model, lora) if lora is not None else model

    task = DiscreteTask(space, [row(i, i) for i in range(n)], [], make_model, stage=stage)
    steps = _steps(args, arm)
    res = train_loop(task, _loop_config(args, out / arm, steps))
    return _arm_result(arm, res, args.steps if parent else 0, **extra)


def _connector(p: dict[str, Any], args: Any) -> Any:
    """The comparison's Perceiver connector (fresh, seeded by the caller's torch seed)."""
    from connectors import Connector, ConnectorConfig

    dim = args.latent_dim
    rcfg = {"in_dim": p["tower"].hidden_size, "dim": dim, "num_latents": args.latents, "depth": 2, "heads": 4,
            "head_dim": dim // 4}
    return Connector(ConnectorConfig(llm_width=int(p["lm"].config.hidden_size), resampler_cfg=rcfg))


def pre_encoded(encode: Any) -> Any:
    """`encode` with a cache; `.misses` counts the strings it had to encode (0 inside the loop once warmed)."""
    cache: dict[str, list[int]] = {}

    def cached(s: str) -> list[int]:
        if s not in cache:
            cached.misses += 1
            cache[s] = list(encode(s))
        return cache[s]

    cached.misses = 0
    return cached


def run_continuous(p: dict[str, Any], args: Any, out: Path, arm: str = "connector") -> dict[str, Any]:
    """Connector training (LLM frozen; stage `lora` adds LoRA) on the same views, captions and loop settings."""
    import copy

    from connectors import CaptionExample, ContinuousVLM, ImageTokenIds, ViewFeatures
    from connectors.checkpoint import checkpoint_tensors
    from connectors.data import collate_captions
    from connectors.train import ConnectorTask
    from tokenlm.trainer import train_loop

    views, tower, lm, n = p["views"], p["tower"], p["lm"], args.train
    _, stage, parent = ARMS[arm]
    yaw_pitch = torch.tensor([[v.yaw, v.pitch] for v in views], dtype=torch.float32)
    is_global = torch.tensor([v.kind == "global" for v in views])
    ex = [CaptionExample(ViewFeatures(f, yaw_pitch, is_global), c) for f, c in zip(p["feats"], p["captions"])]
    connector = _connector(p, args)
    if parent:
        connector.load_state_dict(checkpoint_tensors(out / parent)[0])
    vlm = ContinuousVLM(copy.deepcopy(lm), connector, ImageTokenIds.from_space(p["space"]))
    encode = pre_encoded(p["text"].encode)
    for e in ex:  # every caption and prompt piece encoded now, before the loop's clock
        collate_captions([e], encode, vlm.ids, vlm.tokens_per_image(1))
    warm = encode.misses
    steps = _steps(args, arm)
    cfg = _train_config(args, stage, steps)
    task = ConnectorTask(vlm, ex[:n], ex[n:], encode, cfg, tower.abi(), p["space"].hash)
    res = train_loop(task, _loop_config(args, out / arm, steps))
    return _arm_result(arm, res, args.steps if parent else 0, encode_calls_in_loop=encode.misses - warm)


def run_arm(p: dict[str, Any], args: Any, out: Path, arm: str) -> dict[str, Any]:
    """One arm of one seed in `out` (a staged arm reads its stage-1 arm's final state from `out/<that arm>`)."""
    return (run_discrete if ARMS[arm][0] == "discrete" else run_continuous)(p, args, out, arm)


def linear_probe(x: torch.Tensor, y: torch.Tensor, n_train: int, steps: int = 400) -> float:
    """Held-out accuracy of softmax regression from x (N, F) to y (N,) trained on the first `n_train` rows.

    Inputs standardised with the training rows' statistics; Adam, the best of three L2 weights (an upper bound
    on what a linear read-out of these inputs gets, not a tuned classifier).
    """
    x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-6)
    classes, best = int(y.max()) + 1, 0.0
    for wd in (1e-3, 1e-2, 1e-1):
        w = torch.zeros(x.shape[1], classes, requires_grad=True)
        b = torch.zeros(classes, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=1e-2)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(x[:n_train] @ w + b, y[:n_train]) + wd * w.square().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            best = max(best, ((x[n_train:] @ w + b).argmax(1) == y[n_train:]).float().mean().item())
    return best


def probe(p: dict[str, Any], n_train: int) -> dict[str, dict[str, float]]:
    """What a linear read-out recovers of each scene's colour, shape and direction (chance 0.25) from the
    discrete track's input (per view, the share of each code: (V * K) numbers) and from the continuous
    track's (per view, the mean patch feature: (V * D) numbers), scenes [n_train:] held out."""
    import re

    words = [re.match(r"a (\w+) (\w+) to the (\w+)", c).groups() for c in p["captions"]]
    labels = {name: torch.tensor([vocab.index(w[k]) for w in words])
              for k, (name, vocab) in enumerate((("colour", COLOURS), ("shape", SHAPES), ("direction", DIRECTIONS)))}
    codes = torch.stack([p["codebook"].quantize(f) for f in p["feats"]])  # (N, V, P)
    inputs = {"codes": torch.nn.functional.one_hot(codes, p["codebook"].size).float().mean(2).flatten(1),
              "features": torch.stack(p["feats"]).mean(2).flatten(1)}  # (N, V * K), (N, V * D)
    return {src: {name: linear_probe(x, y, n_train) for name, y in labels.items()} for src, x in inputs.items()}


# aggregation, table, plot ---------------------------------------------------------------------------

COLUMNS = [("trainable_params", "trainable params", "{:,.0f}"), ("saved_bytes", "saved bytes", "{:,.0f}"),
           ("step_time_s", "step time (ms)", "x1000"), ("peak_memory_bytes", "peak memory (MiB)", "MiB"),
           ("held_out_loss", "held-out i2t loss", "{:.4f}"), ("gap", "own-vs-shuffled gap", "{:+.4f}")]


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    import statistics

    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm over its seeds: mean and sd of every column, and the gap curve's mean and sd at each eval step."""
    first = per_seed[0]
    agg: dict[str, Any] = {"arm": first["arm"], "track": first["track"], "seeds": [r["seed"] for r in per_seed],
                           "steps": first["start_step"] + first["steps"], "start_step": first["start_step"]}
    for key in [c[0] for c in COLUMNS] + ["shuffled_loss"]:
        agg[key], agg[key + "_sd"] = mean_sd([float(r[key]) for r in per_seed])
    for key in ("lora_r", "matched_to"):
        if key in first:
            agg[key] = first[key]
    steps = [e[0] for e in first["curve"]]
    gaps = [[e[2] for e in r["curve"]] for r in per_seed]
    stats = [mean_sd([g[k] for g in gaps]) for k in range(len(steps))]
    agg["curve"] = {"steps": steps, "gap_mean": [m for m, _ in stats], "gap_sd": [s for _, s in stats]}
    return agg


def _fmt(value: float, how: str) -> str:
    if how == "x1000":
        return f"{value * 1000:.1f}"
    if how == "MiB":
        return f"{value / 2**20:.0f}"
    return how.format(value)


def table(arms: list[dict[str, Any]]) -> str:
    """Markdown table, one row per arm: each column's mean +- sd over seeds (the mean alone when sd is 0)."""
    lines = ["| arm | steps | " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 2)]
    for a in arms:
        steps = f"{a['start_step']}+{a['steps'] - a['start_step']}" if a["start_step"] else str(a["steps"])
        cells = [_fmt(a[k], how) + (f" ± {_fmt(a[k + '_sd'], how).lstrip('+')}" if a[k + "_sd"] > 0 else "")
                 for k, _, how in COLUMNS]
        lines.append(f"| {a['arm']} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    raw = (hi - lo) / n
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [float(t) + 0.0 for t in np.arange(np.ceil(lo / step) * step, hi + step * 1e-6, step)]


def plot_pillow(curves: list[tuple[str, dict[str, list[float]]]], path: Path, title: str, ylabel: str) -> None:
    """Line chart with +-sd bands drawn with Pillow (used when matplotlib is not installed)."""
    from PIL import Image, ImageDraw, ImageFont

    w, h, left, right, top, bottom = 960, 540, 90, 20, 40, 60
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    xs = [x for _, c in curves for x in c["steps"]] or [0, 1]
    lows = [m - s for _, c in curves for m, s in zip(c["gap_mean"], c["gap_sd"])] + [0.0]
    highs = [m + s for _, c in curves for m, s in zip(c["gap_mean"], c["gap_sd"])] + [0.0]
    x0, x1 = 0.0, float(max(xs)) or 1.0
    pad = (max(highs) - min(lows)) * 0.05 or 0.01
    y0, y1 = min(lows) - pad, max(highs) + pad

    def px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (w - left - right), top + (y1 - y) / (y1 - y0) * (h - top - bottom)

    img = Image.new("RGBA", (w, h), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default(size=14)
    for t in _ticks(y0, y1):
        _, yy = px(x0, t)
        draw.line([(left, yy), (w - right, yy)], fill=(0, 0, 0) if t == 0 else (225, 225, 225))
        draw.text((left - 6, yy), f"{t:+.3g}" if abs(t) > 1e-12 else "0", fill="black", font=font, anchor="rm")
    for t in _ticks(x0, x1):
        xx, _ = px(t, y0)
        draw.line([(xx, h - bottom), (xx, h - bottom + 5)], fill="black")
        draw.text((xx, h - bottom + 8), f"{t:g}", fill="black", font=font, anchor="mt")
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for k, (name, c) in enumerate(curves):
        col = colours[k % len(colours)]
        upper = [px(x, m + s) for x, m, s in zip(c["steps"], c["gap_mean"], c["gap_sd"])]
        lower = [px(x, m - s) for x, m, s in zip(c["steps"], c["gap_mean"], c["gap_sd"])]
        band = Image.new("RGBA", img.size, (0, 0, 0, 0))
        if len(upper) > 1:
            ImageDraw.Draw(band).polygon(upper + lower[::-1], fill=col + (50,))
        img = Image.alpha_composite(img, band)
        draw = ImageDraw.Draw(img)
        line = [px(x, m) for x, m in zip(c["steps"], c["gap_mean"])]
        if len(line) > 1:
            draw.line(line, fill=col, width=2)
        for x, y in line:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
        draw.line([(left + 12, top + 14 + 20 * k), (left + 40, top + 14 + 20 * k)], fill=col, width=3)
        draw.text((left + 46, top + 14 + 20 * k), name, fill="black", font=font, anchor="lm")
    draw.text((w / 2, 12), title, fill="black", font=font, anchor="mt")
    draw.text(((left + w - right) / 2, h - 22), "optimizer step", fill="black", font=font, anchor="mt")
    label = Image.new("RGBA", (h - top - bottom, 20), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((label.width / 2, 10), ylabel, fill="black", font=font, anchor="mm")
    img.alpha_composite(label.rotate(90, expand=True), (8, top))
    img.convert("RGB").save(path, format="PNG", optimize=True)


def _drawn(a: dict[str, Any]) -> dict[str, list[float]]:
    """The part of an arm's curve to draw: a staged arm's from its stage-1 arm's last eval on (the rest is that arm's)."""
    keep = [k for k, s in enumerate(a["curve"]["steps"]) if s >= a["start_step"]]
    return {name: [v[k] for k in keep] for name, v in a["curve"].items()}


def plot(arms: list[dict[str, Any]], path: Path) -> None:
    """The held-out gap against steps, one line per arm (mean over seeds, +-1 sd band), as a PNG at `path`."""
    title, ylabel = "does the model read the image? (mean over seeds, band: +-1 sd)", "gap: shuffled - own loss (nats)"
    try:
        import matplotlib
    except ImportError:  # matplotlib is an optional extra; Pillow (a dependency) draws the same chart
        plot_pillow([(a["arm"], _drawn(a)) for a in arms], path, title, ylabel)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for a in arms:
        c = _drawn(a)
        x, m, s = np.array(c["steps"]), np.array(c["gap_mean"]), np.array(c["gap_sd"])
        (line,) = ax.plot(x, m, label=a["arm"])
        ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="optimizer step", ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# processes ----------------------------------------------------------------------------------------

_NOT_PASSED = ("arm", "out", "as_json", "seeds", "arms", "plot", "probe")


def _run_arm_process(arm: str, seed: int, opts: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run one (arm, seed) in a fresh process so its peak memory is its own; returns its result."""
    cmd = [sys.executable, __file__, "--arm", arm, "--out", str(out)]
    for key, value in {**opts, "seed": seed}.items():
        if value not in (None, "") and key not in _NOT_PASSED:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    subprocess.run(cmd, check=True)
    return json.loads((out / f"{arm}.json").read_text())


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


def compare(opts: dict[str, Any], out_dir: Path, plot_path: Path) -> dict[str, Any]:
    """Every arm x seed in its own process, then the per-arm aggregates; writes the JSON and the plot."""
    from uti.io import atomic_write_json

    seeds = [opts["seed"] + k for k in range(opts["seeds"])]
    order = arm_order([a.strip() for a in opts["arms"].split(",") if a.strip()])
    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in order}
    for seed in seeds:
        sdir = out_dir / f"seed-{seed}"
        done: dict[str, dict[str, Any]] = {}
        for arm in order:
            r = _run_arm_process(arm, seed, opts, sdir)
            parent = ARMS[arm][2]
            r["seed"], r["curve"] = seed, (done[parent]["curve"] if parent else []) + r["evals"]
            done[arm] = r
            runs[arm].append(r)
    arms = [aggregate(runs[a]) for a in order]
    plot(arms, plot_path)
    summary = {"settings": opts, "seeds": seeds, "plot": str(plot_path), "table": table(arms), "arms": arms,
               "runs": {a: [{k: v for k, v in r.items() if k != "losses"} for r in rs] for a, rs in runs.items()}}
    atomic_write_json(out_dir / "compare_tracks.json", summary)
    return summary


def _main(arm: str | None, out: str | None, as_json: bool, plot: str | None, **opts: Any) -> None:
    from uti.io import atomic_write_json

    torch.manual_seed(opts["seed"])
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    if opts.pop("probe"):  # what each track's input still says about the scene
        args = type("Args", (), opts)()
        acc = probe(load_pieces(args), args.train)
        print(json.dumps(acc) if as_json else "\n".join(
            f"{src}: " + ", ".join(f"{k} {v:.3f}" for k, v in a.items()) for src, a in acc.items()))
        return
    out_dir = Path(out or tempfile.mkdtemp(prefix="compare_tracks_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    if arm:  # child process: one arm of one seed
        args = type("Args", (), opts)()
        atomic_write_json(out_dir / f"{arm}.json", run_arm(load_pieces(args), args, out_dir, arm))
        return
    if not opts["base_lm"]:
        opts["base_lm"] = _default_base_lm(out_dir, opts["seed"], opts["pretrain_steps"])
    opts["eval_every"] = opts["eval_every"] or max(1, opts["steps"] // 10)
    summary = compare(opts, out_dir, Path(plot) if plot else out_dir / "compare_tracks.png")
    if as_json:
        print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
    else:
        print(summary["table"])
        print(f"\nplot: {summary['plot']}; results: {out_dir / 'compare_tracks.json'}")


def cli() -> None:
    import click

    from tokenlm.model import INITS

    def arms_list(ctx: Any, param: Any, value: str) -> str:
        try:
            arm_order([a.strip() for a in value.split(",") if a.strip()])
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
        return value

    @click.command(help=__doc__.split("\n\n")[0])
    @click.option("--steps", default=300, show_default=True, help="Optimizer steps of each arm (stage 1).")
    @click.option("--stage2-steps", default=0, show_default=True, help="Stage-2 steps of a staged arm (0: --steps).")
    @click.option("--arms", default=",".join(ARMS), show_default=True, callback=arms_list,
                  help="Comma-separated arms to run (a staged arm also runs its stage-1 arm).")
    @click.option("--seeds", default=3, show_default=True, type=click.IntRange(1),
                  help="Seeds per arm: --seed, --seed+1, ...")
    @click.option("--eval-every", default=0, show_default=True, help="Held-out eval every N steps (0: steps/10).")
    @click.option("--batch-size", default=8, show_default=True)
    @click.option("--lr", default=3e-3, show_default=True)
    @click.option("--train", default=48, show_default=True, help="Training scenes.")
    @click.option("--held-out", default=16, show_default=True, help="Held-out scenes.")
    @click.option("--seed", default=0, show_default=True, help="First seed (data, init, data order).")
    @click.option("--init", type=click.Choice(INITS), default=None,
                  help="New-row init of the discrete arms (default: grow_model's default).")
    @click.option("--base-lm", default="", help="Base LM (hub id or folder); default: the tiny space's base_model.")
    @click.option("--pretrain-steps", default=300, show_default=True,
                  help="If the tiny space ships no base LM: pretraining steps of a tiny Qwen3 made on the fly.")
    @click.option("--tower", default="", help="Vision tower (hub id or folder); default: the tiny space's tower.")
    @click.option("--codebook-size", default=0, show_default=True,
                  help="Fit a k-means codebook of this size (0: the tiny space's codebook when it fits).")
    @click.option("--latents", default=8, show_default=True, help="Connector vectors per view.")
    @click.option("--latent-dim", default=64, show_default=True, help="Connector latent width.")
    @click.option("--threads", default=0, show_default=True, help="torch CPU threads per process (0: torch default).")
    @click.option("--out", default=None, help="Folder for checkpoints, per-run results, compare_tracks.json.")
    @click.option("--plot", default=None, help="PNG of the gap against steps (default: OUT/compare_tracks.png).")
    @click.option("--probe", is_flag=True,
                  help="Only print linear-probe accuracies of colour/shape/direction from each track's input "
                       "(--train scenes to fit, --held-out to score).")
    @click.option("--arm", type=click.Choice(list(ARMS)), default=None, hidden=True)
    @click.option("--json", "as_json", is_flag=True, help="Print the aggregates as JSON.")
    def main(**kw: Any) -> None:
        _main(**kw)

    main()


if __name__ == "__main__":
    cli()
