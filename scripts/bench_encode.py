"""Panoramas/s end to end (`uti encode` pipeline), split into I/O, E2P, tower and VQ time, and the speed-up of
batching views across panoramas.

    python scripts/bench_encode.py                       # tiny space + SO400M-shaped tower, CPU
    python scripts/bench_encode.py --device cuda --dtype bfloat16 --so400m-panoramas 8 --batch-size 64

Two ways, same panoramas, same run: `per_pano` encodes one panorama at a time (its views in forwards of at
most --batch-size; the stage times come from it) as batch mode did before; `stream` is what `uti encode DIR`
runs now (`ImageCodec.encode_stream`: --workers threads decode and render while the tower runs forwards of
exactly --batch-size views taken from several panoramas). `speedup` = stream / per_pano panoramas/s; the
codes of both are checked to be identical.

Two configurations, measured in the same run:
  tiny    the tiny space's tower and codebook (or a fresh tiny tower + random codebook when the shipped
          space has no image section yet), its layout (tile 64);
  so400m  a SigLIP2 SO400M-shaped tower with random weights (hidden 1152, 27 layers, 16 heads, MLP 4304,
          patch 14, image 384), a random 8192 x 1152 codebook, the default layout (8 tiles of 384 + global).
Input: the CC0 test panoramas upscaled to 2048 x 1024 JPEGs. Stages per panorama: io = JPEG decode +
writing the ID document; e2p = all views; tower = features; vq = nearest code + global IDs. The target
is (io + e2p + vq) < 10 % of tower time for SO400M.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def _inputs(tmp: Path) -> list[Path]:
    out = []
    for src in sorted((REPO / "tests" / "assets" / "panoramas").glob("*.jpg")):
        dst = tmp / src.name
        Image.open(src).convert("RGB").resize((2048, 1024), Image.BICUBIC).save(dst, quality=92)
        out.append(dst)
    return out


def _tiny_codec(tmp: Path, device: str, dtype: torch.dtype, batch_size: int):
    from uti.image.codec import ImageCodec
    from uti.image.layout import Layout
    from tiny_assets import make_tiny_vision_tower
    from uti.image.vision import VisionTower
    from uti.image.vq import Codebook
    from uti.space import TokenSpace

    try:
        space = TokenSpace.load("tiny")
        if "image" in space.abi:
            return ImageCodec.from_space(space, device=device, dtype=dtype, batch_size=batch_size), "shipped tiny space"
    except Exception as err:  # noqa: BLE001 - fall back to fresh tiny assets, and say so
        print(f"(tiny space unusable: {err})")
    tower = VisionTower.from_pretrained(make_tiny_vision_tower(tmp / "tower", 0), device=device, dtype=dtype,
                                        batch_size=batch_size)
    cb = Codebook(torch.randn(64, tower.hidden_size, generator=torch.Generator().manual_seed(0)))
    return ImageCodec(tower, cb, Layout(tile_size=tower.image_size)), "fresh tiny tower, random codebook"


def _so400m_codec(device: str, dtype: torch.dtype, batch_size: int, layers: int = 27):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from uti.image.codec import ImageCodec
    from uti.image.layout import Layout
    from uti.image.vision import VisionTower
    from uti.image.vq import Codebook

    cfg = SiglipVisionConfig(hidden_size=1152, num_hidden_layers=layers, num_attention_heads=16, intermediate_size=4304,
                             patch_size=14, image_size=384, vision_use_head=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = SiglipVisionModel(cfg).to(dtype).eval()
    tower = VisionTower(model=model, name="so400m-shaped-random", weights_hash="random", feature_layer=-1,
                        image_size=384, patch_size=14, hidden_size=1152, num_layers=layers, naflex=False,
                        batch_size=batch_size)
    cb = Codebook(torch.randn(8192, 1152, generator=torch.Generator().manual_seed(0)))
    return ImageCodec(tower, cb, Layout(tile_size=384)), f"random weights, {layers} layers"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _stream(codec, paths: list[Path], n: int, device: str, workers: int) -> tuple[float, list[torch.Tensor]]:
    """(seconds, codes per panorama) of `encode_stream` over the same n panoramas as `_run`, plus the global-ID
    mapping and the document write that `_run` times too."""
    t0 = time.perf_counter()
    codes = []
    for k, (enc, err) in enumerate(codec.encode_stream([paths[k % len(paths)] for k in range(1, n + 1)],
                                                       workers=workers)):
        if err is not None:
            raise err
        ids = (enc.codes + 10_000).reshape(-1).tolist()
        codes.append(enc.codes)
        json.dumps({"ids": ids, "meta": enc.meta})
    _sync(device)
    return time.perf_counter() - t0, codes


def _run(codec, paths: list[Path], n: int, device: str, out_dir: Path) -> dict[str, float]:
    """Seconds per stage summed over n panoramas, after a cheap warm-up (E2P maps, one view, VQ)."""
    from uti.image.load import load_image

    views, _ = codec.render(load_image(paths[0]))  # builds and caches the E2P sampling maps
    codec.quantize(codec.tower.encode(views[:1]))
    image_start = 10_000  # global offset of image codes; the space mapping is an add (as in IdRange.to_global)
    t = {"io": 0.0, "e2p": 0.0, "tower": 0.0, "vq": 0.0}
    codec.codes_per_pano = []  # what `stream` must reproduce
    for k in range(1, n + 1):
        path = paths[k % len(paths)]
        t0 = time.perf_counter()
        img = load_image(path)
        t1 = time.perf_counter()
        views, meta = codec.render(img)
        t2 = time.perf_counter()
        feats = codec.tower.encode(views)
        _sync(device)
        t3 = time.perf_counter()
        codes = codec.quantize(feats)
        codec.codes_per_pano.append(codes)
        ids = (codes + image_start).reshape(-1).tolist()
        t4 = time.perf_counter()
        (out_dir / "doc.json").write_text(json.dumps({"ids": ids, "meta": meta}))
        t5 = time.perf_counter()
        t["io"] += (t1 - t0) + (t5 - t4)
        t["e2p"] += t2 - t1
        t["tower"] += t3 - t2
        t["vq"] += t4 - t3
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny-panoramas", type=int, default=8)
    ap.add_argument("--so400m-panoramas", type=int, default=1, help="0 skips the SO400M-shaped tower")
    ap.add_argument("--so400m-layers", type=int, default=27, help="fewer layers: same widths, shorter run on a CPU")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--batch-size", type=int, default=16, help="views per tower forward (both towers)")
    ap.add_argument("--workers", type=int, default=2, help="decode/E2P threads of the stream")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = _inputs(tmp)
        configs = [("tiny", lambda: _tiny_codec(tmp, args.device, dtype, args.batch_size), args.tiny_panoramas)]
        if args.so400m_panoramas:
            configs.append(("so400m", lambda: _so400m_codec(args.device, dtype, args.batch_size, args.so400m_layers),
                            args.so400m_panoramas))
        for name, make, n in configs:
            codec, note = make()
            t = _run(codec, paths, n, args.device, tmp)
            total = sum(t.values())
            seconds, codes = _stream(codec, paths, n, args.device, args.workers)
            same = all(torch.equal(a, b) for a, b in zip(codec.codes_per_pano, codes))
            rows.append({"config": name, "note": note, "panoramas": n, "views": codec.layout.num_views,
                         "tile": codec.layout.tile_size, **{f"{k}_ms": 1000 * v / n for k, v in t.items()},
                         "panoramas_per_s": n / total, "stream_panoramas_per_s": n / seconds,
                         "speedup": total / seconds, "same_codes": same,
                         "overhead_vs_tower": (t["io"] + t["e2p"] + t["vq"]) / t["tower"]})
            del codec
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"device {args.device}, dtype {args.dtype}, torch threads {torch.get_num_threads()}, batch size "
          f"{args.batch_size} views, {args.workers} workers, input 2048x1024 JPEG")
    head = f"{'config':<8}{'pano':>5}{'views':>6}{'io ms':>10}{'e2p ms':>10}{'tower ms':>11}{'vq ms':>10}{'pano/s':>9}"
    print(head + f"{'(io+e2p+vq)/tower':>19}{'stream pano/s':>15}{'speedup':>9}{'same codes':>12}")
    for r in rows:
        print(f"{r['config']:<8}{r['panoramas']:>5}{r['views']:>6}{r['io_ms']:>10.1f}{r['e2p_ms']:>10.1f}"
              f"{r['tower_ms']:>11.1f}{r['vq_ms']:>10.1f}{r['panoramas_per_s']:>9.3f}{r['overhead_vs_tower']:>18.1%}"
              f"{r['stream_panoramas_per_s']:>15.3f}{r['speedup']:>8.2f}x{str(r['same_codes']):>12}")
    for r in rows:
        print(f"{r['config']}: {r['note']}")
    so = [r for r in rows if r["config"] == "so400m" and args.so400m_layers == 27]
    if so:
        verdict = "met" if so[0]["overhead_vs_tower"] < 0.10 else "NOT met"
        print(f"target (io + e2p + vq) < 10% of SO400M tower time: {verdict}")


if __name__ == "__main__":
    main()
