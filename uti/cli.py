"""The `uti` command line: token spaces, encoding and decoding.

    uti space show tiny            ranges, specials and hash of a space
    uti space verify token_spaces/*/token_space.json
    uti space build config.yaml --out token_spaces/mine
    uti encode --text "hello"      text -> IDs (images and audio: give a file)
    uti decode tokens.json         IDs -> text (or image features / waveform)

Every command exits 0 on success, 1 when a check fails (`space verify`), 2 on bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .cli_base import DEVICE_OPTION, DTYPE_OPTION, ErrorHandlingGroup, emit_json, parse_device, parse_dtype
from .errors import InputError, UTIError
from .io import atomic_write_json
from .space import DEFAULT_SPACE, TokenSpace, load_ids_json

__all__ = ["main"]

SPACE_OPTION = click.option("--space", "space_ref", default=DEFAULT_SPACE, show_default=True,
                            help="Token space: a shipped name (see `uti space show`) or a path to token_space.json.")


@click.group(cls=ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="uti-toolkit")
def main() -> None:
    """Unified Token Interface: text, panoramas and audio as IDs of one hashed token space."""


@main.group()
def space() -> None:
    """Show, verify and build token spaces (the model ABI)."""


@space.command("show")
@click.argument("ref", default=DEFAULT_SPACE)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def space_show(ref: str, as_json: bool) -> None:
    """Show the ID ranges, specials and hash of space REF (a name or a path)."""
    info = TokenSpace.load(ref).describe()
    if as_json:
        emit_json(info)
        return
    click.echo(f"{info['name']}  hash {info['hash']}  total {info['total']}  ({info['path']})")
    for name, (start, stop) in info["ranges"].items():
        click.echo(f"  {name:<10} [{start:>7}, {stop:>7})  {stop - start:>7} IDs")
    click.echo(f"  specials: {', '.join(f'{s}={i}' for s, i in info['specials'].items())}")


@space.command("verify")
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result per file.")
def space_verify(paths: tuple[str, ...], as_json: bool) -> None:
    """Recompute hash and ranges of each space file; exit 1 if any file is not intact."""
    bad = 0
    for ref in paths:
        try:
            sp = TokenSpace.load(ref)
            result = {"path": ref, "ok": True, "name": sp.name, "hash": sp.hash}
        except UTIError as err:
            bad += 1
            result = {"path": ref, "ok": False, "error": str(err)}
        if as_json:
            emit_json(result)
        else:
            click.echo(f"ok   {ref}  {result['hash']}" if result["ok"] else f"BAD  {ref}: {result['error']}")
    if bad:
        raise SystemExit(1)


@space.command("build")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(), help="Output token_space.json (or its folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the built space's summary as JSON.")
def space_build(config: str, out: str, as_json: bool) -> None:
    """Build a token space from CONFIG (YAML or JSON), pinning local assets by content hash."""
    from .build import build_space_file

    sp = build_space_file(config, out)
    if as_json:
        emit_json(sp.describe())
    else:
        click.echo(f"wrote {sp.path}  hash {sp.hash}  total {sp.total}")


def _header(sp: TokenSpace, modality: str) -> dict:
    return {"token_space": {"name": sp.name, "hash": sp.hash}, "modality": modality}


def encode_text(sp: TokenSpace, text: str) -> dict:
    """`uti encode --text` document."""
    from .text import TextCodec

    ids = TextCodec.from_space(sp).encode(text)
    return {**_header(sp, "text"), "ids": ids, "meta": {"chars": len(text)}}


@main.command()
@click.argument("path", required=False, type=click.Path())
@click.option("--text", help="Encode this text instead of a file.")
@SPACE_OPTION
@click.option("--out", type=click.Path(), help="Write the JSON document here (atomically) instead of stdout; "
              "batch mode: the folder of shards.")
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON document.")
@click.option("--part", default="0/1", show_default=True, help="Batch mode: encode part i of n (round-robin).")
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(1), help="Batch mode: inputs per shard.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Batch mode: files encoded concurrently (threads; overlaps decoding/E2P with a GPU tower).")
@DEVICE_OPTION
@DTYPE_OPTION
@click.option("--strict", is_flag=True, help="Refuse inputs the decoder had to repair (e.g. a corrupt JPEG).")
def encode(path: str | None, text: str | None, space_ref: str, out: str | None, as_json: bool, part: str,
           shard_size: int, workers: int, device: str, dtype: str, strict: bool) -> None:
    """Encode text (--text) or a file (image, audio) into token-space IDs.

    Batch mode: PATH is a folder or a .jsonl manifest and --out a folder of sharded safetensors.
    """
    if (path is None) == (text is None):
        raise InputError("give exactly one of PATH or --text")
    sp = TokenSpace.load(space_ref)
    run = {"device": parse_device(device), "dtype": parse_dtype(dtype), "strict": strict}  # codec placement
    if path is not None and (Path(path).is_dir() or path.endswith(".jsonl")):
        return encode_batch(sp, Path(path), out, part, shard_size, as_json, workers, **run)
    doc = encode_text(sp, text) if text is not None else encode_file(sp, Path(path), **run)
    _emit(doc, out, as_json)


def encode_batch(sp: TokenSpace, source: Path, out: str | None, part: str, shard_size: int, as_json: bool,
                 workers: int = 1, **run: Any) -> None:
    """Batch mode of `uti encode`: inputs -> shards in OUT, a progress bar and a summary (see uti.batch)."""
    from .audio.cli import AUDIO_SUFFIXES, audio_encoder
    from .batch import list_inputs, parse_part, run_batch
    from .image.codec import IMAGE_EXTENSIONS
    from .image.commands import image_encoder

    if not out:
        raise InputError("batch mode needs --out FOLDER for the shards")
    encoders: dict[str, object] = {}

    def encode_one(p: str) -> tuple[list[int], dict]:
        kind = "audio" if Path(p).suffix.lower() in AUDIO_SUFFIXES else "image"
        if kind not in encoders:
            encoders[kind] = audio_encoder(sp, **run) if kind == "audio" else image_encoder(sp, **run)
        return encoders[kind](p)  # type: ignore[operator]

    paths = list_inputs(source, IMAGE_EXTENSIONS + AUDIO_SUFFIXES)
    summary = run_batch(paths, encode_one, out, sp, shard_size=shard_size, part=parse_part(part), workers=workers)
    if as_json:
        emit_json(summary.to_json())
        return
    click.echo(f"{summary.ok}/{summary.total} encoded, {len(summary.failed)} failed; shards written "
               f"{len(summary.written)}, skipped (done) {len(summary.skipped)} -> {out}")
    for f in summary.failed:
        click.echo(f"  failed {f['path']}: {f['reason']}")


def encode_file(sp: TokenSpace, path: Path, **run: Any) -> dict:
    """Encode one file by its modality (image or audio); `run`: device, dtype, strict (see `uti encode`)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    from .audio.cli import encode_audio_doc, is_audio_path

    if is_audio_path(path):
        return encode_audio_doc(sp, path, **run)
    from .image.commands import encode_image, is_image_file

    if is_image_file(path):
        ids, meta = encode_image(sp, path, **run)
        return {**_header(sp, "image"), "ids": ids, "meta": meta}
    raise InputError(f"{path}: unsupported file type {path.suffix!r}")


