"""The image codec: image -> E2P views -> SigLIP patch features -> codebook codes, and back to features.

Encode: a 2:1 image is a panorama and becomes `layout.num_views` views (global view first, then tiles);
any other image is one plain view. Every view gives P = g x g patch codes (g = image_size / patch_size), or,
when the ABI sets `token_grid: [h, w]`, P = h x w codes of its patch features average-pooled to that grid
before quantisation (`pool_features`: the token budget, e.g. SigLIP2 SO400M/14 at 384 px: 27x27 = 729,
13x13 = 169 or 9x9 = 81 per view). The codebook must then be fit on pooled features (`uti codebook fit`
pools as the space says).

ID stream (`to_ids`), strictly parsed back by `from_ids`::

    <|image_start|> <|view_global|> c_0 .. c_{P-1} <|view_0|> c .. <|view_{n-1}|> c .. <|image_end|>

A plain image is ``<|image_start|> <|view_global|> P codes <|image_end|>`` (``<|view_0|>`` when the
layout has no global view). Codes are mapped to global
IDs with ``space.ranges["image"]``.

Meta records the tower's `compute_dtype` (see `uti.dtypes`: float32 gives the space's reference codes).

Decode gives the codebook vectors of every patch (V, P, D) and the view geometry: per view kind, yaw,
pitch and fov (degrees), and per-patch longitude/latitude (V, g, g) for panoramas.

The image ABI section (`image_abi_section`) pins everything that changes what a code means: layout,
E2P antialiasing, tower identity (incl. weights hash), feature layer, image and patch size, and the
codebook (hash, size, dim, metric).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import specials as S
from ..codec import Encoded
from ..config import from_dict
from ..dtypes import dtype_name
from ..space import identity_diff
from ..errors import (
    ConfigError,
    HashMismatchError,
    InputError,
    MissingAssetError,
    SpaceError,
    TokenRangeError,
)
from .e2p import is_panorama, render_plain, render_views, view_geometry
from .layout import Layout
from .load import load_image
from .pool import canonical_token_grid, check_fit_grid, pool_features
from .vision import VisionTower
from .vq import Codebook

__all__ = ["IMAGE_EXTENSIONS", "ImageCodec", "ImageConfig", "decode_codes", "from_ids", "image_abi_section", "to_ids"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")


@dataclass
class ImageConfig:
    """The `image:` section of a space config: the E2P layout, its antialiasing and the tower's feature layer."""

    layout: dict[str, Any] = field(default_factory=dict)  # Layout fields (fov, overlap, pitches, tile_size, ...)
    antialias: int = 1
    feature_layer: int = -1
    token_grid: list[int] | None = None  # [h, w]: pool each view's patch features to this grid (None: no pooling)

    def __post_init__(self) -> None:
        if not isinstance(self.antialias, int) or not 1 <= self.antialias <= 8:
            raise ConfigError(f"image.antialias must be an integer in [1, 8], got {self.antialias!r}")
        grid = self.token_grid
        if grid is not None and not (isinstance(grid, (list, tuple)) and len(grid) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in grid)):
            raise ConfigError(f"image.token_grid must be two positive integers [h, w], got {str(grid)[:60]}")


def image_abi_section(section_cfg: dict[str, Any], assets: dict[str, Path | str]) -> dict[str, Any]:
    """The space's `abi["image"]`, built from an `ImageConfig` dict and the (resolved) assets.

    Loads the tower and the codebook to pin their content hashes; missing assets raise MissingAssetError.
    """
    cfg = from_dict(ImageConfig, section_cfg, where="image")
    layout = Layout(**cfg.layout) if cfg.layout else Layout()
    missing = [k for k in ("vision_tower", "codebook") if k not in assets]
    if missing:
        raise MissingAssetError(f"an image section needs asset(s) {', '.join(missing)}; add them under `assets`")
    if not Path(assets["codebook"]).is_file():
        raise MissingAssetError(f"codebook {assets['codebook']} not found; fit one with `uti codebook fit`")
    tower = VisionTower.from_pretrained(assets["vision_tower"], feature_layer=cfg.feature_layer)
    section = _section(layout, cfg.antialias, tower, Codebook.load(assets["codebook"]), cfg.token_grid)
    check_fit_grid(Path(assets["codebook"]), section.get("token_grid"))
    return section


