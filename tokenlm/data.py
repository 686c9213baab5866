"""Training data: records (JSONL) + encoded shards -> sequences (uti.sequence) -> packed rows -> batches.

Sources are given as a list of paths:

* a folder of `uti encode` batch shards (`part-*.safetensors`); read with `uti.batch.read_shards`, which
  refuses shards of another token space. Each shard item is one encoded image or audio file, keyed by
  its source path.
* a JSONL file of records, one object per line:
  ``{"text": "..."}`` (task text), ``{"image": "pano.jpg", "caption": "..."}`` (tasks i2t / t2i),
  ``{"audio": "bell.wav", "caption": "..."}`` (tasks a2t / t2a); any registered codec's modality name is
  a media key the same way (``{"depth": ..., "caption": ...}`` makes depth2t / t2depth). The media path
  names a shard item: it is matched against the shards' sources by resolved path (relative paths are
  relative to the JSONL's folder), else by file name when that is unique. A record may carry the IDs
  inline instead (``"image_ids": [...]`` / ``"audio_ids": [...]`` / ``"<modality>_ids"``, global IDs of
  the space, as `uti encode --json` prints them). A caption record may add ``"instruction": "..."``: the text
  the caption answers (a question about the image); in captioning tasks (i2t, a2t) it opens the target
  block without labels, so the model learns the response given image and instruction (`uti.sequence`).
  A LLaVA-style `<image>` placeholder in it (where the continuous track puts its image vectors) is dropped:
  here the media block always comes first.
* a CSV file with a header row, as instruction-tuning manifests come: one media column (``image``, ``audio``,
  any registered modality) holding a path, ``instruction`` (optional, may be empty) and ``response`` (the
  caption); or a single ``text`` column. Each row becomes the record above and is checked by the same
  schema, named ``file.csv:line``. Several CSV and JSONL files mix freely in one run. Every line is checked against one schema (`RECORD_KEYS`) before anything is built: unknown keys
  (listing the valid ones), strings that are not strings, IDs that are not integers (floats, strings,
  bools, nested lists) are refused with `file:line` in one line; nothing is coerced.

Which sequences a record yields is chosen by `tasks` (e.g. ("i2t",) makes only image-to-caption
sequences from image records). Order is deterministic: records in file order, sequences shuffled by
`seed`, then packed in order (`uti.sequence.pack`).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from uti.codecs import ModalityCodec, codec_class, codec_classes
from uti.errors import InputError
from uti.io import read_csv, read_jsonl
from uti.sequence import IGNORE_INDEX, TASKS, PackedRow, TokenSequence, build_sequence, pack
from uti.space import TokenSpace
from uti.tokenizer import Tokenizer

__all__ = ["Record", "RECORD_KEYS", "read_records", "load_shard_items", "build_sequences", "build_rows", "collate",
           "split_records", "label_count", "DataError"]

class DataError(InputError):
    """A training record or data source cannot be used."""


@dataclass(frozen=True)
class Record:
    """One training record: text only, or a caption with an image/audio item (IDs resolved later)."""

    text: str | None = None
    caption: str | None = None
    modality: str | None = None  # a registered modality ("image", "audio", ...), None for a text record
    media: str | None = None  # resolved path of the media file, or None when IDs are inline
    ids: tuple[int, ...] | None = None  # inline global IDs
    instruction: str | None = None  # text the caption answers (captioning tasks: unlabelled target prefix)
    where: str = ""  # file:line, for error messages


def _media_codecs() -> list[type[ModalityCodec]]:
    """The registered codecs a record may carry an item of: every one but text, in layout order."""
    return [c for c in codec_classes() if c.modality != "text"]


class _RecordKeys(Mapping):
    """The record schema, live over the codec registry: key -> what its value must be. "text" and "caption"
    are strings; every registered non-text modality m adds `m` (a media file path) and `m_ids` (inline IDs).
    A record is {"text"}, or a caption with exactly one media key."""

    def _keys(self) -> dict[str, str]:
        keys = {"text": "a string", "caption": "a string", "instruction": "a string"}
        for c in _media_codecs():
            keys[c.modality] = "a media file path (string)"
            keys[f"{c.modality}_ids"] = "a list of integer IDs"
        return keys

    def __getitem__(self, key: str) -> str:
        return self._keys()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


#: the record schema (see `_RecordKeys`); with the built-in codecs: text, caption, image, image_ids, audio, audio_ids
RECORD_KEYS: Mapping[str, str] = _RecordKeys()
_MAX_ID = 2**31  # global IDs are small non-negative integers; anything larger is not an ID of any space


def _shapes() -> str:
    """The record shapes, for error messages."""
    names = [c.modality for c in _media_codecs()]
    first = names[0] if names else "M"
    others = f", or the same with {'/'.join(f'{m}/{m}_ids' for m in names[1:])}" if len(names) > 1 else ""
    return (f'{{"text": str}}, {{"{first}": path, "caption": str}}, {{"{first}_ids": [int, ...], "caption": str}}'
            + others)


def _brief(value: Any) -> str:
    """A short JSON rendering of a bad value for an error message (never fails, never long)."""
    if isinstance(value, int) and not isinstance(value, bool) and not -_MAX_ID < value < _MAX_ID:
        return "an integer out of range"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # NaN is fine for json.dumps; this is only for safety
        return type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _check_value(key: str, value: Any, where: str) -> None:
    """Refuse a value of the wrong type in one line (no coercion: 1.0, "5" and true are not IDs)."""
    if key.endswith("_ids"):
        if not isinstance(value, list) or not value:
            raise DataError(f"{where}: \"{key}\" must be a non-empty list of integer IDs, got "
                            f"{type(value).__name__ if value != [] else 'an empty list'}")
        for n, i in enumerate(value):
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < _MAX_ID:
                raise DataError(f"{where}: \"{key}\"[{n}] is {_brief(i)}; IDs are integers in [0, 2^31) "
                                "(global IDs of the token space, as `uti encode --json` prints them)")
    elif not isinstance(value, str) or (key not in ("text", "caption", "instruction") and not value):
        raise DataError(f"{where}: \"{key}\" must be {RECORD_KEYS[key]}, got {_brief(value)}")


def _record(obj: Any, where: str, base: Path) -> Record:
    """One JSONL object checked against the record schema (`RECORD_KEYS`), media paths resolved against `base`."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object: {_shapes()}")
    keys = dict(RECORD_KEYS)  # one snapshot of the registry for this record
    unknown = sorted(set(obj) - set(keys))
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(keys)}")
    for key, value in obj.items():
        _check_value(key, value, where)
    if "text" in obj:
        if set(obj) != {"text"}:
            raise DataError(f"{where}: a text record is {{\"text\": str}} and nothing else, got keys {sorted(obj)}")
        return Record(text=obj["text"], where=where)
    media = [k for k in obj if k not in ("caption", "instruction")]
    if len(media) != 1 or "caption" not in obj:
        raise DataError(f"{where}: expected {_shapes()} (plus an optional \"instruction\"); got keys {sorted(obj)}")
    key, instruction = media[0], obj.get("instruction") or None
    m = key.removesuffix("_ids")
    if key.endswith("_ids"):
        return Record(caption=obj["caption"], modality=m, ids=tuple(obj[key]), where=where, instruction=instruction)
    try:
        media_path = str((base / obj[key]).resolve())
    except (OSError, ValueError):  # a NUL byte, a path too long for the OS
        raise DataError(f"{where}: \"{key}\" is not a usable file path: {_brief(obj[key])}") from None
    return Record(caption=obj["caption"], modality=m, media=media_path, where=where, instruction=instruction)


