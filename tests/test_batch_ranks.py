"""`uti encode` under a launcher: inputs split by RANK/WORLD_SIZE, one index.json of all shards, --batch-size."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from launch import torchrun_beside
from uti.batch import launcher_part, list_inputs, read_shards, run_batch
from uti.cli import batch_part, main
from uti.errors import InputError
from uti.space import TokenSpace
from uti.testing import tiny_space

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "assets"
FAKE = tiny_space(audio=None)


def _corpus(root: Path) -> Path:
    """Three panoramas (one in a subfolder, a copy under another name) and one audio file."""
    (root / "sub").mkdir(parents=True)
    shutil.copy(ASSETS / "panoramas" / "city.jpg", root / "city.jpg")
    shutil.copy(ASSETS / "panoramas" / "forest.jpg", root / "forest.jpg")
    shutil.copy(ASSETS / "panoramas" / "city.jpg", root / "sub" / "copy.jpg")
    shutil.copy(ASSETS / "audio" / "speech_forest.wav", root / "speech.wav")
    return root


def _items(folder: Path) -> dict[str, list[int]]:
    """{source: IDs} of every shard in `folder`; an input encoded twice fails."""
    space = TokenSpace.load("tiny")
    out: dict[str, list[int]] = {}
    for shard in read_shards(folder, space):
        for j, src in enumerate(shard.sources):
            assert src not in out, f"{src} encoded twice"
            out[src] = shard.item(j).tolist()
    return out


@pytest.mark.parametrize("env, want", [
    ({}, None), ({"RANK": "0", "WORLD_SIZE": "1"}, None), ({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"}, (1, 3)),
])
def test_launcher_part_reads_rank_and_world_size(env, want) -> None:
    assert launcher_part(env) == want


@pytest.mark.parametrize("env", [{"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "2", "WORLD_SIZE": "2"},
                                 {"WORLD_SIZE": "2"}, {"RANK": "-1", "WORLD_SIZE": "2"}])
def test_launcher_part_rejects_a_bad_environment(env) -> None:
    with pytest.raises(InputError, match="RANK"):
        launcher_part(env)


def test_part_and_launcher_conflict_but_each_alone_works() -> None:
    launched = {"RANK": "1", "WORLD_SIZE": "2"}
    assert batch_part(None, launched) == (1, 2)
    assert batch_part("2/4", {}) == (2, 4)  # a job array without a launcher
    assert batch_part(None, {}) == (0, 1)
    assert batch_part("0/4", {"RANK": "0", "WORLD_SIZE": "1"}) == (0, 4)  # a one-process launch is no launch
    with pytest.raises(InputError, match="drop --part"):
        batch_part("0/4", launched)


def test_part_inside_a_launch_is_a_one_line_usage_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    (tmp_path / "in").mkdir()
    res = CliRunner().invoke(main, ["encode", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--part", "0/2"])
    assert res.exit_code == 2 and "drop --part" in res.output and "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("error:")]) == 1


def _fake(path: str) -> tuple[list[int], dict]:
    img = FAKE.ranges["image"]
    return [FAKE.special_id("<|image_start|>"), img.start + len(Path(path).name), FAKE.special_id("<|image_end|>")], {}


def test_the_last_part_to_finish_writes_the_index_and_read_shards_checks_it(tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for k in range(5):
        (src / f"a{'x' * k}.jpg").write_bytes(b"x")
    paths, out = list_inputs(src, [".jpg"]), tmp_path / "out"
    run_batch(paths, _fake, out, FAKE, part=(1, 2), shard_size=2, progress=False, root=src)
    assert not (out / "index.json").exists()  # part 0 is not done yet
    assert sum(len(s) for s in read_shards(out, FAKE)) == 2  # a folder without an index reads as before
    run_batch(paths, _fake, out, FAKE, part=(0, 2), shard_size=2, progress=False, root=src)
    index = json.loads((out / "index.json").read_text())
    assert sorted(e["file"] for e in index["shards"]) == sorted(p.name for p in out.glob("part-*.safetensors"))
    assert index["items"] == 5 and {e["token_space_hash"] for e in index["shards"]} == {FAKE.hash}
    assert sum(len(s) for s in read_shards(out, FAKE)) == 5
    extra = out / "part-0-of-3-00000.safetensors"  # a shard of another split mixed in
    shutil.copy(out / "part-0-of-2-00000.safetensors", extra)
    with pytest.raises(InputError, match="does not match the shards"):
        list(read_shards(out, FAKE))
    extra.unlink()
    entry = index["shards"][0]
    entry["checksum"] = "0" * 32
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="differs from its entry"):
        list(read_shards(out, FAKE))
    again = run_batch(paths, _fake, out, FAKE, part=(0, 2), shard_size=2, progress=False, root=src)
    assert again.skipped and not again.written  # resumable: nothing redone, the index rewritten
    assert sum(len(s) for s in read_shards(out, FAKE)) == 5


def test_batch_size_reaches_the_tower_and_keeps_the_codes(tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(ASSETS / "panoramas" / "city.jpg", src / "city.jpg")
    runner = CliRunner()
    for name, extra in (("default", []), ("three", ["--batch-size", "3"])):
        res = runner.invoke(main, ["encode", str(src), "--out", str(tmp_path / name), *extra])
        assert res.exit_code == 0, res.output
    assert _items(tmp_path / "three") == _items(tmp_path / "default")
    from uti.tokenizer import Tokenizer

    tok = Tokenizer.from_space("tiny", batch_size=3)
    assert tok.codec("image").codec.tower.batch_size == 3
    assert Tokenizer.from_space("tiny").codec("image").codec.tower.batch_size == 16


@pytest.mark.slow
def test_torchrun_two_processes_encode_each_input_once_with_one_index(tmp_path) -> None:
    src = _corpus(tmp_path / "in")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    one, _ = torchrun_beside(["-m", "uti", "encode", src, "--out", tmp_path / "two"], lambda: subprocess.run(
        [sys.executable, "-m", "uti", "encode", str(src), "--out", str(tmp_path / "one")], env=env,
        capture_output=True, text=True, cwd=REPO, timeout=120))
    assert one.returncode == 0, one.stderr[-3000:]
    two = tmp_path / "two"
    shards = sorted(p.name for p in two.glob("part-*.safetensors"))
    assert shards == ["part-0-of-2-00000.safetensors", "part-1-of-2-00000.safetensors"]
    index = json.loads((two / "index.json").read_text())
    assert sorted(e["file"] for e in index["shards"]) == shards and index["items"] == 4
    items, ref = _items(two), _items(tmp_path / "one")
    assert sorted(items) == ["city.jpg", "forest.jpg", "speech.wav", "sub/copy.jpg"]
    assert items == ref and len({tuple(v) for v in items.values()}) == 3  # the copy has the same codes
    assert torch.tensor(items["city.jpg"]).numel() > 0
