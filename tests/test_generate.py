"""Generation grammar: whatever the model wants, generated streams are legal (checked with uti's own decoders)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from transformers import LogitsProcessorList

from tokenlm.checkpoint import save_rows
from tokenlm.cli import main
from tokenlm.constraints import Grammar, TokenSpaceLogitsProcessor, _Walk, export_rules
from tokenlm.generate import split_stream
from tokenlm.model import grow_model, load_base
from uti.testing import tiny_qwen3, tiny_space
from uti import specials as S
from uti.audio.serialize import codes_to_ids, ids_to_codes
from uti.errors import TokenRangeError
from uti.image.codec import from_ids as image_from_ids
from uti.space import TokenSpace


class Adversary:
    """Pushes a random ID (often an end marker or padding) to the top of the scores at every step."""

    def __init__(self, space: TokenSpace, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.tempting = [space.special_id(S.IMAGE_END), space.special_id(S.AUDIO_END), space.total - 1,
                         space.special_id(S.IMAGE_START), space.special_id(S.AUDIO_START)]
        self.total = space.total

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for row in scores:
            pick = torch.randint(0, self.total, (1,), generator=self.gen).item()
            if torch.rand(1, generator=self.gen).item() < 0.5:
                pick = self.tempting[torch.randint(0, len(self.tempting), (1,), generator=self.gen).item()]
            row[pick] += 1e4
        return scores


def _generate(model, space, prompt, n, seed=0):
    torch.manual_seed(seed)
    ids = torch.tensor(prompt)
    procs = LogitsProcessorList([Adversary(space, seed), TokenSpaceLogitsProcessor(space)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=True,
                         logits_processor=procs, pad_token_id=0, eos_token_id=None, top_k=None, top_p=None)
    return out.tolist()


def _check_with_uti(space, row):
    """Every closed image/audio block decodes with uti's strict decoders; text outside uses only legal IDs."""
    audio = space.abi["audio"]
    starts = [r.start for r in space.audio_ranges]
    blocks = 0
    for seg in split_stream(space, row):
        if seg.modality == "image" and seg.complete:
            codes = image_from_ids(seg.ids, space).codes
            assert codes.shape == (5, 4)
            blocks += 1
        elif seg.modality == "audio" and seg.complete:
            codes = ids_to_codes(seg.ids[1:-1], starts, audio["codebook_size"], audio["order"],
                                 space.special_id(S.PAD))
            assert codes.shape[0] == audio["num_codebooks"] and codes.shape[1] >= 1
            blocks += 1
    assert max(row) < space.ranges["padding"].start
    g = Grammar(space)
    w = _Walk()
    for tok in row:  # the whole row (prompt + generation) walks without error
        g.advance(w, tok)
    return blocks


@pytest.mark.parametrize("order", ["frame_major", "delay"])
def test_generated_streams_are_always_legal(order):
    space = tiny_space(audio=(3, 16), order=order)
    model = grow_model(tiny_qwen3(), space)
    sid = space.special_id
    prompts = [
        [sid(S.TEXT_START), 40, 41, sid(S.TEXT_END), sid(S.GEN_IMAGE), sid(S.IMAGE_START)],
        [sid(S.TEXT_START), 40, 41, sid(S.TEXT_END), sid(S.GEN_AUDIO), sid(S.AUDIO_START)],
        [sid(S.GEN_TEXT), sid(S.TEXT_START), 40, 41, 42, 43],
    ]
    blocks = sum(_check_with_uti(space, row) for row in _generate(model, space, prompts, 48))
    assert blocks >= 2  # the adversary makes the model close blocks; they all decode


def test_grammar_accepts_uti_streams_and_rejects_deviations():
    for order in ("frame_major", "delay"):
        space = tiny_space(audio=(3, 16), order=order)
        starts = [r.start for r in space.audio_ranges]
        body = codes_to_ids(torch.randint(0, 16, (3, 5)), starts, 16, order, space.special_id(S.PAD)).tolist()
        stream = [space.special_id(S.AUDIO_START), *body, space.special_id(S.AUDIO_END)]
        g, w = Grammar(space), _Walk()
        for tok in stream:
            g.advance(w, tok)
        assert w.mode == "text"
        w = _Walk()
        with pytest.raises(TokenRangeError, match="not legal"):
            for tok in stream[:3] + [space.special_id(S.AUDIO_END)]:  # ends inside a frame
                g.advance(w, tok)
    space = tiny_space()
    sid = space.special_id
    g, w = Grammar(space), _Walk()
    img = space.ranges["image"].start
    for tok in [sid(S.IMAGE_START), sid(S.VIEW_GLOBAL), img, img, img, img]:
        g.advance(w, tok)
    assert g.allowed(w) == [(sid("<|view_0|>"), sid("<|view_0|>") + 1)]
    assert (sid(S.IMAGE_END), sid(S.IMAGE_END) + 1) in g.allowed(w, prompt=True)  # a plain image in a prompt
    proc = TokenSpaceLogitsProcessor(space)
    with pytest.raises(TokenRangeError, match="prompt token"):
        proc(torch.tensor([[sid(S.IMAGE_END)]]), torch.zeros(1, space.total))


