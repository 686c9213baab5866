"""Text as a registered codec: free text outside blocks, or ``<|text_start|> ids <|text_end|>`` in sequences."""

from __future__ import annotations

from typing import Any

from ..codecs import ModalityCodec, Ranges, register_codec
from ..errors import TokenRangeError

__all__ = ["TextModality"]


@register_codec("text", rank=0, short="t")
class TextModality(ModalityCodec):
    """The space's tokenizer (`uti.text.TextCodec`, loaded on first use); its range is [0, base_vocab_size)."""

    asset_keys = ("tokenizer", "base_model")
    before_specials = True

    @classmethod
    def range_sizes(cls, section: dict[str, Any]) -> list[tuple[str, int]]:
        return [("text", section["base_vocab_size"])]

    @classmethod
    def accepts(cls, item: Any) -> bool:
        return isinstance(item, str)

    def __init__(self, space: Any) -> None:
        super().__init__(space)
        self._codec: Any = None

    @property
    def codec(self) -> Any:
        if self._codec is None:
            from ..text import TextCodec

            self._codec = TextCodec.from_space(self.space)
        return self._codec

    def encode(self, item: str) -> list[int]:
        """Bare text IDs (no markers), as `uti encode --text` writes them."""
        return self.codec.encode(item)

    def decode_block(self, ids: list[int]) -> str:
        """Text of `ids`, with or without the text markers around them."""
        start, end = (self.space.special_id(n) for n in self.markers())
        if len(ids) >= 2 and ids[0] == start and ids[-1] == end:
            ids = ids[1:-1]
        text = self.space.ranges["text"]
        bad = [i for i in ids if i not in text]
        if bad:
            raise TokenRangeError(f"ID {bad[0]} inside a text block is not a text ID; expected [{text.start}, {text.stop})")
        return self.codec.decode(ids)

    def outside(self, text_limit: int | None = None) -> Ranges:
        """Text IDs [0, V) (or [0, text_limit)) and the text markers and gen marker."""
        v = self.space.ranges["text"].stop
        v = v if text_limit is None else min(text_limit, v)
        sid = self.space.special_id
        return [(0, v)] + [(sid(n), sid(n) + 1) for n in (*self.markers(), self.gen_marker())]

    # --- token LM hooks (see `ModalityCodec`) ---------------------------------------------------------
    def summary(self, segment: Any, out: Any = None) -> dict[str, Any]:
        """{"text": the decoded string}."""
        return {"text": segment.value}
