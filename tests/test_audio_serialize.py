"""Audio code serialisation: round trips for every K, exact layouts, and refusal of malformed streams."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uti.audio.serialize import codes_to_ids, delay, ids_to_codes, undelay
from uti.errors import TokenRangeError

FILLER = 0  # stands in for <|pad|>; audio ranges start above it


def _starts(k: int, size: int, base: int = 1000) -> list[int]:
    return [base + q * size for q in range(k)]


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 8), t=st.integers(0, 12), size=st.sampled_from([2, 16, 1024]),
       order=st.sampled_from(["frame_major", "delay"]), seed=st.integers(0, 2**16))
def test_round_trip_every_k(k: int, t: int, size: int, order: str, seed: int) -> None:
    codes = torch.randint(0, size, (k, t), generator=torch.Generator().manual_seed(seed))
    ids = codes_to_ids(codes, _starts(k, size), size, order, FILLER)
    assert len(ids) == (t * k if order == "frame_major" else (t + k - 1) * k)
    assert torch.equal(ids_to_codes(ids.tolist(), _starts(k, size), size, order, FILLER), codes)


@pytest.mark.parametrize("k", range(1, 9))
def test_delay_undelay_every_k(k: int) -> None:
    codes = torch.arange(1, 5 * k + 1).reshape(k, 5)
    grid = delay(codes, FILLER)
    assert grid.shape == (k, 5 + k - 1)
    for q in range(k):
        assert torch.equal(grid[q, q:q + 5], codes[q]) and (grid[q, :q] == FILLER).all()
        assert (grid[q, q + 5:] == FILLER).all()
    assert torch.equal(undelay(grid, FILLER), codes)


def test_frame_major_layout_is_frame_then_level() -> None:
    codes = torch.tensor([[1, 2, 3], [4, 5, 6]])  # [K=2, T=3]
    ids = codes_to_ids(codes, [100, 200], 10, "frame_major").tolist()
    assert ids == [101, 204, 102, 205, 103, 206]


def test_delay_layout_uses_filler() -> None:
    codes = torch.tensor([[1, 2], [4, 5], [7, 8]])  # [K=3, T=2]
    ids = codes_to_ids(codes, [100, 200, 300], 10, "delay", FILLER).tolist()
    assert ids == [101, 0, 0, 102, 204, 0, 0, 205, 307, 0, 0, 308]


def test_refuses_wrong_count() -> None:
    with pytest.raises(TokenRangeError, match="not a multiple"):
        ids_to_codes([100, 200, 101], [100, 200], 10, "frame_major")


def test_refuses_swapped_levels() -> None:
    with pytest.raises(TokenRangeError, match=r"level-1 ID; expected level 0"):
        ids_to_codes([200, 100], [100, 200], 10, "frame_major")


def test_refuses_non_audio_id_and_never_folds() -> None:
    with pytest.raises(TokenRangeError, match="not an audio ID"):
        ids_to_codes([110, 200], [100, 200], 10, "frame_major")  # 110 = 100 + codebook size, no modulo
    with pytest.raises(TokenRangeError, match="outside"):
        codes_to_ids(torch.tensor([[10]]), [100], 10, "frame_major")


@pytest.mark.parametrize("ids, what", [
    ([101, 204, 0, 0], "expected a filler"),        # step 0 level 1 must be a filler
    ([0, 0, 0, 200], "expected a level-0 code"),     # filler where frame 0 level 0 belongs
])
def test_refuses_misplaced_fillers(ids: list[int], what: str) -> None:
    with pytest.raises(TokenRangeError, match=what):
        ids_to_codes(ids, [100, 200], 10, "delay", FILLER)


def test_refuses_unknown_order_and_missing_filler() -> None:
    with pytest.raises(TokenRangeError, match="unknown audio order"):
        codes_to_ids(torch.zeros(1, 1, dtype=torch.long), [100], 10, "level_major")
    with pytest.raises(TokenRangeError, match="filler"):
        codes_to_ids(torch.zeros(1, 1, dtype=torch.long), [100], 10, "delay")
