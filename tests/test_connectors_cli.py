"""`connectors train`: the three stages chained on the tiny space, a few steps each, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from connectors.checkpoint import read_manifest
from connectors.cli import main


def _manifests(root: Path) -> tuple[Path, Path]:
    """Four training and two held-out smooth random 64 x 128 panoramas with a one-word caption each."""
    rows = []
    for i in range(6):
        small = np.random.default_rng(i).integers(0, 256, (4, 8, 3)).astype(np.uint8)
        Image.fromarray(np.kron(small, np.ones((16, 16, 1), np.uint8))).save(root / f"p{i}.png")
        rows.append({"image": f"p{i}.png", "instruction": "Describe.", "caption": ("red", "blue")[i % 2]})
    train, val = root / "train.jsonl", root / "val.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    val.write_text("".join(json.dumps(r) + "\n" for r in rows[4:]))
    return train, val


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["train", *args, "--steps", "2", "--batch-size", "2", "--device", "cpu"])
    return res.exit_code, res.output


@pytest.mark.slow
def test_three_stages_chain_on_the_tiny_space(tmp_path) -> None:
    train, val = _manifests(tmp_path)
    common = ["--data", str(train), "--val", str(val), "--dim", "32", "--tokens", "4", "--json"]
    stages = [("vision", ["--vision-trainable-blocks", "1"]),
              ("resampler", ["--vision-trainable-blocks", "1", "--vicreg-weight", "0.1", "--init-from", "vision"]),
              ("finetune", ["--init-from", "resampler", "--lora-r", "2"])]
    for stage, extra in stages:
        extra = [str(tmp_path / e) if k and extra[k - 1] == "--init-from" else e for k, e in enumerate(extra)]
        code, out = _run("--stage", stage, "--out", str(tmp_path / stage), *common, *extra)
        assert code == 0, out
        doc = json.loads(out.strip().splitlines()[-1])
        assert doc["stage"] == stage and doc["steps"] == 2 and np.isfinite(doc["final_eval_loss"])
        man = read_manifest(tmp_path / stage)
        assert man["stage"] == stage and man["vision"] == {"tuned_blocks": 1, "depth": 2}
    assert read_manifest(tmp_path / "finetune")["lora"]["r"] == 2


@pytest.mark.parametrize("args, message", [
    (["--stage", "vision"], "vision_trainable_blocks must be an integer >= 0 .>= 1 in stage vision"),
    (["--stage", "resampler", "--vicreg-weight", "1"], "vicreg_weight > 0 needs vision_trainable_blocks >= 1"),
    (["--stage", "resampler", "--resampler", "nope"], "unknown resampler 'nope'; registered: bimamba"),
    (["--stage", "resampler", "--resampler", "spatial_pool", "--tokens", "5"], "tokens must be a square number"),
    (["--stage", "full"], "Invalid value for '--stage'"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, message) -> None:
    train, _ = _manifests(tmp_path)
    code, out = _run(*args, "--data", str(train), "--out", str(tmp_path / "run"))
    lines = [x for x in out.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), out
    assert __import__("re").search(message, lines[0]), lines[0]
