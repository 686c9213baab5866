"""`uti.Tokenizer`: one object that turns text, images and audio into IDs of a token space and back.

    tok = Tokenizer.from_space("tiny")
    ids = tok.encode("a caption") + tok.encode(Path("pano.jpg")) + tok.encode(Audio(wav, 16000))
    for seg in tok.decode(ids):
        print(seg.modality, seg.value)

It sits on the codec registry (`uti.codecs`): `encode` asks each codec the space holds, in layout order,
whether it `accepts` the item, so nothing here branches on a modality name. A `str` is always text; give
files as `pathlib.Path`. Codecs are created on first use and load their assets (tokenizer, vision tower,
audio codec) lazily, so a text-only user never loads a tower. The run options `device`, `dtype` and `strict`
(see `ModalityCodec`) go to every codec the tokenizer creates.

`decode` splits a stream into segments in order: a block ``<|m_start|> .. <|m_end|>`` of a codec the
space holds is decoded strictly by that codec; runs of text IDs become text segments (a
``<|text_start|> .. <|text_end|>`` block too); any other special outside a block (a gen marker, ``<|pad|>``)
is a "special" segment whose value is its name. Padding IDs, IDs outside the space and unterminated
blocks raise TokenRangeError.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from .codecs import ModalityCodec, codec_classes, present_codecs
from .errors import InputError, TokenRangeError
from .items import Segment
from .space import TokenSpace

__all__ = ["Tokenizer"]


class Tokenizer:
    """Text, images and audio <-> global IDs of one token space (see the module doc)."""

    def __init__(self, space: TokenSpace, *, device: Any = "cpu", dtype: Any = None, strict: bool = False,
                 batch_size: int | None = None) -> None:
        self.space = space
        self._run = {"device": device, "dtype": dtype, "strict": strict, "batch_size": batch_size}
        self._codecs: dict[str, ModalityCodec] = {}
        self._classes = present_codecs(space.abi)
        self._starts = {space.special_id(c.markers()[0]): c for c in self._classes}
        self._names = {i: n for n, i in space.specials.items()}

    @classmethod
    def from_space(cls, name_or_path: str | os.PathLike | TokenSpace, *, device: Any = "cpu", dtype: Any = None,
                   strict: bool = False, batch_size: int | None = None) -> "Tokenizer":
        """The tokenizer of a shipped space name (`tiny`), a space file/folder path, or a loaded `TokenSpace`
        (whose `allow_unpinned` the codecs obey). `device`/`dtype` place the codecs' models (dtype None: each
        codec's default, float32); `strict` refuses inputs the decoder had to repair (e.g. a corrupt JPEG);
        `batch_size`: views per vision-tower forward (None: the codec's default, 16)."""
        space = name_or_path if isinstance(name_or_path, TokenSpace) else TokenSpace.load(name_or_path)
        return cls(space, device=device, dtype=dtype, strict=strict, batch_size=batch_size)

    @property
    def modalities(self) -> list[str]:
        """The modalities this space holds, in layout order."""
        return [c.modality for c in self._classes]

    @property
    def unpinned_used(self) -> list[str]:
        """Keys of the assets used so far without a pinned content hash (only with `space.allow_unpinned`)."""
        return sorted(self.space.unpinned_used)

    def file_suffixes(self) -> tuple[str, ...]:
        """Suffixes of the files this space's codecs read (for listing a folder in batch mode)."""
        return tuple(s for c in self._classes for s in c.file_suffixes())

    def codec(self, modality: str) -> ModalityCodec:
        """The space's codec for `modality` (created on first use; its assets load when it first needs them)."""
        if modality not in self._codecs:
            cls = next((c for c in self._classes if c.modality == modality), None)
            if cls is None:
                raise InputError(f"token space {self.space.name!r} has no {modality} section (it holds "
                                 f"{', '.join(self.modalities)}); use a space built with a {modality} codec")
            self._codecs[modality] = cls(self.space, **self._run)
        return self._codecs[modality]

    def codec_for(self, item: Any) -> ModalityCodec:
        """The codec that takes `item`: the first of the space's codecs (layout order) that accepts it."""
        for cls in self._classes:
            if cls.accepts(item):
                return self.codec(cls.modality)
        other = next((c.modality for c in codec_classes() if c not in self._classes and c.accepts(item)), None)
        if other is not None:
            raise InputError(f"token space {self.space.name!r} has no {other} section; use a space with a {other} codec")
        if isinstance(item, os.PathLike):
            raise InputError(f"{item}: unsupported file type {Path(item).suffix!r}; space {self.space.name!r} reads "
                             f"{', '.join(self.file_suffixes()) or 'no files'}")
        raise InputError(f"cannot encode a {type(item).__name__}; give a str (text), a pathlib.Path to an image or "
                         "audio file, a PIL image, an (H, W, 3) uint8 array or a uti.Audio")

    def encode(self, item: Any) -> list[int]:
        """Global IDs of one item: bare text IDs for a str, a marked block for anything else."""
        return self.codec_for(item).encode(item)

    def encode_with_meta(self, item: Any) -> tuple[list[int], dict[str, Any]]:
        """`encode` plus the codec's JSON-ready metadata (what `uti encode` documents record)."""
        return self.codec_for(item).encode_with_meta(item)

    def encode_batch(self, items: Sequence[Any]) -> list[list[int]]:
        """`encode` of every item, in order; items of one codec go through it together (one tower forward)."""
        groups: dict[str, list[int]] = {}
        for k, item in enumerate(items):
            groups.setdefault(self.codec_for(item).modality, []).append(k)
        out: list[list[int]] = [[] for _ in items]
        for modality, idx in groups.items():
            for k, ids in zip(idx, self.codec(modality).encode_batch([items[k] for k in idx])):
                out[k] = ids
        return out

    def encode_stream(self, items: Sequence[Any], workers: int = 1) -> Iterator[tuple[Any, Exception | None]]:
        """`((ids, meta), None)` or `(None, error)` per item, in input order; one bad item fails alone.

        What batch encoding (`uti encode DIR`) runs: the items of each codec go through its `encode_stream`
        together (images: views of many panoramas per tower forward, `workers` threads decoding and
        rendering). With one codec the results stream as they finish; with several they are gathered first
        to restore the input order.
        """
        groups: dict[str, list[int]] = {}
        out: list[tuple[Any, Exception | None]] = [(None, None)] * len(items)
        for k, item in enumerate(items):
            try:
                groups.setdefault(self.codec_for(item).modality, []).append(k)
            except Exception as err:  # noqa: BLE001 - no codec takes it: that item fails, the others go on
                out[k] = (None, err)
        if len(groups) == 1 and len(next(iter(groups.values()))) == len(items):
            modality, idx = next(iter(groups.items()))
            yield from self.codec(modality).encode_stream(list(items), workers)
            return
        for modality, idx in groups.items():
            for k, outcome in zip(idx, self.codec(modality).encode_stream([items[k] for k in idx], workers)):
                out[k] = outcome
        yield from out

    @property
    def block_starts(self) -> dict[int, str]:
        """Start-marker ID -> modality, for every block codec of the space (text's markers included)."""
        return {i: c.modality for i, c in self._starts.items()}

    def split(self, ids: Sequence[int], partial: bool = False) -> list[Segment]:
        """The segments of a stream without decoding them (`value` None; no assets needed), in order.

        `partial`: a block still open at the end (generation cut off), or cut by the start of another
        block (blocks never nest), becomes a segment with `complete=False` instead of raising TokenRangeError.
        """
        ids = [_as_int(i) for i in ids]
        text, used = self.space.ranges["text"], self.space.ranges["padding"].start
        segments: list[Segment] = []
        k = 0
        while k < len(ids):
            tok = ids[k]
            if not 0 <= tok < used:
                raise TokenRangeError(f"ID {tok} at index {k} is outside the used IDs [0, {used}) of space {self.space.name!r}")
            if tok in text:
                if not (segments and segments[-1].modality == "text" and segments[-1].ids[-1] in text):
                    segments.append(Segment("text", None, []))
                segments[-1].ids.append(tok)
                k += 1
                continue
            cls = self._starts.get(tok)
            if cls is None:  # a lone special outside any block
                if tok not in self._names:
                    raise TokenRangeError(f"ID {tok} at index {k} is a {self.space.range_of(tok).name} ID outside "
                                          "its block; blocks start with their start marker")
                segments.append(Segment("special", self._names[tok], [tok]))
                k += 1
                continue
            end = self.space.special_id(cls.markers()[1])
            nxt = next((j for j in range(k + 1, len(ids)) if ids[j] == end or ids[j] in self._starts), len(ids))
            stop = nxt if nxt < len(ids) and ids[nxt] == end else None  # blocks never nest: a start cuts it
            if stop is None and not partial:
                where = "the next block" if nxt < len(ids) else "the end"
                raise TokenRangeError(f"{cls.markers()[0]} at index {k} has no {cls.markers()[1]} before {where}; "
                                      "blocks are closed and never nest")
            block = ids[k:nxt] if stop is None else ids[k:stop + 1]
            segments.append(Segment(cls.modality, None, block, complete=stop is not None))
            k += len(block)
        return segments

    def decode_segment(self, segment: Segment) -> Segment:
        """`segment` (from `split`) with its value decoded strictly by its codec ("special" ones unchanged)."""
        if segment.modality == "special":
            return segment
        if not segment.complete:
            raise TokenRangeError(f"the {segment.modality} block of {len(segment.ids)} IDs was cut off before its end marker")
        value = self.codec(segment.modality).decode_block(segment.ids)
        return Segment(segment.modality, value, segment.ids, segment.complete)

    def decode(self, ids: Sequence[int]) -> list[Segment]:
        """The decoded segments of a stream, in order (see the module doc)."""
        return [self.decode_segment(s) for s in self.split(ids)]

    def __repr__(self) -> str:
        return f"Tokenizer(space={self.space.name!r}, modalities={self.modalities})"


def _as_int(i: Any) -> int:
    try:
        if isinstance(i, bool) or int(i) != i:
            raise TypeError
        return int(i)
    except (TypeError, ValueError):
        raise TokenRangeError(f"token IDs must be integers, got {i!r}") from None

