"""Hostile encoded documents: every malformed `uti decode` input is one line and exit 2, from a file and from
standard input, in a 2 GB address space; nothing is coerced. Also: convert-encodec on empty/truncated files."""

from __future__ import annotations

import json

import pytest

from hostile import assert_one_line_error, run_cli
from uti.document import MAX_DOCUMENT_BYTES, MAX_IDS, parse_document
from uti.errors import UTIError
from uti.space import TokenSpace

TINY_HASH = TokenSpace.load("tiny").hash


def doc(**changes) -> bytes:
    """A valid tiny text document ("hi"), with top-level keys replaced (None-valued `_drop` keys removed)."""
    base = {"token_space": {"name": "tiny", "hash": TINY_HASH}, "modality": "text", "ids": [72, 73],
            "meta": {"chars": 2}}
    for key in changes.pop("_drop", ()):
        base.pop(key)
    base.update(changes)
    return json.dumps(base).encode()


def raw(ids: str = "[72, 73]", meta: str = '{"chars": 2}', modality: str = '"text"') -> bytes:
    """A document spelled as text, for what json.dumps cannot write (NaN, huge numbers, duplicate keys)."""
    return (f'{{"token_space": {{"name": "tiny", "hash": "{TINY_HASH}"}}, "modality": {modality}, '
            f'"ids": {ids}, "meta": {meta}}}').encode()


def audio(meta: dict) -> bytes:
    return doc(modality="audio", ids=[1], meta=meta)


def image(meta: dict) -> bytes:
    return doc(modality="image", ids=[1], meta=meta)


VIEW = {"kind": "tile", "index": 0, "yaw": 0.0, "pitch": 0.0, "fov": 90.0}

