"""Image-to-text examples for the continuous track and their collation into padded batches.

An example is an image (its `ViewFeatures`, computed once: the tower is frozen), a prompt that contains
`<image>` and the target text. Only target tokens (and the optional end-of-text ID) carry labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from uti.sequence import IGNORE_INDEX

from .inject import ImageTokenIds, ViewFeatures, expand_image_placeholders

__all__ = ["CaptionExample", "collate_captions", "shuffled_images"]


@dataclass
class CaptionExample:
    """One image with a prompt (containing `<image>`) and the text the model should produce after it."""

    image: ViewFeatures
    target: str
    prompt: str = "<image>"


def collate_captions(
    examples: Sequence[CaptionExample], encode: Callable[[str], list[int]], ids: ImageTokenIds,
    tokens_per_view: int, eos_id: int | None = None, pad_id: int = 0,
) -> dict[str, object]:
    """Examples -> {"input_ids" (B, S), "attention_mask" (B, S), "labels" (B, S), "images": [ViewFeatures]}.

    Right-padded with `pad_id`; labels are `IGNORE_INDEX` (-100) on prompt, image and padding positions.
    """
    rows, labels = [], []
    for ex in examples:
        prompt = expand_image_placeholders(ex.prompt, encode, ids, [tokens_per_view * ex.image.num_views])
        target = list(encode(ex.target)) + ([eos_id] if eos_id is not None else [])
        rows.append(prompt + target)
        labels.append([IGNORE_INDEX] * len(prompt) + target)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    label_t = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)] = torch.tensor(r)
        label_t[i, : len(r)] = torch.tensor(lab)
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_t, "images": [e.image for e in examples]}


def shuffled_images(examples: Sequence[CaptionExample]) -> list[CaptionExample]:
    """The same targets paired with another example's image (rotated by one): the loss gap to the own image
    shows how much the model reads the image rather than the text prior."""
    n = len(examples)
    return [CaptionExample(examples[(i + 1) % n].image, ex.target, ex.prompt) for i, ex in enumerate(examples)]


# TEMP stub (csv helper replaces) ------------------------------------------------------------------------------
# `read_manifests` / `ManifestRow` are the csv helper's; this JSONL-only stand-in lets the `connectors` CLI and its
# tests run until that lands. The lead resolves at merge.
from pathlib import Path  # noqa: E402

@dataclass
class ManifestRow:
    """One image-caption row: image file, instruction (may contain `<image>`), response."""

    image: Path
    instruction: str
    response: str


def read_manifests(paths: Sequence[str | Path]) -> list[ManifestRow]:
    """Rows of JSONL files with {image, instruction, response}; image paths relative to their file."""
    import json

    from uti.errors import InputError

    rows = []
    for path in map(Path, paths):
        if not path.is_file():
            raise InputError(f"{path}: no such manifest file; pass .jsonl files of image, instruction, response")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                d = json.loads(line)
                rows.append(ManifestRow(path.parent / d["image"], str(d.get("instruction", "")), str(d["response"])))
    return rows
