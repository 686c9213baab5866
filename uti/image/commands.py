"""The image parts of the `uti` CLI: encode/decode documents and `uti codebook fit` (thin over the library)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import click

from ..document import EncodedDocument
from ..errors import InputError
from ..io import atomic_save_safetensors
from .codec import IMAGE_EXTENSIONS, ImageCodec, decode_codes, from_ids, to_ids
from .layout import Layout
from .load import load_image
from .vq import Codebook

__all__ = ["codebook", "decode_image", "decode_image_doc", "encode_image", "image_encoder", "is_image_file"]

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def is_image_file(path: Path) -> bool:
    """An image by extension, or by its first bytes (JPEG, PNG, GIF, BMP, TIFF, WebP)."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        head = path.open("rb").read(12)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


@lru_cache(maxsize=4)
def _codec(space: Any, device: Any = "cpu", dtype: Any = None) -> ImageCodec:
    import torch

    return ImageCodec.from_space(space, device=device, dtype=dtype or torch.float32)


def image_encoder(space: Any, device: Any = "cpu", dtype: Any = None,
                  strict: bool = False) -> Callable[[str], tuple[list[int], dict[str, Any]]]:
    """`path -> (global ids, meta)` with the space's image codec loaded once (for batch mode).

    The codec is built now, in the caller's thread: building it lazily inside batch worker threads races.
    """
    _codec(space, device, dtype)
    return lambda path: encode_image(space, Path(path), device, dtype, strict)


def encode_image(space: Any, path: Path, device: Any = "cpu", dtype: Any = None,
                 strict: bool = False) -> tuple[list[int], dict[str, Any]]:
    """One image file -> global IDs (wrapped in image/view specials) and its metadata.

    The tower runs on `device` in `dtype` (default float32); `strict` refuses a JPEG the decoder repaired.
    """
    codec = _codec(space, device, dtype)
    encoded = codec.encode(load_image(path, strict=strict))
    return to_ids(encoded, space), encoded.meta


def decode_image(space: Any, ids: list[int], out: str | None) -> dict[str, Any]:
    """IDs of one image -> summary dict; with `out`, features/codes/lon/lat are saved there as safetensors."""
    space.require_assets("codebook")
    section = space.abi["image"]
    cb = Codebook.load(space.asset("codebook"))
    space.check_asset("codebook", cb.content_hash())  # the one pin check (uti.assets.check_pin)
    encoded = from_ids(ids, space)
    dec = decode_codes(encoded.codes, cb, Layout.from_abi(section["layout"]), int(section["grid"][0]))
    result = {"modality": "image", "kind": dec["kind"], "num_views": len(dec["views"]), "grid": dec["grid"],
              "feature_dim": cb.dim, "views": dec["views"]}
    if out:
        tensors = {"features": dec["features"], "codes": encoded.codes}
        tensors.update({k: dec[k].float() for k in ("lon", "lat") if k in dec})
        import json

        atomic_save_safetensors(out, tensors, {"token_space_hash": space.hash, "views": json.dumps(dec["views"])})
        result["out"] = str(out)
    return result


def decode_image_doc(space: Any, doc: EncodedDocument, out: str | None) -> dict[str, Any]:
    """Decode an image document (see `decode_image`); its meta must agree with the space and the IDs."""
    meta = doc.typed_meta
    if meta.layout is not None and meta.layout != space.abi["image"]["layout"]:
        raise InputError(f"{doc.where}: meta.layout differs from the image layout of space {space.name!r}; "
                         "the document was edited or made with another layout")
    encoded = from_ids(doc.ids, space)  # checked before anything is written to `out`
    found = {"kind": encoded.meta["kind"], "grid": list(encoded.meta["grid"]), "views": int(encoded.codes.shape[0])}
    for key, value in found.items():
        have = getattr(meta, key)
        have = len(have) if key == "views" and have is not None else have
        if have not in (None, value):
            raise InputError(f"{doc.where}: meta.{key} says {have}, but the IDs decode to {value}; "
                             "the document was edited")
    return decode_image(space, doc.ids, out)


@click.group()
def codebook() -> None:
    """Fit and inspect image codebooks."""


@codebook.command("fit")
@click.option("--space", "space_ref", default="tiny", show_default=True,
              help="Token space whose vision tower, feature layer and layout are used.")
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of images.")
@click.option("--size", required=True, type=click.IntRange(1), help="Number of codes K.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output codebook.safetensors.")
@click.option("--held-out", default=0.25, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Fraction of images kept out of the fit for the health report.")
@click.option("--iters", default=20, show_default=True, type=click.IntRange(1), help="k-means iterations.")
@click.option("--metric", default="euclidean", show_default=True, type=click.Choice(["euclidean", "cosine"]),
              help="Nearest-code metric (see uti.image.vq).")
@click.option("--max-vectors", default=1_000_000, show_default=True, type=click.IntRange(1),
              help="Cap on fit vectors (random patches, spread evenly over images) to bound memory.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the k-means initialisation.")
@click.option("--json", "as_json", is_flag=True, help="Print the health report as JSON.")
def codebook_fit(space_ref: str, images: str, size: int, out: str, held_out: float, iters: int, metric: str,
                 max_vectors: int, seed: int, as_json: bool) -> None:
    """k-means codebook over patch features of IMAGES; writes OUT and OUT.report.json."""
    from ..cli_base import emit_json
    from ..space import TokenSpace
    from .fit import fit_codebook_on_images
    from .vision import VisionTower

    sp = TokenSpace.load(space_ref)
    if "image" not in sp.abi:
        raise InputError(f"space {sp.name!r} has no image section; pick a space with a vision tower")
    sp.require_assets("vision_tower")
    section = sp.abi["image"]
    tower = VisionTower.from_pretrained(sp.asset("vision_tower"), feature_layer=section["feature_layer"])
    result = fit_codebook_on_images(images, tower, Layout.from_abi(section["layout"]), size, out,
                                    antialias=section.get("antialias", 1), held_out=held_out, iters=iters,
                                    seed=seed, metric=metric, max_vectors=max_vectors)
    if as_json:
        emit_json(result.report)
        return
    r, h = result.report["fit"], result.report["held_out"]
    click.echo(f"wrote {out}  hash {result.report['hash']}  K={size}  fit: util {r['utilisation']:.2f} "
               f"ppl {r['perplexity']:.1f} dead {r['dead_codes']}")
    if h:
        click.echo(f"held-out ({result.report['held_out_images']} images): util {h['utilisation']:.2f} "
                   f"ppl {h['perplexity']:.1f} dead {h['dead_codes']}")
    if result.report["failed"]:
        click.echo(f"skipped {len(result.report['failed'])} unreadable image(s); see {out}.report.json")
