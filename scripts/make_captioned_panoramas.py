"""Make captioned panoramas with known content for the learning check.

Each panorama is one of the CC0 panoramas in tests/assets/panoramas (the scene) with one large coloured
shape drawn at pitch 0 and the yaw of a compass direction (north = yaw 0 = the image centre, east = +90°,
south = 180°, west = -90°), and the caption says what and where: "a red square to the north in the
forest." Everything is drawn from `seed`; the output folder gets the images and `captions.jsonl`
(`{"image": "pano-0000.png", "caption": ...}` records, the format `tokenlm train` reads).

    python scripts/make_captioned_panoramas.py OUT_DIR --n 200 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tiny_assets.corpus import COLOURS, DIRECTIONS, SHAPES, caption  # noqa: E402
from uti.io import atomic_write_text  # noqa: E402

__all__ = ["make_captioned_panoramas", "SCENE_FILES", "YAW"]

SCENE_FILES = {"city": "city.jpg", "courtyard": "courtyard.jpg", "forest": "forest.jpg", "interior": "interior.jpg"}
YAW = {"north": 0.0, "east": 90.0, "south": 180.0, "west": -90.0}
RGB = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (30, 60, 240), "yellow": (250, 230, 20)}


def _draw_shape(img: Image.Image, shape: str, colour: str, yaw: float, half: int) -> None:
    """Draw `shape` centred at (yaw, pitch 0) of the equirectangular `img`, `half` pixels from centre to edge."""
    w, h = img.size
    cx, cy = int(round((yaw / 360.0 + 0.5) * w)) % w, h // 2
    draw = ImageDraw.Draw(img)
    fill = RGB[colour]
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    elif shape == "cross":
        t = half // 3
        draw.rectangle((cx - half, cy - t, cx + half, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - half, cx + t, cy + half), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def make_captioned_panoramas(out_dir: Path, n: int, seed: int = 0, width: int = 512,
                             assets: Path = REPO / "tests" / "assets" / "panoramas") -> list[dict]:
    """Write `n` captioned panoramas (PNG, width x width/2) and captions.jsonl into `out_dir`; return the records.

    Each record also carries its ground truth (colour, shape, direction, scene) under "truth".
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backgrounds = {s: Image.open(assets / f).convert("RGB").resize((width, width // 2), Image.BICUBIC)
                   for s, f in SCENE_FILES.items()}
    rng = random.Random(seed)
    records = []
    for i in range(n):
        colour, shape, direction, scene = (rng.choice(COLOURS), rng.choice(SHAPES), rng.choice(DIRECTIONS),
                                           rng.choice(sorted(SCENE_FILES)))
        img = backgrounds[scene].copy()
        # the shape must stay visible when the E2P tiles are downscaled to the tower's size: ~45 degrees wide
        _draw_shape(img, shape, colour, YAW[direction], half=width // 16)
        name = f"pano-{i:04d}.png"
        img.save(out_dir / name)
        records.append({"image": name, "caption": caption(colour, shape, direction, scene),
                        "truth": {"colour": colour, "shape": shape, "direction": direction, "scene": scene}})
    lines = [json.dumps({"image": r["image"], "caption": r["caption"]}) for r in records]
    atomic_write_text(out_dir / "captions.jsonl", "\n".join(lines) + "\n")
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=512)
    a = ap.parse_args()
    recs = make_captioned_panoramas(a.out_dir, a.n, a.seed, a.width)
    print(f"wrote {len(recs)} panoramas and captions.jsonl to {a.out_dir}")


if __name__ == "__main__":
    main()
