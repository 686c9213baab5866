"""Batch encoding of many files into sharded safetensors, for any modality.

Inputs: a folder (all files under it whose suffix is accepted, sorted by relative path) or a JSONL
manifest (one ``{"path": ...}`` object or a bare JSON string per line; relative paths are relative to
the manifest's folder).

Parts: ``part=(i, n)`` takes every n-th input of the sorted list starting at i (round-robin), so n
processes or cluster array jobs split a corpus deterministically and evenly without talking to each other.

Shards: the inputs of a part are cut into shards of `shard_size` inputs. Shard k of part i of n is
``part-{i}-of-{n}-{k:05d}.safetensors`` with tensors ``ids`` (all IDs concatenated, int64) and
``offsets`` (int64, M+1: item j is ``ids[offsets[j]:offsets[j+1]]``), and string metadata holding the
token-space name and hash, the item sources and their per-item meta (JSON), and a checksum over all of it;
the sources are the inputs' paths relative to the input root (`root`: the folder given to `uti encode`, or
the manifest's folder), POSIX, so shards hold no path of the machine that made them and a moved corpus
resumes;
a batch encoded with assets the space does not pin (`--allow-unpinned`) also records their keys
(``unpinned``, a JSON list; `Shard.unpinned`).
Its sidecar ``.done.json`` (a `DoneMarker`, written after the shard, both atomically) repeats the checksum
and lists the failed inputs with reasons.

Launchers: under `torchrun` or `accelerate launch` (both set ``RANK`` and ``WORLD_SIZE``) each process takes
the part (RANK, WORLD_SIZE) (`launcher_part`); no process group is needed, the split is deterministic.

Index: when the last part finishes (any process that, after writing its summary, finds a done marker for every
shard of every part), ``index.json`` is written atomically, under an exclusive file lock so the last writer
saw every marker: every shard with its item count, checksum and token-space hash. `read_shards` checks an index
against the shards present; a folder without one (a part still missing) reads as before.

Reruns: a shard is skipped only when its marker is valid, names the same inputs and space, has no failures,
and the shard on disk matches the marker's checksum. A shard with failures keeps its good items and retries
only the failed inputs; a shard that fails its checksum, or whose marker is unreadable, is re-encoded (its
inputs are all still there, so redoing the work is always safe and never wrong). One bad input never stops
a batch: its error is recorded, the next one is encoded, and the summary lists it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import from_dict
from .dtypes import warn_compute_dtype
from .errors import ConfigError, HashMismatchError, InputError, UTIError
from .hashing import hash_json, hash_tensors
from .io import atomic_save_safetensors, atomic_write_json, read_jsonl

__all__ = ["BatchSummary", "DoneMarker", "Shard", "launcher_part", "list_inputs", "ordered_map", "parse_part",
           "read_shards", "run_batch", "select_part"]

FORMAT = "uti-shard-1"
DONE_FORMAT = "uti-shard-done-1"
INDEX_FORMAT = "uti-shard-index-1"
INDEX_NAME = "index.json"
MAX_INDEX_BYTES = 1024**3
MAX_DONE_BYTES = 64 * 1024**2  # a marker lists at most shard_size failures with one-line reasons
EncodeOne = Callable[[str], tuple[Sequence[int], dict[str, Any]]]
Item = tuple[torch.Tensor, dict[str, Any]]  # (IDs (L,) int64, meta) of one encoded input
Outcome = tuple[Any, "Exception | None"]  # (result, None), or (None, the error) of one input
EncodeStream = Callable[[Sequence[str]], Iterable[Outcome]]  # paths -> one outcome per path, in order


@dataclass
class BatchSummary:
    """What a batch run did: counts, failures with reasons, and the shards written, skipped or redone."""

    total: int = 0
    ok: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redone: list[dict[str, str]] = field(default_factory=list)  # {"shard", "reason"}: found damaged, re-encoded

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "ok": self.ok, "num_failed": len(self.failed), "failed": self.failed,
                "shards_written": self.written, "shards_skipped": self.skipped, "shards_redone": self.redone}


@dataclass(frozen=True)
class DoneMarker:
    """The `.done.json` sidecar of a shard: which inputs and space it was made for, its checksum, failures."""

    format: str
    token_space_hash: str
    inputs_hash: str
    checksum: str
    ok: int
    failed: tuple[dict[str, str], ...]

    def __post_init__(self) -> None:
        if self.format != DONE_FORMAT:
            raise ValueError(f"format is {self.format!r}, expected {DONE_FORMAT!r}")
        for name in ("token_space_hash", "inputs_hash", "checksum"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")
        if not isinstance(self.ok, int) or isinstance(self.ok, bool) or self.ok < 0:
            raise ValueError("ok must be a non-negative integer")
        if not isinstance(self.failed, tuple) or not all(
                isinstance(f, dict) and set(f) == {"path", "reason"} and all(isinstance(v, str) for v in f.values())
                for f in self.failed):
            raise ValueError('failed must be a list of {"path": str, "reason": str} objects')

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "token_space_hash": self.token_space_hash, "inputs_hash": self.inputs_hash,
                "checksum": self.checksum, "ok": self.ok, "failed": list(self.failed)}


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
    out: list[str] = []
    n = 0
    try:
        for n, item in read_jsonl(manifest):
            path = item.get("path") if isinstance(item, dict) else item
            if not isinstance(path, str) or not path or "\x00" in path:
                raise InputError(f"{manifest}:{n}: expected a JSON string or an object with a \"path\" string")
            out.append(str(manifest.parent / path))
    except (RecursionError, ValueError) as err:  # json.loads of a deeply nested line or a 5000-digit number
        if isinstance(err, UTIError):
            raise
        raise InputError(f"{manifest}: a line after line {n} nests too deeply or holds a too long number; expected "
                         "a JSON string or an object with a \"path\" string per line") from None
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


def launcher_part(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) set by torchrun / accelerate launch (from `env`, default os.environ), or None when
    not launched by one or with one process."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return None
    try:
        rank, world = int(env.get("RANK", "")), int(env.get("WORLD_SIZE", ""))
    except ValueError:
        raise InputError(f"launcher environment RANK={env.get('RANK')!r} WORLD_SIZE={env.get('WORLD_SIZE')!r}: "
                         "expected integers with 0 <= RANK < WORLD_SIZE (as torchrun sets them)") from None
    if not 0 <= rank < world:
        raise InputError(f"launcher environment RANK={rank} WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE")
    return None if world == 1 else (rank, world)


def select_part(paths: Sequence[str], part: tuple[int, int] = (0, 1)) -> list[str]:
    """The inputs of part (i, n): sorted paths, round-robin."""
    i, n = part
    return sorted(paths)[i::n]


def _part_prefix(part: tuple[int, int]) -> str:
    return f"part-{part[0]}-of-{part[1]}-"


def _shard_name(part: tuple[int, int], k: int) -> str:
    return f"{_part_prefix(part)}{k:05d}.safetensors"


def run_batch(
    paths: Sequence[str],
    encode_one: EncodeOne | None,
    out_dir: str | Path,
    space: Any,
    *,
    shard_size: int = 1000,
    part: tuple[int, int] = (0, 1),
    progress: bool = True,
    workers: int = 1,
    unpinned: Sequence[str] = (),
    root: str | Path | None = None,
    stream: EncodeStream | None = None,
) -> BatchSummary:
    """Encode the inputs of `part` with `encode_one(path) -> (global ids, meta)` into shards in `out_dir`.

    workers > 1 runs `encode_one` in that many threads (results keep input order), so decoding and
    E2P of one file overlap the tower of another on a GPU; `encode_one` must then be thread-safe (build
    models before calling this: lazy construction inside threads races). `stream` replaces `encode_one`:
    it gets the paths still to encode of one shard at a time and yields one `(result, error)` per path in
    order (`ordered_map` shape), so a codec can batch model work across inputs (`Tokenizer.encode_stream`:
    the views of many panoramas share tower forwards); it runs its own threads, so `workers` is not used. `unpinned`: keys of the assets the
    encoders use unpinned, recorded in every shard written. `root`: shards, markers and the summary name each
    input by its path relative to `root` (POSIX; `encode_one` still gets the path as given), the same on any
    machine; None records the paths as given. Stale temp files of this part's shards, left by a killed run,
    are removed first.
    """
    from tqdm.auto import tqdm

    if shard_size < 1 or workers < 1:
        raise InputError(f"shard_size and workers must be >= 1, got {shard_size} and {workers}")
    if (encode_one is None) == (stream is None):
        raise ValueError("run_batch needs exactly one of encode_one and stream")
    if stream is None:
        stream = _one_by_one(encode_one, workers)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file; give a folder for the shards")
    _clean_stale_tmp(out_dir, part)
    given = select_part(paths, part)
    mine = _names(given, root)  # what the shards record, and what resume compares
    full = dict(zip(mine, given))
    summary = BatchSummary(total=len(mine))
    with tqdm(total=len(mine), desc=f"encode part {part[0]}/{part[1]}", unit="file", disable=not progress) as bar:
        for k in range(0, len(mine), shard_size):
            chunk = mine[k:k + shard_size]
            shard = out_dir / _shard_name(part, k // shard_size)
            done, reuse, damage = _shard_state(shard, chunk, space)
            if done is not None and not done.failed:
                summary.skipped.append(shard.name)
                bar.update(len(chunk))
            else:
                if damage:
                    summary.redone.append({"shard": shard.name, "reason": damage})
                _unlink_index(out_dir)  # a run killed from here on leaves no index that disagrees with the shards
                done = _encode_shard(chunk, stream, shard, space, bar, reuse, list(unpinned), full)
                summary.written.append(shard.name)
            summary.ok += done.ok
            summary.failed += done.failed
    _write(atomic_write_json, out_dir / f"summary-part-{part[0]}-of-{part[1]}.json", summary.to_json())
    _write_index_if_complete(out_dir, paths, root, part[1], shard_size, space)
    return summary


def _unlink_index(out_dir: Path) -> None:
    try:
        (out_dir / INDEX_NAME).unlink(missing_ok=True)
    except OSError as err:
        raise InputError(f"cannot remove {out_dir / INDEX_NAME}: {err.strerror}; check the --out folder") from None


def _write_index_if_complete(out_dir: Path, paths: Sequence[str], root: str | Path | None, n: int,
                             shard_size: int, space: Any) -> bool:
    """Write `index.json` when every shard of every part of n has a marker for its inputs (the last part to
    finish does). Under an exclusive lock, so the last process to get it read every final marker."""
    with _locked(out_dir):
        shards = []
        for i in range(n):
            names = _names(select_part(paths, (i, n)), root)
            for k in range(0, len(names), shard_size):
                shard = out_dir / _shard_name((i, n), k // shard_size)
                done, _ = _read_marker(shard)
                if (done is None or done.inputs_hash != hash_json(names[k:k + shard_size])
                        or done.token_space_hash != space.hash or not shard.is_file()):
                    return False  # another part is still running (or failed): its finish writes the index
                shards.append({"file": shard.name, "items": done.ok, "failed": len(done.failed),
                               "checksum": done.checksum, "token_space_hash": done.token_space_hash})
        index = {"format": INDEX_FORMAT, "token_space_name": space.name, "token_space_hash": space.hash,
                 "parts": n, "total": len(paths), "items": sum(s["items"] for s in shards), "shards": shards}
        for tmp in out_dir.glob(f".{INDEX_NAME}.*.tmp"):  # left by a killed writer; the lock keeps live ones out
            tmp.unlink(missing_ok=True)
        _write(atomic_write_json, out_dir / INDEX_NAME, index)
    return True


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive `flock` on the folder itself (no file left behind; the OS releases it if the process dies).
    Where the platform or file system has none (Windows, some NFS) it runs unlocked: `read_shards` still checks
    the index against the shards, and a rerun rewrites it."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _names(paths: Sequence[str], root: str | Path | None) -> list[str]:
    """`paths` relative to `root` (POSIX; `..` for a manifest entry outside its folder), or as given."""
    if root is None:
        return list(paths)
    base = os.path.abspath(root)
    try:
        return [Path(os.path.relpath(os.path.abspath(p), base)).as_posix() for p in paths]
    except ValueError:  # another drive than the root (Windows): no relative path exists
        raise InputError(f"an input is on another drive than the input root {root}; put the inputs under it") from None


def _clean_stale_tmp(out_dir: Path, part: tuple[int, int]) -> None:
    """Remove `.part-i-of-n-*.tmp` / `.summary-part-i-of-n.json.*.tmp` that a killed run of this part left."""
    if not out_dir.is_dir():
        return
    patterns = (f".{_part_prefix(part)}*.tmp", f".summary-part-{part[0]}-of-{part[1]}.json.*.tmp")
    for pattern in patterns:
        for tmp in out_dir.glob(pattern):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)


def _done_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".done.json")


def _read_marker(shard: Path) -> tuple[DoneMarker | None, str | None]:
    """(marker, None), (None, None) when there is none, or (None, why it is unreadable)."""
    done_file = _done_path(shard)
    if not done_file.is_file():
        return None, None
    try:
        if done_file.stat().st_size > MAX_DONE_BYTES:
            return None, f"{done_file.name} is larger than {MAX_DONE_BYTES} bytes"
        data = json.loads(done_file.read_text(encoding="utf-8"))
        return from_dict(DoneMarker, data, done_file.name), None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, ConfigError) as err:
        return None, f"{done_file.name} is unreadable ({' '.join(str(err).split())[:200]})"


def _shard_state(shard: Path, chunk: Sequence[str], space: Any
                 ) -> tuple[DoneMarker | None, dict[str, Item], str | None]:
    """(marker of an intact shard for these inputs, its items by source, why it must be redone).

    A marker naming other inputs or another space is the user's mistake and raises; an unreadable marker or
    a shard that fails its checksum is damage: the shard is re-encoded (its inputs are all still there).
    """
    done, damage = _read_marker(shard)
    if done is None:
        return None, {}, damage
    if done.inputs_hash != hash_json(list(chunk)):
        raise InputError(f"{shard} was written for a different input list or shard size; use a new --out folder")
    if done.token_space_hash != space.hash:
        raise HashMismatchError(f"{shard} was made with token space hash {done.token_space_hash}, but space "
                                f"{space.name!r} ({space.path}) has hash {space.hash}; use a new --out folder")
    if not shard.is_file():
        return None, {}, f"{shard.name} is missing"
    try:
        loaded = _load_shard(shard, space)
    except UTIError as err:
        return None, {}, str(err)
    if loaded.checksum != done.checksum:
        return None, {}, f"{shard.name} does not match the checksum in {_done_path(shard).name}"
    return done, {src: (loaded.item(j), loaded.meta[j]) for j, src in enumerate(loaded.sources)}, None


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1, ahead: int | None = None
                ) -> Iterator[Outcome]:
    """`(fn(x), None)`, or `(None, error)` when it raises, for every item in input order: one bad item never
    stops the others. workers > 1 runs `fn` in that many threads with at most `ahead` (default 2 x workers)
    results computed ahead of the consumer, which bounds memory when results are large (rendered views)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def run(x: Any) -> Outcome:
        try:
            return fn(x), None
        except Exception as err:  # noqa: BLE001 - the error is the item's outcome, reported by the caller
            return None, err

    if workers <= 1:
        yield from (run(x) for x in items)
        return
    ahead = max(ahead or 2 * workers, workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Any] = deque()
        for x in items:
            pending.append(pool.submit(run, x))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _one_by_one(encode_one: EncodeOne, workers: int) -> EncodeStream:
    """The stream of `encode_one` applied to each path (in `workers` threads)."""
    return lambda paths: ordered_map(encode_one, paths, workers, ahead=max(2 * workers, 1))


