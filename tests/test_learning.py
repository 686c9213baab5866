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

    res = learning_check(tmp_path, "tiny", progress=False)
    print(f"rate {res['rate']:.3f} own {res['mean_loss_own_image']:.4f} other {res['mean_loss_other_image']:.4f}")
    assert res["rate"] >= 0.9, res
    assert res["mean_loss_own_image"] < res["mean_loss_other_image"]
