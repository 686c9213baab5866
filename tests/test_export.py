"""`tokenlm export`: plain transformers loads the merged folder and gives the patched model's logits."""

from __future__ import annotations

import copy
import shutil
import json

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from tokenlm.checkpoint import save_rows
from tokenlm.cli import main
from tokenlm.export import export_merged
from tokenlm.model import apply_stage, grow_model, load_base
from uti.testing import tiny_qwen3, tiny_space
from uti.space import TokenSpace
from uti.text import TextCodec


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """The tiny space's text section (real tokenizer) plus synthetic image and audio sections."""
    tiny = TokenSpace.load("tiny")
    synth = tiny_space(base_vocab=tiny.abi["text"]["base_vocab_size"])
    abi = copy.deepcopy(synth.abi)
    abi["text"] = tiny.abi["text"]
    folder = tmp_path_factory.mktemp("space")
    shutil.copy(tiny.asset("tokenizer"), folder / "tokenizer.json")  # assets live inside the space folder
    sp = TokenSpace.from_abi(abi, name="export-test", assets={"tokenizer": "tokenizer.json"})
    sp.save(folder / "token_space.json")
    return sp


def _rows_checkpoint(tmp_path, space, tied, stage="rows"):
    tiny_qwen3(tied=tied).save_pretrained(tmp_path / "base")
    model = apply_stage(grow_model(load_base(str(tmp_path / "base")), space), stage)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
    save_rows(model, tmp_path / "rows", space)
    return model


@pytest.mark.parametrize("tied,stage", [(True, "rows"), (False, "rows"), (True, "lora")])
def test_merged_model_matches_patched_logits(tmp_path, space, tied, stage):
    patched = _rows_checkpoint(tmp_path, space, tied, stage).eval()
    record = export_merged(tmp_path / "rows", tmp_path / "out")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    real = space.ranges["padding"].start
    ids = torch.arange(real).reshape(2, -1)
    with torch.no_grad():
        want, got = patched(ids).logits, merged(ids).logits
    assert merged.config.vocab_size == space.total == got.shape[-1] and record["vocab_size"] == space.total
    torch.testing.assert_close(got[..., :real], want[..., :real], rtol=1e-4, atol=1e-4)
    assert merged.config.tie_word_embeddings is tied
    same = merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    assert same is tied
    assert merged.generation_config.suppress_tokens == list(range(real, space.total))
    out = merged.generate(ids[:1, :5], max_new_tokens=20, do_sample=True, temperature=3.0)
    assert int(out.max()) < real


def test_grown_tokenizer_has_every_id(tmp_path, space):
    _rows_checkpoint(tmp_path, space, tied=True)
    res = CliRunner().invoke(main, ["export", "--rows", str(tmp_path / "rows"), "--out", str(tmp_path / "out"),
                                    "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["token_space"]["hash"] == space.hash
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    img, aud = space.ranges["image"], space.audio_ranges[1]
    assert tok.convert_tokens_to_ids(["<|image_start|>", "<|img_0|>", f"<|img_{len(img) - 1}|>", "<|aud_1_3|>"]) == \
        [space.special_id("<|image_start|>"), img.start, img.stop - 1, aud.start + 3]
    assert len(tok) == space.ranges["padding"].start
    text = "a bright courtyard"
    assert tok.encode(text, add_special_tokens=False) == TextCodec.from_space(space).encode(text)
    assert tok.encode("<|image_start|><|img_5|>", add_special_tokens=False) == [space.special_id("<|image_start|>"),
                                                                               img.start + 5]
