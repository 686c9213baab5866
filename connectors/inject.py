"""Image placeholders in text: `<image>` -> `<|image_start|>`, N x `<|image_patch|>`, `<|image_end|>` as IDs.

N is the number of vectors the connector makes for that image: views x vectors per view (a panorama has a
global view plus its tiles; any other image is one view). No text tokens sit between start and end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .errors import PlaceholderCountError

__all__ = ["IMAGE_MARKER", "ImageTokenIds", "ViewFeatures", "expand_image_placeholders"]

IMAGE_MARKER = "<image>"


@dataclass(frozen=True)
class ImageTokenIds:
    """Global IDs of the image specials and the base (text) vocabulary size of the token space."""

    start: int
    end: int
    patch: int
    base_vocab_size: int

    @classmethod
    def from_space(cls, space: Any) -> "ImageTokenIds":
        """Read the IDs from a `uti.space.TokenSpace`: the image codec's markers (`uti.codecs`), its patch
        placeholder and the end of the text range."""
        from uti import specials as S
        from uti.codecs import codec_class

        start, end = codec_class("image").markers()  # this track is the continuous image track
        return cls(start=space.special_id(start), end=space.special_id(end), patch=space.special_id(S.IMAGE_PATCH),
                   base_vocab_size=int(space.ranges["text"].stop))


@dataclass
class ViewFeatures:
    """One image as the connector sees it: tower features of each view and where each view looks.

    features: (V, T, in_dim) patch features; yaw_pitch: (V, 2) degrees; is_global: (V,) bool (the
    whole-panorama view has no direction). A plain (non-panorama) image is V = 1 at yaw 0, pitch 0.
    pairs: optional (M, 4) int64 (view_a, patch_a, view_b, patch_b) of patches of overlapping tiles that look
    in the same direction (`uti.image.overlap.overlap_pairs`), for the VICReg term of the training stages.
    """

    features: torch.Tensor
    yaw_pitch: torch.Tensor
    is_global: torch.Tensor
    pairs: torch.Tensor | None = None

    def __post_init__(self) -> None:
        v = self.features.shape[0]
        if self.features.dim() != 3 or tuple(self.yaw_pitch.shape) != (v, 2) or tuple(self.is_global.shape) != (v,):
            raise PlaceholderCountError(
                f"view features must be (views, tokens, width) with (views, 2) yaw/pitch and (views,) is_global; got "
                f"{tuple(self.features.shape)}, {tuple(self.yaw_pitch.shape)}, {tuple(self.is_global.shape)}"
            )
        if self.pairs is not None:
            p, (t, tokens) = self.pairs, self.features.shape[:2]
            ok = p.dim() == 2 and p.shape[1] == 4 and not p.is_floating_point()
            if not ok or (p.numel() and (int(p.min()) < 0 or int(p[:, [0, 2]].max()) >= t
                                         or int(p[:, [1, 3]].max()) >= tokens)):
                raise PlaceholderCountError(
                    f"overlap pairs must be (M, 4) integer (view, patch, view, patch) indices within {t} views of "
                    f"{tokens} patches; got {p.dtype} {tuple(p.shape)}; take them from uti.image.overlap.overlap_pairs"
                )

    @property
    def num_views(self) -> int:
        return int(self.features.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "ViewFeatures":
        """The same image on `device` (lets Accelerate's `send_to_device` move batches of images)."""
        return ViewFeatures(self.features.to(device, non_blocking=non_blocking), self.yaw_pitch.to(device),
                            self.is_global.to(device), None if self.pairs is None else self.pairs.to(device))

    @classmethod
    def single(cls, features: torch.Tensor) -> "ViewFeatures":
        """A one-view image from (T, in_dim) features."""
        return cls(features[None], torch.zeros(1, 2), torch.zeros(1, dtype=torch.bool))


def expand_image_placeholders(
    text: str, encode: Callable[[str], list[int]], ids: ImageTokenIds, tokens_per_image: Sequence[int]
) -> list[int]:
    """Encode `text`, replacing the i-th `<image>` by start, tokens_per_image[i] x patch, end.

    The text between markers is encoded piece by piece with `encode` (a text codec's encode).
    """
    pieces = text.split(IMAGE_MARKER)
    if len(pieces) - 1 != len(tokens_per_image):
        raise PlaceholderCountError(
            f"text has {len(pieces) - 1} {IMAGE_MARKER} marker(s) but {len(tokens_per_image)} image(s) were given; "
            f"put one {IMAGE_MARKER} in the text per image"
        )
    out: list[int] = list(encode(pieces[0])) if pieces[0] else []
    for n, piece in zip(tokens_per_image, pieces[1:]):
        out += [ids.start] + [ids.patch] * int(n) + [ids.end]
        if piece:
            out += list(encode(piece))
    return out
