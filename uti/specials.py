"""Special tokens of a token space.

The ordered list lives in the space's `abi["specials"]`; a special's ID is its position plus the start of
the special range, so IDs are derived, never typed. This module only names the required ones.
"""

from __future__ import annotations

__all__ = ["BASE_SPECIALS", "view_specials", "default_specials", "VIEW_GLOBAL"]

PAD = "<|pad|>"
TEXT_START, TEXT_END = "<|text_start|>", "<|text_end|>"
IMAGE_START, IMAGE_END, IMAGE_PATCH = "<|image_start|>", "<|image_end|>", "<|image_patch|>"
AUDIO_START, AUDIO_END = "<|audio_start|>", "<|audio_end|>"
GEN_TEXT, GEN_IMAGE, GEN_AUDIO = "<|gen_text|>", "<|gen_image|>", "<|gen_audio|>"
VIEW_GLOBAL = "<|view_global|>"

#: Present in every space, in this order.
BASE_SPECIALS: tuple[str, ...] = (
    PAD, TEXT_START, TEXT_END,
    IMAGE_START, IMAGE_END, IMAGE_PATCH,
    AUDIO_START, AUDIO_END,
    GEN_TEXT, GEN_IMAGE, GEN_AUDIO,
)


def view_specials(num_tiles: int, global_view: bool = True) -> list[str]:
    """Per-view markers of a panorama: the global view (if any), then one per tile."""
    return ([VIEW_GLOBAL] if global_view else []) + [f"<|view_{i}|>" for i in range(num_tiles)]


def default_specials(num_tiles: int | None = None, global_view: bool = True) -> list[str]:
    """The ordered special list of a space with (`num_tiles` given) or without an image layout."""
    out = list(BASE_SPECIALS)
    if num_tiles is not None:
        out += view_specials(num_tiles, global_view)
    return out
