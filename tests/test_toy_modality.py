"""Adding a modality touches one file: a toy depth-map codec, defined and registered only in this test, goes
through a space build, `uti.Tokenizer` encode/decode, the sequence builder, two rows-stage training steps,
grammar-constrained generation and decode, with no change to `uti`, `tokenlm` or `connectors`.

The toy codec: an (H, W) float depth map (metres) is averaged over a G x G grid and each cell quantised to
one of K levels in [0, max_depth); its block is ``<|depth_start|> c_0 .. c_{G*G-1} <|depth_end|>``.
Training uses the library pieces directly (`grow_model`, `apply_stage`, `pack`, `collate`,
`ChunkedLossLM`): `tokenlm train` reads shards written by `uti encode`, whose CLI picks the modality by
hand until the callers are migrated to `uti.Tokenizer`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tokenlm.constraints import Grammar, TokenSpaceLogitsProcessor, _Walk, export_rules
from tokenlm.data import collate
from tokenlm.model import ChunkedLossLM, apply_stage, grow_model, trainable_row_params
from tokenlm.testing import tiny_qwen3
from uti import ModalityCodec, Segment, Tokenizer, register_codec
from uti.build import SpaceConfig, TextConfig, build_space
from uti.codecs import unregister_codec
from uti.errors import ConfigError, InputError, SpaceError, TokenRangeError
from uti.sequence import TASKS, build_prompt, build_sequence, pack
from uti.space import TokenSpace, spaces_dir


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
def space(depth, tmp_path_factory) -> TokenSpace:
    """text (the tiny tokenizer) + depth, built by `uti.build` and reloaded from disk (hash and ranges checked)."""
    root = tmp_path_factory.mktemp("toy")
    shutil.copy(spaces_dir() / "tiny" / "tokenizer.json", root / "tokenizer.json")
    cfg = SpaceConfig(name="toy", text=TextConfig(tokenizer="tokenizer.json", base_vocab_size=512),
                      assets={"tokenizer": "tokenizer.json"}, codecs={"depth": {"levels": 8, "grid": 2}},
                      pad_to_multiple=64)
    build_space(cfg, root).save(root / "token_space.json")
    return TokenSpace.load(root)


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


def _rows(space: TokenSpace, tok: Tokenizer) -> list:
    seqs = []
    for k in range(6):
        ids, text = tok.encode(_depth_map(10 + k)), tok.encode(f"room {k}")
        seqs += [build_sequence(space, "depth2t", target=text, condition=ids),
                 build_sequence(space, "t2depth", target=ids, condition=text)]
    return pack(seqs, 64, space.special_id("<|pad|>"))


def test_train_generate_decode(space):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tok = Tokenizer.from_space(space)
    model = apply_stage(grow_model(tiny_qwen3(vocab=512), space), "rows")
    rows = trainable_row_params(model)
    before = {k: v.detach().clone() for k, v in rows.items()}
    base = model.get_input_embeddings().base.weight.detach().clone()
    loss_model = ChunkedLossLM(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = collate(_rows(space, tok))
    losses = []
    for _ in range(2):  # two rows-stage steps
        loss, count = loss_model(**batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[1] < losses[0]
    d = space.ranges["depth"]
    v = space.ranges["text"].stop
    assert not torch.equal(rows["embed_rows"][d.start - v:d.stop - v], before["embed_rows"][d.start - v:d.stop - v])
    assert torch.equal(model.get_input_embeddings().base.weight, base)  # rows stage: base rows frozen

    prompt = build_prompt(space, "t2depth", tok.encode("room 3"))
    proc = TokenSpaceLogitsProcessor(space)
    scores = proc(torch.tensor([prompt]), torch.zeros(1, space.total))
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == list(range(d.start, d.stop))
    model.eval()
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=5, do_sample=False, logits_processor=[TokenSpaceLogitsProcessor(space)],
                         pad_token_id=0, eos_token_id=None)
    new = out[0, len(prompt):].tolist()
    assert all(i in d for i in new[:4]) and new[4] == space.special_id("<|depth_end|>")
    segs = tok.decode(out[0].tolist())
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