# (case id, document bytes, text the one error line must contain)
CASES = [
    ("token_space-null", doc(token_space=None), "token_space must be an object"),
    ("token_space-string", doc(token_space="tiny"), "token_space must be an object"),
    ("token_space-no-hash", doc(token_space={"name": "tiny"}), "exactly the keys name and hash"),
    ("token_space-extra-key", doc(token_space={"name": "tiny", "hash": TINY_HASH, "path": "/"}), "exactly the keys"),
    ("hash-not-hex", doc(token_space={"name": "tiny", "hash": "zz"}), "32 lowercase hex"),
    ("hash-int", doc(token_space={"name": "tiny", "hash": 5}), "32 lowercase hex"),
    ("name-list", doc(token_space={"name": ["tiny"], "hash": TINY_HASH}), "token_space.name must be"),
    ("name-path", doc(token_space={"name": "../../../../etc/passwd", "hash": TINY_HASH}), "not a registered space"),
    ("name-repo-path", doc(token_space={"name": "token_spaces/tiny", "hash": TINY_HASH}), "--space PATH"),
    ("name-unknown", doc(token_space={"name": "mine", "hash": TINY_HASH}), "--space PATH/token_space.json"),
    ("hash-mismatch", doc(token_space={"name": "tiny", "hash": "0" * 32}), TINY_HASH),
    ("ids-null", doc(ids=None), "ids must be a list of integers, got null"),
    ("ids-string", doc(ids="72 73"), "ids must be a list of integers"),
    ("ids-dict", doc(ids={"0": 72}), "ids must be a list of integers"),
    ("ids-nested", doc(ids=[[72], 73]), "ids[0] is a list"),
    ("ids-float", doc(ids=[72, 1.5]), "ids[1] is float 1.5"),
    ("ids-integral-float", doc(ids=[72.0]), "ids[0] is float 72.0"),
    ("ids-numeric-string", doc(ids=["258"]), "ids[0] is str '258'"),
    ("ids-bool", doc(ids=[True]), "ids[0] is true"),
    ("ids-nan", raw(ids="[NaN]"), "NaN is not a JSON number"),
    ("ids-infinity", raw(ids="[-Infinity]"), "-Infinity is not a JSON number"),
    ("ids-1e400", raw(ids="[1e400]"), "overflows to infinity"),
    ("ids-negative", doc(ids=[72, -1]), "ids[1] is -1; IDs lie in [0, 2**31)"),
    ("ids-2**31", doc(ids=[2**31]), "IDs lie in [0, 2**31)"),
    ("ids-2**70", doc(ids=[2**70]), "IDs lie in [0, 2**31)"),
    ("ids-5000-digits", raw(ids="[" + "9" * 5000 + "]"), "too many digits"),
    ("ids-too-many", raw(ids="[" + "0," * MAX_IDS + "0]"), f"at most {MAX_IDS}"),
    ("ids-outside-space", doc(ids=[999999]), "999999"),
    ("ids-missing", doc(_drop=["ids"]), "missing key(s) ids"),
    ("meta-list", doc(meta=[2]), "meta must be an object"),
    ("meta-null", doc(meta=None), "meta must be an object"),
    ("meta-chars-string", doc(meta={"chars": "2"}), "meta.chars must be an integer"),
    ("meta-unknown-key", doc(meta={"colour": "red"}), "unknown key(s) 'colour'; valid keys: chars"),
    ("meta-infinity", raw(meta='{"chars": Infinity}'), "Infinity is not a JSON number"),
    ("audio-num_samples-float", audio({"num_samples": 1000.7}), "meta.num_samples must be an integer"),
    ("audio-num_samples-negative", audio({"num_samples": -5}), "meta.num_samples must be >= 0"),
    ("audio-sample_rate-bool", audio({"sample_rate": True}), "meta.sample_rate must be an integer"),
    ("image-kind", image({"kind": "cube"}), "meta.kind must be one of 'panorama', 'plain'"),
    ("image-input_size", image({"input_size": [512]}), "meta.input_size must be two positive integers"),
    ("image-layout-string", image({"layout": "centers"}), "meta.layout must be an object"),
    ("image-views-dict", image({"views": {"0": VIEW}}), "meta.views must be a list"),
    ("image-view-index-string", image({"views": [{**VIEW, "index": "0"}]}), "meta.views[0].index must be an integer"),
    ("image-view-yaw-string", image({"views": [{**VIEW, "yaw": "0"}]}), "meta.views[0].yaw must be a number"),
    ("image-view-unknown-key", image({"views": [{**VIEW, "roll": 0}]}), "meta.views[0] has unknown key(s) 'roll'"),
    ("modality-unknown", doc(modality="video"), "modality must be one of audio, image, text"),
    ("modality-null", doc(modality=None), "modality must be one of"),
    ("modality-list", doc(modality=["text"]), "modality must be one of"),
    ("unknown-top-key", doc(extra=1), "unknown key(s) 'extra'; valid keys: token_space, modality, ids, meta"),
    ("unpinned-string", doc(unpinned="tokenizer"), "unpinned must be a list of asset names, got str"),
    ("unpinned-null", doc(unpinned=None), "unpinned must be a list of asset names, got null"),
    ("unpinned-ints", doc(unpinned=[1]), "unpinned must be a list of at most 32 asset names"),
    ("unpinned-many", doc(unpinned=["k"] * 100_000), "unpinned must be a list of at most 32 asset names"),
    ("unpinned-long-name", doc(unpinned=["k" * 65]), "unpinned must be a list of at most 32 asset names"),
    ("duplicate-key", raw(ids='[1], "ids": [2]'), "key 'ids' appears twice"),
    ("top-level-list", b"[72, 73]", "expected a JSON object"),
    ("top-level-null", b"null", "expected a JSON object"),
    ("empty", b"", "is empty"),
    ("blank", b" \n\t\n", "is empty"),
    ("not-json", b"{oops", "not valid JSON"),
    ("truncated", doc()[:40], "not valid JSON"),
    ("binary-garbage", bytes(range(256)) * 8, "not UTF-8"),
    ("deep-nesting", b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    ("deep-nesting-in-meta", raw(meta='{"chars": ' + "[" * 100_000 + "]" * 100_000 + "}"), "nested too deeply"),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("case, data, needle", CASES, ids=IDS)
def test_parse_or_decode_refuses_in_process(case, data, needle):
    """The fast, in-process half: the document module (or, for space problems, the decode command) refuses."""
    from click.testing import CliRunner

    from uti.cli import main

    res = CliRunner().invoke(main, ["decode", "-"], input=data)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: <stdin>") and needle in lines[0], res.output


@pytest.mark.slow
@pytest.mark.parametrize("case, data, needle", CASES, ids=IDS)
def test_decode_refuses_file_and_stdin_in_one_line(case, data, needle, tmp_path):
    """`uti decode FILE` and `uti decode -` each exit 2 with one line, no traceback, inside the 2 GB cap."""
    path = tmp_path / "doc.json"
    path.write_bytes(data)
    line = assert_one_line_error(run_cli("uti", "decode", path), contains=needle)
    assert line.count(str(path)) == 1, line  # the path is named once
    assert_one_line_error(run_cli("uti", "decode", "-", stdin=data), contains=needle)


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(MAX_DOCUMENT_BYTES + 1)  # sparse: refused by its size, never read
    assert_one_line_error(run_cli("uti", "decode", path), contains="larger than 64 MiB")
    with pytest.raises(UTIError, match="larger than 64 MiB"):
        parse_document(b" " * (MAX_DOCUMENT_BYTES + 1))


@pytest.mark.slow
@pytest.mark.parametrize("make, needle", [
    (lambda d: d.write_bytes(b""), "is empty"),
    (lambda d: d.write_bytes(b"PK\x03\x04" + b"\0" * 60), "not a complete zip archive"),
    (lambda d: d.write_bytes(b"not a checkpoint at all"), "not a complete zip archive"),
], ids=["empty", "truncated-zip", "garbage"])
def test_convert_encodec_refuses_unreadable_checkpoints(make, needle, tmp_path):
    ckpt = tmp_path / "encodec.th"
    make(ckpt)
    line = assert_one_line_error(run_cli("uti", "audio", "convert-encodec", ckpt, "--out", tmp_path / "o"),
                                 contains=needle)
    assert line.count(str(ckpt)) == 1 and not (tmp_path / "o").exists()


def test_convert_encodec_refuses_a_truncated_real_checkpoint(tmp_path):
    import torch

    from uti.audio.convert import convert_encodec_checkpoint

    torch.save({"encoder.model.0.conv.conv.weight": torch.zeros(64, 64)}, tmp_path / "full.th")
    data = (tmp_path / "full.th").read_bytes()
    (tmp_path / "cut.th").write_bytes(data[: len(data) // 2])
    with pytest.raises(UTIError, match="cut.th: not a weights-only torch checkpoint .*truncated"):
        convert_encodec_checkpoint(tmp_path / "cut.th", tmp_path / "o")
