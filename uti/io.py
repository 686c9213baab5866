"""Atomic file writes: write to a temp file in the target folder, fsync, then rename over the target.

A crash or an error never leaves a half-written file under the final name. Saved files hold no absolute path:
a local model an artifact refers to is recorded relative to the artifact's folder (`portable_ref`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

__all__ = ["read_jsonl", "read_csv", "atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_save_safetensors",
           "LOCAL_PREFIXES", "relative_ref", "portable_ref", "resolve_ref"]

LOCAL_PREFIXES = ("./", "../")  # a recorded model reference starting so is a path relative to the artifact folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path next to `path`; on success it is renamed onto `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600, and writers that recreate the file (safetensors' save_file) do too: give the
        # output the permissions of any new file, after it is written
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write `obj` as JSON (UTF-8, trailing newline) to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n")


def atomic_save_safetensors(path: str | Path, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None) -> None:
    """Save torch tensors to a `.safetensors` file atomically (contiguous copies, metadata as strings).

    Byte-reproducible with at most one metadata key; not with 2+ keys: safetensors (0.8.0) keeps `__metadata__`
    in a Rust HashMap with a random per-instance seed, so the header lists those keys in a different order on each
    save (safetensors/safetensors#584; the fix, PR #790, is not released). Checkpoints (rows, connector, train
    state) therefore carry one key (`format`; the rest lives in their JSON manifest) and are identical byte for
    byte when their tensors are; shards carry several, and their identity is the tensors' and metadata's hash
    (`uti.hashing.hash_tensors` / `hash_safetensors`), compared as dicts. Rewriting the header ourselves would
    mean hand-writing the format.
    """
    from safetensors.torch import save_file

    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(data, str(tmp), metadata=metadata)


def relative_ref(path: str | Path, folder: str | Path) -> str | None:
    """`path` relative to `folder` (POSIX), None where none exists (another drive on Windows)."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()
    except ValueError:
        return None


def portable_ref(ref: str, folder: str | Path) -> str:
    """How an artifact saved in `folder` records a model reference: a hub id as given; an existing local path
    relative to `folder`, starting with `./` or `../` so it never reads as a hub id (`resolve_ref` undoes it)."""
    rel = relative_ref(ref, folder) if ref and Path(ref).exists() else None
    if rel is None:
        return ref
    return rel if rel == ".." or rel.startswith(LOCAL_PREFIXES[1]) else LOCAL_PREFIXES[0] + rel


def resolve_ref(ref: str, folder: str | Path) -> str:
    """A reference read from an artifact in `folder`, usable from here: a `./`/`../` path joined to `folder`;
    anything else (a hub id, an absolute path of an older artifact) as is."""
    return (Path(folder) / ref).as_posix() if ref.startswith(LOCAL_PREFIXES) else ref


def read_jsonl(path: str | Path, error: type[Exception] | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, object) for each non-blank line of a JSON Lines file.

    An unreadable file or a malformed line raises `error` (default `InputError`) naming `path:line`.
    """
    from .errors import InputError

    error = error or InputError
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{path}:{n}: not valid JSON ({err.msg})") from None


def read_csv(path: str | Path, error: type[Exception] | None = None,
             key: Callable[[str], str] = str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {key(column): cell}) for each non-blank row of a CSV file with a header row.

    Empty cells are left out of the row, so an optional column may stay empty. A missing or duplicated
    header, a row with another number of cells than the header, bad quoting or a NUL byte raise `error`
    (default `InputError`) naming `path:line`; `key` maps each header name (and may refuse it).
    """
    import csv

    from .errors import InputError

    error = error or InputError
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets write a byte-order mark
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise error(f"{path}: empty CSV; expected a header row naming the columns")
        names = [key(h.strip()) for h in header]
        if len(set(names)) != len(names):
            raise error(f"{path}:1: duplicate CSV columns in header {header}")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                raise error(f"{path}:{reader.line_num}: {len(row)} cells, the header has {len(names)}; "
                            "quote cells that contain commas")
            yield reader.line_num, {k: v for k, v in zip(names, row) if v != ""}
    except csv.Error as err:
        raise error(f"{path}:{reader.line_num}: not valid CSV ({err})") from None
