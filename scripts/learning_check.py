"""Learning check: after a short rows-stage run, do captions prefer their own image?

1. Make captioned panoramas with known content (scripts/make_captioned_panoramas.py).
2. Encode them with the space's image codec into shards (`uti.batch.run_batch`, as `uti encode` does).
3. Train the new rows only (stage rows, task i2t) on the training part with `tokenlm.train.train`, the new
   rows initialised as `tokenlm train` does by default ("mean_noise"; `--init` picks another).
4. For every held-out panorama, score its caption (per-token loss of the i2t target block) after its own
   image and after another held-out image with a different caption.

Passes when the own image gives the lower loss in at least 90% of the held-out cases. Prints the rate and
the two mean losses (and `--json` prints one JSON document). `--seeds 0 1 2 3 4` runs once per seed (data,
init and order follow the seed) and passes when every rate is >= 0.90 and their mean >= 0.95.

The defaults (320 training panoramas, 400 steps, lr 2e-2, batch 4) are the settings that met that
criterion over seeds 0-4 (with the tiny space's 64-code codebook: rates .925 .975 .975 .975 .975, mean
0.965; with its previous codebook .950 .975 .950 .975 .950), chosen among four tried on those seeds with
the previous codebook: 160 panoramas x 200 steps gave mean 0.930 (min 0.900), 320 x 300 0.950 (min 0.925),
480 x 300 0.945 (min 0.925). About 95 s a seed on one free thread.

    python scripts/learning_check.py --work /tmp/lc            # tiny default space and base LM
    python scripts/learning_check.py --work /tmp/lc --seeds 0 1 2 3 4 --threads 1   # the multi-seed criterion
    python scripts/learning_check.py --space path/to/token_space.json --base path/to/lm --steps 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_captioned_panoramas import make_captioned_panoramas  # noqa: E402
from tokenlm.model import INITS  # noqa: E402

DEFAULT_INIT = "mean_noise"  # the new rows' init, as tokenlm train's default (see the module docstring)

__all__ = ["learning_check", "multi_seed", "score_pairs"]


def _encode_shards(paths: list[str], space, out: Path) -> None:
    from uti.batch import run_batch
    from uti.image.codec import ImageCodec, to_ids

    codec = ImageCodec.from_space(space)
    summary = run_batch(paths, lambda p: (to_ids(codec.encode(p), space), {}), out, space, progress=False)
    if summary.failed:
        raise RuntimeError(f"encoding failed: {summary.failed[:3]}")


def score_pairs(rows_dir: Path, space, base: str, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
    """Per-token loss of each caption (text IDs) after an image (global IDs), with the trained rows."""
    from tokenlm.checkpoint import load_rows
    from tokenlm.model import ChunkedLossLM, load_base
    from uti.sequence import build_sequence

    model = ChunkedLossLM(load_rows(load_base(base), rows_dir, space)).eval()
    out = []
    with torch.no_grad():
        for image, caption in pairs:
            seq = build_sequence(space, "i2t", target=caption, condition=image)
            loss, _ = model(torch.tensor([seq.input_ids]), torch.tensor([seq.labels]))
            out.append(loss.item())
    return out


def learning_check(work: Path, space_ref: str = "tiny", base: str | None = None, n_train: int = 320,
                   n_eval: int = 40, steps: int = 400, lr: float = 2e-2, batch_size: int = 4, seed: int = 0,
                   progress: bool = True, init: str = DEFAULT_INIT) -> dict:
    """Run the check in `work` (see module docstring); returns rate, mean losses and timings."""
    from tokenlm.data import read_records
    from tokenlm.train import TrainConfig, train
    from uti.space import TokenSpace
    from uti.text import TextCodec

    t0 = time.perf_counter()
    work = Path(work)
    space = TokenSpace.load(space_ref)
    base = base or str(space.asset("base_model"))
    recs = make_captioned_panoramas(work / "panos", n_train + n_eval, seed)
    paths = [str((work / "panos" / r["image"]).resolve()) for r in recs]
    _encode_shards(paths, space, work / "shards")
    t_data = time.perf_counter() - t0
    lines = [json.dumps({"image": r["image"], "caption": r["caption"]}) + "\n" for r in recs]
    (work / "panos" / "train.jsonl").write_text("".join(lines[:n_train]))
    (work / "panos" / "eval.jsonl").write_text("".join(lines[n_train:]))
    cfg = TrainConfig(out=str(work / "run"), data=(str(work / "panos" / "train.jsonl"), str(work / "shards")),
                      eval_data=(str(work / "panos" / "eval.jsonl"),), space=space_ref, base=base, stage="rows",
                      tasks=("i2t",), steps=steps, batch_size=batch_size, max_len=512, lr=lr, schedule="cosine",
                      warmup_steps=max(1, steps // 20), seed=seed, progress=progress, init=init, overwrite=True)
    result = train(cfg)
    t_train = time.perf_counter() - t0 - t_data

    from tokenlm.data import load_shard_items

    items = load_shard_items([work / "shards"], space)
    text = TextCodec.from_space(space)
    held = read_records(work / "panos" / "eval.jsonl")
    images = [items[r.media] for r in held]
    captions = [text.encode(r.caption) for r in held]
    others = [next(j for k in range(1, len(held)) if held[(j := (i + k) % len(held))].caption != held[i].caption)
              for i in range(len(held))]
    pairs = [(images[i], captions[i]) for i in range(len(held))] + [(images[j], captions[i]) for i, j in enumerate(others)]
    losses = score_pairs(Path(cfg.out), space, base, pairs)
    own, other = losses[:len(held)], losses[len(held):]
    wins = sum(a < b for a, b in zip(own, other))
    failures = [{"caption": held[i].caption, "other_image_caption": held[j].caption, "loss_own": own[i],
                 "loss_other": other[i]} for i, j in enumerate(others) if own[i] >= other[i]]
    return {"rate": wins / len(held), "held_out": len(held), "mean_loss_own_image": sum(own) / len(own),
            "mean_loss_other_image": sum(other) / len(other), "train_loss_first": result.losses[0],
            "train_loss_last": result.losses[-1], "eval_loss": result.eval_losses[-1][1] if result.eval_losses else None,
            "steps": steps, "seconds_data": round(t_data, 1), "seconds_train": round(t_train, 1),
            "seconds_total": round(time.perf_counter() - t0, 1), "failures": failures}


def _mean_sd(xs: list[float]) -> dict[str, float]:
    t = torch.tensor(xs, dtype=torch.float64)
    return {"mean": t.mean().item(), "sd": t.std().item() if len(xs) > 1 else 0.0, "min": t.min().item()}


def multi_seed(work: Path, seeds: list[int], **kwargs) -> dict:
    """`learning_check` once per seed (data, row init and order all follow the seed), in work/seed-N; returns
    the per-seed results (without failure lists) and mean/sd/min of rate and losses, and whether the
    multi-seed criterion holds (every rate >= 0.90, mean rate >= 0.95)."""
    runs = []
    for seed in seeds:
        res = learning_check(Path(work) / f"seed-{seed}", seed=seed, **kwargs)
        runs.append({"seed": seed, **{k: v for k, v in res.items() if k != "failures"}})
        print(f"seed {seed}: rate {res['rate']:.3f} own {res['mean_loss_own_image']:.4f} "
              f"other {res['mean_loss_other_image']:.4f}", file=sys.stderr, flush=True)
    keys = ("rate", "mean_loss_own_image", "mean_loss_other_image")
    summary = {k: _mean_sd([r[k] for r in runs]) for k in keys}
    passed = summary["rate"]["min"] >= 0.9 and summary["rate"]["mean"] >= 0.95
    return {"runs": runs, "summary": summary, "passed": passed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="Working folder (panoramas, shards, run).")
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--base", default=None, help="Base LM; default: the space's base_model asset.")
    ap.add_argument("--n-train", type=int, default=320)
    ap.add_argument("--n-eval", type=int, default=40)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=2e-2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="Run once per seed (in WORK/seed-N); passes when every rate >= 0.90 and their mean >= 0.95.")
    ap.add_argument("--init", default=DEFAULT_INIT, choices=INITS)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    kwargs = dict(space_ref=a.space, base=a.base, n_train=a.n_train, n_eval=a.n_eval, steps=a.steps, lr=a.lr,
                  batch_size=a.batch_size, progress=not a.json, init=a.init)
    if a.seeds:
        res = multi_seed(a.work, a.seeds, **kwargs)
        if a.json:
            print(json.dumps(res))
        else:
            for r in res["runs"]:
                print(f"seed {r['seed']}: rate {r['rate']:.1%} own {r['mean_loss_own_image']:.4f} "
                      f"other {r['mean_loss_other_image']:.4f}")
            print(" ".join(f"{k} {v['mean']:.4f} +- {v['sd']:.4f} (min {v['min']:.4f});"
                           for k, v in res["summary"].items()), "passed" if res["passed"] else "FAILED")
        sys.exit(0 if res["passed"] else 1)
    res = learning_check(a.work, seed=a.seed, **kwargs)
    if a.json:
        print(json.dumps(res))
    else:
        print(f"own image lower loss in {res['rate']:.1%} of {res['held_out']} held-out captions "
              f"(mean loss own {res['mean_loss_own_image']:.4f}, other {res['mean_loss_other_image']:.4f}); "
              f"{res['seconds_total']}s")
    sys.exit(0 if res["rate"] >= 0.9 else 1)


if __name__ == "__main__":
    main()
