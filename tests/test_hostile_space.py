"""Hostile token_space.json files: each is refused with one line, before anything big is allocated.

Every case is a mutated copy of the tiny space's file. `uti space verify` reports a damaged file as a
failed check (one `BAD` line on stdout, exit 1: verifying is asking "is this intact?", and "no" is an
answer, not a usage error); `uti space show` treats it as bad input (one `error:` line, exit 2). Both run
as a user would, in a subprocess capped at 2 GB of address space (`tests/hostile.py`). Cases marked
"rehash" recompute the stored hash after the edit, so the schema and its bounds (not the hash) must
catch them; the others leave the stale hash, which must be checked before anything is derived.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner

from hostile import assert_one_line_error, run_cli
from uti.cli import main
from uti.hashing import hash_json

TINY = Path(__file__).resolve().parent.parent / "token_spaces" / "tiny" / "token_space.json"
HUGE = 10**8


def _set(path: str, value: Any, rehash: bool = True) -> Callable[[dict], dict]:
    """A mutation setting the dotted `path` (list indices as digits) to `value`."""
    def mutate(doc: dict) -> dict:
        parts = path.split(".")
        last, node = parts[-1], doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value
        if rehash and path.startswith("abi"):
            doc["hash"] = hash_json(doc["abi"])
        return doc
    return mutate


_DELETE = object()


def _text(old: str, new: str) -> Callable[[str], str]:
    """A mutation of the raw file text (for what JSON values cannot express: NaN, huge literals, ...)."""
    def mutate(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)
    return mutate


def _rehashed(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
    def mutate(doc: dict) -> dict:
        doc = fn(doc)
        doc["hash"] = hash_json(doc["abi"])
        return doc
    return mutate


def _many_specials(doc: dict) -> dict:
    doc["abi"]["specials"] += [f"<|x{i}|>" for i in range(200_000)]
    return doc


def _nested(depth: int) -> Callable[[str], str]:
    return lambda text: text.replace('"description": ', '"description": ' + "[" * depth + "]" * depth + ', "x": ', 1)


# (id, mutation of the parsed doc or of the raw text, words the one line must contain)
CASES: list[tuple[str, Callable, str]] = [
    # memory before integrity: huge sizes, with a stale hash (refused by the hash) and rehashed (by the bounds)
    ("audio-codebooks-1e8-stale", _set("abi.audio.num_codebooks", HUGE, rehash=False), "stored hash"),
    ("audio-codebooks-1e8", _set("abi.audio.num_codebooks", HUGE), "abi.audio.num_codebooks"),
    ("num-tiles-1e8-stale", _set("abi.image.layout.num_tiles", HUGE, rehash=False), "stored hash"),
    ("num-tiles-1e8", _set("abi.image.layout.num_tiles", HUGE), "abi.image.layout.num_tiles"),
    ("image-codebook-size-1e12", _set("abi.image.codebook_size", 10**12), "abi.image.codebook_size"),
    ("audio-codebook-size-1e9", _set("abi.audio.codebook_size", 10**9), "abi.audio.codebook_size"),
    ("base-vocab-1e12", _set("abi.text.base_vocab_size", 10**12), "abi.text.base_vocab_size"),
    ("pad-to-multiple-1e12", _set("abi.pad_to_multiple", 10**12), "abi.pad_to_multiple"),
    ("tile-size-1e9", _set("abi.image.layout.tile_size", 10**9), "tile_size"),
    ("tower-image-size-1e9", _set("abi.image.tower.image_size", 10**9), "image_size"),
    ("200k-specials", _rehashed(_many_specials), "abi.specials"),
    ("total-1e30", _set("total", 10**30), "total"),
    ("ranges-1e40", _set("ranges.text", [0, 10**40]), "ranges"),
    # one schema: wrong types anywhere
    ("ranges-string", _set("ranges", "all"), "space.ranges"),
    ("ranges-list", _set("ranges", [1, 2]), "space.ranges"),
    ("range-not-pair", _set("ranges.text", "0-512"), "space.ranges.text"),
    ("assets-string", _set("assets", "tokenizer.json"), "space.assets"),
    ("assets-list", _set("assets", ["tokenizer.json"]), "space.assets"),
    ("asset-number", _set("assets.tokenizer", 5), "space.assets.tokenizer"),
    ("asset-null", _set("assets.tokenizer", None), "space.assets.tokenizer"),
    ("asset-bad-hub", _set("assets.tokenizer", {"hub": "../../etc"}), "space.assets.tokenizer"),
    ("image-null", _set("abi.image", None), "abi.image"),
    ("text-missing", _set("abi.text", _DELETE), "text"),
    ("vocab-string", _set("abi.text.base_vocab_size", "512"), "abi.text.base_vocab_size"),
    ("vocab-float", _set("abi.text.base_vocab_size", 512.0), "abi.text.base_vocab_size"),
    ("codebooks-bool", _set("abi.audio.num_codebooks", True), "abi.audio.num_codebooks"),
    ("global-view-int", _set("abi.image.layout.global_view", 1), "global_view"),
    ("fov-string", _set("abi.image.layout.fov", "90"), "fov"),
    ("pitches-dict", _set("abi.image.layout.pitches", {"0": 0}), "pitches"),
    ("special-number", _set("abi.specials.3", 7), "abi.specials[3]"),
    ("special-duplicate", _set("abi.specials.3", "<|pad|>"), "duplicates"),
    ("tokenizer-hash-list", _set("abi.text.tokenizer_hash", ["0f00"]), "tokenizer_hash"),
    ("unknown-abi-key", _set("abi.colour", "red"), "unknown key"),
    ("unknown-file-key", _set("colour", "red"), "unknown key"),
    ("schema-2", _set("abi.schema", 2), "abi.schema"),
    ("format-other", _set("format", "gguf"), "format"),
    ("name-path", _set("name", "../../../../etc/passwd"), "space.name"),
    ("hash-number", _set("hash", 5), "hash"),
    ("abi-list", _set("abi", []), "abi"),
    ("description-dict", _set("description", {"a": 1}), "description"),
    # what Python's json would accept or crash on
    ("fov-nan", _text('"fov": 90.0', '"fov": NaN'), "NaN"),
    ("fov-infinity", _text('"fov": 90.0', '"fov": -Infinity'), "Infinity"),
    ("fov-1e999", _text('"fov": 90.0', '"fov": 1e999'), "does not fit a float"),
    ("5000-digit-int", _text('"base_vocab_size": 512', '"base_vocab_size": ' + "9" * 5000), "thousands of digits"),
    ("deep-nesting-100k", _nested(100_000), "nested too deeply"),
    ("nesting-500", _nested(500), "unknown key"),
    ("duplicate-key", _text('"name": "tiny",', '"name": "tiny", "name": "other",'), "duplicate key"),
    ("empty-file", lambda text: "", "not valid JSON"),
    ("not-json", lambda text: "{not json", "not valid JSON"),
    ("top-level-list", lambda text: "[1, 2]", "not a token space"),
    ("null", lambda text: "null", "not a token space"),
    ("invalid-utf8", lambda text: "\udcff", "not UTF-8"),
    ("5mb", lambda text: " " * (5 << 20) + text, "limit"),
]
#: Cases whose regression would allocate gigabytes: never run in this process, always under the cap.
ALWAYS_IN_SUBPROCESS = {"audio-codebooks-1e8", "audio-codebooks-1e8-stale", "num-tiles-1e8", "num-tiles-1e8-stale"}


def write_case(tmp_path: Path, mutate: Callable) -> Path:
    text = TINY.read_text(encoding="utf-8")
    out = tmp_path / "token_space.json"
    try:
        doc = mutate(copy.deepcopy(json.loads(text)))
    except (TypeError, KeyError, AttributeError, AssertionError):
        doc = None
    if isinstance(doc, dict):
        out.write_text(json.dumps(doc), encoding="utf-8")
    else:
        new = mutate(text)
        out.write_bytes(new.encode("utf-8", errors="surrogateescape"))
    return out


def _params(cases):
    return [pytest.param(fn, words, id=name, marks=() if name in ALWAYS_IN_SUBPROCESS else pytest.mark.slow)
            for name, fn, words in cases]


@pytest.mark.parametrize("mutate, words", _params(CASES))
def test_verify_and_show_refuse_under_memory_cap(tmp_path, mutate, words):
    path = write_case(tmp_path, mutate)
    start = time.monotonic()
    proc = run_cli("uti", "space", "verify", path)
    out = proc.stdout.decode(errors="replace").splitlines()
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1 and "Traceback" not in err, err[-2000:]
    assert len(out) == 1 and out[0].startswith("BAD ") and words in out[0], out
    assert_one_line_error(run_cli("uti", "space", "show", path), contains=words)
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("mutate, words", [pytest.param(fn, w, id=n) for n, fn, w in CASES
                                           if n not in ALWAYS_IN_SUBPROCESS])
def test_same_cases_in_process(tmp_path, mutate, words):
    """The same refusals through click in this process (fast; the huge cases run only under the cap)."""
    path = write_case(tmp_path, mutate)
    res = CliRunner().invoke(main, ["space", "verify", str(path)])
    assert res.exit_code == 1 and res.stdout.startswith("BAD ") and words in res.stdout, res.output
    assert len(res.stdout.splitlines()) == 1
    res = CliRunner().invoke(main, ["space", "show", str(path)])
    lines = res.stderr.splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], res.output


def test_cases_are_distinct_and_tiny_itself_passes(tmp_path):
    assert len({name for name, _, _ in CASES}) == len(CASES)
    res = CliRunner().invoke(main, ["space", "verify", str(TINY)])
    assert res.exit_code == 0 and res.stdout.startswith("ok "), res.output