def _reason(err: Exception, path: str, name: str) -> str:
    """One line for the marker: a UTIError's message, else the error's type and message; the input is named by
    `name` (what the marker records), not by the `path` it was read from."""
    reason = str(err) if isinstance(err, UTIError) else f"{type(err).__name__}: {' '.join(str(err).split())}"
    return reason.replace(path, name) if path != name else reason


def _encode_shard(chunk: Sequence[str], stream: EncodeStream, shard: Path, space: Any, bar: Any,
                  reuse: dict[str, Item] | None = None, unpinned: list[str] | None = None,
                  full: dict[str, str] | None = None) -> DoneMarker:
    """Encode the inputs of `chunk` (names; `full` maps a name to the path to read) not in `reuse`, then write
    the shard and its marker."""
    reuse = reuse or {}
    todo = [p for p in chunk if p not in reuse]
    bar.update(len(chunk) - len(todo))
    items, failed = _encode_items(todo, stream, bar, full or {})
    return _write_shard(shard, chunk, {**reuse, **items}, failed, space, unpinned)


def _encode_items(todo: Sequence[str], stream: EncodeStream, bar: Any, full: dict[str, str]
                  ) -> tuple[dict[str, Item], list[dict[str, str]]]:
    """({name: (ids, meta)} of the inputs that encoded, [{"path": name, "reason"}] of those that failed)."""
    items: dict[str, Item] = {}
    failed = []
    paths = [full.get(name, name) for name in todo]
    got = 0
    for name, path, (result, err) in zip(todo, paths, stream(paths)):
        got += 1
        if err is None:
            items[name] = (torch.as_tensor(result[0], dtype=torch.long).reshape(-1), result[1])
        else:
            failed.append({"path": name, "reason": _reason(err, path, name)})
        bar.update(1)
    if got != len(todo):  # a stream that lost inputs would silently drop them from the shard
        raise RuntimeError(f"the encode stream gave {got} results for {len(todo)} inputs")
    return items, failed


