"""The audio parts of the `uti` CLI: `uti audio convert-encodec` and the audio branch of encode/decode.

Kept here so `uti/cli.py` only dispatches; each function is a thin layer over `AudioCodec`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..cli_base import emit_json
from ..codec import Encoded
from ..document import EncodedDocument
from ..errors import InputError

__all__ = ["AUDIO_SUFFIXES", "audio", "audio_encoder", "decode_audio_doc", "encode_audio_doc", "is_audio_path"]

#: File suffixes `uti encode` treats as audio (anything libsndfile reads; unreadable files fail cleanly).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


def is_audio_path(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES


def audio_encoder(space, device: Any = "cpu", dtype: Any = None,
                  strict: bool = False) -> Callable[[str], tuple[list[int], dict[str, Any]]]:
    """`encode_one(path) -> (global IDs, meta)` for `uti.batch.run_batch`; the codec is loaded once, on
    `device` in `dtype` (default float32). `strict` is accepted for symmetry with images: audio files
    that need repairs are always refused."""
    import torch

    from .codec import AudioCodec

    codec = AudioCodec.from_space(space, device=device, dtype=dtype or torch.float32)

    def encode_one(path: str) -> tuple[list[int], dict[str, Any]]:
        enc = codec.encode_file(path)
        return codec.to_ids(enc), enc.meta

    return encode_one


def encode_audio_doc(space, path: Path, **run: Any) -> EncodedDocument:
    """The `uti encode FILE --json` document of one audio file (`run`: see `audio_encoder`)."""
    ids, meta = audio_encoder(space, **run)(str(path))
    return EncodedDocument.for_space(space, "audio", ids, {**meta, "source": Path(path).name})


def decode_audio_doc(space, doc: EncodedDocument, out: str | None) -> dict:
    """Decode an audio document to the waveform file `out` (atomic write, chunk by chunk).

    The document's meta must agree with the codec (sample rate, channels, frames); `num_samples` trims the end.
    """
    from .codec import AudioCodec

    if not out:
        raise InputError("decoding audio needs --out FILE (.wav, .flac or .ogg)")
    codec = AudioCodec.from_space(space)
    meta = doc.typed_meta
    enc: Encoded = codec.from_ids(doc.ids, {} if meta.num_samples is None else {"num_samples": meta.num_samples})
    found = {"sample_rate": codec.sample_rate, "channels": codec.channels, "frames": int(enc.codes.shape[1])}
    for key, value in found.items():
        if getattr(meta, key) not in (None, value):
            raise InputError(f"{doc.where}: meta.{key} is {getattr(meta, key)}, but the IDs and the space's codec "
                             f"give {value}; the document was edited or belongs to another codec")
    n = codec.decode_to_file(enc, out)
    return {"modality": "audio", "out": str(out), "sample_rate": codec.sample_rate, "num_samples": n,
            "seconds": round(n / codec.sample_rate, 3), "frames": int(enc.codes.shape[1])}


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
