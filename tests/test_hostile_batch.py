"""Hostile inputs to `uti encode DIR|MANIFEST --out SHARDS`: each bad manifest, marker or shard gives one `error:`
line and exit 2, or is recovered from (a damaged shard or marker is re-encoded: exit 0, a `re-encoded` line,
no traceback). A memory cap of 2 GB holds throughout (see hostile.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from hostile import assert_one_line_error, run_cli
from uti.batch import list_inputs, read_shards, run_batch

DEEP = "[" * 100000 + "]" * 100000


@pytest.mark.parametrize("body, contains", [
    (b'{"path": "a.jpg"\n', ":1: not valid JSON"),
    (b'"a.jpg"\n{"nope": 1}\n', ":2: expected a JSON string"),
    (b'{"path": null}\n', ":1:"),
    (b'{"path": 5}\n', ":1:"),
    (b'[["a.jpg"]]\n', ":1:"),
    (b'"a\\u0000b.jpg"\n', ":1:"),
    (DEEP.encode() + b"\n", "a line after line 0 nests too deeply"),
    (b'{"path": "' + b"9" * 5000 + b'"}\n{"path": ' + b"9" * 5000 + b"}\n", "a line after line 1 "),
    (b"\xff\xfe\x00garbage\n", "cannot read"),
], ids=["bad-json", "no-path", "null-path", "int-path", "list", "nul-byte", "deep", "huge-int", "not-utf8"])
def test_bad_manifest(tmp_path, body, contains):
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(body)
    assert_one_line_error(run_cli("uti", "encode", manifest, "--out", tmp_path / "out"), contains=contains)


@pytest.mark.parametrize("args, contains", [
    (["--part", "3/3"], "need 0 <= i < n"),
    (["--part", "x"], "--part must look like i/n"),
    (["--part", "1/2/3"], "--part must look like i/n"),
], ids=["part-out-of-range", "part-not-a-fraction", "part-three-numbers"])
def test_bad_options(tmp_path, args, contains):
    (tmp_path / "in").mkdir()
    proc = run_cli("uti", "encode", tmp_path / "in", "--out", tmp_path / "out", *args)
    assert_one_line_error(proc, contains=contains)


def test_missing_manifest(tmp_path):
    assert_one_line_error(run_cli("uti", "encode", tmp_path / "none.jsonl", "--out", tmp_path / "out"),
                          contains="expected a folder of inputs or a .jsonl manifest")


@pytest.mark.parametrize("out", ["afile/sub", "afile"], ids=["out-under-a-file", "out-is-a-file"])
def test_out_not_a_folder(tmp_path, out):
    (tmp_path / "in").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    proc = run_cli("uti", "encode", tmp_path / "in", "--out", tmp_path / out)
    assert_one_line_error(proc, contains="is a file" if out == "afile" else "Not a directory")


# --- cases that reach the encoders (one tiny image: the vision tower loads, ~5 s each) ------------------------

def _folder(tmp_path, assets):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(assets / "panoramas" / "city.jpg", src / "city.jpg")
    return src


def _fake(space):
    return lambda path: ([space.special_id("<|image_start|>")], {})


def _previous_run(src, out, space, **kw):
    """A finished earlier batch into `out` (fake IDs: only markers and checksums matter here)."""
    from uti.codecs import codec_classes

    suffixes = [s for c in codec_classes() for s in c.file_suffixes()]  # what `uti encode DIR` lists
    run_batch(list_inputs(src, suffixes), _fake(space), out, space, progress=False, root=src, **kw)


def _zero(path, at, n=10):
    data = bytearray(path.read_bytes())
    data[at:at + n] = bytes(n)
    path.write_bytes(bytes(data))


SHARD, MARKER = "part-0-of-1-00000.safetensors", "part-0-of-1-00000.safetensors.done.json"
DAMAGE = {
    "marker-not-json": lambda out: (out / MARKER).write_text("{not json"),
    "marker-list-body": lambda out: (out / MARKER).write_text("[1, 2, 3]"),
    "marker-wrong-types": lambda out: (out / MARKER).write_text(
        (out / MARKER).read_text().replace('"ok": 1', '"ok": "one"')),
    "marker-deep": lambda out: (out / MARKER).write_text(DEEP),
    "marker-empty": lambda out: (out / MARKER).write_bytes(b""),
    "shard-zeroed-data": lambda out: _zero(out / SHARD, (out / SHARD).stat().st_size - 10),
    "shard-zeroed-header": lambda out: _zero(out / SHARD, 20),
    "shard-garbage": lambda out: (out / SHARD).write_bytes(b"\x00" * 64),
    "shard-empty-without-marker": lambda out: ((out / SHARD).write_bytes(b""), (out / MARKER).unlink()),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_output_is_reencoded(tmp_path, assets, tiny_space, damage):
    src, out = _folder(tmp_path, assets), tmp_path / "out"
    _previous_run(src, out, tiny_space)
    DAMAGE[damage](out)
    (out / f".{SHARD}.k1l2.safetensors.tmp").write_bytes(b"")  # what a killed run leaves
    proc = run_cli("uti", "encode", src, "--out", out)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    stdout = proc.stdout.decode()
    assert "1/1 encoded" in stdout and "shards written 1" in stdout, stdout
    assert (f"re-encoded {SHARD}:" in stdout) == ("without-marker" not in damage), stdout  # no marker: not done
    assert not list(out.glob(".*.tmp")) and len(list(read_shards(out, tiny_space))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("case", ["other-input-list", "other-space", "out-is-a-file", "shard-path-is-a-folder"])
def test_bad_output_folder(tmp_path, assets, tiny_space, case):
    from types import SimpleNamespace

    src, out = _folder(tmp_path, assets), tmp_path / "out"
    (src / "interior.jpg").write_bytes((assets / "panoramas" / "interior.jpg").read_bytes())
    if case == "other-input-list":
        _previous_run(src, out, tiny_space, shard_size=1)
        (out / "part-0-of-1-00001.safetensors.done.json").unlink()
        contains = "different input list"
    elif case == "other-space":
        other = SimpleNamespace(name="other", hash="b" * 32, path="other/token_space.json",
                                special_id=tiny_space.special_id)
        _previous_run(src, out, other)
        contains = "token space hash " + "b" * 32
    elif case == "out-is-a-file":
        out.write_text("not a folder")
        contains = "is a file"
    else:
        (out / SHARD).mkdir(parents=True)
        contains = "cannot write"
    assert_one_line_error(run_cli("uti", "encode", src, "--out", out), contains=contains)


@pytest.mark.slow
def test_failed_inputs_exit_1_and_are_listed(tmp_path, assets):
    src = _folder(tmp_path, assets)
    (src / "truncated.jpg").write_bytes((src / "city.jpg").read_bytes()[:300])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('"in/city.jpg"\n"in/truncated.jpg"\n{"path": "in/missing.jpg"}\n')
    proc = run_cli("uti", "encode", manifest, "--out", tmp_path / "out", "--json")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1 and "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: 2 of 3 inputs failed (see the summary);"), err
    summary = json.loads(proc.stdout)
    assert summary["ok"] == 1 and sorted(f["path"].rsplit("/", 1)[-1] for f in summary["failed"]) == [
        "missing.jpg", "truncated.jpg"]
    assert all("\n" not in f["reason"] for f in summary["failed"])
