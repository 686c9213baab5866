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
    # resume: a crash after shard 0 leaves shard 1 without its marker -> shards 1 and 2 are redone, and shard 0
    # (which holds the failed bad.txt) retries only bad.txt
    (out / "part-0-of-1-00001.safetensors.done.json").unlink()
    (out / "part-0-of-1-00002.safetensors").unlink()
    calls = []
    s2 = run_batch(paths, lambda p: calls.append(p) or encode_len(p), out, SPACE, shard_size=3, progress=False)
    assert s2.skipped == [] and len(calls) == 6 and s2.ok == 7 and calls[0].endswith("bad.txt")
    calls.clear()
    s3 = run_batch(paths, lambda p: calls.append(p) or encode_len(p), out, SPACE, shard_size=3, progress=False)
    assert s3.skipped == ["part-0-of-1-00001.safetensors", "part-0-of-1-00002.safetensors"] and len(calls) == 1
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


def _contents(out, space=SPACE):
    """{source: (ids, meta)} of every item in the shards of `out`."""
    return {src: (sh.item(j).tolist(), sh.meta[j])
            for sh in read_shards(out, space) for j, src in enumerate(sh.sources)}


def test_failed_input_is_retried_until_it_succeeds(tmp_path):
    src = _corpus(tmp_path, 4)
    paths, out = list_inputs(src, [".txt"]), tmp_path / "out"
    s = run_batch(paths, encode_len, out, SPACE, shard_size=2, progress=False)
    assert [f["path"] for f in s.failed] == [str(src / "bad.txt")]
    done = json.loads((out / "part-0-of-1-00000.safetensors.done.json").read_text())
    assert done["ok"] == 1 and done["failed"][0]["path"] == str(src / "bad.txt")
    calls = []
    s = run_batch(paths, lambda p: calls.append(p) or encode_len(p), out, SPACE, shard_size=2, progress=False)
    assert calls == [str(src / "bad.txt")] and len(s.failed) == 1  # still bad: retried, still reported
    assert s.skipped == ["part-0-of-1-00001.safetensors", "part-0-of-1-00002.safetensors"]
    (src / "bad.txt").write_text("now good")
    s = run_batch(paths, encode_len, out, SPACE, shard_size=2, progress=False)
    assert s.ok == 5 and not s.failed and s.written == ["part-0-of-1-00000.safetensors"]
    fresh = tmp_path / "fresh"
    run_batch(paths, encode_len, fresh, SPACE, shard_size=2, progress=False)
    assert _contents(out) == _contents(fresh) and len(_contents(out)) == 5
    s = run_batch(paths, encode_len, out, SPACE, shard_size=2, progress=False)
    assert len(s.skipped) == 3 and not s.written


def _zero_bytes(path, where, n=10):
    data = bytearray(path.read_bytes())
    at = where if where >= 0 else len(data) + where
    data[at:at + n] = bytes(n)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", [-10, -40, 0, 30], ids=["ids-tail", "tensor-data", "header-length", "header"])
def test_zeroed_shard_bytes_are_refused_and_reencoded(tmp_path, where):
    paths, out = [p for p in list_inputs(_corpus(tmp_path, 6), [".txt"]) if "bad" not in p], tmp_path / "out"
    run_batch(paths, encode_len, out, SPACE, shard_size=4, progress=False)
    want = _contents(out)
    shard = out / "part-0-of-1-00001.safetensors"
    _zero_bytes(shard, where)
    with pytest.raises(InputError, match="delete it and its .done.json and rerun") as err:
        list(read_shards(out, SPACE))
    assert str(shard) in str(err.value) and "\n" not in str(err.value)
    calls = []
    s = run_batch(paths, lambda p: calls.append(p) or encode_len(p), out, SPACE, shard_size=4, progress=False)
    assert [r["shard"] for r in s.redone] == [shard.name] and s.written == [shard.name] and len(calls) == 2
    assert _contents(out) == want


def _marker(**change):
    fields = {"format": "uti-shard-done-1", "token_space_hash": SPACE.hash, "inputs_hash": "x", "checksum": "c",
              "ok": 1, "failed": []}
    return json.dumps({k: v for k, v in {**fields, **change}.items() if v is not ...})


