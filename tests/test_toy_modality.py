"""Adding a modality touches one file: a toy depth-map codec, defined and registered only in this test, goes
through a space build, `uti.Tokenizer` encode/decode, the sequence builder, two rows-stage training steps,
grammar-constrained generation and decode, with no change to `uti`, `tokenlm` or `connectors`.

The toy codec: an (H, W) float depth map (metres) is averaged over a G x G grid and each cell quantised to
one of K levels in [0, max_depth); its block is ``<|depth_start|> c_0 .. c_{G*G-1} <|depth_end|>``.
Training goes through `tokenlm train` (`tokenlm.train.train`) on JSONL records that carry the toy items
inline (`{"depth_ids": [...], "caption": ...}`: the record schema takes every registered modality), and
generation through `tokenlm.generate` (prompt, budget, stop and decode all come from the codec).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tokenlm.checkpoint import load_rows
from tokenlm.constraints import Grammar, TokenSpaceLogitsProcessor, _Walk, export_rules
from tokenlm.data import RECORD_KEYS, DataError, build_sequences, read_records
from tokenlm.generate import build_prompt_ids, continued_stream, decode_stream, generate_ids
from tokenlm.model import grow_model, load_base, trainable_row_params
from uti.testing import tiny_qwen3
from tokenlm.train import TrainConfig, train
from uti import ModalityCodec, Segment, Tokenizer, register_codec
from uti.build import SpaceConfig, TextConfig
from uti.codecs import unregister_codec
from uti.errors import ConfigError, InputError, SpaceError, TokenRangeError
from uti.sequence import TASKS, build_prompt, build_sequence
from uti.space import TokenSpace

from toy_space import build_toy_space


@dataclass
class DepthMap:
    """An (H, W) float32 depth map in metres."""

    values: np.ndarray


class DepthGrammar:
    """Inside a depth block: exactly P codes of the depth range, then only the end marker. State: codes seen."""

    def __init__(self, codes: tuple[int, int], count: int, end: int) -> None:
        self.codes, self.count, self.end = codes, count, end

    def start(self) -> int:
        return 0

    def allowed(self, state: int, prompt: bool = False) -> list[tuple[int, int]]:
        return [self.codes] if state < self.count else [(self.end, self.end + 1)]

    def advance(self, state: int, tok: int) -> int:
        return state + 1

    def export(self) -> dict[str, Any]:
        return {"allowed": [list(self.codes)], "count": self.count, "end": self.end}


class DepthCodec(ModalityCodec):
    """The toy codec (registered as "depth" by the fixture)."""

    @classmethod
    def build_section(cls, section_cfg: dict[str, Any], assets: dict[str, Any]) -> dict[str, Any]:
        unknown = set(section_cfg) - {"levels", "grid", "max_depth"}
        if unknown:
            raise ConfigError(f"depth: unknown key(s) {', '.join(sorted(unknown))}")
        return {"levels": int(section_cfg.get("levels", 8)), "grid": int(section_cfg.get("grid", 2)),
                "max_depth": float(section_cfg.get("max_depth", 10.0))}

    @classmethod
    def validate_section(cls, section: Any) -> list[str]:
        ok = isinstance(section, dict) and all(isinstance(section.get(k), int) and section[k] > 0
                                               for k in ("levels", "grid"))
        return [] if ok else ["abi.depth must have positive integer levels and grid"]

    @classmethod
    def range_sizes(cls, section: dict[str, Any]) -> list[tuple[str, int]]:
        return [("depth", section["levels"])]

    @classmethod
    def accepts(cls, item: Any) -> bool:
        return isinstance(item, DepthMap)

    def encode(self, item: DepthMap) -> list[int]:
        g, k, top = self.section["grid"], self.section["levels"], self.section["max_depth"]
        cells = [c.mean() for rows in np.array_split(item.values, g, 0) for c in np.array_split(rows, g, 1)]
        codes = np.clip(np.floor(np.array(cells) / top * k), 0, k - 1).astype(int)  # (G*G,)
        start, end = (self.space.special_id(n) for n in self.markers())
        return [start, *self.space.ranges["depth"].to_global(codes.tolist()), end]

    def decode_block(self, ids: list[int]) -> DepthMap:
        g, k, top = self.section["grid"], self.section["levels"], self.section["max_depth"]
        start, end = (self.space.special_id(n) for n in self.markers())
        if len(ids) != g * g + 2 or ids[0] != start or ids[-1] != end:
            raise TokenRangeError(f"a depth block is {start}, {g * g} depth codes, {end}")
        codes = np.array(self.space.ranges["depth"].to_local(ids[1:-1]))
        return DepthMap(((codes + 0.5) * top / k).reshape(g, g).astype(np.float32))  # level centres

    def block_grammar(self) -> DepthGrammar:
        r = self.space.ranges["depth"]
        return DepthGrammar((r.start, r.stop), self.section["grid"] ** 2, self.space.special_id(self.markers()[1]))


@pytest.fixture(scope="module")
def depth():
    register_codec("depth")(DepthCodec)
    yield DepthCodec
    unregister_codec("depth")


@pytest.fixture(scope="module")
def space_root(depth, tmp_path_factory) -> Path:
    """The folder of a text (the tiny tokenizer) + depth space built by `uti.build`."""
    return build_toy_space(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def space(space_root) -> TokenSpace:
    """The toy space reloaded from disk (hash and ranges checked)."""
    return TokenSpace.load(space_root)


def _depth_map(seed: int) -> DepthMap:
    return DepthMap(np.random.default_rng(seed).uniform(0, 10, (6, 8)).astype(np.float32))


def test_space_build_section_ranges_specials(space):
    assert space.abi["depth"] == {"levels": 8, "grid": 2, "max_depth": 10.0}
    assert {k: r.as_list() for k, r in space.ranges.items()} == {
        "text": [0, 512], "special": [512, 526], "depth": [526, 534], "padding": [534, 576]}
    assert space.abi["specials"][-3:] == ["<|depth_start|>", "<|depth_end|>", "<|gen_depth|>"]
    bad = {**space.abi, "specials": space.abi["specials"][:-1]}
    with pytest.raises(SpaceError, match="lacks required <\\|gen_depth\\|>"):
        TokenSpace.from_abi(bad, "bad")


def test_toy_ranges_follow_the_builtins_in_layout_order(depth):
    """Adding a codec makes a new space (new hash): text and the old specials keep their IDs, the 3 new
    specials shift the code ranges after them by 3, and the toy range comes after the built-ins'."""
    tiny = TokenSpace.load("tiny")
    abi = {**tiny.abi, "depth": {"levels": 8, "grid": 2, "max_depth": 10.0},
           "specials": tiny.abi["specials"] + ["<|depth_start|>", "<|depth_end|>", "<|gen_depth|>"]}
    both = TokenSpace.from_abi(abi, "tiny+depth")
    assert both.hash != tiny.hash and both.ranges["text"] == tiny.ranges["text"]
    assert [both.special_id(n) for n in tiny.specials] == list(tiny.specials.values())
    assert [k for k in both.ranges] == [*list(tiny.ranges)[:-1], "depth", "padding"]
    assert all(both.ranges[k].as_list() == [r.start + 3, r.stop + 3] for k, r in tiny.ranges.items()
               if k not in ("text", "special", "padding"))
    assert both.ranges["depth"].as_list() == [tiny.ranges["audio.3"].stop + 3, tiny.ranges["audio.3"].stop + 11]


