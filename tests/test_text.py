"""Text codec: lossless round trips (property tests), normalizer bypass, range checks, the tokenizer pin,
special-token strings in user text."""

from __future__ import annotations

import copy
import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

from uti.errors import HashMismatchError, InputError, TokenRangeError
from uti.hashing import hash_json
from uti.text import TextCodec, canonical_tokenizer, tokenizer_hash


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
    assert TextCodec.from_space(tiny_space).tokenizer_hash == tiny_space.abi["text"]["tokenizer_hash"]
    assert tokenizer_hash(Tokenizer.from_file(str(tiny_space.root / "tokenizer.json"))) == tiny_space.abi["text"]["tokenizer_hash"]


# --- the pin covers everything that decides text <-> IDs -------------------------------------------------

@pytest.fixture(scope="module")
def tiny_json(tiny_space) -> dict:
    return json.loads((tiny_space.root / "tokenizer.json").read_text(encoding="utf-8"))


def _hash_of(data: dict, **dump) -> str:
    return tokenizer_hash(Tokenizer.from_str(json.dumps(data, **dump)))


def _tamper_regex(d):
    d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": False},
        {**d["pre_tokenizer"], "use_regex": False}]}


TAMPERINGS = {
    "decoder null": lambda d: d.update(decoder=None),
    "merges dropped": lambda d: d["model"].update(merges=[]),
    "last merge dropped": lambda d: d["model"]["merges"].pop(),
    "merges reordered": lambda d: d["model"]["merges"].reverse(),
    "add_prefix_space flipped": lambda d: d["pre_tokenizer"].update(add_prefix_space=True),
    "use_regex off": lambda d: d["pre_tokenizer"].update(use_regex=False),
    "pre-tokenizer regex changed": _tamper_regex,
    "normalizer added": lambda d: d.update(normalizer={"type": "NFC"}),
    "special flag flipped": lambda d: d["added_tokens"][0].update(special=False),
    "added token lstrip": lambda d: d["added_tokens"][0].update(lstrip=True),
    "two vocab ids swapped": lambda d: d["model"]["vocab"].update({"a": d["model"]["vocab"]["b"], "b": d["model"]["vocab"]["a"]}),
    "byte_fallback on": lambda d: d["model"].update(byte_fallback=True),
    "unk token set": lambda d: d["model"].update(unk_token="<|endoftext|>"),
    "dropout set": lambda d: d["model"].update(dropout=0.5),
    "end-of-word suffix": lambda d: d["model"].update(end_of_word_suffix="</w>"),
    "post-processor added": lambda d: d.update(post_processor={"type": "TemplateProcessing", "single": [
        {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [
        {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": {
        "<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}}}),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_every_tampering_changes_the_hash(tiny_json, name):
    data = copy.deepcopy(tiny_json)
    TAMPERINGS[name](data)
    assert _hash_of(data) != _hash_of(tiny_json)


def _reverse_keys(node):
    if isinstance(node, dict):
        return {k: _reverse_keys(node[k]) for k in reversed(list(node))}
    return [_reverse_keys(x) for x in node] if isinstance(node, list) else node


def test_serialisation_differences_keep_the_hash(tiny_json):
    pinned = _hash_of(tiny_json)
    as_strings = copy.deepcopy(tiny_json)
    as_strings["model"]["merges"] = [" ".join(m) for m in tiny_json["model"]["merges"]]  # tokenizers < 0.20
    assert _hash_of(as_strings) == pinned
    assert _hash_of(_reverse_keys(tiny_json)) == pinned
    assert _hash_of(tiny_json, indent=4, ensure_ascii=True) == pinned
    tok = Tokenizer.from_str(json.dumps(tiny_json))
    assert tokenizer_hash(Tokenizer.from_str(tok.to_str())) == pinned
    assert tokenizer_hash(Tokenizer.from_str(tok.to_str(pretty=True))) == pinned
    runtime = copy.deepcopy(tiny_json)
    runtime["truncation"] = {"direction": "Right", "max_length": 2, "strategy": "LongestFirst", "stride": 0}
    assert _hash_of(runtime) == pinned  # a per-call setting the codec switches off (next test)


def test_truncation_in_the_file_does_not_truncate(tiny_json):
    data = copy.deepcopy(tiny_json)
    data["truncation"] = {"direction": "Right", "max_length": 2, "strategy": "LongestFirst", "stride": 0}
    codec = TextCodec(Tokenizer.from_str(json.dumps(data)))
    assert codec.decode(codec.encode("more than two tokens")) == "more than two tokens"


def test_older_versions_serialisation_describes_the_same_tokenizer(tiny_json):
    """What tokenizers 0.1x's `to_str()` wrote: merges as strings, no use_regex/ignore_merges/byte_fallback."""
    new = json.loads(Tokenizer.from_str(json.dumps(tiny_json)).to_str())
    old = copy.deepcopy(new)
    old["model"]["merges"] = [" ".join(m) for m in new["model"]["merges"]]
    for key in ("ignore_merges", "byte_fallback", "fuse_unk"):
        del old["model"][key]
    for part in ("pre_tokenizer", "decoder"):
        del old[part]["use_regex"]
    assert canonical_tokenizer(old) == canonical_tokenizer(new)
    old["model"]["merges"].pop()
    assert canonical_tokenizer(old) != canonical_tokenizer(new)


VERSIONS_DIR = Path(__file__).resolve().parent / "assets" / "tokenizer_versions"
VERSIONED = sorted(p.stem for p in (VERSIONS_DIR / "0.23.3").glob("*.json"))


@pytest.mark.parametrize("name", VERSIONED)
def test_pin_agrees_across_tokenizers_versions(name, tiny_space):
    """`to_str()` of one tokenizer as tokenizers 0.15.2/0.19.1/0.21.0/0.23.3 wrote it (assets/tokenizer_versions)."""
    dumps = sorted(VERSIONS_DIR.glob(f"*/{name}.json"))
    assert len(dumps) == 4
    as_written = {p.parent.name: hash_json(canonical_tokenizer(json.loads(p.read_text(encoding="utf-8")))) for p in dumps}
    as_loaded = {p.parent.name: tokenizer_hash(Tokenizer.from_file(str(p))) for p in dumps}
    assert len(set(as_written.values()) | set(as_loaded.values())) == 1, (as_written, as_loaded)
    if name == "tiny":
        assert as_loaded["0.23.3"] == tiny_space.abi["text"]["tokenizer_hash"]


@pytest.mark.parametrize("legacy, scheme", [({"add_prefix_space": True}, "always"), ({"add_prefix_space": False}, "never"),
                                            ({"add_prefix_space": False, "prepend_scheme": "first"}, "never"),
                                            ({"add_prefix_space": True, "prepend_scheme": "first"}, "first")])
def test_metaspace_add_prefix_space_is_its_prepend_scheme(legacy, scheme):
    current = Tokenizer(models.BPE())
    current.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=scheme)
    new = json.loads(current.to_str())
    old = copy.deepcopy(new)
    old["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", **legacy}
    assert canonical_tokenizer(old) == canonical_tokenizer(new)


def test_pin_covers_the_normalizer_the_codec_bypasses():
    assert TextCodec(_nfc_tokenizer()).tokenizer_hash != TextCodec(_nfc_tokenizer_without_normalizer()).tokenizer_hash
    assert TextCodec(_nfc_tokenizer()).tokenizer_hash == tokenizer_hash(_nfc_tokenizer())


def _nfc_tokenizer_without_normalizer() -> Tokenizer:
    tok = _nfc_tokenizer()
    tok.normalizer = None
    return tok


# --- special-token strings in user text ----------------------------------------------------------------

def _without_added_tokens(tiny_json) -> Tokenizer:
    """The reference for plain text: the same tokenizer with no added tokens (ID 0 is also in the model vocab)."""
    data = copy.deepcopy(tiny_json)
    data["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(data))


SPECIAL_TEXTS = ["<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ", "<|endoftext|><|endoftext|>",
                 "<|im_start|>user\nhi<|im_end|>", "<|endoftext|", "<<|endoftext|>>"]


@pytest.mark.parametrize("text", SPECIAL_TEXTS)
def test_special_strings_encode_as_plain_byte_level_text(codec, tiny_json, text):
    ids = codec.encode(text)
    assert ids == _without_added_tokens(tiny_json).encode(text, add_special_tokens=False).ids
    assert 0 not in ids and codec.decode(ids) == text


def test_allow_special_maps_them_to_control_ids(codec):
    assert codec.encode("<|endoftext|>") != [0]
    assert codec.encode("<|endoftext|>", allow_special=True) == [0]
    assert codec.encode("a<|endoftext|>", allow_special={"<|endoftext|>"})[-1] == 0
    assert codec.encode("a<|endoftext|>", allow_special=set()) == codec.encode("a<|endoftext|>")
    for allow in (True, {"<|endoftext|>"}):
        assert codec.decode(codec.encode("x <|endoftext|>y", allow_special=allow)) == "x <|endoftext|>y"
    with pytest.raises(InputError, match="not a special token"):
        codec.encode("x", allow_special={"<|image_start|>"})
    for bad in ("<|endoftext|>", 1, [1]):
        with pytest.raises(InputError):
            codec.encode("x", allow_special=bad)


def _with_added(tiny_json, *tokens: tuple[str, bool]) -> Tokenizer:
    tok = Tokenizer.from_str(json.dumps(tiny_json))
    for content, special in tokens:
        (tok.add_special_tokens if special else tok.add_tokens)([AddedToken(content, special=special, normalized=False)])
    return tok


def test_allowing_one_special_keeps_every_id(tiny_json):
    """Specials above the model vocab interleaved with plain added tokens (like Qwen3's `<think>`)."""
    tok = _with_added(tiny_json, ("<|im_start|>", True), ("<think>", False), ("<|im_end|>", True))
    codec = TextCodec(tok)
    ids = {t: tok.token_to_id(t) for t in ("<|im_start|>", "<think>", "<|im_end|>")}
    text = "<|im_start|>q<think><|im_end|>"
    assert codec.encode(text, allow_special=True) == [ids["<|im_start|>"], codec.encode("q")[0], ids["<think>"], ids["<|im_end|>"]]
    only_end = codec.encode(text, allow_special={"<|im_end|>"})
    assert only_end[-2:] == [ids["<think>"], ids["<|im_end|>"]] and ids["<|im_start|>"] not in only_end
    plain = codec.encode(text)
    assert ids["<|im_start|>"] not in plain and ids["<|im_end|>"] not in plain and ids["<think>"] in plain
    for allow in (False, True, {"<|im_end|>"}, {"<|im_start|>"}):
        assert codec.decode(codec.encode(text, allow_special=allow)) == text


def test_space_specials_never_come_out_of_text(codec, tiny_space):
    text_range = tiny_space.ranges["text"]
    for name in tiny_space.specials:
        for allow in (False, True):
            ids = codec.encode(f"x{name}y", allow_special=allow)
            assert all(i in text_range for i in ids) and not set(ids) & set(tiny_space.specials.values())
            assert codec.decode(ids) == f"x{name}y"


def test_model_that_spells_a_special_as_text_is_refused():
    """A model whose plain path produces a special's ID (a Unigram/BPE piece equal to it) is refused, not injected."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<s>": 0, **{ch: i + 1 for i, ch in enumerate(alphabet)}}
    vocab["<s"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("<", "s"), ("<s", ">")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<s>", special=True)])
    codec = TextCodec(tok)
    with pytest.raises(InputError, match="special token '<s>'"):
        codec.encode("a<s>")
    assert codec.encode("a<s>", allow_special=True)[-1] == 0


SPECIAL_PIECES = st.sampled_from(["<|endoftext|>", "<|endoftext|", "|>", "<|", "<|image_start|>", " ", "\n"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=8), SPECIAL_PIECES), max_size=8).map("".join))
def test_round_trip_with_special_literals(codec, s):
    for allow in (False, True):
        assert codec.decode(codec.encode(s, allow_special=allow)) == s
    assert 0 not in codec.encode(s)


def test_cli_encode_text_treats_specials_as_text(codec):
    from click.testing import CliRunner

    from uti.cli import main

    res = CliRunner().invoke(main, ["encode", "--text", "<|endoftext|>", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["ids"] == codec.encode("<|endoftext|>") != [0]
