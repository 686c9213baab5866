"""Hostile tokenizer.json files in a copied tiny space: `uti encode --text` refuses each with one line.

A tampered but loadable tokenizer fails the space's pin (`tokenizer_hash`); a file that is not a
tokenizer at all (or makes the Rust backend panic, or is too big) is refused as invalid input.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest

from hostile import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "token_spaces" / "tiny"


def _regex_changed(d: dict) -> None:
    d["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "h"}, "behavior": "Isolated", "invert": False}


TAMPERED: dict[str, Callable[[dict], None]] = {
    "decoder null": lambda d: d.update(decoder=None),
    "merges dropped": lambda d: d["model"].update(merges=[]),
    "add_prefix_space flipped": lambda d: d["pre_tokenizer"].update(add_prefix_space=True),
    "normalizer added": lambda d: d.update(normalizer={"type": "Lowercase"}),
    "special flag flipped": lambda d: d["added_tokens"][0].update(special=False),
    "pre-tokenizer regex changed": _regex_changed,
    "vocab ids swapped": lambda d: d["model"]["vocab"].update({"h": d["model"]["vocab"]["i"], "i": d["model"]["vocab"]["h"]}),
    "byte_fallback on": lambda d: d["model"].update(byte_fallback=True),
    "post-processor added": lambda d: d.update(post_processor={"type": "ByteLevel", "add_prefix_space": True,
                                                               "trim_offsets": False, "use_regex": True}),
}

BROKEN: dict[str, Callable[[Path], None]] = {
    "not json": lambda p: p.write_text("{"),
    "empty": lambda p: p.write_bytes(b""),
    "list body": lambda p: p.write_text("[]"),
    "unknown model type": lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "model": {"type": "Nope"}})),
    "rust panic (continuing prefix)": lambda p: p.write_text(json.dumps(
        {**(d := json.loads(p.read_text())), "model": {**d["model"], "continuing_subword_prefix": "##"}})),
    "larger than the cap (sparse)": lambda p: _sparse(p, 129 * 1024**2),
}


def _sparse(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


@pytest.fixture
def space_copy(tmp_path) -> Path:
    for name in ("token_space.json", "tokenizer.json"):
        shutil.copy(TINY / name, tmp_path / name)
    return tmp_path


def test_untampered_copy_encodes(space_copy):
    proc = run_cli("uti", "encode", "--text", "hi", "--space", space_copy / "token_space.json")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_tampered_tokenizer_fails_the_pin(space_copy, name):
    path = space_copy / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    TAMPERED[name](data)
    path.write_text(json.dumps(data), encoding="utf-8")
    proc = run_cli("uti", "encode", "--text", "hi", "--space", space_copy / "token_space.json")
    line = assert_one_line_error(proc, contains="pins")
    assert "hash" in line


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_tokenizer_is_refused(space_copy, name):
    BROKEN[name](space_copy / "tokenizer.json")
    proc = run_cli("uti", "encode", "--text", "hi", "--space", space_copy / "token_space.json")
    assert_one_line_error(proc, contains="tokenizer")
