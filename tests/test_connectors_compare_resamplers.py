"""scripts/compare_resamplers.py: rows with and without the vision stage, and the README table's shape."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_compare_resamplers_rows_and_table(tmp_path) -> None:
    from compare_resamplers import run, table

    args = {"train": 4, "held_out": 2, "steps": 2, "vision_steps": 2, "blocks": 1, "batch_size": 2, "lr": 1e-3,
            "dim": 16, "tokens": 4, "seed": 0, "resamplers": ["mlp", "spatial_pool"]}
    rows = run(args, tmp_path)
    assert [(r["resampler"], r["vision_stage"]) for r in rows] == [
        ("mlp", False), ("spatial_pool", False), ("mlp", True), ("spatial_pool", True)]
    assert all(r["trainable_params"] > 0 and r["step_time_s"] > 0 for r in rows)
    assert rows[0]["held_out_loss"] != rows[2]["held_out_loss"]  # the tuned tower gives other features
    lines = table(rows).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| mlp | ") and lines[2].count("|") == 8
