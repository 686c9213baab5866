"""Image-to-text examples for the continuous track and their collation into padded batches.

An example is an image (its `ViewFeatures`, computed once: the tower is frozen), a prompt that contains
`<image>` and the target text. Only target tokens (and the optional end-of-text ID) carry labels.

Manifests (`read_manifests`) are the token-LM track's record files (`tokenlm.data.read_records`): CSV with
columns ``image, instruction, response`` as instruction-tuning data comes, or JSONL records
``{"image": path, "caption": str, "instruction": str}``; several files mix, validation files are read the
same way. Both tracks thus train on the same rows, with the instruction unlabelled before the response.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from uti.sequence import IGNORE_INDEX

from .errors import ConnectorError
from .inject import IMAGE_MARKER, ImageTokenIds, ViewFeatures, expand_image_placeholders

__all__ = ["CaptionExample", "ManifestRow", "read_manifests", "collate_captions", "shuffled_images"]


@dataclass(frozen=True)
class ManifestRow:
    """One image-instruction-response row of a data manifest (image path resolved against the manifest's folder)."""

    image: Path
    instruction: str
    response: str
    where: str = ""  # file:line, for error messages

    @property
    def prompt(self) -> str:
        """The `CaptionExample` prompt (no labels): the instruction where it holds the `<image>` placeholder
        (LLaVA-style), else the placeholder on its own line before it."""
        if IMAGE_MARKER in self.instruction:
            return self.instruction
        return f"{IMAGE_MARKER}\n{self.instruction}" if self.instruction else IMAGE_MARKER


def read_manifests(paths: Sequence[str | Path]) -> list[ManifestRow]:
    """Rows of CSV/JSONL manifests in order, files concatenated; every row must name an image file.

    Text-only records, other modalities and inline `image_ids` (the discrete track's form) are refused in one
    line naming `file:line`, since this track needs the image itself.
    """
    from tokenlm.data import read_records

    rows = []
    for path in paths:
        for rec in read_records(path):
            if rec.modality != "image" or rec.media is None:
                what = "inline image_ids" if rec.ids is not None else (rec.modality or "a text record")
                raise ConnectorError(f"{rec.where}: the continuous track needs an image file per row, got {what}; "
                                     "give columns image, instruction, response (CSV) or {\"image\": path, ...}")
            rows.append(ManifestRow(Path(rec.media), rec.instruction or "", rec.caption or "", rec.where))
    if not rows:
        raise ConnectorError(f"no rows in {', '.join(map(str, paths)) or 'no manifest'}; give at least one "
                             "image, instruction, response row")
    return rows


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
