"""Batch encoding of many files into sharded safetensors, for any modality.

Inputs: a folder (all files under it whose suffix is accepted, sorted by relative path) or a JSONL
manifest (one ``{"path": ...}`` object or a bare JSON string per line; relative paths are relative to
the manifest's folder).

Parts: ``part=(i, n)`` takes every n-th input of the sorted list starting at i (round-robin), so n
processes or cluster array jobs split a corpus deterministically and evenly without talking to each other.

Shards: the inputs of a part are cut into shards of `shard_size` inputs. Shard k of part i of n is
``part-{i}-of-{n}-{k:05d}.safetensors`` with tensors ``ids`` (all IDs concatenated, int64) and
``offsets`` (int64, M+1: item j is ``ids[offsets[j]:offsets[j+1]]``), and string metadata holding the
token-space name and hash, the item sources and their per-item meta (JSON). Its sidecar
``.done.json`` (written after the shard, both atomically) lists ok and failed inputs with reasons. On a
rerun a shard whose sidecar exists for the same input list is skipped, so an interrupted batch resumes
where it stopped. One bad input never stops a batch: its error is recorded and the next one is encoded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import HashMismatchError, InputError, UTIError
from .hashing import hash_json
from .io import atomic_save_safetensors, atomic_write_json, read_jsonl

__all__ = ["BatchSummary", "Shard", "list_inputs", "parse_part", "read_shards", "run_batch", "select_part"]

FORMAT = "uti-shard-1"
EncodeOne = Callable[[str], tuple[Sequence[int], dict[str, Any]]]


@dataclass
class BatchSummary:
    """What a batch run did: counts, failures with reasons, and the shards written or skipped."""

    total: int = 0
    ok: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "ok": self.ok, "num_failed": len(self.failed), "failed": self.failed,
                "shards_written": self.written, "shards_skipped": self.skipped}


def list_inputs(source: str | Path, suffixes: Iterable[str] | None = None) -> list[str]:
    """Sorted input paths from a folder (files with an accepted suffix) or a JSONL manifest."""
    source = Path(source)
    if source.is_dir():
        ok = {s.lower() for s in suffixes} if suffixes else None
        files = [p for p in source.rglob("*") if p.is_file() and (ok is None or p.suffix.lower() in ok)]
        return sorted(str(p) for p in files)
    if source.is_file() and source.suffix == ".jsonl":
        return sorted(_manifest_paths(source))
    raise InputError(f"{source}: expected a folder of inputs or a .jsonl manifest")


def _manifest_paths(manifest: Path) -> list[str]:
    out = []
    for n, item in read_jsonl(manifest):
        path = item.get("path") if isinstance(item, dict) else item
        if not isinstance(path, str):
            raise InputError(f"{manifest}:{n}: expected a JSON string or an object with a \"path\" string")
        out.append(str(manifest.parent / path))
    return out


def parse_part(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--part must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise InputError(f"--part {text}: need 0 <= i < n")
    return i, n


def select_part(paths: Sequence[str], part: tuple[int, int] = (0, 1)) -> list[str]:
    """The inputs of part (i, n): sorted paths, round-robin."""
    i, n = part
    return sorted(paths)[i::n]


def _shard_name(part: tuple[int, int], k: int) -> str:
    return f"part-{part[0]}-of-{part[1]}-{k:05d}.safetensors"


def run_batch(
    paths: Sequence[str],
    encode_one: EncodeOne,
    out_dir: str | Path,
    space: Any,
    *,
    shard_size: int = 1000,
    part: tuple[int, int] = (0, 1),
    progress: bool = True,
    workers: int = 1,
) -> BatchSummary:
    """Encode the inputs of `part` with `encode_one(path) -> (global ids, meta)` into shards in `out_dir`.

    workers > 1 runs `encode_one` in that many threads (results keep input order), so decoding and
    E2P of one file overlap the tower of another on a GPU; `encode_one` must then be thread-safe.
    """
    from tqdm.auto import tqdm

    if shard_size < 1 or workers < 1:
        raise InputError(f"shard_size and workers must be >= 1, got {shard_size} and {workers}")
    out_dir = Path(out_dir)
    mine = select_part(paths, part)
    summary = BatchSummary(total=len(mine))
    bar = tqdm(total=len(mine), desc=f"encode part {part[0]}/{part[1]}", unit="file", disable=not progress)
    for k in range(0, len(mine), shard_size):
        chunk = mine[k:k + shard_size]
        shard = out_dir / _shard_name(part, k // shard_size)
        done = _read_done(shard, chunk, space)
        if done is None:
            done = _encode_shard(chunk, encode_one, shard, space, bar, workers)
            summary.written.append(shard.name)
        else:
            summary.skipped.append(shard.name)
            bar.update(len(chunk))
        summary.ok += done["ok"]
        summary.failed += done["failed"]
    bar.close()
    atomic_write_json(out_dir / f"summary-part-{part[0]}-of-{part[1]}.json", summary.to_json())
    return summary


def _done_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".done.json")


def _read_done(shard: Path, chunk: Sequence[str], space: Any) -> dict[str, Any] | None:
    """The sidecar of a finished shard for exactly these inputs and this space, else None (re-encode)."""
    done_file = _done_path(shard)
    if not (done_file.is_file() and shard.is_file()):
        return None
    done = json.loads(done_file.read_text(encoding="utf-8"))
    if done.get("inputs_hash") != hash_json(list(chunk)):
        raise InputError(f"{shard} was written for a different input list or shard size; use a new --out folder")
    if done.get("token_space_hash") != space.hash:
        raise HashMismatchError(f"{shard} was made with token space hash {done.get('token_space_hash')}, but space "
                                f"{space.name!r} ({space.path}) has hash {space.hash}; use a new --out folder")
    return done


def _try(encode_one: EncodeOne, path: str) -> tuple[str, Any, str | None]:
    """(path, (ids, meta) or None, failure reason or None): one bad input never raises."""
    try:
        return path, encode_one(path), None
    except UTIError as err:
        return path, None, str(err)
    except Exception as err:  # noqa: BLE001 - a batch must survive any single bad input; the reason is kept
        return path, None, f"{type(err).__name__}: {' '.join(str(err).split())}"


def _encode_shard(chunk: Sequence[str], encode_one: EncodeOne, shard: Path, space: Any, bar: Any,
                  workers: int = 1) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    ids: list[torch.Tensor] = []
    sources, metas, failed = [], [], []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda p: _try(encode_one, p), chunk) if workers > 1 else (_try(encode_one, p) for p in chunk)
        for path, result, reason in results:
            if reason is None:
                ids.append(torch.as_tensor(result[0], dtype=torch.long).reshape(-1))
                sources.append(path)
                metas.append(result[1])
            else:
                failed.append({"path": path, "reason": reason})
            bar.update(1)
    lengths = torch.tensor([0] + [len(t) for t in ids], dtype=torch.long)
    tensors = {"ids": torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long), "offsets": lengths.cumsum(0)}
    metadata = {"format": FORMAT, "token_space_name": space.name, "token_space_hash": space.hash,
                "sources": json.dumps(sources), "meta": json.dumps(metas)}
    atomic_save_safetensors(shard, tensors, metadata)
    done = {"token_space_hash": space.hash, "inputs_hash": hash_json(list(chunk)), "ok": len(sources),
            "failed": failed}
    atomic_write_json(_done_path(shard), done)
    return done


@dataclass
class Shard:
    """One shard read back: per-item ID tensors, their sources and meta."""

    path: Path
    ids: torch.Tensor  # (T,) int64
    offsets: torch.Tensor  # (M + 1,) int64
    sources: list[str]
    meta: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.sources)

    def item(self, j: int) -> torch.Tensor:
        """IDs of item j."""
        return self.ids[self.offsets[j]:self.offsets[j + 1]]


def read_shards(folder: str | Path, space: Any) -> Iterator[Shard]:
    """Shards of `folder` in name order; a shard made with another token space raises HashMismatchError."""
    from safetensors import SafetensorError, safe_open

    files = sorted(Path(folder).glob("part-*.safetensors"))
    if not files:
        raise InputError(f"{folder}: no part-*.safetensors shards; write them with `uti encode DIR --out {folder}`")
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise InputError(f"{file}: not a uti shard (format {meta.get('format')!r}, expected {FORMAT!r})")
                if meta.get("token_space_hash") != space.hash:
                    raise HashMismatchError(
                        f"{file} was made with token space {meta.get('token_space_name')!r} hash "
                        f"{meta.get('token_space_hash')}, but space {space.name!r} ({space.path}) has hash {space.hash}")
                shard = Shard(file, f.get_tensor("ids"), f.get_tensor("offsets"), json.loads(meta["sources"]),
                              json.loads(meta["meta"]))
        except (OSError, SafetensorError) as err:
            raise InputError(f"{file}: cannot read shard ({err}); delete it and its .done.json and rerun") from None
        yield shard