def _emit(doc: dict, out: str | None, as_json: bool) -> None:
    if out:
        atomic_write_json(out, doc)
    if as_json or not out:
        if as_json:
            emit_json(doc)
        else:
            ids = doc["ids"]
            click.echo(f"{doc['modality']}: {len(ids)} IDs in space {doc['token_space']['name']} "
                       f"({doc['token_space']['hash'][:12]})")
            click.echo(" ".join(map(str, ids)))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@SPACE_OPTION
@click.option("--out", type=click.Path(), help="Where to write decoded media (audio: a .wav; images: .safetensors).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON result.")
def decode(file: str, space_ref: str, out: str | None, as_json: bool) -> None:
    """Decode an `uti encode --json` document back to text (or image features / a waveform)."""
    doc = load_ids_json(file)
    sp = TokenSpace.load(doc["token_space"].get("name", space_ref) if space_ref == DEFAULT_SPACE else space_ref)
    sp.check_hash(doc["token_space"].get("hash"), file)
    result = decode_doc(sp, doc, out)
    if as_json:
        emit_json(result)
    elif "text" in result:
        click.echo(result["text"], nl=False)
        click.echo()
    else:
        click.echo(" ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, (list, dict))))


def decode_doc(sp: TokenSpace, doc: dict, out: str | None) -> dict:
    """Decode a document by modality."""
    from .text import TextCodec

    if doc["modality"] == "text":
        return {"modality": "text", "text": TextCodec.from_space(sp).decode(doc["ids"])}
    if doc["modality"] == "audio":
        from .audio.cli import decode_audio_doc

        return decode_audio_doc(sp, doc, out)
    if doc["modality"] == "image":
        from .image.commands import decode_image

        return decode_image(sp, doc["ids"], out)
    raise InputError(f"cannot decode modality {doc['modality']!r}; expected text, image or audio")


from .audio.cli import audio as _audio_group  # noqa: E402  (`uti audio ...`)

main.add_command(_audio_group)

from .image.commands import codebook as _codebook_group  # noqa: E402  (`uti codebook fit`)

main.add_command(_codebook_group)

from .image.show import show_command as _show_command  # noqa: E402  (`uti show panorama.jpg --out views.png`)

main.add_command(_show_command)
