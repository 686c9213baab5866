"""Generation grammar of a token space: a state machine, a transformers LogitsProcessor, allowed-ID lists.

The generated stream (prompt included) is walked token by token. Each block's rules belong to its codec
(`uti.codecs`: `block_grammar()` is a small state machine, `outside()` what it adds outside any block);
`Grammar` only walks blocks through the registry. With the built-in codecs only these IDs are legal:

* outside any block: text IDs `[0, V)` (or `[0, text_limit)`, e.g. the tokenizer's size, so unused
  rows of a padded base vocabulary are never produced) and the markers `<|text_start|>`, `<|text_end|>`,
  `<|image_start|>`, `<|audio_start|>`, `<|gen_text|>`, `<|gen_image|>`, `<|gen_audio|>`.
* inside an image (after `<|image_start|>`): for each view of the layout, in order (global view first
  when the layout has one, then tiles 0..n-1), its view marker followed by exactly P image codes
  (P = codes per view from `abi.image`); after the last view only `<|image_end|>`. A prompt may also
  hold a plain image (one view, as `uti.image` encodes a non-panorama), so while walking the prompt
  `<|image_end|>` is also accepted after the first view; generated images always have the full layout.
* inside audio (after `<|audio_start|>`), order `frame_major`: levels 0..K-1 of frame 0, then of frame 1,
  ...; slot q only takes `audio.q` IDs; `<|audio_end|>` only at a frame boundary after at least one frame.
  Order `delay` (MusicGen pattern): step s has K slots; slot q holds level q of frame s-q or the
  `<|pad|>` filler where that frame does not exist; a filler in slot 0 (from step 1 on) ends the
  frames, the K-1 tail steps follow, then only `<|audio_end|>`.
* padding IDs never.

`TokenSpaceLogitsProcessor` applies this to `model.generate`; `export_rules(space)` writes the same rules
as JSON allowed-ID ranges for other runtimes (vLLM, llama.cpp grammars, servers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from uti.codecs import codec_classes
from uti.errors import TokenRangeError
from uti.space import TokenSpace

__all__ = ["Grammar", "TokenSpaceLogitsProcessor", "export_rules"]


@dataclass
class _Walk:
    """Where one stream is: `mode` "text" (outside any block) or the modality of the open block, the
    block's own grammar `state`, and how many tokens were walked."""

    mode: str = "text"
    state: Any = None
    seen: int = 0


