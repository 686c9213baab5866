"""The token space as an ABI: derived ranges, hash stability and sensitivity, tamper refusal."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from uti.errors import HashMismatchError, SpaceError, TokenRangeError
from uti.hashing import hash_json
from uti.space import IdRange, TokenSpace, known_spaces
from uti.specials import default_specials


def make_abi(**over) -> dict:
    abi = {
        "schema": 1,
        "text": {"tokenizer": "t", "tokenizer_hash": "0" * 32, "base_vocab_size": 100},
        "specials": default_specials(num_tiles=2),
        "image": {"codebook_size": 16, "layout": {"num_tiles": 2, "global_view": True}},
        "audio": {"num_codebooks": 3, "codebook_size": 8},
        "pad_to_multiple": 64,
    }
    abi.update(over)
    return abi


def test_ranges_are_derived_contiguous_and_padded():
    sp = TokenSpace.from_abi(make_abi(), name="t")
    r = sp.ranges
    n_special = len(default_specials(num_tiles=2))
    assert r["text"].as_list() == [0, 100]
    assert r["special"].as_list() == [100, 100 + n_special]
    assert r["image"].start == r["special"].stop and len(r["image"]) == 16
    assert [k for k in r if k.startswith("audio.")] == ["audio.0", "audio.1", "audio.2"]
    assert r["audio.2"].stop == r["padding"].start
    assert sp.total % 64 == 0 and r["padding"].stop == sp.total and len(r["padding"]) < 64
    stops = [x.start for x in r.values()][1:]
    assert stops == [x.stop for x in r.values()][:-1]  # contiguous, no overlap
    assert sp.special_id("<|view_1|>") == r["special"].start + n_special - 1


def test_hash_ignores_key_order_and_whitespace(tmp_path):
    sp = TokenSpace.from_abi(make_abi(), name="t")
    reordered = json.loads(json.dumps(make_abi(), sort_keys=True))
    reordered = dict(reversed(list(reordered.items())))
    assert TokenSpace.from_abi(reordered, name="t").hash == sp.hash
    path = tmp_path / "s.json"
    sp.save(path)
    path.write_text(json.dumps(json.loads(path.read_text()), indent=7, sort_keys=True))
    assert TokenSpace.load(path).hash == sp.hash


def _leaves(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, prefix + (i,))
    else:
        yield prefix, obj


def _bump(v):
    return (not v) if isinstance(v, bool) else v + 1 if isinstance(v, int) else (v or "") + "x"


@pytest.mark.parametrize("leaf", [p for p, _ in _leaves(make_abi())], ids=str)
def test_every_abi_field_changes_the_hash(leaf):
    base = hash_json(make_abi())
    abi = copy.deepcopy(make_abi())
    target = abi
    for k in leaf[:-1]:
        target = target[k]
    target[leaf[-1]] = _bump(target[leaf[-1]])
    assert hash_json(abi) != base


def test_special_order_changes_ids_and_hash():
    abi = make_abi()
    abi["specials"] = list(reversed(abi["specials"]))
    a, b = TokenSpace.from_abi(make_abi(), name="t"), TokenSpace.from_abi(abi, name="t")
    assert a.hash != b.hash and a.special_id("<|pad|>") != b.special_id("<|pad|>")


def _saved(tmp_path) -> tuple:
    path = tmp_path / "token_space.json"
    TokenSpace.from_abi(make_abi(), name="t").save(path)
    return path, json.loads(path.read_text())


@pytest.mark.parametrize("edit, err", [
    (lambda d: d["abi"]["text"].__setitem__("base_vocab_size", 101), HashMismatchError),
    (lambda d: d.__setitem__("hash", "f" * 32), HashMismatchError),
    (lambda d: d["ranges"].__setitem__("image", [0, 16]), SpaceError),
    (lambda d: d.__setitem__("total", 4096), SpaceError),
    (lambda d: d.__setitem__("colour", "blue"), SpaceError),
    (lambda d: d.pop("abi"), SpaceError),
    (lambda d: d["abi"]["specials"].remove("<|view_0|>"), SpaceError),
    (lambda d: d["abi"]["specials"].append("<|pad|>"), SpaceError),
    (lambda d: d["abi"].__setitem__("pad_to_multiple", 0), SpaceError),
])
def test_tampered_file_is_refused(tmp_path, edit, err):
    path, data = _saved(tmp_path)
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(err) as info:
        TokenSpace.load(path)
    assert "\n" not in str(info.value)


def test_all_problems_in_one_error():
    abi = make_abi(schema=2, pad_to_multiple=-1)
    abi["text"]["base_vocab_size"] = 0
    with pytest.raises(SpaceError) as info:
        TokenSpace.from_abi(abi, name="t")
    msg = str(info.value)
    assert "schema" in msg and "pad_to_multiple" in msg and "base_vocab_size" in msg


def test_malformed_json_and_unknown_name(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpaceError, match="not valid JSON"):
        TokenSpace.load(bad)
    with pytest.raises(SpaceError, match="known spaces: .*tiny"):
        TokenSpace.load("no-such-space")


def test_idrange_round_trip_and_bounds():
    r = IdRange("image", 100, 116)
    local = torch.arange(16)
    assert torch.equal(r.to_local(r.to_global(local)), local)
    assert r.to_global([0, 15]) == [100, 115]
    with pytest.raises(TokenRangeError):
        r.to_global([16])
    with pytest.raises(TokenRangeError):
        r.to_local([99])
    with pytest.raises(TokenRangeError):
        r.to_global([-1])


def test_shipped_spaces_verify():
    assert "tiny" in known_spaces()
    for name in known_spaces():
        sp = TokenSpace.load(name)
        assert sp.path.exists() and len(sp.hash) == 32


def test_identity_diff_null_is_unpinned():
    from uti.space import identity_diff

    pinned = {"tower": {"name": "a", "weights_hash": None, "hidden": 4}, "size": 8}
    assert identity_diff(pinned, {"tower": {"name": "b", "weights_hash": "f00", "hidden": 4}, "size": 8},
                         ignore=frozenset({"name"})) == []
    diff = identity_diff(pinned, {"tower": {"name": "a", "weights_hash": "x", "hidden": 5}, "size": 9})
    assert diff == ["size: space has 8, asset has 9", "tower.hidden: space has 4, asset has 5"]


def _real_abi() -> dict:
    """Sizes of real models: Qwen3's vocabulary, a 16384-code image codebook, Mimi's 32 levels of 2048."""
    return make_abi(text={"tokenizer": "Qwen/Qwen3-0.6B", "tokenizer_hash": None, "base_vocab_size": 151936},
                    image={"codebook_size": 16384, "layout": {"num_tiles": 2, "tile_size": 384}},
                    audio={"num_codebooks": 32, "codebook_size": 2048}, pad_to_multiple=128)


@pytest.mark.parametrize("field, limit", [
    (("text", "base_vocab_size"), "base_vocab_size"),
    (("image", "codebook_size"), "image_codebook_size"),
    (("image", "layout", "num_tiles"), "num_tiles"),
    (("image", "layout", "tile_size"), "pixels"),
    (("audio", "num_codebooks"), "audio_num_codebooks"),
    (("audio", "codebook_size"), "audio_codebook_size"),
    (("pad_to_multiple",), "pad_to_multiple"),
])
def test_size_fields_are_bounded_generously(field, limit):
    from uti.space import LIMITS

    TokenSpace.from_abi(_real_abi(), name="real")
    abi = _real_abi()
    node = abi
    for key in field[:-1]:
        node = node[key]
    node[field[-1]] = LIMITS[limit]
    if field[-1] == "num_tiles":
        abi["specials"] = default_specials(num_tiles=LIMITS[limit])
    TokenSpace.from_abi(abi, name="at-limit")  # the limit itself is accepted
    node[field[-1]] = LIMITS[limit] + 1
    with pytest.raises(SpaceError, match=".".join(field)):
        TokenSpace.from_abi(abi, name="beyond")


def test_hash_is_checked_before_anything_is_derived(tmp_path, monkeypatch):
    import uti.space

    path, data = _saved(tmp_path)
    data["abi"]["audio"]["num_codebooks"] = 10**8  # stale hash: must be refused before any range exists
    path.write_text(json.dumps(data))

    def forbidden(*args, **kwargs):
        raise AssertionError("derived before the hash was checked")

    monkeypatch.setattr(uti.space, "derive_ranges", forbidden)
    monkeypatch.setattr(uti.space, "validate_abi", forbidden)
    monkeypatch.setattr(uti.space, "_check_specials", forbidden)
    with pytest.raises(HashMismatchError, match="stored hash"):
        TokenSpace.from_path(path)
