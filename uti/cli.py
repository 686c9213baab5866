"""The `uti` command line: token spaces, encoding and decoding.

    uti space show tiny            ranges, specials and hash of a space
    uti space verify token_spaces/*/token_space.json
    uti space build config.yaml --out token_spaces/mine
    uti encode --text "hello"      text -> IDs (images, audio, any file a registered codec reads: give it)
    uti decode tokens.json         IDs -> text (or image features / waveform); `-` reads standard input

Every command is a thin call into `uti.Tokenizer` and the codec registry: nothing here names a modality.

Every command exits 0 on success, 1 when a check fails (`space verify`: a damaged space file or asset is a
failed check, reported as one `BAD` line) or some batch inputs fail, 2 on bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .cli_base import DEVICE_OPTION, DTYPE_OPTION, ErrorHandlingGroup, emit_json, parse_device, parse_dtype
from .document import EncodedDocument, document_space, read_document, write_document
from .errors import InputError, TokenRangeError, UTIError
from .space import DEFAULT_SPACE, TokenSpace
from .tokenizer import Tokenizer

__all__ = ["main"]

SPACE_OPTION = click.option("--space", "space_ref", default=DEFAULT_SPACE, show_default=True,
                            help="Token space: a shipped name (see `uti space show`) or a path to token_space.json.")
ALLOW_UNPINNED_OPTION = click.option("--allow-unpinned", is_flag=True,
                                     help="Use assets the space does not pin by content hash (warns; IDs are not "
                                          "guaranteed to mean what the space says).")


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
    for line in _budget_lines(info["budget"]):
        click.echo(f"  {line}")


def _budget_lines(budget: dict) -> list[str]:
    """`uti space show`'s token budget: image tokens per view / panorama, audio tokens per second."""
    lines = []
    if "image" in budget:
        im = budget["image"]
        pooled = f" (patch grid {'x'.join(map(str, im['patch_grid']))} pooled)" if (
            im["patch_grid"] and im["token_grid"] != im["patch_grid"]) else ""
        grid = f" = {'x'.join(map(str, im['token_grid']))}{pooled}" if im["token_grid"] else ""
        lines.append(f"image: {im['tokens_per_view']} tokens per view{grid}; {im['tokens_per_panorama']} per panorama "
                     f"({im['views_per_panorama']} views, markers included); {im['tokens_per_plain_image']} per plain "
                     "image")
    if "audio" in budget:
        au = budget["audio"]
        lines.append(f"audio: {au['tokens_per_second']} tokens per second ({au['frame_rate']} frames/s x "
                     f"{au['num_codebooks']} codebooks; + 2 markers per clip)")
    return lines


@space.command("verify")
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result per file.")
def space_verify(paths: tuple[str, ...], as_json: bool) -> None:
    """Check each space file (hash, schema, ranges) and the pinned content hashes of its assets that are
    on this machine; one line per file. Exit 1 if any file or present asset is not intact (a missing or
    unpinned asset is reported, not failed)."""
    bad = 0
    for ref in paths:
        try:
            sp = TokenSpace.load(ref)
            assets = sp.verify_assets()
            broken = [f"asset {k}: {v[5:]}" for k, v in assets.items() if v.startswith("BAD")]
            result = {"path": ref, "ok": not broken, "name": sp.name, "hash": sp.hash, "assets": assets}
            if broken:
                result["error"] = "; ".join(broken)
        except UTIError as err:
            result = {"path": ref, "ok": False, "error": str(err)}
        bad += not result["ok"]
        if as_json:
            emit_json(result)
        elif result["ok"]:
            listed = ", ".join(f"{k}={v}" for k, v in result["assets"].items()) or "none pinned"
            click.echo(f"ok   {ref}  {result['hash']}  assets: {listed}")
        else:
            click.echo(f"BAD  {ref}: {result['error']}")
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


@main.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option("--space", "space_ref", required=True,
              help="The token space the artifacts must match: a shipped name or a path to token_space.json.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per artifact.")
def verify(artifacts: tuple[str, ...], space_ref: str, as_json: bool) -> None:
    """Check each ARTIFACT (space file, encoded document, shard folder, rows or connector checkpoint, exported
    model; the kind is read from its content) against SPACE and its pinned assets; one line per artifact.
    Exit 0 when all match, 1 when any does not (for CI)."""
    from .verify import verify_artifacts

    results = verify_artifacts(list(artifacts), TokenSpace.load(space_ref))
    for result in results:
        if as_json:
            emit_json(result.to_json())
        else:
            click.echo(result.line())
    if not all(r.ok for r in results):
        raise SystemExit(1)


