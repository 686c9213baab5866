"""Reference: the generation grammar as it was before the codec registry (tokenlm/constraints.py at bb45016).

Kept verbatim (rules only) so tests can check that the registry-driven `tokenlm.constraints.Grammar`
allows exactly the same IDs along real streams and exports the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from uti import specials as S
from uti.errors import SpaceError, TokenRangeError
from uti.space import TokenSpace

OUTSIDE_MARKERS = (S.TEXT_START, S.TEXT_END, S.IMAGE_START, S.AUDIO_START, S.GEN_TEXT, S.GEN_IMAGE, S.GEN_AUDIO)


def codes_per_view(image_abi: dict) -> int:
    """Image codes per view P, read from `abi.image` (`tokens_per_view`, `codes_per_view`, `num_patches` or `grid`)."""
    for key in ("tokens_per_view", "codes_per_view", "num_patches"):
        if isinstance(image_abi.get(key), int):
            return image_abi[key]
    grid = image_abi.get("grid")
    if isinstance(grid, int):
        return grid * grid
    if isinstance(grid, (list, tuple)) and len(grid) == 2:
        return int(grid[0]) * int(grid[1])
    raise SpaceError("abi.image names no codes-per-view count (tokens_per_view, codes_per_view, num_patches or grid)")


@dataclass
class _Walk:
    """Where one stream is: mode "text" | "image" | "audio", position inside the block, delay-audio frame count."""

    mode: str = "text"
    pos: int = 0
    frames: int | None = None
    seen: int = 0


@dataclass
class Grammar:
    """The per-state legal IDs of a token space (ranges are half-open [start, stop))."""

    space: TokenSpace
    text_limit: int | None = None
    outside: list[tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        sp = self.space
        self.sid = sp.special_id
        v = sp.ranges["text"].stop if self.text_limit is None else min(self.text_limit, sp.ranges["text"].stop)
        self.outside = _merge([(0, v)] + [(self.sid(m), self.sid(m) + 1) for m in OUTSIDE_MARKERS])
        image = sp.abi.get("image")
        if image is not None:
            layout = image["layout"]
            names = S.view_specials(layout["num_tiles"], bool(layout.get("global_view", True)))
            self.views = [self.sid(v) for v in names]
            self.per_view = codes_per_view(image)
            self.image_codes = (sp.ranges["image"].start, sp.ranges["image"].stop)
        audio = sp.abi.get("audio")
        if audio is not None:
            self.levels = [(r.start, r.stop) for r in sp.audio_ranges]
            self.order = audio.get("order", "frame_major")
            if self.order not in ("frame_major", "delay"):
                raise SpaceError(f"abi.audio.order {self.order!r} is not supported; expected frame_major or delay")

    # the rules ---------------------------------------------------------------------------------
    def allowed(self, w: _Walk, prompt: bool = False) -> list[tuple[int, int]]:
        """Legal ID ranges for the next token in state `w` (`prompt`: also accept a plain one-view image)."""
        if w.mode == "text":
            return self.outside
        if w.mode == "image":
            view, off = divmod(w.pos, self.per_view + 1)
            if view == len(self.views):
                return _one(self.sid(S.IMAGE_END))
            if off == 0 and view == 1 and prompt:
                return _merge(_one(self.views[view]) + _one(self.sid(S.IMAGE_END)))
            return _one(self.views[view]) if off == 0 else [self.image_codes]
        k = len(self.levels)
        step, q = divmod(w.pos, k)
        if self.order == "frame_major":
            return [self.levels[q]] + (_one(self.sid(S.AUDIO_END)) if q == 0 and step > 0 else [])
        pad = self.sid(S.PAD)
        if w.frames is not None and step == w.frames + k - 1:
            return _one(self.sid(S.AUDIO_END)) if q == 0 else []
        if step - q < 0 or (w.frames is not None and step - q >= w.frames):
            return _one(pad)
        if q == 0 and w.frames is None and step > 0:
            return [self.levels[0]] + _one(pad)  # a filler here ends the frames
        return [self.levels[q]]

    def advance(self, w: _Walk, tok: int, prompt: bool = False) -> None:
        """Move `w` past `tok`; an illegal token raises TokenRangeError."""
        allowed = self.allowed(w, prompt)
        if not any(a <= tok < b for a, b in allowed):
            where = "prompt" if prompt else "generated stream"
            raise TokenRangeError(f"{where} token {tok} at index {w.seen} is not legal in state {w.mode} "
                                  f"(position {w.pos} of the block; allowed ID ranges {allowed[:4]})")
        w.seen += 1
        if w.mode == "text":
            if tok == self.sid(S.IMAGE_START) and hasattr(self, "views"):
                w.mode, w.pos = "image", 0
            elif tok == self.sid(S.AUDIO_START) and hasattr(self, "levels"):
                w.mode, w.pos, w.frames = "audio", 0, None
            return
        if tok in (self.sid(S.IMAGE_END), self.sid(S.AUDIO_END)):
            w.mode, w.pos, w.frames = "text", 0, None
            return
        if w.mode == "audio" and self.order == "delay" and tok == self.sid(S.PAD) and w.frames is None \
                and w.pos % len(self.levels) == 0:
            w.frames = w.pos // len(self.levels)
        w.pos += 1

    def allowed_mask(self, w: _Walk, total: int, device: torch.device | None = None) -> torch.Tensor:
        mask = torch.zeros(total, dtype=torch.bool, device=device)
        for a, b in self.allowed(w):
            mask[a:b] = True
        return mask


def _one(i: int) -> list[tuple[int, int]]:
    return [(i, i + 1)]


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def export_rules(space: TokenSpace, text_limit: int | None = None) -> dict[str, Any]:
    """The generation rules as JSON-ready allowed-ID ranges ([start, stop), half-open) per state."""
    g = Grammar(space, text_limit)
    sid = space.special_id
    out: dict[str, Any] = {
        "format": "tokenlm-generation-rules", "version": 1,
        "token_space": {"name": space.name, "hash": space.hash}, "total": space.total,
        "never": [space.ranges["padding"].as_list()] if len(space.ranges["padding"]) else [],
        "outside": {"allowed": [list(r) for r in g.outside],
                    "enter": {"image": sid(S.IMAGE_START), "audio": sid(S.AUDIO_START)}},
    }
    if hasattr(g, "views"):
        out["image"] = {"views": [{"marker": v, "then": {"allowed": [list(g.image_codes)], "count": g.per_view}}
                                  for v in g.views],
                        "end": sid(S.IMAGE_END), "total_tokens": len(g.views) * (g.per_view + 1)}
    if hasattr(g, "levels"):
        out["audio"] = {"order": g.order, "levels": [list(r) for r in g.levels], "end": sid(S.AUDIO_END),
                        "filler": sid(S.PAD) if g.order == "delay" else None,
                        "end_rule": "after a whole frame (>= 1 frame)" if g.order == "frame_major"
                        else "after the K-1 tail steps that follow the first slot-0 filler"}
    return out
