"""Text codec: lossless round trips (property tests), normalizer bypass, range checks."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from uti.errors import HashMismatchError, InputError, TokenRangeError
from uti.text import TextCodec, tokenizer_hash


@pytest.fixture(scope="module")
def codec(tiny_space) -> TextCodec:
    return TextCodec.from_space(tiny_space)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_unicode(codec, s):
    assert codec.decode(codec.encode(s)) == s


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", categories=["Mn", "Lo", "So", "Zs", "Cc"]), max_size=50))
def test_round_trip_combining_and_controls(codec, s):
    assert codec.decode(codec.encode(s)) == s


def test_fixed_examples(codec):
    for s in ["", " ", "  leading and trailing  ", "e\u0301 vs \u00e9", "\r\n\t\x00", "<|endoftext|> literal",
              "emoji 👩‍👩‍👧 flags 🇫🇷", "日本語のテキスト", "a" * 5000]:
        assert codec.decode(codec.encode(s)) == s


def test_tokenizer_compresses_english(codec):
    s = "The if statement is used for conditional execution."
    assert len(codec.encode(s)) < len(s.encode()) / 2  # BPE merges work, not just bytes


def _nfc_tokenizer() -> Tokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def test_normalizer_is_bypassed_for_losslessness():
    decomposed = "e\u0301"
    assert unicodedata.normalize("NFC", decomposed) != decomposed
    lossy = TextCodec(_nfc_tokenizer(), normalize=True)
    assert lossy.decode(lossy.encode(decomposed)) != decomposed  # the stock tokenizer is lossy
    assert TextCodec(_nfc_tokenizer()).decode(TextCodec(_nfc_tokenizer()).encode(decomposed)) == decomposed


def test_decode_refuses_ids_without_a_token(codec, tiny_space):
    assert codec.codebook_size < tiny_space.abi["text"]["base_vocab_size"]  # padded base vocab, like Qwen3
    with pytest.raises(TokenRangeError):
        codec.decode([codec.codebook_size])
    with pytest.raises(TokenRangeError):
        codec.decode([-1])


def test_lone_surrogate_is_input_error(codec):
    with pytest.raises(InputError):
        codec.encode("\ud800")


def test_space_pins_tokenizer_hash(tiny_space, tmp_path):
    import json

    data = json.loads(tiny_space.path.read_text())
    data["abi"]["text"]["tokenizer_hash"] = "0" * 32
    from uti.space import TokenSpace

    sp = TokenSpace.from_abi(data["abi"], name="x", assets={"tokenizer": str(tiny_space.root / "tokenizer.json")})
    with pytest.raises(HashMismatchError):
        TextCodec.from_space(sp)
    assert tokenizer_hash(TextCodec.from_space(tiny_space).tokenizer) == tiny_space.abi["text"]["tokenizer_hash"]
