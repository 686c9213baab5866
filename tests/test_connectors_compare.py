"""scripts/compare_tracks.py on a minimal budget: both tracks run on the same data and report every column."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_tracks.py"


def _script():
    spec = importlib.util.spec_from_file_location("compare_tracks", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scene_puts_the_shape_at_its_direction() -> None:
    import numpy as np

    ct = _script()
    img = ct.scene("red", "square", "east", np.random.default_rng(0))
    assert img.shape == (128, 256, 3) and img.dtype == np.uint8
    red = (img[..., 0] > 200) & (img[..., 1] < 60)
    cols = np.nonzero(red.any(axis=0))[0]
    assert abs(cols.mean() - 192) < 3  # yaw +90 deg = three quarters across the equirect


@pytest.mark.slow
def test_both_tracks_report_all_columns(tmp_path) -> None:
    ct = _script()
    args = type("Args", (), {"steps": 2, "batch_size": 2, "lr": 1e-3, "train": 4, "held_out": 2, "seed": 0,
                             "base_lm": "", "tower": "", "codebook_size": 8, "latents": 2, "latent_dim": 32})()
    pieces = ct.load_pieces(args)
    results = [ct.run_discrete(pieces, args, tmp_path), ct.run_continuous(pieces, args, tmp_path)]
    for r in results:
        assert r["trainable_params"] > 0 and r["saved_bytes"] > 0 and r["step_time_s"] > 0
        assert r["held_out_loss"] > 0 and r["gap"] == pytest.approx(r["shuffled_loss"] - r["held_out_loss"])
        assert len(r["losses"]) == 2
    # the discrete track trains only its new rows: (codes + specials + padding-free rows) x width
    space = pieces["space"]
    new_rows = space.ranges["padding"].start - space.abi["text"]["base_vocab_size"]
    assert results[0]["trainable_params"] == new_rows * pieces["lm"].config.hidden_size
    text = ct.table(results)
    assert text.count("\n") == 4 and "continuous connector / discrete rows" in text
