"""Learning against image tokens per view: the learning check at several token grids of the tiny space.

    nice -n 10 python scripts/token_budget.py                  # 4x4 / 3x3 / 2x2 / 1x1, seeds 0,1,2
    python scripts/token_budget.py --grids 4,2 --seeds 0 --steps 100 --json

For each token grid and seed: the learning check's captioned panoramas are made (`scripts/learning_check.py`:
a shape of known colour at a compass direction on one of four scenes, captioned "a red square to the north in
the forest."); a space is built (`uti.build.build_space`) with the tiny space's tower and text, the image
section's `token_grid` set to the grid (none for the tower's own 4x4) and a 64-code codebook fit on the
training panoramas' patch features pooled to that grid (`uti.image.fit.image_features`, as `uti codebook fit
--token-grid` does); then `learning_check` encodes every panorama with that space (so the space's own codec
pools), trains the new rows for the same steps and scores each held-out caption after its own image and
after another one. Reported per grid, mean ± sd over seeds (each seed draws new panoramas, codebook
initialisation and data order): tokens per view and per panorama, the rate of held-out captions whose own
image gives the lower loss, and the own-vs-other loss gap (other minus own, nats per token). The tiny tower
is random, so this measures how much of a random 4x4 feature map survives pooling, not a trained tower.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning_check import learning_check  # noqa: E402
from make_captioned_panoramas import make_captioned_panoramas  # noqa: E402

__all__ = ["budget_space", "run_grid", "table"]


def budget_space(folder: Path, grid: int, train_images: list[Path], codebook_size: int, seed: int) -> Path:
    """A space in `folder` like tiny's text and image parts, its image features pooled to grid x grid (no
    `token_grid` when that is the tower's patch grid) with a codebook fit on the pooled features of
    `train_images`; returns its token_space.json."""
    from uti.build import SpaceConfig, TextConfig, build_space
    from uti.image.fit import image_features
    from uti.image.layout import Layout
    from uti.image.vision import VisionTower
    from uti.image.vq import fit_codebook
    from uti.space import TokenSpace

    tiny = TokenSpace.load("tiny")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny.asset("tokenizer"), folder / "tokenizer.json")
    shutil.copytree(tiny.asset("vision_tower"), folder / "vision_tower", dirs_exist_ok=True)
    tower = VisionTower.from_pretrained(folder / "vision_tower")
    layout = Layout.from_abi(tiny.abi["image"]["layout"])
    pooled = None if grid == tower.grid else [grid, grid]
    feats, _ = image_features(train_images, tower, layout, progress=False, token_grid=pooled)  # (M, D)
    fit_codebook(feats, codebook_size, seed=seed).save(folder / "codebook.safetensors")
    cfg = SpaceConfig(name=f"budget-{grid}x{grid}", text=TextConfig(**{k: tiny.abi["text"][k] for k in (
                          "tokenizer", "base_vocab_size")}),
                      assets={"tokenizer": "tokenizer.json", "vision_tower": "vision_tower",
                              "codebook": "codebook.safetensors"},
                      image={"layout": {k: v for k, v in tiny.abi["image"]["layout"].items() if k != "num_tiles"},
                             **({"token_grid": pooled} if pooled else {})})
    build_space(cfg, folder).save(folder / "token_space.json")
    return folder / "token_space.json"


def run_grid(grid: int, seed: int, args: Any, out: Path) -> dict[str, Any]:
    """The learning check at grid x grid tokens per view with `seed`; returns its budget, rate and losses."""
    from uti.space import TokenSpace, token_budget

    work = out / f"{grid}x{grid}_seed{seed}"
    recs = make_captioned_panoramas(work / "panos", args.n_train + args.n_eval, seed)  # as learning_check makes them
    train = [work / "panos" / r["image"] for r in recs[:args.n_train]]
    space = budget_space(work / "space", grid, train, args.codebook_size, seed)
    torch.manual_seed(seed)
    base = str(TokenSpace.load("tiny").asset("base_model"))
    res = learning_check(work, str(space), base, args.n_train, args.n_eval, args.steps, args.lr, args.batch_size,
                         seed, progress=False, init="codebook")
    budget = token_budget(TokenSpace.load(space).abi)["image"]
    return {"grid": [grid, grid], "seed": seed, "tokens_per_view": budget["tokens_per_view"],
            "tokens_per_panorama": budget["tokens_per_panorama"], "rate": res["rate"],
            "loss_own": res["mean_loss_own_image"], "loss_other": res["mean_loss_other_image"],
            "gap": res["mean_loss_other_image"] - res["mean_loss_own_image"], "seconds": res["seconds_total"]}


def _mean_sd(values: list[float], digits: int) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown table, one row per grid: budget, then rate and gap as mean ± sd over seeds."""
    lines = ["| token grid | tokens per view | tokens per panorama | own image lower loss | own-vs-other gap "
             "(nats/token) | seeds |", "|---|---|---|---|---|---|"]
    for grid in dict.fromkeys(tuple(r["grid"]) for r in runs):
        rs = [r for r in runs if tuple(r["grid"]) == grid]
        lines.append(f"| {grid[0]}×{grid[1]} | {rs[0]['tokens_per_view']} | {rs[0]['tokens_per_panorama']} | "
                     f"{_mean_sd([100 * r['rate'] for r in rs], 1)}% | {_mean_sd([r['gap'] for r in rs], 3)} | "
                     f"{len(rs)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grids", default="4,3,2,1", help="Token grids (N for NxN per view), comma-separated.")
    ap.add_argument("--seeds", default="0,1,2", help="Seeds, comma-separated.")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=2e-2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--n-train", type=int, default=160)
    ap.add_argument("--n-eval", type=int, default=40)
    ap.add_argument("--codebook-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    ap.add_argument("--out", type=Path, default=None, help="Folder for the runs (default: a temporary one).")
    ap.add_argument("--json", action="store_true", help="Print every run as JSON instead of the table.")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = a.out or Path(tempfile.mkdtemp(prefix="token_budget_"))
    runs = [run_grid(int(g), int(s), a, out) for g in a.grids.split(",") for s in a.seeds.split(",")]
    print(json.dumps(runs) if a.json else table(runs))


if __name__ == "__main__":
    main()
