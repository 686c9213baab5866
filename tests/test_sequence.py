"""The one sequence builder: layout, label rule, range checks and packing with position-id resets."""

from __future__ import annotations

import pytest
import torch

from uti.errors import TokenRangeError, UTIError
from uti.sequence import IGNORE_INDEX, SequenceTooLongError, build_prompt, build_sequence, pack
from uti.space import TokenSpace
from uti.specials import default_specials


@pytest.fixture(scope="module")
def space() -> TokenSpace:
    abi = {
        "schema": 1,
        "text": {"tokenizer": "test", "tokenizer_hash": None, "base_vocab_size": 50},
        "specials": default_specials(num_tiles=2),
        "image": {"codebook_size": 16, "layout": {"num_tiles": 2}},
        "audio": {"num_codebooks": 2, "codebook_size": 8},
        "pad_to_multiple": 32,
    }
    return TokenSpace.from_abi(abi, name="seqtest")


def sid(space: TokenSpace, name: str) -> int:
    return space.special_id(f"<|{name}|>")


def img(space: TokenSpace, *local: int) -> list[int]:
    return space.ranges["image"].to_global(list(local))


def test_i2t_layout_and_labels(space):
    image = img(space, 1, 2, 3)
    seq = build_sequence(space, "i2t", target=[5, 6], condition=image)
    expect = [sid(space, "image_start"), *image, sid(space, "image_end"), sid(space, "gen_text"),
              sid(space, "text_start"), 5, 6, sid(space, "text_end")]
    assert list(seq.input_ids) == expect
    # labels: the target block (start marker, content, end marker) only
    assert list(seq.labels) == [IGNORE_INDEX] * 6 + expect[6:]


def test_t2i_t2a_text_a2t(space):
    image = img(space, 0, 15)
    t2i = build_sequence(space, "t2i", target=image, condition=[7, 8])
    assert t2i.input_ids[:4] == (sid(space, "text_start"), 7, 8, sid(space, "text_end"))
    assert t2i.input_ids[4:6] == (sid(space, "gen_image"), sid(space, "image_start"))
    assert t2i.labels[:5] == (IGNORE_INDEX,) * 5 and t2i.labels[5:] == t2i.input_ids[5:]
    audio = space.ranges["audio.0"].to_global([1]) + space.ranges["audio.1"].to_global([2])
    t2a = build_sequence(space, "t2a", target=audio, condition=[7])
    assert t2a.input_ids[-4:] == (sid(space, "audio_start"), *audio, sid(space, "audio_end"))
    a2t = build_sequence(space, "a2t", target=[9], condition=audio)
    assert a2t.input_ids[0] == sid(space, "audio_start")
    text = build_sequence(space, "text", target=[1, 2, 3])
    assert text.input_ids == (sid(space, "gen_text"), sid(space, "text_start"), 1, 2, 3, sid(space, "text_end"))
    assert text.labels[0] == IGNORE_INDEX and text.labels[1:] == text.input_ids[1:]


def test_wrapped_blocks_and_view_markers_accepted(space):
    views = [sid(space, "view_global"), *img(space, 1), sid(space, "view_0"), *img(space, 2)]
    wrapped = [sid(space, "image_start"), *views, sid(space, "image_end")]
    a = build_sequence(space, "i2t", target=[5], condition=views)
    b = build_sequence(space, "i2t", target=[5], condition=wrapped)
    assert a == b


def test_prompt_is_the_sequence_prefix(space):
    image = img(space, 4, 5)
    seq = build_sequence(space, "i2t", target=[5, 6], condition=image)
    prompt = build_prompt(space, "i2t", image)
    assert tuple(prompt) == seq.input_ids[: len(prompt)]
    assert prompt[-1] == sid(space, "text_start")


@pytest.mark.parametrize(
    "task,target,condition",
    [
        ("i2t", [5], [3]),  # a text ID is not an image code
        ("t2i", [5], [3]),  # target text ID as image
        ("i2t", [999], None),  # missing condition
        ("text", [5], [1]),  # text takes no condition
        ("t2a", [], [1]),  # empty target
        ("x2y", [1], None),  # unknown task
    ],
)
def test_bad_input_refused(space, task, target, condition):
    with pytest.raises(UTIError):
        build_sequence(space, task, target=target, condition=condition)


def test_padding_id_is_not_an_image_code(space):
    pad_range = space.ranges["padding"]
    with pytest.raises(TokenRangeError, match="outside the image"):
        build_sequence(space, "t2i", target=[pad_range.start], condition=[1])


def test_pack_greedy_positions_and_padding(space):
    seqs = [build_sequence(space, "text", target=list(range(1, n + 1))) for n in (3, 2, 6, 1)]
    lens = [len(s) for s in seqs]  # 6, 5, 9, 4
    rows = pack(seqs, max_len=12, pad_id=sid(space, "pad"))
    assert [r.num_sequences for r in rows] == [2, 1, 1]
    r0 = rows[0]
    assert r0.position_ids == tuple(range(lens[0])) + tuple(range(lens[1])) + (0,)
    assert r0.input_ids[-1] == sid(space, "pad") and r0.labels[-1] == IGNORE_INDEX
    assert all(len(r.input_ids) == 12 for r in rows)
    with pytest.raises(SequenceTooLongError):
        pack(seqs, max_len=8, pad_id=0)


def _token_losses(model, ids, labels, pos):
    """Per-token next-token losses of one row: [T-1]."""
    logits = model(input_ids=ids[None], position_ids=pos[None], use_cache=False).logits[0]
    return torch.nn.functional.cross_entropy(logits[:-1], labels[1:], reduction="none", ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_equals_sequences_one_by_one(space, attn):
    """Position-id resets make transformers mask across sequences: packed losses == separate losses."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=space.total, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, attn_implementation=attn)
    model = Qwen3ForCausalLM(cfg).eval()
    seqs = [
        build_sequence(space, "i2t", target=[5, 6, 7], condition=img(space, 1, 2, 3, 4)),
        build_sequence(space, "i2t", target=[8, 9], condition=img(space, 9, 8)),
        build_sequence(space, "text", target=[11, 12, 13]),
    ]
    (row,) = pack(seqs, max_len=32, pad_id=sid(space, "pad"))
    t = lambda x: torch.tensor(x)  # noqa: E731
    with torch.no_grad():
        packed = _token_losses(model, t(row.input_ids), t(row.labels), t(row.position_ids))
        start = 0
        for s in seqs:
            n = len(s)
            alone = _token_losses(model, t(s.input_ids), t(s.labels), torch.arange(n))
            got = packed[start : start + n - 1]
            mask = t(s.labels[1:]) != IGNORE_INDEX
            torch.testing.assert_close(got[mask], alone[mask], rtol=1e-4, atol=1e-5)
            start += n
