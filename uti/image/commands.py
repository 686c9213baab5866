"""`uti codebook fit` (thin over the library). Encoding and decoding images go through `uti.Tokenizer` and
the image codec adapter (`uti.modalities.image`)."""

from __future__ import annotations

import click

from ..errors import InputError
from .layout import Layout

__all__ = ["codebook"]


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
              help="Fraction of images kept out of the fit for the held-out health report.")
@click.option("--rotations", default=1, show_default=True, type=click.IntRange(1, 64),  # fit.MAX_ROTATIONS
              help="Training views: yaw rotations of each panorama, within one tile step (more views, new tiles).")
@click.option("--mirror", is_flag=True, help="Training views: also the left-right mirror of each image.")
@click.option("--iters", default=20, show_default=True, type=click.IntRange(1), help="k-means iterations.")
@click.option("--metric", default="euclidean", show_default=True, type=click.Choice(["euclidean", "cosine"]),
              help="Nearest-code metric (see uti.image.vq).")
@click.option("--max-vectors", default=1_000_000, show_default=True, type=click.IntRange(1),
              help="Cap on fit vectors (random patches, spread evenly over images) to bound memory.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the k-means initialisation.")
@click.option("--token-grid", default=None, help="Pool each view's patch features to HxW (e.g. 13x13) before fitting, "
              "for a space with that image.token_grid [default: the space's token_grid, else no pooling].")
@click.option("--json", "as_json", is_flag=True, help="Print the health report as JSON.")
def codebook_fit(space_ref: str, images: str, size: int, out: str, held_out: float, rotations: int, mirror: bool,
                 iters: int, metric: str, max_vectors: int, seed: int, token_grid: str | None, as_json: bool) -> None:
    """k-means codebook over patch features of IMAGES; writes OUT and OUT.report.json."""
    from ..cli_base import emit_json
    from ..space import TokenSpace
    from .pool import canonical_token_grid, parse_token_grid
    from .fit import fit_codebook_on_images
    from .vision import VisionTower

    sp = TokenSpace.load(space_ref)
    if "image" not in sp.abi:
        raise InputError(f"space {sp.name!r} has no image section; pick a space with a vision tower")
    sp.require_assets("vision_tower")
    section = sp.abi["image"]
    tower = VisionTower.from_pretrained(sp.asset("vision_tower"), feature_layer=section["feature_layer"])
    grid = canonical_token_grid(tower.grid, parse_token_grid(token_grid) if token_grid else section.get("token_grid"))
    result = fit_codebook_on_images(images, tower, Layout.from_abi(section["layout"]), size, out,
                                    antialias=section.get("antialias", 1), held_out=held_out, iters=iters,
                                    seed=seed, metric=metric, max_vectors=max_vectors,
                                    rotations=rotations, mirror=mirror,
                                    token_grid=grid)  # fit on what the space will quantise
    if as_json:
        emit_json(result.report)
        return
    r, h = result.report["fit"], result.report["held_out"]
    click.echo(f"wrote {out}  hash {result.report['hash']}  K={size}  fit: util {r['utilisation']:.2f} "
               f"ppl {r['perplexity']:.1f} dead {r['dead_codes']}")
    if h:
        click.echo(f"held-out ({result.report['held_out_images']} images, {h['num_vectors']} vectors): "
                   f"util {h['utilisation']:.2f} ppl {h['perplexity']:.1f} dead {h['dead_codes']} "
                   f"(uniform codes: util {h['uniform_utilisation']:.2f})")
    if result.report["failed"]:
        click.echo(f"skipped {len(result.report['failed'])} unreadable image(s); see {out}.report.json")
