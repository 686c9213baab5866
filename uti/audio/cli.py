"""`uti audio convert-encodec`. Encoding and decoding audio go through `uti.Tokenizer` and the audio codec
adapter (`uti.modalities.audio`)."""

from __future__ import annotations

import click

from ..cli_base import emit_json

__all__ = ["audio"]


@click.group()
def audio() -> None:
    """Audio codec tools (EnCodec checkpoint conversion)."""


@audio.command("convert-encodec")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New HF-format folder to write.")
@click.option("--preset", default="encodec_24khz", show_default=True,
              type=click.Choice(["encodec_24khz", "encodec_48khz"]), help="Architecture of the checkpoint.")
@click.option("--config", "config_path", type=click.Path(exists=True),
              help="An HF EnCodec config.json (or its folder) for other architectures; overrides --preset.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON result.")
def convert_encodec(checkpoint: str, out: str, preset: str, config_path: str | None, as_json: bool) -> None:
    """Convert an original EnCodec CHECKPOINT.th (facebookresearch/encodec) to an HF-format folder that
    transformers' EncodecModel and `uti` load. Read with torch.load(weights_only=True): no pickle code runs."""
    from ..hashing import hash_safetensors
    from .convert import convert_encodec_checkpoint

    folder = convert_encodec_checkpoint(checkpoint, out, preset=preset, config_path=config_path)
    result = {"out": str(folder), "weights_hash": hash_safetensors(folder)}
    if as_json:
        emit_json(result)
    else:
        click.echo(f"wrote {folder}  weights_hash {result['weights_hash']}")
