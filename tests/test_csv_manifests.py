"""CSV manifests (image, instruction, response) beside JSONL records, for both tracks, and the instruction's
place in a sequence: inside the target block, without labels."""

from __future__ import annotations

import json

import pytest

from connectors import ConnectorError, ManifestRow, read_manifests
from tokenlm.data import DataError, Record, build_sequences, read_records
from uti.errors import TokenRangeError
from uti.sequence import IGNORE_INDEX, build_sequence
from uti.space import TokenSpace
from uti.tokenizer import Tokenizer

from hostile import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def space():
    return TokenSpace.load("tiny")


def _write(path, text: str):
    path.write_bytes(text.encode("utf-8"))
    return path


def test_csv_rows_equal_the_jsonl_records(tmp_path):
    csv = _write(tmp_path / "m.csv", 'image,instruction,response\na.jpg,"Where, exactly?",a red square\n'
                                     '\n' 'b.jpg,,"two\nlines"\n')
    jsonl = _write(tmp_path / "m.jsonl", "\n".join(json.dumps(r) for r in [
        {"image": "a.jpg", "instruction": "Where, exactly?", "caption": "a red square"},
        {"image": "b.jpg", "caption": "two\nlines"}]))
    strip = lambda recs: [(r.caption, r.modality, r.media, r.instruction) for r in recs]  # noqa: E731
    got = read_records(csv)
    assert strip(got) == strip(read_records(jsonl))
    assert got[0].instruction == "Where, exactly?" and got[1].instruction is None  # empty cell = no instruction
    assert [r.where for r in got] == [f"{csv}:2", f"{csv}:5"]  # the line where each row ends
    assert got[0].media == str((tmp_path / "a.jpg").resolve())