def _write_shard(shard: Path, chunk: Sequence[str], items: dict[str, Item], failed: list[dict[str, str]],
                 space: Any, unpinned: list[str] | None = None) -> DoneMarker:
    """Write the items (in input order) as a shard, then its marker: both atomically, marker last."""
    sources = [p for p in chunk if p in items]
    ids = [items[p][0] for p in sources]
    lengths = torch.tensor([0] + [len(t) for t in ids], dtype=torch.long)
    tensors = {"ids": torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long), "offsets": lengths.cumsum(0)}
    sources_json, meta_json = json.dumps(sources), json.dumps([items[p][1] for p in sources])
    checksum = _checksum(tensors, sources_json, meta_json)
    metadata = {"format": FORMAT, "token_space_name": space.name, "token_space_hash": space.hash,
                "sources": sources_json, "meta": meta_json, "checksum": checksum}
    if unpinned:
        metadata["unpinned"] = json.dumps(sorted(unpinned))
    done = DoneMarker(DONE_FORMAT, space.hash, hash_json(list(chunk)), checksum, len(sources), tuple(failed))
    _write(atomic_save_safetensors, shard, tensors, metadata)
    _write(atomic_write_json, _done_path(shard), done.to_json())
    return done


def _write(atomic_write: Callable[..., None], path: Path, *args: Any) -> None:
    """`atomic_write(path, *args)`; a full disk or an unwritable --out is one line, not a traceback."""
    from safetensors import SafetensorError

    try:
        atomic_write(path, *args)
    except (OSError, SafetensorError) as err:
        why = getattr(err, "strerror", None) or err
        raise InputError(f"cannot write {path}: {why}; check the --out folder and its free space") from None


