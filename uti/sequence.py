"""The one sequence builder: training sequences for tasks text and X2Y (i2t, a2t, t2i, t2a, ...) from global IDs.

Layout (every task, one rule)::

    [condition block] <|gen_X|> <target block>

where a block of modality m is ``<|m_start|> content <|m_end|>`` and ``X`` is the target modality;
markers, gen markers and the specials allowed inside a block come from the codec registry (`uti.codecs`),
so any registered modality works in tasks (see `TASKS`). Examples::

    text : <|gen_text|> <|text_start|> text <|text_end|>
    i2t  : <|image_start|> image ids <|image_end|> <|gen_text|> <|text_start|> caption <|text_end|>
    t2i  : <|text_start|> prompt <|text_end|> <|gen_image|> <|image_start|> image ids <|image_end|>

Label rule: labels equal the input IDs on the target block (its start marker, content and end marker) and
are -100 (`IGNORE_INDEX`) everywhere else (condition block, gen marker, padding). A target prefix (an
instruction before the response: ``<|text_start|> instruction response <|text_end|>``) sits inside the
target block without labels, together with the block's start marker. Labels are aligned with
`input_ids` as in Hugging Face causal LMs (the model shifts them).

Content passed in may already be wrapped in its start/end markers (as `uti encode` writes image/audio
streams); it is then used as is. Every content ID is checked against its modality's ID range (plus the
specials its codec allows inside a block, e.g. an image's view markers), so a text ID can never pass as
an image code.

Packing (`pack`): whole sequences are placed greedily, in order, into rows of `max_len`; a sequence is
never split (one longer than `max_len` is an error). Position IDs restart at 0 for every sequence and the
padding tail forms its own segment. With ``attention_mask=None`` transformers turns restarting position
IDs into a block-diagonal causal mask (sdpa/eager/flash alike), so packed sequences do not attend to each
other and a packed row gives the same per-token losses as the sequences run one by one. We chose resets
over plain concatenation because cross-sequence attention would let a caption look at the previous
sample's image, which corrupts exactly the image-conditioned learning this toolkit measures.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, Sequence as Seq

from .codecs import codec_class, codec_classes
from .errors import SpaceError, TokenRangeError, UTIError

__all__ = [
    "IGNORE_INDEX",
    "TASKS",
    "TokenSequence",
    "PackedRow",
    "SequenceTooLongError",
    "build_sequence",
    "build_prompt",
    "pack",
    "pad_row",
]

IGNORE_INDEX = -100

class _Tasks(Mapping):
    """task -> (condition modality or None, target modality), live over the codec registry.

    "text" is plain text; "X2Y" conditions on X and targets Y, where X and Y are registered modalities by
    name or abbreviation ("i2t" == "image2text", "depth2t" once a "depth" codec is registered). Iteration
    lists the canonical tasks: text, then X2t, then t2X for every registered non-text codec (built-ins:
    text, i2t, a2t, t2i, t2a).
    """

    def __getitem__(self, task: str) -> tuple[str | None, str]:
        if task == "text":
            return None, "text"
        parts = task.split("2") if isinstance(task, str) else []
        if len(parts) != 2 or not all(parts):
            raise KeyError(task)
        try:
            cond, target = (codec_class(p).modality for p in parts)
        except SpaceError:
            raise KeyError(task) from None
        return cond, target

    def __iter__(self) -> Iterator[str]:
        others = [c.short for c in codec_classes() if c.modality != "text"]
        return iter(["text", *(f"{x}2t" for x in others), *(f"t2{x}" for x in others)])

    def __len__(self) -> int:
        return sum(1 for _ in self)


TASKS: Mapping[str, tuple[str | None, str]] = _Tasks()


def _markers(modality: str) -> tuple[str, str]:
    return codec_class(modality).markers()


class SequenceTooLongError(UTIError, ValueError):
    """A sequence does not fit the packing length."""


class _Range(Protocol):
    def __contains__(self, i: int) -> bool: ...


class SpaceLike(Protocol):
    """What the builder needs from `uti.space.TokenSpace`."""

    specials: Mapping[str, int]
    ranges: Mapping[str, _Range]

    def special_id(self, name: str) -> int: ...


@dataclass(frozen=True)
class TokenSequence:
    """One training sequence: `input_ids` and `labels` of equal length (labels -100 off the target)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    task: str
    source: str = ""  # where it came from (e.g. "data.jsonl:7 (audio bell.wav)"), for error messages

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class PackedRow:
    """One row of `max_len` tokens holding whole sequences; `position_ids` restart per sequence."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    position_ids: tuple[int, ...]
    num_sequences: int


def _range_keys(space: SpaceLike, modality: str) -> list[str]:
    keys = [k for k in space.ranges if k == modality or k.startswith(modality + ".")]
    if not keys:
        raise TokenRangeError(
            f"token space has no {modality!r} range (has {', '.join(space.ranges)}); "
            f"use a space with a {modality} codec for this task"
        )
    return keys


def _check_content(space: SpaceLike, modality: str, ids: Seq[int], role: str) -> None:
    """Raise TokenRangeError if an ID of a `modality` block lies outside that modality's ranges."""
    ranges = [space.ranges[k] for k in _range_keys(space, modality)]
    inside = codec_class(modality).content_specials(space.specials)  # e.g. an image's view markers
    extra = {space.specials[n] for n in inside}
    for pos, i in enumerate(ids):
        if i in extra or any(i in r for r in ranges):
            continue
        raise TokenRangeError(
            f"{role} ({modality}) ID {i} at position {pos} is outside the {modality} range(s) "
            f"{', '.join(_range_keys(space, modality))}; pass global IDs of this token space"
        )


