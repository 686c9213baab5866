"""Crash-safe checkpoint folders: content-named data files, and the manifest, written last, as the one switch.

Shared by rows checkpoints (`tokenlm.checkpoint`) and connector checkpoints (`connectors.checkpoint`).
`commit(folder, files, manifest_name, manifest)`:

1. removes temp files that killed saves left behind (`.NAME.*.tmp` of this checkpoint's files);
2. writes each data file atomically under a name carrying its content hash, `STEM.<16 hex>.EXT`
   (an identical file already there is simply rewritten with the same bytes);
3. fsyncs the folder, then writes the manifest atomically (temp file + fsync + rename): this rename is
   the switch from the old checkpoint to the new one; fsyncs the folder again;
4. deletes the data files of these stems that the new manifest does not name.

A kill anywhere before the manifest rename leaves the old manifest, and every file it names is still
there (step 4 of the old save ran before); a kill after it leaves the new manifest with all its files.
So the folder always loads as the old or the new checkpoint, and the next successful save clears any
leftovers. Readers only open files the manifest names (`data_path` refuses any other name).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from uti.errors import UTIError
from uti.io import atomic_write_json

__all__ = ["content_name", "data_path", "commit", "clean_stale_temps", "read_json", "read_tensors", "fsync_dir",
           "MAX_MANIFEST_BYTES", "DTYPES"]

MAX_MANIFEST_BYTES = 4 << 20  # a manifest is a few KB; refuse to parse anything larger
DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}  # tensor dtypes a checkpoint may hold, and their sizes


def content_name(stem: str, digest: str, ext: str) -> str:
    """`STEM.<first 16 hex of digest>EXT`, e.g. `trainable_rows.0123abcd4567ef89.safetensors`."""
    return f"{stem}.{digest[:16]}{ext}"


def _pattern(stem: str, ext: str) -> re.Pattern:
    return re.compile(rf"{re.escape(stem)}\.[0-9a-f]{{16}}{re.escape(ext)}")


def data_path(folder: Path, name: str, stem: str, ext: str, error: type[UTIError]) -> Path:
    """`folder / name` after checking that `name` is a content name of this stem (no paths, no other files)."""
    if not _pattern(stem, ext).fullmatch(name):
        raise error(f"{folder}: manifest names data file {name!r:.80}, expected {stem}.<16 hex>{ext}")
    return folder / name


def fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_stale_temps(folder: Path, names: list[str]) -> None:
    """Delete temp files (`.NAME*.tmp`, from `uti.io.atomic_path`) that killed writes of `names` left in `folder`."""
    for name in names:
        for tmp in folder.glob(f".{name}*.tmp"):
            tmp.unlink(missing_ok=True)


def commit(folder: str | Path, files: list[tuple[str, str, str, Callable[[Path], None]]], manifest_name: str,
           manifest: dict[str, Any]) -> Path:
    """Write `files` (stem, ext, content digest, writer(path)) under content names, then `manifest`; see module doc.

    The manifest must already name the files (`content_name(stem, digest, ext)`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stems = [(stem, ext) for stem, ext, _, _ in files]
    clean_stale_temps(folder, [manifest_name, *(f"{stem}." for stem, _ in stems)])
    keep = {content_name(stem, digest, ext) for stem, ext, digest, _ in files}
    for stem, ext, digest, write in files:
        write(folder / content_name(stem, digest, ext))
    fsync_dir(folder)
    atomic_write_json(folder / manifest_name, manifest)
    fsync_dir(folder)
    for stem, ext in set(stems):
        pat = _pattern(stem, ext)
        for old in folder.iterdir():
            if pat.fullmatch(old.name) and old.name not in keep:
                old.unlink(missing_ok=True)
    return folder


def read_json(path: Path, error: type[UTIError], max_bytes: int = MAX_MANIFEST_BYTES) -> Any:
    """Parse a small JSON file, bounded in size; unreadable, huge, deeply nested or invalid JSON raises `error`."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path} is {size} bytes; a manifest is at most {max_bytes} bytes")
        return json.loads(path.read_text(encoding="utf-8"))
    except UTIError:
        raise
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (ValueError, RecursionError) as err:  # 5000-digit integers, deep nesting
        raise error(f"{path}: not acceptable JSON ({str(err).splitlines()[0][:120] or type(err).__name__})") from None


def read_tensors(path: Path, specs: dict[str, tuple[list[int], str]], digest: str, error: type[UTIError]) -> dict:
    """The tensors of a safetensors file that must hold exactly `specs` (name -> (shape, dtype)) with
    `hash_tensors` == `digest`. The file size is checked against the specs before anything is read, so a
    truncated, padded or forged file is refused without allocating for it."""
    from math import prod

    from safetensors.torch import load_file

    from uti.hashing import hash_tensors

    need = sum(prod(shape) * DTYPES[dtype] for shape, dtype in specs.values())
    try:
        size = path.stat().st_size
    except OSError:
        raise error(f"{path} is missing; the checkpoint folder is incomplete") from None
    header_cap = 8 + 4096 + 512 * len(specs)  # 8-byte length + JSON header (names, shapes, offsets, metadata)
    if not need < size <= need + header_cap:
        raise error(f"{path} is {size} bytes but its manifest describes {need} bytes of tensors: truncated or "
                    "not the file the manifest was written with")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises several types for truncated/garbled headers
        raise error(f"{path} is truncated or not a safetensors file ({str(err).splitlines()[0][:120]})") from None
    got = {k: (list(t.shape), str(t.dtype).removeprefix("torch.")) for k, t in tensors.items()}
    want = {k: (list(s), d) for k, (s, d) in specs.items()}
    if got != want:
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        raise error(f"{path} does not hold the tensors its manifest lists (differing: {', '.join(diff[:3])})")
    if hash_tensors(tensors) != digest:
        raise error(f"{path} does not match its manifest (tensors hash {hash_tensors(tensors)} != recorded "
                    f"{digest}): edited or damaged")
    return tensors