def _checksum(tensors: dict[str, torch.Tensor], sources_json: str, meta_json: str) -> str:
    """Content hash of a shard: its tensors and the exact item metadata strings."""
    return hash_json([hash_tensors(tensors), sources_json, meta_json])


@dataclass
class Shard:
    """One shard read back: per-item ID tensors, their sources and meta."""

    path: Path
    ids: torch.Tensor  # (T,) int64
    offsets: torch.Tensor  # (M + 1,) int64
    sources: list[str]
    meta: list[dict[str, Any]]
    checksum: str = ""
    unpinned: list[str] = field(default_factory=list)  # assets encoded without a pinned hash (--allow-unpinned)

    def __len__(self) -> int:
        return len(self.sources)

    def item(self, j: int) -> torch.Tensor:
        """IDs of item j."""
        return self.ids[self.offsets[j]:self.offsets[j + 1]]


def read_shards(folder: str | Path, space: Any) -> Iterator[Shard]:
    """Shards of `folder` in name order, each checked against its checksum; a shard made with another token
    space raises HashMismatchError, a damaged one InputError."""
    files = sorted(Path(folder).glob("part-*.safetensors"))
    if not files:
        raise InputError(f"{folder}: no part-*.safetensors shards; write them with `uti encode DIR --out {folder}`")
    index = _read_index(Path(folder), [f.name for f in files])
    warned = False
    for file in files:
        shard = _load_shard(file, space)
        if index is not None and (index[file.name]["checksum"] != shard.checksum
                                  or index[file.name]["items"] != len(shard)):
            raise InputError(f"{file}: differs from its entry in {Path(folder) / INDEX_NAME}; rerun the same "
                             "`uti encode` command to redo the index (or delete index.json)")
        warned = warned or warn_compute_dtype(shard.meta, str(folder))  # once per folder (see uti.dtypes)
        yield shard