def _block(space: SpaceLike, modality: str, ids: Seq[int], role: str) -> list[int]:
    """`<|m_start|> ids <|m_end|>`, accepting content that already carries both markers."""
    start, end = (space.special_id(n) for n in _markers(modality))
    ids = [int(i) for i in ids]
    if len(ids) >= 2 and ids[0] == start and ids[-1] == end:
        ids = ids[1:-1]
    if not ids:
        raise TokenRangeError(f"{role} ({modality}) is empty; pass at least one ID")
    _check_content(space, modality, ids, role)
    return [start, *ids, end]


def _task(task: str) -> tuple[str | None, str]:
    try:
        return TASKS[task]
    except KeyError:
        raise UTIError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)} (or X2Y for registered "
                       "modalities X, Y)") from None


def build_prompt(space: SpaceLike, task: str, condition: Seq[int] | None = None) -> list[int]:
    """Generation prompt: condition block, gen marker and the target's start marker (the model continues)."""
    cond_mod, target_mod = _task(task)
    out = _condition(space, task, cond_mod, condition)
    out.append(space.special_id(codec_class(target_mod).gen_marker()))
    out.append(space.special_id(_markers(target_mod)[0]))
    return out


def _condition(space: SpaceLike, task: str, cond_mod: str | None, condition: Seq[int] | None) -> list[int]:
    if cond_mod is None:
        if condition:
            raise UTIError(f"task {task!r} takes no condition; got {len(condition)} condition IDs")
        return []
    if condition is None:
        raise UTIError(f"task {task!r} needs a {cond_mod} condition")
    return _block(space, cond_mod, condition, "condition")


def build_sequence(space: SpaceLike, task: str, target: Seq[int], condition: Seq[int] | None = None,
                   source: str = "", target_prefix: Seq[int] = ()) -> TokenSequence:
    """Build one sequence of `task` from global IDs; labels cover the target block only (see module doc).

    target: the target modality's content IDs (caption text IDs for i2t/a2t/text, image IDs for t2i,
    audio IDs for t2a). condition: the conditioning content (image/audio IDs for i2t/a2t, prompt text IDs
    for t2i/t2a; none for text). source: where the data came from, named by packing errors.
    target_prefix: content IDs of the target's modality that open the target block and carry no label
    (an instruction the response follows); the model is trained on the response only.
    """
    cond_mod, target_mod = _task(task)
    head = _condition(space, task, cond_mod, condition)
    head.append(space.special_id(codec_class(target_mod).gen_marker()))
    prefix = [int(i) for i in target_prefix]
    if prefix:
        _check_content(space, target_mod, prefix, "target prefix")
    tail = _block(space, target_mod, prefix + [int(i) for i in target], "target")
    if prefix and len(tail) < len(prefix) + 3:
        raise TokenRangeError("target is empty after its prefix; pass at least one target ID")
    quiet = len(head) + (1 + len(prefix) if prefix else 0)  # the start marker is unlabelled too after a prefix
    ids = head + tail
    return TokenSequence(
        input_ids=tuple(ids),
        labels=tuple([IGNORE_INDEX] * quiet + ids[quiet:]),
        task=task,
        source=source,
    )


def pad_row(seqs: Seq[TokenSequence], max_len: int, pad_id: int) -> PackedRow:
    """Concatenate `seqs` into one row of `max_len` with per-sequence positions and a padding tail."""
    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []
    for s in seqs:
        ids += s.input_ids
        labels += s.labels
        pos += range(len(s))
    if len(ids) > max_len:
        raise SequenceTooLongError(f"{len(ids)} tokens do not fit max_len={max_len}; raise max_len")
    n_pad = max_len - len(ids)
    return PackedRow(
        input_ids=tuple(ids + [pad_id] * n_pad),
        labels=tuple(labels + [IGNORE_INDEX] * n_pad),
        position_ids=tuple(pos + list(range(n_pad))),
        num_sequences=len(seqs),
    )


def pack(seqs: Seq[TokenSequence], max_len: int, pad_id: int) -> list[PackedRow]:
    """Greedy in-order packing of whole sequences into rows of `max_len` tokens (see module doc)."""
    if max_len < 1:
        raise UTIError(f"max_len must be >= 1, got {max_len}")
    rows: list[PackedRow] = []
    current: list[TokenSequence] = []
    used = 0
    for k, s in enumerate(seqs):
        if len(s) > max_len:
            raise SequenceTooLongError(
                f"{s.source or f'sequence {k}'}: the {s.task} sequence has {len(s)} tokens, more than "
                f"max_len={max_len}; raise max_len to at least {len(s)} (`tokenlm train --max-len {len(s)}`)"
            )
        if used + len(s) > max_len:
            rows.append(pad_row(current, max_len, pad_id))
            current, used = [], 0
        current.append(s)
        used += len(s)
    if current:
        rows.append(pad_row(current, max_len, pad_id))
    return rows
