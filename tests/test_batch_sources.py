"""Shard sources relative to the input root: a moved corpus resumes, and training records find their items."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from tokenlm.data import build_sequences, load_shard_items, read_records
from uti.batch import list_inputs, read_shards, run_batch
from uti.space import TokenSpace
from uti.testing import tiny_space

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import make_setup  # noqa: E402

SPACE = tiny_space(audio=None)


def _corpus(root):
    for sub in ("a", "b"):  # the same file name in two folders
        (root / sub).mkdir(parents=True)
        (root / sub / "p.jpg").write_bytes(b"x")
    return root


def _encoder(space: TokenSpace):
    img = space.ranges["image"]
    return lambda path: ([space.special_id("<|image_start|>"), img.start + (1 if "/b/" in path else 0),
                          space.special_id("<|image_end|>")], {})


def test_sources_are_relative_and_a_moved_corpus_resumes(tmp_path) -> None:
    src = _corpus(tmp_path / "in")
    run_batch(list_inputs(src, [".jpg"]), _encoder(SPACE), tmp_path / "shards", SPACE, progress=False, root=src)
    assert [s.sources for s in read_shards(tmp_path / "shards", SPACE)] == [["a/p.jpg", "b/p.jpg"]]
    moved = tmp_path / "elsewhere"
    shutil.move(str(src), moved)
    again = run_batch(list_inputs(moved, [".jpg"]), _encoder(SPACE), tmp_path / "shards", SPACE, progress=False,
                      root=moved)
    assert again.skipped == ["part-0-of-1-00000.safetensors"] and not again.written


def test_records_match_relative_sources_by_path(tmp_path) -> None:
    space = TokenSpace.load(make_setup(tmp_path, n_records=3, with_model=False)["space"])  # one with a tokenizer
    src = _corpus(tmp_path / "in")
    run_batch(list_inputs(src, [".jpg"]), _encoder(space), tmp_path / "shards", space, progress=False, root=src)
    recs = tmp_path / "pairs.jsonl"  # both share the file name p.jpg: only the path tells them apart
    recs.write_text("".join(json.dumps(r) + "\n" for r in [{"image": "in/b/p.jpg", "caption": "b"},
                                                           {"image": "in/a/p.jpg", "caption": "a"}]))
    items = load_shard_items([tmp_path / "shards"], space)
    seqs = build_sequences(read_records(recs), space, ("i2t",), items)
    img = space.ranges["image"]
    assert [s.input_ids[1] for s in seqs] == [img.start + 1, img.start]