def _section(layout: Layout, antialias: int, tower: VisionTower, codebook: Codebook,
             token_grid: Sequence[int] | None = None) -> dict[str, Any]:
    if codebook.dim != tower.hidden_size:
        raise ConfigError(f"codebook dim {codebook.dim} != tower hidden size {tower.hidden_size}; re-fit the codebook")
    tower_abi = tower.abi()
    pooled = canonical_token_grid(tower.grid, token_grid)
    return {
        "layout": layout.abi(),
        "antialias": antialias,
        "tower": tower_abi,
        "feature_layer": tower.feature_layer,
        "image_size": tower.image_size,
        "patch_size": tower.patch_size,
        "grid": [tower.grid, tower.grid],
        **({"token_grid": pooled} if pooled else {}),  # absent = no pooling: such spaces keep their hash
        "tokens_per_view": pooled[0] * pooled[1] if pooled else tower.num_patches,
        "codebook": codebook.abi(),
        "codebook_size": codebook.size,
    }


class ImageCodec:
    """Images <-> local codes (V, P) through E2P views, a vision tower and a codebook (see module doc)."""

    modality = "image"
    num_codebooks = 1

    def __init__(self, tower: VisionTower, codebook: Codebook, layout: Layout, antialias: int = 1,
                 token_grid: Sequence[int] | None = None) -> None:
        self.tower, self.layout, self.antialias = tower, layout, antialias
        self.codebook = codebook.to(tower.device)
        self._abi = _section(layout, antialias, tower, codebook, token_grid)
        self.grid = self._abi.get("token_grid", self._abi["grid"])  # codes per view side [h, w]

    @classmethod
    def from_space(cls, space: Any, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   batch_size: int = 16) -> ImageCodec:
        """The codec of `space`; its assets must match the hashes and identity pinned in `space.abi["image"]`."""
        if "image" not in space.abi:
            raise ConfigError(f"token space {space.name!r} has no image section; use a space with an image codec")
        want = space.abi["image"]
        missing = [k for k in ("layout", "antialias", "feature_layer", "tower", "codebook") if k not in want]
        if missing:
            raise SpaceError(f"image section of space {space.name!r} lacks {', '.join(missing)}; rebuild the space")
        space.require_assets("vision_tower", "codebook")
        tower = VisionTower.from_pretrained(space.asset("vision_tower"), feature_layer=want["feature_layer"],
                                            dtype=dtype, device=device, batch_size=batch_size)
        codebook = Codebook.load(space.asset("codebook"))
        space.check_asset("vision_tower", tower.weights_hash)  # the one pin check (uti.assets.check_pin)
        space.check_asset("codebook", codebook.content_hash())
        codec = cls(tower, codebook, Layout.from_abi(want["layout"]), want["antialias"], want.get("token_grid"))
        _check_same(want, codec.abi(), space)
        return codec

    @property
    def codebook_size(self) -> int:
        return self.codebook.size

    @property
    def tokens_per_view(self) -> int:
        return self._abi["tokens_per_view"]

    def abi(self) -> dict[str, Any]:
        return dict(self._abi)

    # --- encode: the three stages are public so benchmarks can time them separately ----------------------

    def render(self, img: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """(H, W, 3) uint8 -> views (V, S, S, 3) uint8 and their metadata."""
        h, w = img.shape[:2]
        if min(h, w) < self.tower.patch_size:
            raise InputError(f"image is {w}x{h}, smaller than one {self.tower.patch_size}-pixel patch; use a larger image")
        if is_panorama(h, w):
            views = render_views(img, self.layout, antialias=self.antialias)
            geo = [{"kind": v.kind, "index": v.index, "yaw": v.yaw, "pitch": v.pitch, "fov": v.fov}
                   for v in self.layout.views()]
            kind = "panorama"
        else:
            views = render_plain(img, self.layout.tile_size)[None]
            geo, kind = [{"kind": "plain", "index": 0, "yaw": None, "pitch": None, "fov": None}], "plain"
        meta = {"kind": kind, "input_size": [int(h), int(w)], "layout": self.layout.abi(), "views": geo,
                "grid": list(self.grid), "compute_dtype": dtype_name(self.tower.dtype)}
        return views, meta

    def quantize(self, feats: torch.Tensor) -> torch.Tensor:
        """Patch features (V, g*g, D) -> codes (V, P) long, on the CPU, pooled to the token grid first
        (`pool_features`; P = h*w, or g*g with no pooling)."""
        pooled = pool_features(feats, self._abi["grid"], self._abi.get("token_grid"))
        return self.codebook.quantize(pooled).cpu()

    def encode(self, x: np.ndarray | str | Path) -> Encoded:
        """An image (file path or (H, W, 3) uint8 RGB array) -> Encoded(codes (V, P), meta)."""
        views, meta = self.render(_image(x))
        return Encoded(self.quantize(self.tower.encode(views)), meta)

    def encode_batch(self, images: Sequence[np.ndarray | str | Path]) -> list[Encoded]:
        """Many images -> one Encoded each, the views of all of them through the tower together.

        The views are concatenated in image order and run `tower.batch_size` at a time, so a forward may hold
        the views of several images, or part of one. Each image's codes equal `encode` of it alone: SigLIP
        sees fixed-size views with no padding and attends only within a view, and this is checked numerically
        (tests/test_batch_invariance.py), including batch sizes that split an image across forwards.
        """
        rendered = [self.render(_image(x)) for x in images]
        if not rendered:
            return []
        codes = self.quantize(self.tower.encode(np.concatenate([v for v, _ in rendered])))  # (sum V, P)
        out, at = [], 0
        for views, meta in rendered:
            out.append(Encoded(codes[at:at + len(views)].clone(), meta))
            at += len(views)
        return out

    def encode_stream(self, items: Iterable[Any], load: Callable[[Any], np.ndarray] | None = None,
                      workers: int = 1) -> Iterator[tuple[Encoded | None, Exception | None]]:
        """`(Encoded, None)` or `(None, error)` per item, in order, with views of many images in each forward.

        `load(item)` gives the (H, W, 3) uint8 image (default: a path is read, an array checked); loading
        and E2P run in `workers` threads while the tower runs, and the views queue up into forwards of
        exactly `tower.batch_size` views (the last one shorter), whatever image each view comes from. A
        file that fails to load or render fails alone. Codes equal `encode` of each image alone (see
        `uti.image.vision` on batch invariance; tests/test_view_batching.py).
        """
        return _stream(self, items, load or _image, workers)

    def decode(self, encoded: Encoded) -> dict[str, Any]:
        """Codes (V, P) -> codebook features and geometry; see `decode_codes`."""
        return decode_codes(encoded.codes, self.codebook, self.layout, self.grid)


# --- batch encoding across images (`ImageCodec.encode_stream`) ------------------------------------------


@dataclass
class _Pending:
    """An image in the stream: its meta and code rows so far, or the error that made it fail."""

    meta: dict[str, Any] | None
    views: int = 0
    codes: list[torch.Tensor] = field(default_factory=list)  # (v, P) rows in view order
    error: Exception | None = None

    @property
    def complete(self) -> bool:
        return self.error is not None or sum(len(c) for c in self.codes) == self.views


def _stream(codec: ImageCodec, items: Iterable[Any], load: Callable[[Any], np.ndarray], workers: int
            ) -> Iterator[tuple[Encoded | None, Exception | None]]:
    """The pipeline of `encode_stream`: rendered images -> a queue of views -> forwards of batch_size views ->
    code rows handed back to their images -> finished images yielded in input order."""
    from ..batch import ordered_map

    size = codec.tower.batch_size
    order: deque[_Pending] = deque()  # images not yet yielded, in input order
    queue: deque[tuple[_Pending, np.ndarray]] = deque()  # (image, its views not yet run (v, S, S, 3))
    queued = 0
    rendered = ordered_map(lambda x: codec.render(load(x)), items, workers, ahead=size + 2 * workers)
    for result, err in rendered:
        if err is not None:
            order.append(_Pending(None, error=err))
        else:
            views, meta = result
            order.append(_Pending(meta, len(views)))
            queue.append((order[-1], views))
            queued += len(views)
        while queued >= size:
            queued -= _run_views(codec, queue, size)
        yield from _finished(order)
    while queued:
        queued -= _run_views(codec, queue, size)
    yield from _finished(order)


def _run_views(codec: ImageCodec, queue: deque[tuple[_Pending, np.ndarray]], size: int) -> int:
    """Run the first `size` queued views (or all, when fewer) through tower and VQ, append each image's code
    rows to it; the number of views run. A tower failure fails the images of that forward, not the stream."""
    taken: list[tuple[_Pending, np.ndarray]] = []
    n = 0
    while queue and n < size:
        pending, views = queue.popleft()
        if len(views) > size - n:  # split the image: the rest waits for the next forward
            queue.appendleft((pending, views[size - n:]))
            views = views[:size - n]
        taken.append((pending, views))
        n += len(views)
    try:
        codes = codec.quantize(codec.tower.encode(np.concatenate([v for _, v in taken])))  # (n, P)
    except Exception as err:  # noqa: BLE001 - e.g. out of memory: those images fail, the batch goes on
        for pending, _ in taken:
            pending.error = pending.error or err
        return n
    at = 0
    for pending, views in taken:
        pending.codes.append(codes[at:at + len(views)])
        at += len(views)
    return n


def _finished(order: deque[_Pending]) -> Iterator[tuple[Encoded | None, Exception | None]]:
    """Pop and yield the finished images at the front of `order` (input order is kept)."""
    while order and order[0].complete:
        pending = order.popleft()
        if pending.error is not None:
            yield None, pending.error
        else:
            yield Encoded(torch.cat(pending.codes).clone(), pending.meta), None


def decode_codes(codes: Any, codebook: Codebook, layout: Layout, grid: int | Sequence[int]) -> dict[str, Any]:
    """Codes (V, P) -> {"features": (V, P, D) float32, "kind", "views": [...], "grid": [h, w], "lon"/"lat"}.

    `grid` is the token grid (g for g x g, or [h, w]; a pooled space's pooled grid). Needs no vision tower.
    lon/lat are (V, h, w) degrees of the code cells' centres, given for panoramas only (a plain view has no
    sphere geometry).
    """
    h, w = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
    codes = torch.as_tensor(codes)
    if codes.ndim != 2 or codes.shape[1] != h * w:
        raise TokenRangeError(f"image codes must be (views, {h * w}), got {tuple(codes.shape)}")
    out: dict[str, Any] = {"features": codebook.lookup(codes).cpu(), "grid": [h, w]}
    if codes.shape[0] == layout.num_views:
        lon, lat = view_geometry(layout, (h, w))
        views = [{"kind": v.kind, "index": v.index, "yaw": v.yaw, "pitch": v.pitch, "fov": v.fov}
                 for v in layout.views()]
        out.update(kind="panorama", views=views, lon=torch.from_numpy(lon), lat=torch.from_numpy(lat))
    elif codes.shape[0] == 1:
        out.update(kind="plain", views=[{"kind": "plain", "index": 0, "yaw": None, "pitch": None, "fov": None}])
    else:
        raise TokenRangeError(f"{codes.shape[0]} views; expected 1 (plain) or {layout.num_views} (panorama)")
    return out


def _image(x: Any) -> np.ndarray:
    """An image path (loaded) or an (H, W, 3) uint8 RGB array (checked)."""
    return load_image(x) if isinstance(x, (str, Path)) else _check_array(x)


def _check_array(img: Any) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise InputError(f"expected an (H, W, 3) uint8 RGB array or an image path, got {desc}; use uti.image.load_image")
    return img


def _check_same(want: dict[str, Any], have: dict[str, Any], space: Any) -> None:
    """Refuse assets whose identity differs from what the space pinned (names every differing field).

    The tower's `name` is informational (a hub id and a local copy of it differ only there); its weights
    hash and shapes are the identity, so the name is not compared. Unpinned (null) fields accept any value.
    """
    diff = identity_diff(want, have, ignore=frozenset({"name"}))
    if diff:
        raise HashMismatchError(f"image assets do not match space {space.name!r} ({space.path}): {'; '.join(diff)}; "
                                "restore the assets or rebuild the space")


# --- global IDs -----------------------------------------------------------------------------------------


def _markers(space: Any, num_views: int, layout: Layout) -> list[int]:
    """View marker IDs for a stream of `num_views` views (1 = plain image, else the layout's views)."""
    if num_views == 1 and num_views != layout.num_views:  # plain image: the first view marker of the layout
        return [space.special_id(S.VIEW_GLOBAL if layout.global_view else "<|view_0|>")]
    names = ([S.VIEW_GLOBAL] if layout.global_view else []) + [f"<|view_{i}|>" for i in range(layout.num_tiles)]
    return [space.special_id(n) for n in names]


def to_ids(encoded: Encoded, space: Any) -> list[int]:
    """Encoded image -> global IDs: image start, then per view its marker and P codes, then image end."""
    codes = torch.as_tensor(encoded.codes)
    layout = Layout.from_abi(space.abi["image"]["layout"])
    ids = [space.special_id(S.IMAGE_START)]
    for marker, row in zip(_markers(space, codes.shape[0], layout), codes.tolist()):
        ids.append(marker)
        ids.extend(space.ranges["image"].to_global(row))
    ids.append(space.special_id(S.IMAGE_END))
    return ids


def from_ids(ids: Any, space: Any) -> Encoded:
    """Global IDs of one image (as `to_ids` writes them) -> Encoded codes (V, P); any deviation is an error."""
    ids = [int(i) for i in ids]
    section = space.abi["image"]
    layout, p = Layout.from_abi(section["layout"]), int(section["tokens_per_view"])
    start, end = space.special_id(S.IMAGE_START), space.special_id(S.IMAGE_END)
    if len(ids) < 2 or ids[0] != start or ids[-1] != end:
        raise TokenRangeError(f"an image stream must start with {S.IMAGE_START} and end with {S.IMAGE_END}")
    body = ids[1:-1]
    if len(body) % (p + 1):
        raise TokenRangeError(f"image stream has {len(body)} IDs inside its markers; expected views of 1 marker + {p} codes")
    num_views = len(body) // (p + 1)
    if num_views not in (1, layout.num_views):
        raise TokenRangeError(f"image stream has {num_views} views; expected 1 (plain) or {layout.num_views} (panorama)")
    expected = _markers(space, num_views, layout)
    rows = []
    for v in range(num_views):
        chunk = body[v * (p + 1):(v + 1) * (p + 1)]
        if chunk[0] != expected[v]:
            raise TokenRangeError(f"view {v} starts with ID {chunk[0]}; expected view marker ID {expected[v]}")
        rows.append(space.ranges["image"].to_local(chunk[1:]))
    codes = torch.tensor(rows, dtype=torch.long)  # (V, P)
    return Encoded(codes, {"kind": "plain" if num_views == 1 else "panorama",
                           "grid": section.get("token_grid", section["grid"])})
