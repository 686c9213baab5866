"""The `tokenlm` command line: generate with rows checkpoints, export merged models, grammar rules.

    tokenlm generate --rows ckpt --prompt "a panorama of" --target image
    tokenlm export --rows ckpt --out merged/
    tokenlm rules --space tiny --out rules.json
    tokenlm rows show ckpt
    tokenlm rows import old/trainable_rows.pt --base Qwen/Qwen3-0.6B --space tiny --out ckpt

Exit codes: 0 success, 2 bad input (one-line `error: ...`, no traceback).
"""

from __future__ import annotations

from pathlib import Path

import click

from uti.cli_base import DEVICE_OPTION, DTYPES, ErrorHandlingGroup, emit_json, parse_device, parse_dtype
from uti.io import atomic_write_json
from uti.space import TokenSpace

__all__ = ["main"]

ROWS_OPTION = click.option("--rows", "rows_dir", required=True, type=click.Path(exists=True, file_okay=False),
                           help="Rows checkpoint folder (trainable_rows.json and the files it names).")
BASE_OPTION = click.option("--base", default=None,
                           help="Base model (hub id or folder); default: the space's base_model asset, else the id "
                                "recorded in the checkpoint.")
SPACE_OPTION = click.option("--space", "space_ref", default=None,
                            help="Token space name or path; default: the checkpoint's own (hashes are checked).")


@click.group(cls=ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="uti-toolkit")
def main() -> None:
    """Token LM: grow a base LM to a token space, train the new rows, generate and export."""


def _space(ref: str | None) -> TokenSpace | None:
    return TokenSpace.load(ref) if ref else None


@main.command()
@ROWS_OPTION
@click.option("--prompt", default="", help="Text prompt: the condition for a non-text target; with --input and a text "
              "target, the instruction that opens the answer (as a training record's \"instruction\").")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False),
              help="Condition on this file (caption it): an image, an audio file, or any file a codec of the space "
                   "reads; the space's tokenizer tells which by its suffix.")
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="Alias of --input.")
@click.option("--audio", type=click.Path(exists=True, dir_okay=False), help="Alias of --input.")
@click.option("--target", default="text", show_default=True,
              help="Modality to generate: text, or any modality the space holds (image, audio, ...).")
@click.option("--max-new-tokens", default=None, type=click.IntRange(1),
              help="Most IDs to generate. [default: one whole block of --target: image = every view of the "
                   "layout (154 for tiny), audio = 5 s of frames, text = 256; generation also stops at the "
                   "block's end marker, text at the base model's end of text]")
@click.option("--greedy", is_flag=True, help="Greedy decoding instead of sampling.")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0.0, min_open=True))
@click.option("--top-k", default=None, type=click.IntRange(1), help="Sample from the k most likely legal IDs.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Write decoded files here (audio segments as wav).")
@BASE_OPTION
@SPACE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@DEVICE_OPTION
@click.option("--dtype", default=None, type=click.Choice(DTYPES),
              help="Run the model in this dtype. [default: the checkpoint's]")
def generate(rows_dir: str, prompt: str, input_path: str | None, image: str | None, audio: str | None, target: str,
             max_new_tokens: int | None, greedy: bool, temperature: float, top_k: int | None, seed: int,
             out_dir: str | None, base: str | None, space_ref: str | None, as_json: bool, device: str,
             dtype: str | None) -> None:
    """Load base + rows (hashes checked) and generate under the token space's grammar."""
    from uti.errors import InputError

    from .generate import (base_end_of_text, build_prompt_ids, continued_stream, decode_stream, generate_ids,
                           load_generator)

    given = [p for p in (input_path, image, audio) if p is not None]
    if len(given) > 1:
        raise InputError("give at most one condition file (--input, or its aliases --image / --audio)")
    dev = parse_device(device)
    model, space, manifest = load_generator(rows_dir, base=base, space=_space(space_ref))
    model = model.to(device=dev, dtype=parse_dtype(dtype) if dtype else None)
    condition = Path(given[0]) if given else None
    prompt_ids = build_prompt_ids(space, prompt, condition, target=target)
    new = generate_ids(model, space, prompt_ids, max_new_tokens=max_new_tokens, target=target,
                       do_sample=not greedy, temperature=temperature, top_k=top_k, seed=seed)
    body = new[:-1] if target == "text" and new and new[-1] in base_end_of_text(model, space) else new
    segments = decode_stream(space, continued_stream(space, prompt_ids, body), out_dir)
    doc = {"token_space": {"name": space.name, "hash": space.hash}, "base_model": manifest.get("base_model"),
           "prompt_ids": prompt_ids, "ids": new, "segments": segments}
    if as_json:
        emit_json(doc)
        return
    click.echo(f"{len(new)} new IDs: {' '.join(map(str, new))}")
    for seg in segments:
        detail = seg.get("text", seg.get("decode_error", {k: v for k, v in seg.items() if k not in ("modality",)}))
        click.echo(f"[{seg['modality']}] {detail}")


@main.command()
@ROWS_OPTION
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output model folder.")
@BASE_OPTION
@SPACE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the export record as JSON.")
def export(rows_dir: str, out_dir: str, base: str | None, space_ref: str | None, as_json: bool) -> None:
    """Write a merged Hugging Face model folder (+ grown tokenizer) that plain transformers loads."""
    from .export import export_merged

    record = export_merged(rows_dir, out_dir, base=base, space=_space(space_ref))
    if as_json:
        emit_json(record)
    else:
        click.echo(f"wrote {out_dir}: vocab {record['vocab_size']}, space {record['token_space']['hash']}")


@main.command()
@click.option("--space", "space_ref", default="tiny", show_default=True, help="Token space name or path.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the rules JSON here (atomically).")
def rules(space_ref: str, out: str | None) -> None:
    """Export the generation grammar as allowed-ID ranges per state (JSON)."""
    from .constraints import export_rules

    doc = export_rules(TokenSpace.load(space_ref))
    if out:
        atomic_write_json(out, doc)
        click.echo(f"wrote {out}")
    else:
        emit_json(doc)


@main.group()
def rows() -> None:
    """Inspect and import rows checkpoints."""


@rows.command("show")
@click.argument("rows_dir", type=click.Path(exists=True, file_okay=False))
def rows_show(rows_dir: str) -> None:
    """Print a rows checkpoint's manifest (JSON)."""
    from .checkpoint import read_manifest

    emit_json(read_manifest(rows_dir))


@rows.command("import")
@click.argument("pt_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--space", "space_ref", required=True, help="Token space the old rows were trained for.")
@click.option("--base", default=None, help="Base model; default: base_llm recorded in the .pt file.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="New checkpoint folder.")
def rows_import(pt_path: str, space_ref: str, base: str | None, out_dir: str) -> None:
    """Convert an older trainable_rows.pt into a checked safetensors rows checkpoint."""
    import torch

    from .checkpoint import CheckpointError, load_legacy_rows, save_rows
    from .model import load_base

    space = TokenSpace.load(space_ref)
    if base is None:
        try:
            base = str(torch.load(pt_path, map_location="cpu", weights_only=True)["base_llm"])
        except Exception as err:
            raise CheckpointError(f"{pt_path}: cannot read base_llm ({err}); pass --base") from None
    model = load_legacy_rows(load_base(base), Path(pt_path), space)
    save_rows(model, out_dir, space, base_model=base)
    click.echo(f"wrote {out_dir}")


from .train_cli import train_command  # noqa: E402  (thin command over tokenlm.train.train)

main.add_command(train_command)


if __name__ == "__main__":
    main()