@dataclass
class Grammar:
    """The per-state legal IDs of a token space (ranges are half-open [start, stop)), walked over its codecs.

    Outside any block each codec adds its `outside` IDs (text: the text range and markers; a block codec:
    its start and gen markers, where the space has those specials); a block codec's start marker opens its
    block (when the space holds its section) and its `block_grammar` rules the block up to its end marker.
    """

    space: TokenSpace
    text_limit: int | None = None
    outside: list[tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        sp = self.space
        self.sid = sp.special_id
        outside: list[tuple[int, int]] = []
        self.blocks: dict[str, Any] = {}  # modality -> its BlockGrammar
        self.enter: dict[int, str] = {}  # start marker ID -> modality
        self.exits: dict[str, int] = {}  # modality -> end marker ID
        for cls in codec_classes():
            present = sp.abi.get(cls.modality) is not None
            if not present and not all(n in sp.specials for n in (cls.markers()[0], cls.gen_marker())):
                continue
            codec = cls(sp)
            outside += codec.outside(self.text_limit)
            rules = codec.block_grammar() if present else None
            if rules is not None:
                self.blocks[cls.modality] = rules
                self.enter[self.sid(cls.markers()[0])] = cls.modality
                self.exits[cls.modality] = self.sid(cls.markers()[1])
        self.outside = _merge(outside)

    # the rules ---------------------------------------------------------------------------------
    def allowed(self, w: _Walk, prompt: bool = False) -> list[tuple[int, int]]:
        """Legal ID ranges for the next token in state `w` (`prompt`: the block's prompt leniency applies)."""
        if w.mode == "text":
            return self.outside
        return self.blocks[w.mode].allowed(w.state, prompt)

    def advance(self, w: _Walk, tok: int, prompt: bool = False) -> None:
        """Move `w` past `tok`; an illegal token raises TokenRangeError."""
        allowed = self.allowed(w, prompt)
        if not any(a <= tok < b for a, b in allowed):
            where = "prompt" if prompt else "generated stream"
            raise TokenRangeError(f"{where} token {tok} at index {w.seen} is not legal in state {w.mode} "
                                  f"(state {w.state} of the block; allowed ID ranges {allowed[:4]})")
        w.seen += 1
        if w.mode == "text":
            if tok in self.enter:
                w.mode = self.enter[tok]
                w.state = self.blocks[w.mode].start()
            return
        if tok == self.exits[w.mode]:
            w.mode, w.state = "text", None
            return
        w.state = self.blocks[w.mode].advance(w.state, tok)

    def allowed_mask(self, w: _Walk, total: int, device: torch.device | None = None) -> torch.Tensor:
        mask = torch.zeros(total, dtype=torch.bool, device=device)
        for a, b in self.allowed(w):
            mask[a:b] = True
        return mask


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class TokenSpaceLogitsProcessor:
    """transformers LogitsProcessor: sets the scores of every illegal next ID to -inf (see module docstring).

    The prompt is walked too (so a prompt ending in `<|image_start|>` continues an image); an illegal
    prompt raises TokenRangeError. Scores beyond the space's total (if the model's head is wider) are
    masked as well. Use one processor per `generate` call: the first call's length is taken as the prompt.
    """

    def __init__(self, space: TokenSpace, text_limit: int | None = None) -> None:
        self.grammar = Grammar(space, text_limit)
        self.total = space.total
        self.walks: list[_Walk] = []
        self.last: torch.Tensor | None = None
        self.prompt_len: int | None = None
        self._masks: dict[tuple, torch.Tensor] = {}

    def _mask(self, w: _Walk, device: torch.device) -> torch.Tensor:
        key = tuple(self.grammar.allowed(w))
        if key not in self._masks:
            self._masks[key] = self.grammar.allowed_mask(w, self.total, device)
        return self._masks[key]

    def _sync(self, input_ids: torch.Tensor) -> None:
        """Advance the walks by the newest token, or re-walk everything (new call, beam reordering)."""
        last = self.last
        incremental = last is not None and last.shape[0] == input_ids.shape[0] \
            and last.shape[1] == input_ids.shape[1] - 1 and torch.equal(last, input_ids[:, :-1])
        if not incremental:
            self.walks = [_Walk() for _ in range(input_ids.shape[0])]
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]
        for w, row in zip(self.walks, input_ids.tolist()):
            for tok in row[w.seen:]:
                self.grammar.advance(w, tok, prompt=w.seen < self.prompt_len)
        self.last = input_ids.clone()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._sync(input_ids)
        keep = torch.zeros_like(scores, dtype=torch.bool)
        for i, w in enumerate(self.walks):
            keep[i, :self.total] = self._mask(w, scores.device)
        return scores.masked_fill(~keep, float("-inf"))


def export_rules(space: TokenSpace, text_limit: int | None = None) -> dict[str, Any]:
    """The generation rules as JSON-ready allowed-ID ranges ([start, stop), half-open) per state."""
    g = Grammar(space, text_limit)
    out: dict[str, Any] = {
        "format": "tokenlm-generation-rules", "version": 1,
        "token_space": {"name": space.name, "hash": space.hash}, "total": space.total,
        "never": [space.ranges["padding"].as_list()] if len(space.ranges["padding"]) else [],
        "outside": {"allowed": [list(r) for r in g.outside], "enter": {m: i for i, m in g.enter.items()}},
    }
    out.update({m: rules.export() for m, rules in g.blocks.items()})
    return out