def test_unregistered_modality_is_refused(space, tmp_path):
    cfg = dict(name="x", text=TextConfig(tokenizer="t", base_vocab_size=16), codecs={"volume": {}})
    with pytest.raises(ConfigError, match="no codec is registered for modality 'volume'"):
        SpaceConfig(**cfg)
    with pytest.raises(InputError, match="no depth section"):
        Tokenizer.from_space("tiny").encode(_depth_map(0))


def test_tokenizer_round_trip(space):
    tok = Tokenizer.from_space(space)
    dm = _depth_map(1)
    ids = tok.encode(dm)
    assert ids[0] == space.special_id("<|depth_start|>") and ids[-1] == space.special_id("<|depth_end|>")
    assert all(i in space.ranges["depth"] for i in ids[1:-1]) and len(ids) == 6
    text = tok.encode("far wall")
    segs = tok.decode(text + ids)
    assert [s.modality for s in segs] == ["text", "depth"] and segs[0].value == "far wall"
    cells = np.array([[dm.values[:3, :4].mean(), dm.values[:3, 4:].mean()],
                      [dm.values[3:, :4].mean(), dm.values[3:, 4:].mean()]])
    assert np.abs(segs[1].value.values - cells).max() <= 10 / 8 / 2 + 1e-6  # within half a level
    assert tok.encode_batch([dm, "far wall"]) == [ids, text]
    with pytest.raises(TokenRangeError):
        tok.decode(ids[:-2] + [ids[-1]])


