"""Training data: JSONL records + uti-encode shards -> sequences -> packed rows -> batches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tokenlm.data import (DataError, build_rows, build_sequences, collate, label_count, load_shard_items,
                          read_records, split_records)
from uti.batch import run_batch
from uti.errors import HashMismatchError
from uti.sequence import IGNORE_INDEX
from uti.space import TokenSpace

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import make_setup  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    paths = make_setup(root, n_records=9, with_model=False)
    space = TokenSpace.load(paths["space"])
    img = space.ranges["image"]
    media = root / "media"
    media.mkdir()
    for k in range(3):
        (media / f"p{k}.jpg").write_bytes(b"x")
    # shards as `uti encode` batch mode writes them: one item per media file, IDs wrapped in image markers
    fake = {str(media / f"p{k}.jpg"): [space.special_id("<|image_start|>"), img.start + k, img.start + k + 1,
                                       space.special_id("<|image_end|>")] for k in range(3)}
    run_batch(sorted(fake), lambda p: (fake[p], {}), root / "shards", space, shard_size=2, progress=False)
    recs = root / "pairs.jsonl"
    recs.write_text("".join(json.dumps(r) + "\n" for r in [
        {"image": "media/p0.jpg", "caption": "a red square"},
        {"image": "p2.jpg", "caption": "a blue circle"},  # matched by unique file name
        {"text": "to the north"},
    ]))
    return {"root": root, "space": space, "paths": paths, "records": recs, "img": img}


def test_records_and_shards_make_sequences(env):
    space = env["space"]
    items = load_shard_items([env["root"] / "shards"], space)
    assert len(items) == 3
    recs = read_records(env["records"])
    seqs = build_sequences(recs, space, ("text", "i2t", "t2i"), items)
    assert [s.task for s in seqs] == ["i2t", "t2i", "i2t", "t2i", "text"]
    img = env["img"]
    assert seqs[0].input_ids[1:3] == (img.start, img.start + 1)
    assert seqs[2].input_ids[1:3] == (img.start + 2, img.start + 3)
    only_i2t = build_sequences(recs, space, ("i2t",), items)
    assert [s.task for s in only_i2t] == ["i2t", "i2t"]


def test_shards_of_another_space_are_refused(env):
    other = TokenSpace.from_abi({**env["space"].abi, "pad_to_multiple": 64}, name="other")
    with pytest.raises(HashMismatchError, match="hash"):
        load_shard_items([env["root"] / "shards"], other)


def test_missing_media_and_bad_lines_are_one_line_errors(env, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "nope.jpg", "caption": "x"}\n')
    with pytest.raises(DataError, match="in none of the shards"):
        build_sequences(read_records(bad), env["space"], ("i2t",), {})
    bad.write_text('{"image": "a.jpg"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: .*caption"):
        read_records(bad)
    bad.write_text("not json\n")
    with pytest.raises(DataError, match="not valid JSON"):
        read_records(bad)


def test_shuffle_is_seeded_and_split_is_deterministic(env):
    space = env["space"]
    recs = read_records(env["paths"]["data"])
    seqs = build_sequences(recs, space, ("text", "i2t"))
    a = build_rows(seqs, space, 64, seed=1)
    assert a == build_rows(seqs, space, 64, seed=1)
    assert a != build_rows(seqs, space, 64, seed=2)
    tr, ev = split_records(recs, 0.25, seed=0)
    assert len(ev) == 2 and len(tr) == 7 and split_records(recs, 0.25, seed=0) == (tr, ev)


def test_collate_trims_common_padding_only(env):
    space = env["space"]
    seqs = build_sequences(read_records(env["paths"]["data"]), space, ("text", "i2t"))
    rows = build_rows(seqs[:3], space, 200, seed=None)
    batch = collate(rows)
    longest = max(sum(len(s) for s in seqs[:3]), 0)
    assert batch["input_ids"].shape == (1, longest)
    assert (batch["labels"] != IGNORE_INDEX).sum().item() - int(batch["labels"][0, 0] != IGNORE_INDEX) \
        == label_count(rows)
    assert batch["position_ids"].dtype == torch.long
