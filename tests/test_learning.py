"""Learning check (slow): held-out captions score lower with their own image than with another one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_captions_prefer_their_own_image(tmp_path):
    from uti.errors import UTIError
    from uti.space import TokenSpace

    try:
        space = TokenSpace.load("tiny")
        space.require_assets("vision_tower", "codebook", "base_model")
    except UTIError as err:  # the shipped tiny space must have them; say so instead of a deep traceback
        pytest.fail(f"tiny space lacks what the learning check needs: {err}")
    sys.path.insert(0, str(REPO / "scripts"))
    from learning_check import learning_check

    # the default settings, seed 0 (0.950 when measured); `learning_check.py --seeds 0 1 2 3 4` checks all five
    res = learning_check(tmp_path, "tiny", progress=False)
    print(f"rate {res['rate']:.3f} own {res['mean_loss_own_image']:.4f} other {res['mean_loss_other_image']:.4f}")
    assert res["rate"] >= 0.9, res
    assert res["mean_loss_own_image"] < res["mean_loss_other_image"]


@pytest.mark.parametrize("rates, passed", [
    ([0.95, 0.95, 0.95, 0.95, 0.95], True),
    ([0.9, 1.0, 0.975, 0.95, 0.925], True),  # min 0.90 and mean 0.95 exactly: passes
    ([0.875, 1.0, 1.0, 1.0, 1.0], False),  # one seed under 0.90 fails, whatever the mean
    ([0.925, 0.925, 0.95, 0.95, 0.95], False),  # every seed >= 0.90 but mean 0.94
])
def test_multi_seed_criterion(tmp_path, monkeypatch, rates, passed):
    sys.path.insert(0, str(REPO / "scripts"))
    import learning_check

    seen = []

    def fake(work, seed, **kwargs):
        seen.append((Path(work).name, seed, kwargs["init"]))
        return {"rate": rates[seed], "mean_loss_own_image": 0.3, "mean_loss_other_image": 0.5, "failures": []}

    monkeypatch.setattr(learning_check, "learning_check", fake)
    res = learning_check.multi_seed(tmp_path, list(range(5)), init="projection")
    assert res["passed"] is passed
    assert seen == [(f"seed-{s}", s, "projection") for s in range(5)]
    assert res["summary"]["rate"]["min"] == min(rates) and "failures" not in res["runs"][0]
    assert abs(res["summary"]["rate"]["mean"] - sum(rates) / 5) < 1e-12