def _read_index(folder: Path, present: list[str]) -> dict[str, dict[str, Any]] | None:
    """{shard file: its index entry} of `folder/index.json`, checked to list exactly the shards `present`;
    None without an index."""
    path = folder / INDEX_NAME
    if not path.is_file():
        return None
    fix = "rerun the same `uti encode` command to redo the index (or delete index.json)"
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise ValueError(f"larger than {MAX_INDEX_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = {e["file"]: e for e in data["shards"]} if data.get("format") == INDEX_FORMAT else None
        ok = entries is not None and all(isinstance(e.get("checksum"), str) and isinstance(e.get("items"), int)
                                         for e in entries.values())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: unreadable shard index ({' '.join(str(err).split())[:200]}); {fix}") from None
    if not ok:
        raise InputError(f"{path}: not a {INDEX_FORMAT} shard index; {fix}")
    if set(entries) != set(present):
        extra, missing = sorted(set(present) - set(entries)), sorted(set(entries) - set(present))
        raise InputError(f"{path} does not match the shards in {folder} (not indexed: {extra[:3]}, missing: "
                         f"{missing[:3]}); shards of another run or --part split are mixed in, or some were "
                         f"removed; {fix}")
    return entries


def _load_shard(file: Path, space: Any) -> Shard:
    """Read and check one shard: format, space hash, checksum (before the contents are used), then structure."""
    from safetensors import SafetensorError, safe_open

    fix = "delete it and its .done.json and rerun the batch"
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise InputError(f"{file}: not a uti shard (format {meta.get('format')!r}, expected {FORMAT!r})")
            if meta.get("token_space_hash") != space.hash:
                raise HashMismatchError(
                    f"{file} was made with token space {meta.get('token_space_name')!r} hash "
                    f"{meta.get('token_space_hash')}, but space {space.name!r} ({space.path}) has hash {space.hash}")
            if set(f.keys()) != {"ids", "offsets"}:
                raise InputError(f"{file}: expected tensors ids and offsets, got {sorted(f.keys())}; {fix}")
            tensors = {k: f.get_tensor(k) for k in ("ids", "offsets")}
    except (OSError, SafetensorError, RuntimeError, ValueError) as err:
        if isinstance(err, UTIError):
            raise
        raise InputError(f"{file}: cannot read shard ({' '.join(str(err).split())[:200]}); {fix}") from None
    if "checksum" not in meta:
        raise InputError(f"{file}: shard has no checksum (written by an older uti); rerun `uti encode` with the same "
                         "--out to re-encode it")
    texts = [meta.get(k) for k in ("sources", "meta", "checksum")]
    if not all(isinstance(t, str) for t in texts) or _checksum(tensors, texts[0], texts[1]) != texts[2]:
        raise InputError(f"{file}: shard is damaged (its checksum does not match its contents); {fix}")
    try:
        sources, metas = json.loads(texts[0]), json.loads(texts[1])
    except (ValueError, RecursionError):
        raise InputError(f"{file}: malformed shard (sources or meta are not JSON); {fix}") from None
    shard = Shard(file, tensors["ids"], tensors["offsets"], sources, metas, texts[2], _unpinned(meta.get("unpinned")))
    _check_structure(shard, fix)
    return shard


def _unpinned(text: str | None) -> list[str]:
    """The `unpinned` metadata of a shard: a JSON list of asset keys (anything else reads as a damaged list)."""
    if text is None:
        return []
    try:
        keys = json.loads(text)
    except (ValueError, RecursionError):
        keys = None
    return keys if isinstance(keys, list) and all(isinstance(k, str) for k in keys) else ["<unreadable>"]


def _check_structure(shard: Shard, fix: str) -> None:
    """Types and shapes of a checksummed shard (a shard written by other code can still be malformed)."""
    ids, off, n = shard.ids, shard.offsets, len(shard.sources) if isinstance(shard.sources, list) else -1
    ok = (n >= 0 and all(isinstance(s, str) for s in shard.sources) and isinstance(shard.meta, list)
          and len(shard.meta) == n and all(isinstance(m, dict) for m in shard.meta)
          and ids.dtype == torch.long and ids.ndim == 1 and off.dtype == torch.long and off.shape == (n + 1,)
          and int(off[0]) == 0 and int(off[-1]) == ids.numel() and bool((off[1:] >= off[:-1]).all()))
    if not ok:
        raise InputError(f"{shard.path}: malformed shard (sources, meta and offsets disagree); {fix}")
