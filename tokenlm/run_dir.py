"""Run folders of the training loop (`tokenlm.trainer`, both tracks): start, resume, prune, overwrite, safely.

Each task names the files its checkpoint writes; the rest of the layout is the loop's:

* `prepare_out(out, resume, overwrite, is_artifact)`: a non-empty `out` without `resume` or `overwrite`
  is refused (one line naming both options); `overwrite` first deletes the old run, and only when every
  entry is something a run writes (`is_artifact`), so a mistyped `--out ~` deletes nothing; then
  `clean_stale` removes what killed runs left: temp files of interrupted atomic writes (`.NAME.*.tmp`)
  and step folders half way through pruning (`.deleting-*`).
* `step_dirs` / `prune_steps`: complete step folders (those holding their state file, written last) and
  keeping the newest N of them; a pruned folder is first renamed to `.deleting-NAME` (atomic), so a kill
  during the delete never leaves a half-deleted folder that looks complete.
* `check_facts`: a resumed run must have the same facts (tasks, data fingerprint, batch, seed, ...) as the
  checkpoint; a difference is one line showing both values.
* `rows_fingerprint`: a content hash of the built training sequences (what the data means to the run).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import xxhash

from uti.errors import UTIError

__all__ = ["prepare_out", "clean_stale", "step_dirs", "prune_steps", "check_facts", "rows_fingerprint"]

_DELETING = ".deleting-"


def clean_stale(out: Path) -> None:
    """Delete temp files of killed atomic writes and folders a killed prune was deleting, anywhere under `out`."""
    if not out.is_dir():
        return
    for d in list(out.rglob(f"{_DELETING}*")):
        shutil.rmtree(d, ignore_errors=True)
    for tmp in list(out.rglob(".*.tmp")):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        hidden = path.with_name(f"{_DELETING}{path.name}")
        os.replace(path, hidden)
        shutil.rmtree(hidden)
    else:
        path.unlink(missing_ok=True)


def prepare_out(out: str | Path, resume: bool, overwrite: bool, is_artifact: Callable[[Path], bool],
                error: type[UTIError], first: Sequence[str] = (), act: bool = True) -> None:
    """Refuse or clear a non-empty `out` (see module doc), then clean what killed runs left.

    `first`: entries deleted before the others (the manifests that make the folder a checkpoint), so an
    overwrite killed half way never leaves a loadable mix. `act=False` only checks (every process of a
    distributed run checks, then the main one acts).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise error(f"--out {out} is a file; give a folder")
    entries = sorted(p for p in out.iterdir()) if out.is_dir() else []
    if entries and not resume and not overwrite:
        raise error(f"--out {out} already holds a run ({', '.join(p.name for p in entries[:3])}"
                    f"{', ...' if len(entries) > 3 else ''}); pass --resume to continue it or --overwrite to replace it")
    if entries and overwrite:
        foreign = [p.name for p in entries if not is_artifact(p)]
        if foreign:
            raise error(f"--overwrite refused: {out} holds {', '.join(foreign[:3])}, which no training run writes; "
                        "choose another --out or remove them yourself")
    if not act:
        return
    if entries and overwrite:
        for name in first:
            if (out / name).exists():
                _remove(out / name)
        for p in entries:
            if p.exists() or p.is_symlink():
                _remove(p)
    clean_stale(out)


def step_dirs(root: Path, pattern: str, state_file: str) -> list[tuple[int, Path]]:
    """Complete step folders `(step, path)` under `root`, oldest first; `pattern` has one `(\\d+)` group."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := re.fullmatch(pattern, p.name)) and (p / state_file).is_file()]
    return sorted(found)


def prune_steps(dirs: Sequence[tuple[int, Path]], keep: int) -> None:
    """Delete all but the newest `keep` of `dirs` (as returned by `step_dirs`); each delete is kill-safe."""
    for _, d in (list(dirs)[:-keep] if keep > 0 else []):
        _remove(d)


def check_facts(where: Path, recorded: dict[str, Any], want: dict[str, Any], error: type[UTIError]) -> None:
    """Refuse a resume whose facts differ from the checkpoint's, showing both values."""
    for key, value in want.items():
        if recorded.get(key) != value:
            raise error(f"{where} was written with {key}={recorded.get(key)!r:.120}, this run has {value!r:.120}; "
                        "resume with the same tasks, data, seed and global batch, or start a new --out")


def rows_fingerprint(rows: Iterable[Sequence[Sequence[int]]]) -> str:
    """xxh3-128 hex of a sequence of rows, each a sequence of int sequences (e.g. input IDs and labels)."""
    import numpy as np

    h = xxhash.xxh3_128()
    for row in rows:
        for part in row:
            arr = np.asarray(part, dtype=np.int64)
            h.update(len(arr).to_bytes(8, "little"))
            h.update(arr.tobytes())
        h.update(b"|")
    return h.hexdigest()