def read_records(path: str | Path) -> list[Record]:
    """Records of a JSONL or CSV file (by suffix) in file order (blank lines skipped); bad lines raise DataError."""
    path = Path(path)
    rows = read_csv(path, DataError, _csv_key) if path.suffix.lower() == ".csv" else read_jsonl(path, DataError)
    return [_record(obj, f"{path}:{n}", path.parent) for n, obj in rows]


def _csv_key(column: str) -> str:
    """The record key of a CSV column: `response` is the caption; the others are the record keys themselves."""
    valid = ["text", "instruction", "response"] + [c.modality for c in _media_codecs()]
    if column not in valid:
        raise DataError(f"unknown CSV column {column!r}; valid columns: {', '.join(valid)}")
    return "caption" if column == "response" else column


def load_shard_items(folders: Iterable[str | Path], space: TokenSpace) -> dict[str, tuple[int, ...]]:
    """{source: global IDs} of every item in the shards of `folders` (hash-checked). A source is the input's
    path relative to the root it was encoded from (older shards: an absolute path, resolved here)."""
    from uti.batch import read_shards

    items: dict[str, tuple[int, ...]] = {}
    for folder in folders:
        for shard in read_shards(folder, space):
            for j, src in enumerate(shard.sources):
                items[str(Path(src).resolve()) if Path(src).is_absolute() else src] = tuple(shard.item(j).tolist())
    return items


