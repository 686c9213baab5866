"""`tokenlm generate` for a newcomer: the default budget finishes one block of the target, text stops at the
base model's end of text even when its config names none, --device/--dtype, and a quiet stderr."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from hostile import run_cli
from tokenlm.generate import (DEFAULT_TEXT_TOKENS, base_end_of_text, build_prompt_ids, default_max_new_tokens,
                              end_ids, generate_ids)
from uti import specials as S


def test_default_budget_finishes_one_block(tiny_space):
    # tiny image: global view + 8 tiles, each a marker and 16 codes, then <|image_end|>: 155 IDs with the opener
    assert default_max_new_tokens(tiny_space, "image") == 154
    assert default_max_new_tokens(tiny_space, "audio") == 5 * 75 * 4 + 1  # 5 s at 75 Hz, 4 levels, end marker
    assert default_max_new_tokens(tiny_space, "text") == DEFAULT_TEXT_TOKENS
    assert default_max_new_tokens(tiny_space, "audio", prompt_len=48, max_positions=1024) == 976


def test_default_image_budget_equals_an_encoded_image(tiny_space):
    from uti.image.codec import to_ids
    from uti.codec import Encoded

    layout = tiny_space.abi["image"]["layout"]
    views, p = layout["num_tiles"] + 1, tiny_space.abi["image"]["tokens_per_view"]
    ids = to_ids(Encoded(torch.zeros(views, p, dtype=torch.long), {}), tiny_space)
    assert len(ids) == 155 and default_max_new_tokens(tiny_space, "image") == len(ids) - 1


def _model(eos):
    return SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=eos), config=SimpleNamespace(eos_token_id=None))


def test_end_of_text_from_tokenizer_when_config_has_none(tiny_space):
    tok_eos = 0  # `<|endoftext|>` in the tiny space's tokenizer
    assert base_end_of_text(_model(None), tiny_space) == [tok_eos]
    assert base_end_of_text(_model([7, 9]), tiny_space) == [7, 9]
    assert end_ids(_model(None), tiny_space, "text") == [tiny_space.special_id(S.TEXT_END), tok_eos]
    assert end_ids(_model(None), tiny_space, "image") == [tiny_space.special_id(S.IMAGE_END)]


def test_shipped_tiny_lm_stops_at_its_end_of_text(tiny_space):
    """The shipped tiny LM's config names no eos; generation is still given its `<|endoftext|>` to stop at."""
    from tokenlm.model import grow_model, load_base

    model = grow_model(load_base(str(tiny_space.asset("base_model"))), tiny_space).eval()
    assert model.generation_config.eos_token_id is None and model.config.eos_token_id is None
    seen = {}
    real = model.generate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **{**kwargs, "max_new_tokens": 2})

    model.generate = spy
    generate_ids(model, tiny_space, build_prompt_ids(tiny_space, "a red", target="image"), target="image")
    assert seen["max_new_tokens"] == 154
    generate_ids(model, tiny_space, build_prompt_ids(tiny_space, "a red"), target="text")
    assert 0 in seen["eos_token_id"] and tiny_space.special_id(S.TEXT_END) in seen["eos_token_id"]


@pytest.fixture(scope="module")
def rows_dir(tmp_path_factory, tiny_space):
    from tokenlm.checkpoint import save_rows
    from tokenlm.model import grow_model, load_base

    out = tmp_path_factory.mktemp("gen") / "rows"
    save_rows(grow_model(load_base(str(tiny_space.asset("base_model"))), tiny_space), out, tiny_space)
    return out


@pytest.mark.slow
def test_cli_generate_image_default_is_one_whole_block_and_stderr_is_quiet(rows_dir):
    proc = run_cli("tokenlm", "generate", "--rows", rows_dir, "--prompt", "a red square", "--target", "image",
                   "--dtype", "bfloat16", "--device", "cpu", "--json")
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()[-2000:]
    doc = json.loads(proc.stdout)
    assert len(doc["ids"]) == 154 and doc["segments"][0]["complete"] is True


def test_cli_generate_help_has_device_and_dtype():
    from click.testing import CliRunner

    from tokenlm.cli import main

    out = " ".join(CliRunner().invoke(main, ["generate", "--help"]).output.split())
    assert "--device" in out and "--dtype" in out and "one whole block" in out


@pytest.mark.parametrize("order", ["frame_major", "delay"])
def test_audio_budget_ends_in_a_complete_block(order):
    """Any budget that holds a frame gives a closed audio block (before: cut off inside the stream)."""
    from tokenlm.model import grow_model
    from uti.testing import tiny_qwen3, tiny_space
    from uti.audio.serialize import ids_to_codes
    from uti.sequence import build_prompt

    space = tiny_space(order=order, audio=(2, 16))
    model = grow_model(tiny_qwen3(), space).eval()
    prompt = build_prompt(space, "t2a", [5, 6, 7])
    end, starts = space.special_id(S.AUDIO_END), [r.start for r in space.audio_ranges]
    for budget, seed in ((9, 0), (12, 1), (16, 2)):
        new = generate_ids(model, space, prompt, max_new_tokens=budget, target="audio", seed=seed)
        assert len(new) <= budget and new[-1] == end, (budget, new)
        codes = ids_to_codes(new[:-1], starts, 16, order, space.special_id(S.PAD))
        assert codes.shape[0] == 2 and codes.shape[1] >= 1