@pytest.mark.parametrize("body", [
    "not json {", "", "[1, 2]", "null", '"done"', b"\xff\xfe{}",
    _marker(format=..., checksum=...),  # the old format: no checksum
    _marker(token_space_hash=5), _marker(ok=-1), _marker(ok=True), _marker(failed="no"), _marker(failed=[{"path": 1}]),
    _marker(extra=1), "[" * 100000 + "]" * 100000, '{"ok": ' + "9" * 5000 + "}",
])
def test_corrupt_done_marker_means_not_done(tmp_path, body):
    """A marker that does not parse or fit its schema is treated as absent: the shard is re-encoded (redoing
    work is always safe; refusing would make the user delete a file the toolkit can replace itself)."""
    paths, out = [p for p in list_inputs(_corpus(tmp_path, 3), [".txt"]) if "bad" not in p], tmp_path / "out"
    run_batch(paths, encode_len, out, SPACE, progress=False)
    want = _contents(out)
    marker = out / "part-0-of-1-00000.safetensors.done.json"
    marker.write_bytes(body if isinstance(body, bytes) else body.encode())
    s = run_batch(paths, encode_len, out, SPACE, progress=False)
    assert s.written == ["part-0-of-1-00000.safetensors"] and "done.json" in s.redone[0]["reason"]
    assert "\n" not in s.redone[0]["reason"] and _contents(out) == want
    assert run_batch(paths, encode_len, out, SPACE, progress=False).skipped == ["part-0-of-1-00000.safetensors"]


def test_marker_that_does_not_match_the_shard_means_not_done(tmp_path):
    """A kill between the shard's rename and its marker's (on a retry) leaves the old marker next to a new shard."""
    paths, out = list_inputs(_corpus(tmp_path, 3), [".txt"]), tmp_path / "out"
    run_batch(paths, encode_len, out, SPACE, progress=False)
    marker = out / "part-0-of-1-00000.safetensors.done.json"
    done = json.loads(marker.read_text())
    marker.write_text(json.dumps({**done, "failed": [], "checksum": "0" * 32}))
    s = run_batch(paths, encode_len, out, SPACE, progress=False)
    assert s.written and "checksum" in s.redone[0]["reason"] and len(s.failed) == 1


def test_stale_tmp_files_of_this_part_are_removed(tmp_path):
    paths, out = list_inputs(_corpus(tmp_path, 3), [".txt"]), tmp_path / "out"
    out.mkdir()
    mine = [".part-0-of-2-00000.safetensors.k3j4.safetensors.tmp", ".part-0-of-2-00000.safetensors.done.json.ab.tmp",
            ".summary-part-0-of-2.json.x1.tmp"]
    others = [".part-1-of-2-00000.safetensors.zz.safetensors.tmp", ".part-0-of-20-00000.safetensors.q.tmp", "notes.tmp"]
    for name in mine + others:
        (out / name).write_bytes(b"")
    run_batch(paths, encode_len, out, SPACE, part=(0, 2), progress=False)
    assert sorted(p.name for p in out.glob("*.tmp")) == sorted(others)
    assert sorted(p.name for p in out.glob(".*")) == sorted(o for o in others if o.startswith("."))


def test_read_shards_refuses_malformed_but_checksummed_shards(tmp_path):
    from uti.batch import FORMAT, _checksum
    from uti.io import atomic_save_safetensors

    out = tmp_path / "out"
    tensors = {"ids": torch.arange(5), "offsets": torch.tensor([0, 2, 9])}  # offsets run past the IDs
    src, meta = json.dumps(["a", "b"]), json.dumps([{}, {}])
    atomic_save_safetensors(out / "part-0-of-1-00000.safetensors", tensors, {
        "format": FORMAT, "token_space_name": "fake", "token_space_hash": SPACE.hash, "sources": src, "meta": meta,
        "checksum": _checksum(tensors, src, meta)})
    with pytest.raises(InputError, match="malformed shard"):
        list(read_shards(out, SPACE))


def test_shards_record_unpinned_assets(tmp_path):
    paths = list_inputs(_corpus(tmp_path, 3), [".txt"])
    run_batch(paths, encode_len, tmp_path / "u", SPACE, shard_size=2, progress=False, unpinned=["vision_tower"])
    assert [s.unpinned for s in read_shards(tmp_path / "u", SPACE)] == [["vision_tower"]] * 2
    run_batch(paths, encode_len, tmp_path / "p", SPACE, shard_size=2, progress=False)
    assert [s.unpinned for s in read_shards(tmp_path / "p", SPACE)] == [[], []]
