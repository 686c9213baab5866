"""Residual-VQ codes [K levels, T frames] <-> one flat stream of global IDs, with strict checks.

Each codebook level q has its own ID range (`space.ranges["audio.q"]`), so an ID says which level it is.
Two orders (recorded in the audio ABI as `order`):

  * "frame_major" (default): frame 0 levels 0..K-1, frame 1 levels 0..K-1, ...  -> T*K IDs.
  * "delay" (MusicGen's delay pattern): level q is shifted right by q steps, giving T+K-1 steps of K slots;
    slot q of step s holds level q of frame s-q, or the `<|pad|>` filler where that frame does not exist
    (s-q < 0 or s-q >= T)  -> (T+K-1)*K IDs. A delay-pattern LM predicts level q of frame t after having
    seen the coarser levels of that frame in earlier steps.

Decoding checks the count (a whole number of steps), the level of every ID (slot q must hold an audio.q
ID, fillers exactly where the pattern puts them) and refuses anything else with a TokenRangeError naming
the position. Codes are never folded with a modulo.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import TokenRangeError

__all__ = ["ORDERS", "codes_to_ids", "delay", "ids_to_codes", "undelay"]

ORDERS = ("frame_major", "delay")


def delay(codes: torch.Tensor, filler: int) -> torch.Tensor:
    """[K, T] -> [K, T+K-1]: row q shifted right by q, the gaps set to `filler`."""
    k, t = codes.shape
    out = torch.full((k, t + k - 1), filler, dtype=codes.dtype)
    for q in range(k):
        out[q, q:q + t] = codes[q]
    return out


def undelay(steps: torch.Tensor, filler: int) -> torch.Tensor:
    """[K, T+K-1] -> [K, T]; refuses a grid whose fillers are not exactly where `delay` puts them."""
    k, s = steps.shape
    t = s - k + 1
    if t < 0:
        raise TokenRangeError(f"delay-pattern audio has {s} steps, fewer than the {k - 1} that {k} levels need")
    expected = delay(torch.zeros(k, t, dtype=torch.bool), True)  # [K, S] True where a filler belongs
    wrong = (steps == filler) != expected
    if wrong.any():
        q, step = (int(i) for i in torch.nonzero(wrong)[0])
        what = "a filler" if bool(expected[q, step]) else f"a level-{q} code"
        raise TokenRangeError(f"delay-pattern audio step {step} level {q}: expected {what}, the stream is malformed")
    return torch.stack([steps[q, q:q + t] for q in range(k)]) if k else steps


def codes_to_ids(codes: torch.Tensor, starts: Sequence[int], codebook_size: int, order: str,
                 filler: int | None = None) -> torch.Tensor:
    """Local codes [K, T] -> flat global IDs [N] in `order`; level q is offset by `starts[q]`.

    `filler` (the `<|pad|>` ID) is needed for the delay order.
    """
    k = codes.shape[0]
    _check_order(order, filler)
    if k != len(starts):
        raise TokenRangeError(f"got {k} codebook levels, the token space has {len(starts)}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise TokenRangeError(f"audio code {int(codes[(codes < 0) | (codes >= codebook_size)][0])} is outside "
                              f"[0, {codebook_size})")
    ids = codes.long() + torch.tensor(list(starts), dtype=torch.long)[:, None]  # [K, T]
    if order == "delay":
        ids = delay(ids, filler)  # [K, T+K-1]
    return ids.t().reshape(-1)  # step-major: step 0 levels 0..K-1, step 1 ...


def ids_to_codes(ids: Sequence[int] | torch.Tensor | np.ndarray, starts: Sequence[int], codebook_size: int,
                 order: str, filler: int | None = None) -> torch.Tensor:
    """Flat global IDs -> local codes [K, T], checking the count, level order and (delay) filler layout."""
    _check_order(order, filler)
    k = len(starts)
    flat = torch.as_tensor(np.asarray(ids, dtype=np.int64)).reshape(-1)
    if flat.numel() % k:
        raise TokenRangeError(f"audio stream has {flat.numel()} IDs, not a multiple of its {k} codebook levels")
    grid = flat.reshape(-1, k).t().clone()  # [K, S]
    lo = torch.tensor(list(starts), dtype=torch.long)[:, None]
    inside = (grid >= lo) & (grid < lo + codebook_size)
    if order == "delay":
        inside |= grid == filler  # filler positions are checked by `undelay` below
    if not inside.all():
        q, s = (int(i) for i in torch.nonzero(~inside)[0])
        gid = int(grid[q, s])
        found = [i for i, st in enumerate(starts) if st <= gid < st + codebook_size]
        got = f"a level-{found[0]} ID" if found else "not an audio ID"
        raise TokenRangeError(f"audio ID {gid} at position {s * k + q} (step {s}, level {q}) is {got}; "
                              f"expected level {q} in [{starts[q]}, {starts[q] + codebook_size}) — levels must "
                              f"come in order 0..{k - 1}")
    if order == "delay":
        grid = undelay(grid, filler)
    return grid - lo  # [K, T]


def _check_order(order: str, filler: int | None) -> None:
    if order not in ORDERS:
        raise TokenRangeError(f"unknown audio order {order!r}; expected one of {', '.join(ORDERS)}")
    if order == "delay" and filler is None:
        raise TokenRangeError("the delay order needs a filler ID (the space's <|pad|>)")
