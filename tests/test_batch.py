"""Batch mode: parts, shards, failures, resume and space checks, with a fake modality-agnostic encoder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from uti.batch import list_inputs, parse_part, read_shards, run_batch, select_part
from uti.errors import HashMismatchError, InputError

SPACE = SimpleNamespace(name="fake", hash="a" * 32, path="fake/token_space.json")
OTHER = SimpleNamespace(name="other", hash="b" * 32, path="other/token_space.json")


def _corpus(tmp_path, n=7):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for k in range(n):
        (src / ("sub" if k % 2 else "") / f"f{k}.txt").write_text("x" * (k + 1))
    (src / "bad.txt").write_text("")  # fails to encode
    (src / "skip.bin").write_text("ignored suffix")
    return src


def encode_len(path):
    """IDs = one per character; an empty file is an error."""
    text = Path(path).read_text()
    if not text:
        raise InputError(f"{path}: empty")
    return list(range(len(text))), {"chars": len(text)}


def test_parts_are_a_deterministic_partition(tmp_path):
    paths = list_inputs(_corpus(tmp_path), [".txt"])
    assert len(paths) == 8 and paths == sorted(paths)
    parts = [select_part(list(reversed(paths)), (i, 3)) for i in range(3)]
    assert sorted(p for part in parts for p in part) == paths and all(len(p) in (2, 3) for p in parts)
    assert parse_part("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(InputError):
            parse_part(bad)


def test_shards_failures_and_resume(tmp_path):
    paths = list_inputs(_corpus(tmp_path), [".txt"])
    out = tmp_path / "out"
    s = run_batch(paths, encode_len, out, SPACE, shard_size=3, progress=False)
    assert s.total == 8 and s.ok == 7 and [f["path"].endswith("bad.txt") for f in s.failed] == [True]
    assert "empty" in s.failed[0]["reason"] and len(s.written) == 3
    shards = list(read_shards(out, SPACE))
    items = {src: sh.item(j).tolist() for sh in shards for j, src in enumerate(sh.sources)}
    assert items == {p: list(range(len(Path(p).read_text()))) for p in paths if not p.endswith("bad.txt")}
    assert shards[0].meta[0]["chars"] >= 1 and shards[0].offsets[0] == 0
    summary = json.loads((out / "summary-part-0-of-1.json").read_text())
    assert summary["num_failed"] == 1
    # resume: a crash after shard 0 leaves shard 1 without its marker -> only shards 1 and 2 are redone
    (out / "part-0-of-1-00001.safetensors.done.json").unlink()
    (out / "part-0-of-1-00002.safetensors").unlink()
    calls = []
    s2 = run_batch(paths, lambda p: calls.append(p) or encode_len(p), out, SPACE, shard_size=3, progress=False)
    assert s2.skipped == ["part-0-of-1-00000.safetensors"] and len(calls) == 5 and s2.ok == 7
    with pytest.raises(InputError, match="different input list"):
        run_batch(paths, encode_len, out, SPACE, shard_size=4, progress=False)


def test_read_shards_refuses_other_space(tmp_path):
    out = tmp_path / "out"
    run_batch(list_inputs(_corpus(tmp_path, 2), [".txt"]), encode_len, out, SPACE, progress=False)
    with pytest.raises(HashMismatchError, match="a" * 32 + ".*" + "b" * 32):
        list(read_shards(out, OTHER))
    with pytest.raises(HashMismatchError):
        run_batch(list_inputs(tmp_path / "in", [".txt"]), encode_len, out, OTHER, progress=False)


def test_manifest(tmp_path):
    src = _corpus(tmp_path, 3)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "in/f0.txt"}\n"in/sub/f1.txt"\n\n')
    assert list_inputs(manifest) == [str(tmp_path / "in/f0.txt"), str(tmp_path / "in/sub/f1.txt")]
    manifest.write_text('{"nope": 1}\n')
    with pytest.raises(InputError, match=":1:"):
        list_inputs(manifest)
    assert src.is_dir()
    s = run_batch([], encode_len, tmp_path / "empty", SPACE, progress=False)
    assert s.total == 0 and s.written == []


def test_workers_keep_order_and_failures(tmp_path):
    paths = list_inputs(_corpus(tmp_path), [".txt"])
    run_batch(paths, encode_len, tmp_path / "one", SPACE, shard_size=5, progress=False)
    s = run_batch(paths, encode_len, tmp_path / "four", SPACE, shard_size=5, progress=False, workers=4)
    assert s.ok == 7 and len(s.failed) == 1
    for a, b in zip(read_shards(tmp_path / "one", SPACE), read_shards(tmp_path / "four", SPACE), strict=True):
        assert a.sources == b.sources and torch.equal(a.ids, b.ids) and torch.equal(a.offsets, b.offsets)