def encode_text(tok: Tokenizer, text: str) -> EncodedDocument:
    """`uti encode --text` document."""
    return _document(tok, text)


def encode_file(tok: Tokenizer, path: Path) -> EncodedDocument:
    """`uti encode FILE` document: the space's codec that accepts the file encodes it."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    return _document(tok, path)


def _document(tok: Tokenizer, item: Any) -> EncodedDocument:
    codec = tok.codec_for(item)
    ids, meta = codec.encode_with_meta(item)
    return EncodedDocument.for_space(tok.space, codec.modality, ids, meta, tok.unpinned_used)


@main.command()
@click.argument("path", required=False, type=click.Path())
@click.option("--text", help="Encode this text instead of a file.")
@SPACE_OPTION
@click.option("--out", type=click.Path(), help="Write the JSON document here (atomically) instead of stdout; "
              "batch mode: the folder of shards.")
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON document.")
@click.option("--part", default=None, help="Batch mode: encode part i of n (round-robin; default 0/1, or the "
              "process's RANK/WORLD_SIZE under torchrun or accelerate launch).")
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(1), help="Batch mode: inputs per shard.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Batch mode: threads decoding and rendering files while the model encodes others.")
@ALLOW_UNPINNED_OPTION
@DEVICE_OPTION
@DTYPE_OPTION
@click.option("--strict", is_flag=True, help="Refuse inputs the decoder had to repair (e.g. a corrupt JPEG).")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Image views per vision-tower forward (default 16), across images in batch mode; codes do "
                   "not depend on it.")
def encode(path: str | None, text: str | None, space_ref: str, out: str | None, as_json: bool, part: str | None,
           shard_size: int, workers: int, allow_unpinned: bool, device: str, dtype: str, strict: bool,
           batch_size: int | None) -> None:
    """Encode text (--text) or a file (any the space's codecs read: images, audio) into token-space IDs.

    Batch mode: PATH is a folder or a .jsonl manifest and --out a folder of sharded safetensors.
    """
    if (path is None) == (text is None):
        raise InputError("give exactly one of PATH or --text")
    sp = TokenSpace.load(space_ref)
    sp.allow_unpinned = allow_unpinned
    tok = Tokenizer.from_space(sp, device=parse_device(device), dtype=parse_dtype(dtype), strict=strict,
                               batch_size=batch_size)
    if path is not None and (Path(path).is_dir() or path.endswith(".jsonl")):
        return encode_batch(tok, Path(path), out, part, shard_size, as_json, workers)
    doc = encode_text(tok, text) if text is not None else encode_file(tok, Path(path))
    _emit(doc, out, as_json)


def batch_part(part: str | None, env: Any = None) -> tuple[int, int]:
    """The part to encode: `--part i/n`, else (RANK, WORLD_SIZE) of a torchrun / accelerate launch, else 0/1.
    Both at once is an error (a job array of launches would need its own split; give one of them)."""
    from .batch import launcher_part, parse_part

    launched = launcher_part(env)
    if part is not None and launched is not None:
        raise InputError(f"--part {part} given inside a launch of {launched[1]} processes (WORLD_SIZE); the "
                         "launcher already splits the inputs by RANK: drop --part or run one process per part")
    return parse_part(part) if part is not None else launched or (0, 1)


def encode_batch(tok: Tokenizer, source: Path, out: str | None, part: str | None, shard_size: int, as_json: bool,
                 workers: int = 1) -> None:
    """Batch mode of `uti encode`: inputs -> shards in OUT, a progress bar and a summary (see uti.batch).

    Inputs are the files with a suffix one of the space's codecs reads. Exits 1 when some inputs failed
    (they are listed, and a rerun retries them). Every codec the part needs loads its models here, in the
    main thread, before any worker thread starts: building one (transformers' lazy imports, model loading)
    is not thread-safe, while encoding with a built one is.
    """
    import sys

    from .batch import list_inputs, run_batch, select_part

    if not out:
        raise InputError("batch mode needs --out FOLDER for the shards")
    part_ = batch_part(part)
    paths = list_inputs(source, tok.file_suffixes())
    for codec in _codecs_of(tok, select_part(paths, part_)):
        codec.load()

    summary = run_batch(paths, None, out, tok.space, shard_size=shard_size, part=part_,
                        stream=lambda ps: _stream(tok, ps, workers),
                        progress=sys.stderr.isatty(),  # a bar only for a person watching, not in logs or pipes
                        unpinned=tok.unpinned_used, root=source if Path(source).is_dir() else Path(source).parent)
    if as_json:
        emit_json(summary.to_json())
    else:
        click.echo(f"{summary.ok}/{summary.total} encoded, {len(summary.failed)} failed; shards written "
                   f"{len(summary.written)}, skipped (done) {len(summary.skipped)} -> {out}")
        for r in summary.redone:
            click.echo(f"  re-encoded {r['shard']}: {r['reason']}")
        for f in summary.failed:
            click.echo(f"  failed {f['path']}: {f['reason']}")
    if summary.failed:
        click.echo(f"error: {len(summary.failed)} of {summary.total} inputs failed (see the summary); fix or remove "
                   "them and rerun the same command to retry only those", err=True)
        raise SystemExit(1)


def _stream(tok: Tokenizer, paths: list[str], workers: int) -> Any:
    """`tok.encode_stream` of the existing files among `paths`, one outcome per path in order (a missing file
    fails alone: a manifest may name files that are gone)."""
    exists = [Path(p).exists() for p in paths]  # checked once: the stream gets exactly these
    results = iter(tok.encode_stream([Path(p) for p, e in zip(paths, exists) if e], workers))
    for p, e in zip(paths, exists):
        yield next(results) if e else (None, InputError(f"{p}: no such file"))


def _codecs_of(tok: Tokenizer, paths: list[str]) -> list[Any]:
    """The distinct codecs that take `paths` (an input no codec takes fails later, in its own row)."""
    found: dict[str, Any] = {}
    for p in paths:
        try:
            codec = tok.codec_for(Path(p))
        except UTIError:
            continue
        found.setdefault(codec.modality, codec)
    return list(found.values())


def _emit(doc: EncodedDocument, out: str | None, as_json: bool) -> None:
    if out:
        write_document(out, doc)
    if as_json:
        click.echo(doc.dumps())
    elif not out:
        click.echo(f"{doc.modality}: {len(doc.ids)} IDs in space {doc.space_name} ({doc.space_hash[:12]})")
        click.echo(" ".join(map(str, doc.ids)))


@main.command()
@click.argument("file", metavar="FILE|-")
@click.option("--space", "space_ref", help="Token space to decode with: a shipped name or a path to token_space.json "
              "[default: the registered space the document names].")
@click.option("--out", type=click.Path(), help="Where to write the decoded value (audio: a .wav; images: "
              ".safetensors of features; text: a UTF-8 file).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON result.")
@ALLOW_UNPINNED_OPTION
@click.pass_context
def decode(ctx: click.Context, file: str, space_ref: str | None, out: str | None, as_json: bool,
           allow_unpinned: bool) -> None:
    """Decode an `uti encode --json` document (FILE, or - for standard input) back to text, image features or
    a waveform (whatever its codec gives). A document encoded with unpinned assets says so (a warning, and
    `unpinned` in the JSON result)."""
    doc = read_document(file)
    explicit = ctx.get_parameter_source("space_ref") not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
    sp = document_space(doc, space_ref if explicit else None)
    sp.allow_unpinned = allow_unpinned
    result = decode_doc(Tokenizer.from_space(sp), doc, out)
    if doc.unpinned:
        click.echo(f"warning: {doc.where} was encoded with unpinned asset(s) {', '.join(doc.unpinned)} "
                   "(--allow-unpinned): its IDs are not guaranteed to mean what the space says", err=True)
    if as_json:
        emit_json(result)
    elif "text" in result:
        click.echo(result["text"], nl=False)
        click.echo()
    else:
        click.echo(" ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, (list, dict))))


def decode_doc(tok: Tokenizer, doc: EncodedDocument, out: str | None) -> dict:
    """Decode a validated document with its modality's codec of `tok` (whose space hash the caller checked):
    the codec's summary, plus `unpinned` when the document records unpinned assets."""
    if doc.modality not in tok.modalities:
        raise InputError(f"{doc.where}: modality {doc.modality} is not in space {tok.space.name!r}, which has "
                         f"{', '.join(tok.modalities)}")
    try:
        result = tok.codec(doc.modality).decode_to_file(doc.ids, out, doc.typed_meta, where=doc.where)
    except TokenRangeError as err:  # a bad ID or stream: name the document it is in
        raise TokenRangeError(f"{doc.where}: {err}") from None
    return {**result, "unpinned": list(doc.unpinned)} if doc.unpinned else result


from .audio.cli import audio as _audio_group  # noqa: E402  (`uti audio ...`)

main.add_command(_audio_group)

from .image.commands import codebook as _codebook_group  # noqa: E402  (`uti codebook fit`)

main.add_command(_codebook_group)

from .image.show import show_command as _show_command  # noqa: E402  (`uti show panorama.jpg --out views.png`)

main.add_command(_show_command)