def test_sequence_builder_depth_tasks(space):
    tok = Tokenizer.from_space(space)
    ids, text = tok.encode(_depth_map(2)), tok.encode("near")
    assert "depth2t" in TASKS and "t2depth" in TASKS and "depth2text" in TASKS
    seq = build_sequence(space, "depth2t", target=text, condition=ids)
    sid = space.special_id
    assert list(seq.input_ids) == [*ids, sid("<|gen_text|>"), sid("<|text_start|>"), *text, sid("<|text_end|>")]
    t2d = build_sequence(space, "t2depth", target=ids[1:-1], condition=text)
    assert t2d.input_ids[-len(ids) - 1:] == (sid("<|gen_depth|>"), *ids)
    assert build_prompt(space, "t2depth", text) == list(t2d.input_ids[:-len(ids) + 1])
    with pytest.raises(TokenRangeError, match="outside the depth range"):
        build_sequence(space, "t2depth", target=[5, 6, 7, 8], condition=text)


def _records(path: Path, tok: Tokenizer) -> Path:
    """A JSONL of depth records with inline IDs (`depth_ids`, the key the depth codec's registration adds)."""
    lines = [json.dumps({"depth_ids": tok.encode(_depth_map(10 + k)), "caption": f"room {k}"}) for k in range(6)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_records_take_the_registered_modality(space, tmp_path):
    tok = Tokenizer.from_space(space)
    assert "depth" in RECORD_KEYS and "depth_ids" in RECORD_KEYS
    recs = read_records(_records(tmp_path / "d.jsonl", tok))
    seqs = build_sequences(recs, space, ("depth2t", "t2depth"))
    assert [s.task for s in seqs[:2]] == ["depth2t", "t2depth"]
    assert list(seqs[0].input_ids[:6]) == tok.encode(_depth_map(10))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"volume": "v.bin", "caption": "x"}) + "\n")
    with pytest.raises(DataError, match="unknown key.*valid keys: .*depth, depth_ids"):
        read_records(tmp_path / "bad.jsonl")


@pytest.mark.slow
def test_train_generate_decode(space, space_root, tmp_path):
    """Two rows-stage steps of `tokenlm train` (records with depth IDs), then `tokenlm.generate` and decode."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tok = Tokenizer.from_space(space)
    tiny_qwen3(vocab=512).save_pretrained(tmp_path / "base")
    cfg = TrainConfig(out=str(tmp_path / "run"), data=(str(_records(tmp_path / "d.jsonl", tok)),),
                      space=str(space_root), base=str(tmp_path / "base"), tasks=("depth2t", "t2depth"),
                      steps=2, batch_size=2, max_len=64, lr=1e-2, schedule="constant", progress=False)
    res = train(cfg)
    assert len(res.losses) == 2 and all(np.isfinite(res.losses)) and res.losses[1] < res.losses[0]
    before = trainable_row_params(grow_model(load_base(str(tmp_path / "base")), space, seed=cfg.seed))
    model = load_rows(load_base(str(tmp_path / "base")), tmp_path / "run", space).eval()
    rows = trainable_row_params(model)
    d = space.ranges["depth"]
    v = space.ranges["text"].stop
    assert not torch.equal(rows["embed_rows"][d.start - v:d.stop - v], before["embed_rows"][d.start - v:d.stop - v])
    assert torch.equal(model.get_input_embeddings().base.weight,
                       load_base(str(tmp_path / "base")).get_input_embeddings().weight)  # rows stage: base frozen

    prompt = build_prompt_ids(space, "room 3", target="depth")
    assert prompt == build_prompt(space, "t2depth", tok.encode("room 3"))
    proc = TokenSpaceLogitsProcessor(space)
    scores = proc(torch.tensor([prompt]), torch.zeros(1, space.total))
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == list(range(d.start, d.stop))
    new = generate_ids(model, space, prompt, target="depth", do_sample=False)
    assert all(i in d for i in new[:4]) and new[4:] == [space.special_id("<|depth_end|>")]
    stream = continued_stream(space, prompt, new)
    assert decode_stream(space, stream) == [{"modality": "depth", "num_ids": 6, "complete": True}]
    segs = tok.decode(prompt + new)
    assert [s.modality for s in segs] == ["text", "special", "depth"] and segs[1].value == "<|gen_depth|>"
    assert isinstance(segs[2], Segment) and segs[2].value.values.shape == (2, 2)


def test_grammar_and_exported_rules(space):
    g, w = Grammar(space), _Walk()
    sid = space.special_id
    for tok in [sid("<|gen_depth|>"), sid("<|depth_start|>")]:
        g.advance(w, tok)
    assert w.mode == "depth"
    with pytest.raises(TokenRangeError, match="not legal"):
        g.advance(w, sid("<|depth_end|>"))  # only after 4 codes
    rules = export_rules(space)
    assert rules["outside"]["enter"] == {"depth": sid("<|depth_start|>")}
    assert rules["depth"] == {"allowed": [space.ranges["depth"].as_list()], "count": 4, "end": sid("<|depth_end|>")}
