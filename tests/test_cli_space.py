"""`uti space` and text `uti encode/decode` through click's runner: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from uti.cli import main
from uti.space import TokenSpace


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_space_show_json(run, tiny_space):
    res = run("space", "show", "tiny", "--json")
    assert res.exit_code == 0
    info = json.loads(res.output)
    assert info["hash"] == tiny_space.hash and info["ranges"]["text"] == [0, 512]
    assert "hash" in run("space", "show").output


def test_space_verify_good_and_bad(run, tiny_space, tmp_path):
    assert run("space", "verify", str(tiny_space.path)).exit_code == 0
    bad = tmp_path / "token_space.json"
    data = json.loads(tiny_space.path.read_text())
    data["abi"]["pad_to_multiple"] = 64
    bad.write_text(json.dumps(data))
    res = run("space", "verify", str(tiny_space.path), str(bad))
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("ok") and lines[1].startswith("BAD") and "hash" in lines[1] and len(lines) == 2


def test_space_build(run, tiny_space, tmp_path):
    cfg = tmp_path / "cfg.json"
    (tmp_path / "mine").mkdir()
    shutil.copy(tiny_space.root / "tokenizer.json", tmp_path / "mine" / "tokenizer.json")
    cfg.write_text(json.dumps({"name": "mine", "text": {"tokenizer": "tok", "base_vocab_size": 600},
                               "assets": {"tokenizer": "tokenizer.json"},
                               "pad_to_multiple": 256}))
    res = run("space", "build", str(cfg), "--out", str(tmp_path / "mine"), "--json")
    assert res.exit_code == 0, res.output
    sp = TokenSpace.load(tmp_path / "mine")
    assert sp.total == 768 and sp.abi["text"]["tokenizer_hash"] == tiny_space.abi["text"]["tokenizer_hash"]


def test_space_build_rejects_unknown_key(run, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: x\ntext: {tokenizer: t, base_vocab_size: 10}\ncolour: red\n")
    res = CliRunner().invoke(main, ["space", "build", str(cfg), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown key(s) colour; valid keys:" in res.output
    assert "Traceback" not in res.output


def test_encode_decode_text_round_trip(run, tmp_path, tiny_space):
    text = "Hello, 世界! e\u0301 🎉"
    res = run("encode", "--text", text, "--json")
    doc = json.loads(res.output)
    assert doc["token_space"] == {"name": "tiny", "hash": tiny_space.hash} and doc["modality"] == "text"
    assert all(isinstance(i, int) for i in doc["ids"])
    path = tmp_path / "t.json"
    path.write_text(res.output)
    dec = run("decode", str(path), "--json")
    assert json.loads(dec.output)["text"] == text


@pytest.mark.parametrize("args, needle", [
    (["space", "show", "nope"], "known spaces: "),
    (["encode", "--text", "x", "--space", "nope"], "unknown token space"),
    (["encode"], "exactly one of"),
])
def test_bad_input_is_one_line(args, needle):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and needle in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_decode_refuses_other_space_and_bad_ids(tmp_path, tiny_space):
    doc = {"token_space": {"name": "tiny", "hash": "0" * 32}, "modality": "text", "ids": [1, 2]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    res = CliRunner().invoke(main, ["decode", str(path)])
    assert res.exit_code == 2 and "0" * 32 in res.output and tiny_space.hash in res.output
    doc["token_space"]["hash"] = tiny_space.hash
    doc["ids"] = [999999]
    path.write_text(json.dumps(doc))
    res = CliRunner().invoke(main, ["decode", str(path)])
    assert res.exit_code == 2 and "999999" in res.output
    path.write_text("{oops")
    assert CliRunner().invoke(main, ["decode", str(path)]).exit_code == 2


def test_every_shipped_space_verifies_through_the_cli(run):
    from uti.space import spaces_dir

    files = sorted(str(p) for p in spaces_dir().glob("*/token_space.json"))
    assert files
    res = run("space", "verify", *files)
    lines = res.output.splitlines()
    assert res.exit_code == 0 and len(lines) == len(files) and all(line.startswith("ok ") for line in lines)


@pytest.mark.parametrize("args", [["--text", "hi"], ["tests/assets/panoramas/city.jpg"], ["tests/assets/audio/bell.oga"]])
def test_space_without_local_assets_loads_and_names_what_is_missing(args, monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sp = TokenSpace.load("qwen3-siglip2-encodec")
    assert sp.ranges["text"].as_list() == [0, 151936] and sp.total % 128 == 0
    res = CliRunner().invoke(main, ["encode", *args, "--space", "qwen3-siglip2-encodec"])
    assert res.exit_code == 2 and "not on this machine" in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "token_spaces/tiny/token_space.json"])
def test_decode_resolves_a_documents_space_name_only_through_the_registry(tmp_path, name, tiny_space):
    doc = {"token_space": {"name": name, "hash": tiny_space.hash}, "modality": "text", "ids": [1, 2]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    res = CliRunner().invoke(main, ["decode", str(path)])
    assert res.exit_code == 2 and "not a registered space" in res.stderr and len(res.stderr.splitlines()) == 1


def _unpinned_text_space(tmp_path):
    data = json.loads((TokenSpace.load("tiny").path).read_text())
    data["abi"]["text"]["tokenizer_hash"] = None
    from uti.hashing import hash_json

    data["hash"] = hash_json(data["abi"])
    folder = tmp_path / "s"
    folder.mkdir()
    shutil.copy(TokenSpace.load("tiny").root / "tokenizer.json", folder / "tokenizer.json")
    data["assets"] = {"tokenizer": "tokenizer.json"}
    (folder / "token_space.json").write_text(json.dumps(data))
    return folder


def test_allow_unpinned_flag_reaches_the_space(tmp_path, monkeypatch):
    folder = _unpinned_text_space(tmp_path)
    res = CliRunner().invoke(main, ["encode", "--text", "hi", "--space", str(folder)])
    assert res.exit_code == 2 and "--allow-unpinned" in res.stderr
    res = CliRunner().invoke(main, ["encode", "--text", "hi", "--space", str(folder), "--allow-unpinned", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["ids"]


def test_unpinned_use_is_recorded_and_decode_shows_it(tmp_path):
    folder = _unpinned_text_space(tmp_path)
    doc = tmp_path / "doc.json"
    res = CliRunner().invoke(main, ["encode", "--text", "hi", "--space", str(folder), "--allow-unpinned",
                                    "--out", str(doc)])
    assert res.exit_code == 0, res.output
    assert json.loads(doc.read_text())["unpinned"] == ["tokenizer"]
    res = CliRunner().invoke(main, ["decode", str(doc), "--space", str(folder)])
    assert res.exit_code == 2 and "--allow-unpinned" in res.stderr  # decoding uses the unpinned tokenizer too
    res = CliRunner().invoke(main, ["decode", str(doc), "--space", str(folder), "--allow-unpinned", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == {"modality": "text", "text": "hi", "unpinned": ["tokenizer"]}
    assert "encoded with unpinned asset(s) tokenizer" in res.stderr
    res = CliRunner().invoke(main, ["decode", str(doc), "--space", str(folder), "--allow-unpinned"])
    assert res.stdout == "hi\n" and "unpinned asset(s) tokenizer" in res.stderr
    pinned = CliRunner().invoke(main, ["encode", "--text", "hi", "--allow-unpinned", "--json"])
    assert pinned.exit_code == 0 and "unpinned" not in json.loads(pinned.stdout)  # the tiny space pins its tokenizer