def test_exported_rules_match_the_grammar():
    space = tiny_space()
    rules = json.loads(json.dumps(export_rules(space, text_limit=500)))
    assert rules["token_space"]["hash"] == space.hash
    assert rules["never"] == [[space.ranges["padding"].start, space.total]]
    assert rules["outside"]["allowed"][0] == [0, 500]
    img = rules["image"]
    assert [v["marker"] for v in img["views"]] == [space.special_id(n) for n in S.view_specials(4)]
    assert img["total_tokens"] == 5 * (4 + 1) and img["views"][0]["then"]["count"] == 4
    assert rules["audio"]["levels"] == [r.as_list() for r in space.audio_ranges]


@pytest.mark.slow
def test_cli_generate_and_refusals(tmp_path):
    tiny = TokenSpace.load("tiny")  # its real tokenizer, text only (so --target image must be refused)
    abi = {"schema": 1, "text": tiny.abi["text"], "specials": S.default_specials(), "pad_to_multiple": 128}
    shutil.copy(tiny.asset("tokenizer"), tmp_path / "tokenizer.json")  # assets live inside the space folder
    space = TokenSpace.from_abi(abi, name="text-only", assets={"tokenizer": str(tmp_path / "tokenizer.json")})
    space.save(tmp_path / "token_space.json")
    tiny_qwen3().save_pretrained(tmp_path / "base")
    save_rows(grow_model(load_base(str(tmp_path / "base")), space), tmp_path / "rows", space)
    runner = CliRunner()
    res = runner.invoke(main, ["generate", "--rows", str(tmp_path / "rows"), "--prompt", "a view", "--max-new-tokens",
                               "12", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["token_space"]["hash"] == space.hash and 1 <= len(doc["ids"]) <= 12
    assert all(i < space.ranges["padding"].start for i in doc["ids"]) and doc["segments"][0]["modality"] == "text"
    res = runner.invoke(main, ["generate", "--rows", str(tmp_path / "rows"), "--prompt", "x", "--target", "image"])
    assert res.exit_code == 2 and "has no image section" in res.output
    other = tiny_space(name="other")
    other.save(tmp_path / "other.json")
    res = runner.invoke(main, ["generate", "--rows", str(tmp_path / "rows"), "--space", str(tmp_path / "other.json")])
    assert res.exit_code == 2 and space.hash in res.output and other.hash in res.output


def test_cli_rules(tmp_path):
    space = tiny_space()
    space.save(tmp_path / "space.json")
    res = CliRunner().invoke(main, ["rules", "--space", str(tmp_path / "space.json")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == json.loads(json.dumps(export_rules(space)))


def test_decode_stream_splits_and_decodes_images(tmp_path):
    from tokenlm.generate import decode_stream
    from uti.image.vq import Codebook

    synth = tiny_space()
    Codebook(torch.randn(64, 8)).save(tmp_path / "codebook.safetensors")
    space = TokenSpace.from_abi(synth.abi, name="dec", assets={"codebook": "codebook.safetensors"})
    space.save(tmp_path / "token_space.json")
    sid, img = space.special_id, space.ranges["image"].start
    block = [sid(S.IMAGE_START)] + [t for m in S.view_specials(4) for t in [sid(m), img, img + 1, img + 2, img + 3]]
    stream = [5, 6] + block + [sid(S.IMAGE_END), 7] + block[:7]
    segs = decode_stream(space, stream)
    assert [s["modality"] for s in segs] == ["text", "image", "text", "image"]
    assert segs[1]["views"] == 5 and segs[1]["features_shape"] == [5, 4, 8]
    assert segs[3]["complete"] is False and "cut off" in segs[3]["decode_error"]
    assert "decode_error" in segs[0]  # no tokenizer asset: reported, not fatal


def test_continued_stream_reopens_the_prompt_block():
    from tokenlm.generate import continued_stream

    space = tiny_space()
    start = space.special_id(S.IMAGE_START)
    assert continued_stream(space, [1, start], [7, 8]) == [start, 7, 8]
    assert continued_stream(space, [1, 2], [7, 8]) == [7, 8]
