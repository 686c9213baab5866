"""scripts/compare_tracks.py: arms, seed aggregation, the matched LoRA rank, the table and plot, and a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "compare_tracks.py"


def _script():
    spec = importlib.util.spec_from_file_location("compare_tracks", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scene_puts_the_shape_at_its_direction() -> None:
    ct = _script()
    img = ct.scene("red", "square", "east", np.random.default_rng(0))
    assert img.shape == (128, 256, 3) and img.dtype == np.uint8
    red = (img[..., 0] > 200) & (img[..., 1] < 60)
    cols = np.nonzero(red.any(axis=0))[0]
    assert abs(cols.mean() - 192) < 3  # yaw +90 deg = three quarters across the equirect


def test_staged_arms_bring_their_stage_one_arm_first() -> None:
    ct = _script()
    assert ct.arm_order(["connector+lora"]) == ["connector", "connector+lora"]
    assert ct.arm_order(["rows+lora-matched", "rows+lora"]) == ["rows", "rows+lora", "rows+lora-matched"]
    with pytest.raises(ValueError, match="unknown arm.*expected some of rows"):
        ct.arm_order(["rows", "pixels"])


def _run(seed: int, gap: float, curve: list[float], **kw) -> dict:
    cols = {"trainable_params": 10, "saved_bytes": 40, "step_time_s": 0.1, "peak_memory_bytes": 2**20,
            "held_out_loss": 1.0, "shuffled_loss": 1.0 + gap}
    return {"arm": "rows", "track": "discrete", "start_step": 0, "steps": 20, "seed": seed, **cols, "gap": gap,
            "curve": [[10 * (k + 1), 1.0, g] for k, g in enumerate(curve)], **kw}


def test_aggregate_is_the_mean_and_sample_sd_over_seeds() -> None:
    ct = _script()
    gaps, curves = [0.01, -0.02, 0.04], [[0.0, 0.01], [0.02, -0.02], [0.07, 0.04]]
    agg = ct.aggregate([_run(s, g, c, step_time_s=0.1 * (s + 1)) for s, (g, c) in enumerate(zip(gaps, curves))])
    assert agg["gap"] == pytest.approx(np.mean(gaps)) and agg["gap_sd"] == pytest.approx(np.std(gaps, ddof=1))
    assert agg["step_time_s"] == pytest.approx(0.2) and agg["step_time_s_sd"] == pytest.approx(0.1)
    assert agg["trainable_params"] == 10 and agg["trainable_params_sd"] == 0 and agg["seeds"] == [0, 1, 2]
    assert agg["curve"]["steps"] == [10, 20]
    assert agg["curve"]["gap_mean"] == pytest.approx(np.mean(curves, axis=0))
    assert agg["curve"]["gap_sd"] == pytest.approx(np.std(curves, axis=0, ddof=1))
    one = ct.aggregate([_run(0, 0.5, [0.5])])
    assert one["gap"] == 0.5 and one["gap_sd"] == 0.0  # one seed: no spread, not a division by zero


def test_table_shows_mean_pm_sd_and_staged_steps() -> None:
    ct = _script()
    a = ct.aggregate([_run(0, 0.01, [0.01]), _run(1, 0.03, [0.03])])
    b = ct.aggregate([_run(0, 0.02, [0.02], arm="rows+lora", start_step=20)])
    text = ct.table([a, b])
    lines = text.splitlines()
    assert len(lines) == 4 and "| held-out i2t loss | own-vs-shuffled gap |" in lines[0]
    assert lines[2].startswith("| rows | 20 | 10 | 40 | 100.0 | 1 | 1.0000 | +0.0200 ± 0.0141 |")
    assert lines[3].startswith("| rows+lora | 20+20 |")


def test_matched_rank_counts_what_peft_trains() -> None:
    """The per-rank count is checked against peft's own LoRA layers on the tiny Qwen3."""
    from peft import LoraConfig, get_peft_model

    from tokenlm.model import LORA_TARGETS
    from uti.testing import tiny_qwen3

    ct = _script()
    lm = tiny_qwen3(vocab=64, seed=0)
    per_rank = ct.lora_params_per_rank(lm, LORA_TARGETS)
    peft = get_peft_model(lm, LoraConfig(r=3, lora_alpha=6, target_modules=LORA_TARGETS))
    assert sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n) == 3 * per_rank
    assert ct.matched_rank(1000 + 5 * per_rank + per_rank // 3, 1000, per_rank) == 5
    assert ct.matched_rank(10, 1000, per_rank) == 1  # never a rank below 1


def test_plot_writes_one_png_with_a_line_per_arm(tmp_path) -> None:
    from PIL import Image

    ct = _script()
    arms = [ct.aggregate([_run(s, 0.0, [0.01 * s, 0.02]) for s in range(2)]),
            ct.aggregate([_run(s, 0.0, [0.02, 0.05 + s * 0.01], arm="rows+lora", start_step=10) for s in range(2)])]
    path = tmp_path / "gap.png"
    ct.plot(arms, path)
    img = Image.open(path)
    assert img.format == "PNG" and img.size[0] >= 640
    rgb = np.asarray(img.convert("RGB")).reshape(-1, 3)
    for colour in [(31, 119, 180), (255, 127, 14)]:  # the first two line colours: both arms are drawn
        assert (rgb == colour).all(axis=1).sum() > 50


@pytest.mark.slow
def test_every_arm_runs_in_its_own_process_and_the_json_names_the_plot(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    plot = tmp_path / "gap.png"
    cmd = [sys.executable, str(SCRIPT), "--steps", "2", "--eval-every", "1", "--seeds", "2", "--train", "4",
           "--held-out", "2", "--batch-size", "2", "--codebook-size", "8", "--latents", "2", "--latent-dim", "32",
           "--threads", "1", "--out", str(tmp_path / "out"), "--plot", str(plot), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["plot"] == str(plot) and plot.is_file() and res["seeds"] == [0, 1]
    arms = {a["arm"]: a for a in res["arms"]}
    assert list(arms) == ["rows", "rows+lora", "connector", "connector+lora", "rows+lora-matched"]
    for a in arms.values():
        assert a["trainable_params"] > 0 and a["saved_bytes"] > 0 and a["step_time_s"] > 0
        assert a["peak_memory_bytes"] > 0 and a["gap"] == pytest.approx(a["shuffled_loss"] - a["held_out_loss"])
    assert arms["rows+lora"]["curve"]["steps"] == [1, 2, 3, 4] and arms["rows"]["curve"]["steps"] == [1, 2]
    assert arms["rows+lora"]["trainable_params"] > arms["rows"]["trainable_params"]
    matched, conn = arms["rows+lora-matched"], arms["connector"]
    assert matched["matched_to"] == conn["trainable_params"]
    assert abs(matched["trainable_params"] - conn["trainable_params"]) < 0.05 * conn["trainable_params"]
    saved = json.loads((tmp_path / "out" / "compare_tracks.json").read_text())
    assert saved["plot"] == str(plot) and saved["table"].count("\n") == 6
    for r in saved["runs"]["connector"] + saved["runs"]["connector+lora"]:
        assert r["encode_calls_in_loop"] == 0  # captions were encoded before the loop's clock


def test_linear_probe_reads_a_linear_label_and_not_noise() -> None:
    import torch

    ct = _script()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen)
    y = x[:, :4].argmax(1)  # a linear function of the inputs
    assert ct.linear_probe(x, y, 150, steps=200) > 0.9
    noise = torch.randint(0, 4, (200,), generator=gen)
    assert ct.linear_probe(x, noise, 150, steps=200) < 0.5
