"""Hostile training records through `tokenlm train` (2 GB-capped subprocess): one `error:` line naming
`file:line`, exit 2, no traceback, before any model is loaded."""

from __future__ import annotations

import json

import pytest

from hostile import assert_one_line_error, run_cli

CASES = {
    "float id": {"image_ids": [600, 1.5], "caption": "x"},
    "string id": {"image_ids": ["600"], "caption": "x"},
    "bool id": {"audio_ids": [True], "caption": "x"},
    "nested ids": {"image_ids": [[600]], "caption": "x"},
    "huge id": {"image_ids": [10**40], "caption": "x"},
    "unknown key": {"image": "a.png", "caption": "x", "truth": 1},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_train_refuses_bad_record(tmp_path, name):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps(CASES[name]) + "\n")
    proc = run_cli("tokenlm", "train", "--data", path, "--out", tmp_path / "o", "--steps", "1")
    assert_one_line_error(proc, contains=f"{path}:2: ")
    assert not (tmp_path / "o" / "trainable_rows.safetensors").exists()
