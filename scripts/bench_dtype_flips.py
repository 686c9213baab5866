"""How many image codes change when the vision tower runs in bfloat16 (or float16) instead of float32.

    python scripts/bench_dtype_flips.py                          # tiny tower, then the SO400M-shaped one
    python scripts/bench_dtype_flips.py --towers so400m --views 2  # CPU: 2 of the 9 views (~1 min)
    python scripts/bench_dtype_flips.py --device cuda --dtypes bfloat16,float16

Towers:

* tiny     the shipped tiny space's tower (token_spaces/tiny: SigLIP, hidden 64, 2 layers) and its fitted
           codebook, on all views of the test panoramas (layout of 64-pixel tiles).
* so400m   a SigLIP tower of SO400M's shape (hidden 1152, 27 layers, 16 heads, MLP 4304, patch 14, 384 pixels),
           random seeded weights (no download), with a codebook of `--codebook-size` codes k-means-fitted
           (`uti.image.vq.fit_codebook`) on its own float32 features of the same views, so that codes lie
           among the features as a real codebook's do. `--panoramas` and `--views` limit the work on a CPU.

For each tower the float32 codes are the reference (what a space's codes mean). Columns:

* code flips   fraction of patches whose code differs when the tower runs in the given dtype (the VQ always
               runs in float32, as in `ImageCodec`)
* feat err     mean |f_dtype - f_fp32| / |f_fp32| over patches
* batch flips  float32 codes of all views in one forward against one view per forward (batch invariance)

Policy this measures for: codes are made in float32 unless the user opts in with `uti encode --dtype`; every
encoded item records its compute dtype (see `uti.dtypes`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from uti.image.e2p import render_views
from uti.image.layout import Layout
from uti.image.load import load_image
from uti.image.vision import VisionTower
from uti.image.vq import Codebook, fit_codebook

ROOT = Path(__file__).resolve().parent.parent
PANORAMAS = sorted((ROOT / "tests" / "assets" / "panoramas").glob("*.jpg"))
TINY = ROOT / "token_spaces" / "tiny"
SO400M = dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16, intermediate_size=4304,
              patch_size=14, image_size=384)


def so400m_tower(seed: int) -> VisionTower:
    """A randomly initialised SigLIP vision tower of SO400M's shape (float32, CPU)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(**SO400M, vision_use_head=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipVisionModel(config).eval()
    return VisionTower(model=model, name="so400m-shaped-random", weights_hash="", feature_layer=-1,
                       image_size=SO400M["image_size"], patch_size=SO400M["patch_size"],
                       hidden_size=SO400M["hidden_size"], num_layers=SO400M["num_hidden_layers"], naflex=False)


def views_of(tile_size: int, panoramas: int, views: int) -> np.ndarray:
    """(N, S, S, 3) uint8: all layout views of the first `panoramas` test panoramas, the first `views` of each."""
    layout = Layout(tile_size=tile_size)
    out = [render_views(load_image(p), layout)[:views or None] for p in PANORAMAS[:panoramas]]
    return np.concatenate(out)


def features(tower: VisionTower, views: np.ndarray, dtype: torch.dtype, batch_size: int) -> torch.Tensor:
    """Float32 features (N, P, D) of `views` with the tower's weights in `dtype` (restored to float32 after)."""
    tower.model.to(dtype)
    tower.batch_size = batch_size
    try:
        return tower.encode(views).float()
    finally:
        tower.model.to(torch.float32)


def measure(name: str, tower: VisionTower, codebook: Codebook | None, views: np.ndarray, dtypes: list[str],
            codebook_size: int, device: str) -> list[dict]:
    tower.model.to(device)
    n = len(views)
    t0 = time.perf_counter()
    ref = features(tower, views, torch.float32, n)  # (N, P, D) all views in one forward
    if codebook is None:
        codebook = fit_codebook(ref.reshape(-1, ref.shape[-1]), min(codebook_size, ref.shape[0] * ref.shape[1] // 4))
    codebook = codebook.to(device)
    ref_codes = codebook.quantize(ref)
    single = features(tower, views, torch.float32, 1)  # one view per forward
    batch_flips = (codebook.quantize(single) != ref_codes).float().mean().item()
    rows = []
    for d in dtypes:
        f = features(tower, views, getattr(torch, d), n)
        err = ((f - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-12)).mean().item()
        flips = (codebook.quantize(f) != ref_codes).float().mean().item()
        rows.append({"tower": name, "views": n, "patches": int(ref_codes.numel()), "codebook": codebook.size,
                     "dtype": d, "code_flips": flips, "feat_err": err, "batch_flips": batch_flips})
    print(f"  {name}: {n} views measured in {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--towers", default="tiny,so400m", help="comma-separated: tiny, so400m")
    parser.add_argument("--dtypes", default="bfloat16", help="comma-separated dtypes to compare with float32")
    parser.add_argument("--panoramas", type=int, default=None, help="test panoramas used [tiny: 4, so400m: 1]")
    parser.add_argument("--views", type=int, default=0, help="views per panorama (0 = all 9)")
    parser.add_argument("--codebook-size", type=int, default=1024, help="so400m: codes fitted on its features")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = [d for d in args.dtypes.split(",") if d]
    bad = [d for d in dtypes if d not in ("bfloat16", "float16")]
    if bad:
        parser.error(f"--dtypes takes bfloat16 and float16, got {', '.join(bad)}")

    rows = []
    for name in [t for t in args.towers.split(",") if t]:
        if name == "tiny":
            tower = VisionTower.from_pretrained(TINY / "vision_tower")
            codebook = Codebook.load(TINY / "codebook.safetensors")
            views = views_of(tower.image_size, args.panoramas or len(PANORAMAS), args.views)
        elif name == "so400m":
            tower, codebook = so400m_tower(args.seed), None
            views = views_of(tower.image_size, args.panoramas or 1, args.views)
        else:
            parser.error(f"unknown tower {name!r}; valid: tiny, so400m")
        rows += measure(name, tower, codebook, views, dtypes, args.codebook_size, args.device)

    print(f"\ncode flips against float32 ({args.device}, {args.threads} threads, torch {torch.__version__})")
    print(f"{'tower':<8}{'views':>6}{'patches':>9}{'codes':>7}  {'dtype':<10}{'code flips':>11}{'feat err':>10}"
          f"{'batch flips':>13}")
    for r in rows:
        print(f"{r['tower']:<8}{r['views']:>6}{r['patches']:>9}{r['codebook']:>7}  {r['dtype']:<10}"
              f"{r['code_flips']:>10.2%}{r['feat_err']:>10.4f}{r['batch_flips']:>12.2%}")
    print("code flips: patches whose code changes with the tower in that dtype (VQ in float32); batch flips: "
          "float32, all views per forward vs one view per forward.")


if __name__ == "__main__":
    main()
