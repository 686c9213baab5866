"""Kill a batch at every file operation of its shard writes; a rerun always finishes with the uninterrupted result,
and no state is ever taken as done when it is not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from killpoints import file_ops, kill_at_each_file_op
from test_batch import SPACE, encode_len
from uti.batch import _shard_state, list_inputs, read_shards, run_batch, select_part


def _corpus(root: Path, bad: bool) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    for k in range(5):
        (root / f"f{k}.txt").write_text("x" * (k + 1))
    (root / "f2.txt").write_text("" if bad else "fixed")  # an empty file fails to encode
    return list_inputs(root, [".txt"])


def _contents(out: Path) -> dict:
    return {src: (sh.item(j).tolist(), sh.meta[j])
            for sh in read_shards(out, SPACE) for j, src in enumerate(sh.sources)}


def _run(paths: list[str], out: Path):
    return run_batch(paths, encode_len, out, SPACE, shard_size=2, progress=False)


def _check_nothing_false_done(paths: list[str], out: Path, want: dict) -> None:
    """What a rerun takes as encoded equals an uninterrupted run, and every other input is marked to be retried."""
    mine = select_part(paths)
    for k in range(0, len(mine), 2):
        chunk = mine[k:k + 2]
        done, items, _ = _shard_state(out / f"part-0-of-1-{k // 2:05d}.safetensors", chunk, SPACE)
        if done is not None:
            have = {src: (ids.tolist(), meta) for src, (ids, meta) in items.items()}
            assert have == {src: want[src] for src in have} and len(have) == done.ok
            assert sorted(f["path"] for f in done.failed) == sorted(set(chunk) - set(have))


@pytest.mark.parametrize("start", ["fresh", "retry"])
def test_kill_at_every_file_op_of_a_batch(tmp_path, start):
    """fresh: kill a first run into an empty --out. retry: a first run failed on f2.txt, the file was fixed, and
    the rerun that rewrites that shard and its marker is killed."""
    src, base = tmp_path / "in", tmp_path / "base"
    paths = _corpus(src, bad=start == "retry")
    if start == "retry":
        _run(paths, base)
        _corpus(src, bad=False)
    ref = tmp_path / "ref"
    ref_summary = _run(paths, ref)
    want = _contents(ref)
    assert ref_summary.ok == 5 and not ref_summary.failed

    def fresh_out(name: str) -> Path:
        out = tmp_path / name
        if base.exists():
            shutil.copytree(base, out)
        return out

    probe = fresh_out("probe")
    ops = file_ops(lambda: _run(paths, probe))
    assert ops.count("replace") >= 3  # at least one shard, its marker and the summary
    out = fresh_out("killed")
    for k in kill_at_each_file_op(lambda: _run(paths, out), len(ops)):
        _check_nothing_false_done(paths, out, want)
        summary = _run(paths, out)
        assert summary.ok == 5 and not summary.failed, f"kill point {k}"
        assert _contents(out) == want, f"kill point {k}"
        assert not list(out.glob(".*.tmp")), f"kill point {k}: stale temp files remain"
        assert _run(paths, out).written == [], f"kill point {k}: a finished rerun is not skipped"
        shutil.rmtree(out)
        fresh_out("killed")
