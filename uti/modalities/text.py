"""Text as a registered codec: free text outside blocks, or ``<|text_start|> ids <|text_end|>`` in sequences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..codecs import ModalityCodec, Ranges, register_codec
from ..document import at_least
from ..errors import InputError, TokenRangeError

__all__ = ["TextMeta", "TextModality"]


@dataclass(frozen=True)
class TextMeta:
    """The `meta` of a text document."""

    chars: int | None = None  # characters of the encoded text

    def __post_init__(self) -> None:
        at_least(self, "chars", 0)


@register_codec("text", rank=0, short="t")
class TextModality(ModalityCodec):
    """The space's tokenizer (`uti.text.TextCodec`, loaded on first use); its range is [0, base_vocab_size)."""

    asset_keys = ("tokenizer", "base_model")
    before_specials = True
    meta_type = TextMeta

    @classmethod
    def range_sizes(cls, section: dict[str, Any]) -> list[tuple[str, int]]:
        return [("text", section["base_vocab_size"])]

    @classmethod
    def accepts(cls, item: Any) -> bool:
        return isinstance(item, str)

    def __init__(self, space: Any, **run: Any) -> None:
        super().__init__(space, **run)
        self._codec: Any = None

    def load(self) -> None:
        self.codec

    @property
    def codec(self) -> Any:
        if self._codec is None:
            from ..text import TextCodec

            self._codec = TextCodec.from_space(self.space)
        return self._codec

    def encode(self, item: str) -> list[int]:
        """Bare text IDs (no markers), as `uti encode --text` writes them."""
        return self.codec.encode(item)

    def encode_with_meta(self, item: str) -> tuple[list[int], dict[str, Any]]:
        return self.encode(item), {"chars": len(item)}

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

    def decode_to_file(self, ids: list[int], out: str | None, meta: Any, where: str = "document") -> dict[str, Any]:
        """The text of a document's IDs; with `out`, also written there (UTF-8, atomically)."""
        text = self.decode_block(ids)
        if out:
            from ..io import atomic_write_text

            try:
                atomic_write_text(out, text)
            except OSError as err:
                raise InputError(f"{out}: cannot write ({err.strerror or err}); choose another --out") from None
            return {"modality": self.modality, "text": text, "out": str(out)}
        return {"modality": self.modality, "text": text}

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