def _media_ids(rec: Record, items: dict[str, tuple[int, ...]], by_name: dict[str, list[str]]) -> tuple[int, ...]:
    if rec.ids is not None:
        return rec.ids
    if rec.media in items:
        return items[rec.media]
    named = by_name.get(Path(rec.media).name, [])
    tail = [k for k in named if Path(rec.media).as_posix().endswith("/" + k)]  # a relative source, by its path
    if len(tail) == 1 or len(named) == 1:
        return items[(tail or named)[0]]
    why = "is ambiguous by file name" if named else "is in none of the shards"
    raise DataError(f"{rec.where}: {rec.modality} {rec.media} {why}; encode it with `uti encode ... --out SHARDS` "
                    "and pass that shard folder as data")


def build_sequences(records: Sequence[Record], space: TokenSpace, tasks: Sequence[str],
                    items: dict[str, tuple[int, ...]] | None = None) -> list[TokenSequence]:
    """Sequences of `tasks` from `records`, in record order (text via the space's tokenizer).

    A task is named by modality or short name (`i2t` == `image2text`); a record with an item of modality m
    yields `<m>2t` (caption the item) and `t2<m>` (generate it from the caption) when those are asked for.
    """
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise DataError(f"unknown task(s) {', '.join(bad)}; valid tasks: {', '.join(TASKS)}")
    wanted = {TASKS[t] for t in tasks}  # {(condition modality or None, target modality)}
    tok = Tokenizer(space)
    items = items or {}
    by_name: dict[str, list[str]] = {}
    for k in items:
        by_name.setdefault(Path(k).name, []).append(k)
    out: list[TokenSequence] = []
    for rec in records:
        if rec.text is not None:
            if (None, "text") in wanted:
                out.append(build_sequence(space, "text", target=tok.encode(rec.text), source=rec.where))
            continue
        media, caption = _media_ids(rec, items, by_name), tok.encode(rec.caption)
        source = rec.where + (f" ({rec.modality} {rec.media})" if rec.media else "")
        short = codec_class(rec.modality).short
        if (rec.modality, "text") in wanted:
            instruction = re.sub(r"<image>\n?", "", rec.instruction or "")
            prefix = tok.encode(instruction) if instruction else ()
            out.append(build_sequence(space, f"{short}2t", target=caption, condition=media, source=source,
                                      target_prefix=prefix))
        if ("text", rec.modality) in wanted:
            out.append(build_sequence(space, f"t2{short}", target=media, condition=caption, source=source))
    return out


def split_records(records: Sequence[Record], eval_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(train, eval): a seeded random `eval_fraction` of the records is held out (at least one if > 0)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise DataError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    n_eval = 0 if eval_fraction == 0 else max(1, round(len(records) * eval_fraction))
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def build_rows(seqs: Sequence[TokenSequence], space: TokenSpace, max_len: int, seed: int | None) -> list[PackedRow]:
    """Shuffle sequences by `seed` (None keeps order) and pack them into rows of `max_len`."""
    seqs = list(seqs)
    if seed is not None:
        random.Random(seed).shuffle(seqs)
    return pack(seqs, max_len, pad_id=space.special_id("<|pad|>"))


def collate(rows: Sequence[PackedRow]) -> dict[str, torch.Tensor]:
    """Stack rows into LongTensors (B, T), trimming padding columns that every row has at its end.

    Trimming never changes a loss: padding sits at the end of each row, is causal-masked from the real
    tokens, and carries label -100.
    """
    if not rows:
        raise DataError("cannot collate an empty batch")
    ids = torch.tensor([r.input_ids for r in rows], dtype=torch.long)  # (B, T)
    labels = torch.tensor([r.labels for r in rows], dtype=torch.long)
    pos = torch.tensor([r.position_ids for r in rows], dtype=torch.long)
    used = max(sum(len(s) for s in _segments(r)) for r in rows)
    return {"input_ids": ids[:, :used], "labels": labels[:, :used], "position_ids": pos[:, :used]}


def _segments(row: PackedRow) -> list[range]:
    """Index ranges of the real sequences of a row (padding tail excluded)."""
    starts = [i for i, p in enumerate(row.position_ids) if p == 0]
    ends = starts[1:] + [len(row.position_ids)]
    return [range(s, e) for s, e in zip(starts, ends)][: row.num_sequences]


def label_count(rows: Sequence[PackedRow]) -> int:
    """Number of labelled (loss-bearing) positions after the causal shift, over `rows`."""
    return sum(sum(1 for y in r.labels[1:] if y != IGNORE_INDEX) for r in rows)