def test_csv_text_column_and_byte_order_mark(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufefftext\nhello\nworld\n".encode("utf-8"))
    assert [r.text for r in read_records(path)] == ["hello", "world"]


CSV_CASES = {
    "unknown column": ("image,question,response\na.jpg,q,r\n", "unknown CSV column 'question'; valid columns"),
    "short row": ("image,instruction,response\na.jpg,r\n", ":2: 2 cells, the header has 3"),
    "long row": ("image,response\na.jpg,a, b\n", ":2: 3 cells, the header has 2"),
    "duplicate column": ("image,response,response\na,b,c\n", "duplicate CSV columns"),
    "empty file": ("", "empty CSV"),
    "nul in path": ("image,response\na\x00.jpg,b\n", ':2: "image" is not a usable file path'),
    "bad quoting": ('image,response\na.jpg,"unclosed\n', "not valid CSV"),
    "no response": ("image,instruction\na.jpg,q\n", ':2: expected {"text": str}'),
    "two media": ("image,audio,response\na.jpg,b.wav,r\n", ":2: expected"),
    "not utf-8": (None, "cannot read"),
}


@pytest.mark.parametrize("name", sorted(CSV_CASES))
def test_bad_csv_is_one_line(tmp_path, name):
    text, msg = CSV_CASES[name]
    path = tmp_path / "bad.csv"
    path.write_bytes(b"image,response\n\xff\xfe,x\n" if text is None else text.encode("utf-8"))
    with pytest.raises(DataError) as err:
        read_records(path)
    assert msg in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_train_cli_refuses_bad_csv_in_one_line(tmp_path):
    path = _write(tmp_path / "d.csv", "image,instruction,response\na.jpg,q\n")
    proc = run_cli("tokenlm", "train", "--data", path, "--out", tmp_path / "o", "--steps", "1")
    assert_one_line_error(proc, contains=f"{path}:2: 2 cells")


def test_instruction_opens_the_target_block_without_labels(space):
    tok = Tokenizer(space)
    image = [space.ranges["image"].start + k for k in range(5)]
    instr, resp = tok.encode("What is north?"), tok.encode(" a red square")
    plain = build_sequence(space, "i2t", target=resp, condition=image)
    seq = build_sequence(space, "i2t", target=resp, condition=image, target_prefix=instr)
    head = len(plain.input_ids) - len(resp) - 2  # condition block + gen marker
    start = space.special_id("<|text_start|>")
    assert seq.input_ids == plain.input_ids[: head + 1] + tuple(instr) + plain.input_ids[head + 1:]
    labelled = [i for i, y in enumerate(seq.labels) if y != IGNORE_INDEX]
    assert labelled == list(range(head + 1 + len(instr), len(seq.input_ids)))  # response + <|text_end|>
    assert [seq.input_ids[i] for i in labelled] == list(resp) + [space.special_id("<|text_end|>")]
    assert seq.input_ids[head] == start and seq.labels[head] == IGNORE_INDEX


def test_prefix_is_range_checked_and_needs_a_target(space):
    tok = Tokenizer(space)
    image = [space.ranges["image"].start]
    with pytest.raises(TokenRangeError, match="target prefix"):
        build_sequence(space, "i2t", target=tok.encode("x"), condition=image, target_prefix=image)
    with pytest.raises(TokenRangeError, match="empty after its prefix"):
        build_sequence(space, "i2t", target=[], condition=image, target_prefix=tok.encode("q"))


def test_image_placeholder_stays_where_the_instruction_puts_it_or_is_dropped_for_tokens(tmp_path, space):
    path = _write(tmp_path / "m.csv", 'image,instruction,response\nx.jpg,"Look: <image>\nWhere?",north\n')
    (row,) = read_manifests([path])
    assert row.prompt == "Look: <image>\nWhere?"  # the connector's vectors go where the instruction says
    ids = tuple(space.ranges["image"].start + k for k in range(3))
    rec = Record(caption="north", modality="image", ids=ids, instruction=row.instruction, where="m.csv:2")
    (seq,) = build_sequences([rec], space, ("i2t",))
    tok = Tokenizer(space)
    plain = build_sequence(space, "i2t", target=tok.encode("north"), condition=ids, target_prefix=tok.encode("Look: Where?"))
    assert seq.input_ids == plain.input_ids  # the token LM has its image block first: the placeholder is dropped


def test_build_sequences_uses_the_instruction_only_when_captioning(space):
    ids = tuple(space.ranges["image"].start + k for k in range(3))
    rec = Record(caption="a red square", modality="image", ids=ids, instruction="Where?", where="m.csv:2")
    i2t, t2i = build_sequences([rec], space, ("i2t", "t2i"))
    tok = Tokenizer(space)
    assert tok.encode("Where?")[0] in i2t.input_ids
    assert t2i.input_ids == build_sequence(space, "t2i", target=ids, condition=tok.encode("a red square")).input_ids


def test_connectors_read_the_same_manifests(tmp_path):
    a = _write(tmp_path / "a.csv", "image,instruction,response\nx.jpg,Where?,north\ny.jpg,,south\n")
    b = _write(tmp_path / "b.jsonl", json.dumps({"image": "z.jpg", "caption": "east"}) + "\n")
    rows = read_manifests([a, b])
    assert [(r.image.name, r.instruction, r.response) for r in rows] == [
        ("x.jpg", "Where?", "north"), ("y.jpg", "", "south"), ("z.jpg", "", "east")]
    assert rows[0].prompt == "<image>\nWhere?" and rows[1].prompt == "<image>"
    assert isinstance(rows[0], ManifestRow) and rows[0].where == f"{a}:2"


@pytest.mark.parametrize("line, what", [({"text": "hi"}, "a text record"),
                                        ({"image_ids": [1], "caption": "x"}, "inline image_ids"),
                                        ({"audio": "a.wav", "caption": "x"}, "audio")])
def test_connectors_refuse_rows_without_an_image_file(tmp_path, line, what):
    path = _write(tmp_path / "m.jsonl", json.dumps(line) + "\n")
    with pytest.raises(ConnectorError, match=f"{path}:1: the continuous track needs an image file per row, got {what}"):
        read_manifests([path])


def test_connectors_refuse_an_empty_manifest(tmp_path):
    with pytest.raises(ConnectorError, match="no rows in"):
        read_manifests([_write(tmp_path / "e.csv", "image,response\n")])
