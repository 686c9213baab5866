"""Training records have one strict schema (no coercion, `file:line` errors), and `--max-len` fits the shipped
audio clips by default; a sequence that does not fit names its record, its file and the length it needs."""

from __future__ import annotations

import json

import pytest

from conftest import ASSETS
from hostile import run_cli
from tokenlm.data import RECORD_KEYS, DataError, build_rows, build_sequences, read_records
from uti.sequence import SequenceTooLongError

BAD_RECORDS = {
    "float id": {"image_ids": [600, 1.5], "caption": "x"},
    "integral float id": {"image_ids": [600.0], "caption": "x"},
    "string id": {"image_ids": ["258"], "caption": "x"},
    "bool id": {"audio_ids": [True], "caption": "x"},
    "nested ids": {"image_ids": [[600, 601]], "caption": "x"},
    "null ids": {"image_ids": None, "caption": "x"},
    "dict ids": {"image_ids": {"0": 600}, "caption": "x"},
    "string ids": {"image_ids": "600 601", "caption": "x"},
    "empty ids": {"image_ids": [], "caption": "x"},
    "negative id": {"image_ids": [-1], "caption": "x"},
    "huge id": {"image_ids": [10**30], "caption": "x"},
    "caption not a string": {"image": "a.jpg", "caption": 5},
    "text not a string": {"text": ["a"]},
    "path not a string": {"image": 7, "caption": "x"},
    "empty path": {"audio": "", "caption": "x"},
    "nul in path": {"image": "a\u0000b.jpg", "caption": "x"},
    "unknown key": {"image": "a.jpg", "caption": "x", "truth": {}},
    "two media": {"image": "a.jpg", "audio_ids": [600], "caption": "x"},
    "no caption": {"image": "a.jpg"},
    "text with caption": {"text": "a", "caption": "b"},
    "list line": [1, 2],
}


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_bad_record_is_one_line_with_file_and_line(tmp_path, name):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n\n" + json.dumps(BAD_RECORDS[name]) + "\n")
    with pytest.raises(DataError) as err:
        read_records(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:3: ") and "\n" not in msg and len(msg) < 400, msg
    if name == "unknown key":
        assert "truth" in msg and all(k in msg for k in RECORD_KEYS)


def test_good_records_keep_their_values(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"text": "hello"}, {"image_ids": [600, 601], "caption": "c"}, {"audio": "sub/a.wav", "caption": "d"}]))
    text, img, aud = read_records(path)
    assert text.text == "hello" and img.ids == (600, 601) and img.modality == "image"
    assert aud.media == str((tmp_path / "sub" / "a.wav").resolve()) and aud.modality == "audio"


@pytest.fixture(scope="module")
def forest_ids(tiny_space):
    from uti.audio.codec import AudioCodec

    codec = AudioCodec.from_space(tiny_space)
    return codec.to_ids(codec.encode_file(ASSETS / "audio" / "speech_forest.wav"))


def test_default_max_len_fits_the_shipped_audio_clips(tiny_space, forest_ids, tmp_path):
    from tokenlm.train_config import TrainConfig

    assert len(forest_ids) == 1182  # the longest shipped clip: 295 frames x 4 levels + 2 markers
    recs = tmp_path / "a.jsonl"
    recs.write_text(json.dumps({"audio_ids": forest_ids, "caption": "a voice in the forest, speaking clearly"}))
    seqs = build_sequences(read_records(recs), tiny_space, ("a2t", "t2a"))
    default = TrainConfig(out=str(tmp_path / "o"), data=(str(recs),)).max_len
    assert max(len(s) for s in seqs) <= default
    assert len(build_rows(seqs, tiny_space, default, seed=0)) >= 1


def test_too_long_names_record_file_and_length(tiny_space, forest_ids, tmp_path):
    recs = tmp_path / "a.jsonl"
    recs.write_text(json.dumps({"text": "x"}) + "\n" + json.dumps({"audio_ids": forest_ids, "caption": "speech"}))
    seqs = build_sequences(read_records(recs), tiny_space, ("a2t",))
    need = len(seqs[0])
    with pytest.raises(SequenceTooLongError) as err:
        build_rows(seqs, tiny_space, 512, seed=0)
    msg = str(err.value)
    assert f"{recs}:2" in msg and str(need) in msg and "--max-len" in msg, msg


@pytest.mark.slow
def test_cli_train_stderr_is_quiet(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a red square"}) + "\n" + json.dumps({"text": "a blue circle"}) + "\n")
    proc = run_cli("tokenlm", "train", "--data", path, "--out", tmp_path / "o", "--steps", "1", "--task", "text",
                   "--no-progress")
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()[-2000:]  # no "Loading weights" bar
