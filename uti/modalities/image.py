"""Images as a registered codec: thin adapter over `uti.image.codec` (E2P views, tower, codebook).

Block layout (as `uti.image.codec.to_ids` writes it)::

    <|image_start|> <|view_global|> c_0 .. c_{P-1} <|view_0|> c .. <|view_{n-1}|> c .. <|image_end|>

A plain (non-2:1) image is one view. Inputs: a `pathlib.Path` to an image file, a PIL image or an
(H, W, 3) uint8 array (a `str` is always text).
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import specials as S
from ..codecs import ModalityCodec, Ranges, register_codec
from ..errors import InputError, SpaceError

__all__ = ["ImageMeta", "ImageModality", "ImageGrammar", "ViewMeta", "codes_per_view", "image_budget", "is_image_file",
           "token_grid"]

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class ViewMeta:
    """One view of an encoded image (`ImageMeta.views`)."""

    kind: str
    index: int
    yaw: float | None = None
    pitch: float | None = None
    fov: float | None = None


@dataclass(frozen=True)
class ImageMeta:
    """The `meta` of an image document (what `ImageCodec.encode` records)."""

    kind: Literal["panorama", "plain"] | None = None
    input_size: list[int] | None = None  # [height, width] of the input image
    layout: dict[str, Any] | None = None  # the space's layout abi (the decoder checks it is that)
    views: list[ViewMeta] | None = None
    grid: list[int] | None = None  # codes per view side [h, w]: the token grid (the patch grid unless pooled)
    compute_dtype: Literal["float32", "bfloat16", "float16"] | None = None  # the tower's dtype (uti.dtypes)

    def __post_init__(self) -> None:
        for name in ("input_size", "grid"):
            pair = getattr(self, name)
            if pair is not None and (len(pair) != 2 or min(pair) < 1):
                raise InputError(f"{name} must be two positive integers, got {reprlib.repr(pair)}")


def is_image_file(path: Path) -> bool:
    """An image by extension, or by its first bytes (JPEG, PNG, GIF, BMP, TIFF, WebP)."""
    from ..image.codec import IMAGE_EXTENSIONS

    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def token_grid(image_abi: dict) -> list[int]:
    """Codes per view side [h, w] of `abi.image`: its `token_grid` (patch features average-pooled to it before
    quantisation), else its patch `grid` (no pooling)."""
    grid = image_abi.get("token_grid", image_abi.get("grid"))
    if isinstance(grid, (list, tuple)) and len(grid) == 2:
        return [int(grid[0]), int(grid[1])]
    raise SpaceError("abi.image names no token grid (token_grid or grid); rebuild the space with `uti space build`")


def codes_per_view(image_abi: dict) -> int:
    """Image codes per view P, read from `abi.image` (`tokens_per_view`, `codes_per_view`, `num_patches`,
    `token_grid` or `grid`)."""
    for key in ("tokens_per_view", "codes_per_view", "num_patches"):
        if isinstance(image_abi.get(key), int):
            return image_abi[key]
    grid = image_abi.get("grid")
    if isinstance(grid, int):
        return grid * grid
    h, w = token_grid(image_abi)
    return h * w


def image_budget(image_abi: dict) -> dict[str, Any]:
    """Tokens an image costs in a space with this valid `abi.image`: codes per view, views of a panorama
    (global view included), and IDs of a whole panorama and of a plain image (markers included: image start,
    one marker per view, image end)."""
    per_view, views = codes_per_view(image_abi), len(_view_names(image_abi))
    return {"patch_grid": list(image_abi["grid"]) if "grid" in image_abi else None,
            "token_grid": token_grid(image_abi) if "grid" in image_abi or "token_grid" in image_abi else None,
            "tokens_per_view": per_view, "views_per_panorama": views,
            "tokens_per_panorama": views * (per_view + 1) + 2, "tokens_per_plain_image": per_view + 3}


def _grid_problems(section: dict) -> list[str]:
    """Problems of a schema-valid `abi.image`'s grids: `token_grid` (pooling) needs the patch `grid`, must fit
    inside it and differ from it (omit it for no pooling: one spelling per ABI); `tokens_per_view` must be the
    product of the token grid."""
    where, grid, pooled = "abi.image", section.get("grid"), section.get("token_grid")
    if pooled is not None and grid is None:
        return [f"{where}.token_grid {pooled} needs the patch grid {where}.grid it pools; add it"]
    if pooled is not None and (pooled[0] > grid[0] or pooled[1] > grid[1]):
        return [f"{where}.token_grid {pooled} is larger than the patch grid {grid}; pooling only shrinks, "
                "use a grid of at most the patch grid's size"]
    if pooled is not None and list(pooled) == list(grid):
        return [f"{where}.token_grid {pooled} equals the patch grid; omit token_grid for no pooling"]
    per_view, counted = section.get("tokens_per_view"), pooled or grid
    if per_view is not None and counted is not None and per_view != counted[0] * counted[1]:
        name = "token_grid" if pooled else "grid"
        return [f"{where}.tokens_per_view is {per_view}, but {where}.{name} {counted} gives {counted[0] * counted[1]}; "
                "make them agree (tokens_per_view = h * w)"]
    return []


def _view_names(section: dict) -> list[str]:
    layout = section["layout"]
    return S.view_specials(layout["num_tiles"], bool(layout.get("global_view", True)))


class ImageGrammar:
    """Inside an image: per view of the layout, its marker then P codes; after the last view only the end.

    A prompt may hold a plain image (one view), so while walking a prompt the end marker is also legal
    after the first view. State: the position inside the block (int).
    """

    def __init__(self, views: list[int], per_view: int, codes: tuple[int, int], end: int) -> None:
        self.views, self.per_view, self.codes, self.end = views, per_view, codes, end

    def start(self) -> int:
        return 0

    def allowed(self, state: int, prompt: bool = False) -> Ranges:
        view, off = divmod(state, self.per_view + 1)
        if view == len(self.views):
            return [(self.end, self.end + 1)]
        if off == 0 and view == 1 and prompt:
            return sorted([(self.views[view], self.views[view] + 1), (self.end, self.end + 1)])
        return [(self.views[view], self.views[view] + 1)] if off == 0 else [self.codes]

    def advance(self, state: int, tok: int) -> int:
        return state + 1

    def export(self) -> dict[str, Any]:
        return {"views": [{"marker": v, "then": {"allowed": [list(self.codes)], "count": self.per_view}}
                          for v in self.views],
                "end": self.end, "total_tokens": len(self.views) * (self.per_view + 1)}


@register_codec("image", rank=10, short="i")
class ImageModality(ModalityCodec):
    """`uti.image.codec.ImageCodec` (tower + codebook, loaded on first encode) behind the registry."""

    asset_keys = ("vision_tower", "codebook")
    meta_type = ImageMeta

    @classmethod
    def build_section(cls, section_cfg: dict[str, Any], assets: dict[str, Path | str]) -> dict[str, Any]:
        from ..image.codec import image_abi_section

        return image_abi_section(section_cfg, assets)

    @classmethod
    def validate_section(cls, section: Any) -> list[str]:
        """The grids of a schema-valid section (`_grid_problems`)."""
        return _grid_problems(section)

    @classmethod
    def range_sizes(cls, section: dict[str, Any]) -> list[tuple[str, int]]:
        return [("image", section["codebook_size"])]

    @classmethod
    def code_token_name(cls, range_name: str, code: int) -> str:
        return f"<|img_{code}|>"

    @classmethod
    def specials(cls, section: dict[str, Any]) -> list[str]:
        """Markers, the patch placeholder and the layout's view markers (none while the layout is invalid:
        `uti.space.validate_abi` reports that)."""
        layout = section.get("layout") if isinstance(section, dict) else None
        valid = isinstance(layout, dict) and isinstance(layout.get("num_tiles"), int) and layout["num_tiles"] >= 0
        return [*super().specials(section), S.IMAGE_PATCH, *(_view_names(section) if valid else [])]

    @classmethod
    def content_specials(cls, names: Any) -> set[str]:
        return {n for n in names if n.startswith("<|view_") or n == S.IMAGE_PATCH}

    @classmethod
    def file_suffixes(cls) -> tuple[str, ...]:
        from ..image.codec import IMAGE_EXTENSIONS

        return IMAGE_EXTENSIONS

    @classmethod
    def accepts(cls, item: Any) -> bool:
        if isinstance(item, np.ndarray):
            return item.ndim == 3 and item.shape[2] == 3 and item.dtype == np.uint8
        if isinstance(item, Path):
            return is_image_file(item)
        return type(item).__module__.startswith("PIL.") and hasattr(item, "getbands")

    def __init__(self, space: Any, **run: Any) -> None:
        super().__init__(space, **run)
        self._codec: Any = None
        self._codebook: Any = None

    @property
    def codec(self) -> Any:
        """The space's `ImageCodec` (tower on `device` in `dtype`, default float32, `batch_size` views per
        forward, default the codec's), built on first use."""
        if self._codec is None:
            import torch

            from ..image.codec import ImageCodec

            size = {} if self.batch_size is None else {"batch_size": self.batch_size}
            self._codec = ImageCodec.from_space(self.space, device=self.device, dtype=self.dtype or torch.float32,
                                                **size)
        return self._codec

    def load(self) -> None:
        self.codec

    def _rgb(self, item: Any) -> np.ndarray:
        from ..image.load import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, _check_size, _to_rgb, load_image

        if isinstance(item, Path):
            return load_image(item, strict=self.strict)
        if isinstance(item, np.ndarray):
            return item
        from PIL import ImageOps

        _check_size(Path("<PIL image>"), item.size, DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE)
        return _to_rgb(ImageOps.exif_transpose(item))  # the same conversions as an image file

    def encode(self, item: Any) -> list[int]:
        return self.encode_with_meta(item)[0]

    def encode_with_meta(self, item: Any) -> tuple[list[int], dict[str, Any]]:
        """Global IDs of one image and its view metadata (what `uti encode` records)."""
        from ..image.codec import to_ids

        encoded = self.codec.encode(self._rgb(item))
        return to_ids(encoded, self.space), encoded.meta

    def encode_batch(self, items: list[Any]) -> list[list[int]]:
        """All views of all `items` go through the tower together (`ImageCodec.encode_batch`: the codes of each
        item equal encoding it alone)."""
        from ..image.codec import to_ids

        return [to_ids(enc, self.space) for enc in self.codec.encode_batch([self._rgb(x) for x in items])]

    def encode_stream(self, items: Any, workers: int = 1) -> Any:
        """`((ids, meta), None)` or `(None, error)` per item, in order; the views of many items share tower
        forwards of `batch_size` views (`ImageCodec.encode_stream`: codes equal encoding each alone)."""
        from ..image.codec import to_ids

        for enc, err in self.codec.encode_stream(items, load=self._rgb, workers=workers):
            yield (None, err) if err is not None else ((to_ids(enc, self.space), enc.meta), None)

    @property
    def codebook(self) -> Any:
        """The space's codebook (no tower needed), refused unless its hash is the one the space pins."""
        if self._codebook is None:
            from ..image.vq import Codebook

            self.space.require_assets("codebook")
            cb = Codebook.load(self.space.asset("codebook"))
            self.space.check_asset("codebook", cb.content_hash())  # the one pin check (uti.assets.check_pin)
            self._codebook = cb
        return self._codebook

    def decode_block(self, ids: list[int]) -> dict[str, Any]:
        """{"codes": (V, P), "features": (V, P, D), "kind", "views", "grid"[, "lon", "lat"]} (see `decode_codes`)."""
        from ..image.codec import decode_codes, from_ids
        from ..image.layout import Layout

        codebook = self.codebook  # its pin is checked before the IDs are used
        encoded = from_ids(ids, self.space)
        dec = decode_codes(encoded.codes, codebook, Layout.from_abi(self.section["layout"]), token_grid(self.section))
        return {"codes": encoded.codes, **dec}

    def decode_to_file(self, ids: list[int], out: str | None, meta: ImageMeta,
                       where: str = "document") -> dict[str, Any]:
        """Decode an image document (its meta must agree with the space and the IDs) to a summary; with `out`,
        features/codes/lon/lat are saved there as safetensors."""
        import json

        from ..image.codec import from_ids
        from ..io import atomic_save_safetensors

        if meta.layout is not None and meta.layout != self.section["layout"]:
            raise InputError(f"{where}: meta.layout differs from the image layout of space {self.space.name!r}; "
                             "the document was edited or made with another layout")
        encoded = from_ids(ids, self.space)  # checked before anything is written to `out`
        found = {"kind": encoded.meta["kind"], "grid": list(encoded.meta["grid"]), "views": int(encoded.codes.shape[0])}
        for key, value in found.items():
            have = getattr(meta, key)
            have = len(have) if key == "views" and have is not None else have
            if have not in (None, value):
                raise InputError(f"{where}: meta.{key} says {have}, but the IDs decode to {value}; "
                                 "the document was edited")
        dec = self.decode_block(ids)
        result = {"modality": self.modality, "kind": dec["kind"], "num_views": len(dec["views"]), "grid": dec["grid"],
                  "feature_dim": self.codebook.dim, "views": dec["views"]}
        if out:
            tensors = {"features": dec["features"], "codes": dec["codes"]}
            tensors.update({k: dec[k].float() for k in ("lon", "lat") if k in dec})
            atomic_save_safetensors(out, tensors, {"token_space_hash": self.space.hash,
                                                   "views": json.dumps(dec["views"])})
            result["out"] = str(out)
        return result

    def block_grammar(self) -> ImageGrammar:
        sid, r = self.space.special_id, self.space.ranges["image"]
        return ImageGrammar([sid(v) for v in _view_names(self.section)], codes_per_view(self.section),
                            (r.start, r.stop), sid(self.markers()[1]))

    # --- token LM hooks (see `ModalityCodec`) ---------------------------------------------------------
    def default_new_tokens(self) -> int:
        """Every view of the layout, each its marker and P codes, then `<|image_end|>` (tiny: 9 x 17 + 1 = 154)."""
        return len(_view_names(self.section)) * (1 + codes_per_view(self.section)) + 1

    def summary(self, segment: Any, out: Path | None = None) -> dict[str, Any]:
        """Views and the shape of the codebook features (V, P, D) of a decoded image block."""
        value = segment.value
        return {"views": int(value["codes"].shape[0]), "features_shape": list(value["features"].shape)}

    @classmethod
    def vector_ranges(cls, section: dict[str, Any]) -> list[str]:
        return ["image"]

    def code_vectors(self) -> dict[str, Any]:
        """{"image": the codebook vectors (K, Dc)}, the codebook pin-checked (`codebook`)."""
        return {"image": self.codebook.embed}
