"""The encoded-document module (uti.document) and `uti encode`/`uti decode` through it: the round trip of each
modality is what the codecs give directly, names resolve only through the registry, an explicit --space wins."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from uti.cli import main
from uti.codecs import ModalityCodec, register_codec, unregister_codec
from uti.document import EncodedDocument, document_space, parse_document, read_document, write_document
from uti.modalities.audio import AudioMeta
from uti.errors import HashMismatchError, InputError, SpaceError
from uti.space import TokenSpace

ASSETS = Path(__file__).resolve().parent / "assets"
REPO = ASSETS.parent.parent


def invoke(*args: str, input: bytes | None = None):
    res = CliRunner().invoke(main, list(args), input=input)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


def encode_doc(tmp_path: Path, *args: str) -> tuple[dict, Path]:
    out = tmp_path / "doc.json"
    res = invoke("encode", *args, "--out", str(out))
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text()), out


# --- the round trip: behaviour as before, through one module ----------------------------------------

def test_text_round_trip_file_and_stdin(tmp_path, tiny_space):
    text = "Hello, 世界! e\u0301 🎉"
    doc, path = encode_doc(tmp_path, "--text", text)
    from uti.text import TextCodec

    assert doc == {"token_space": {"name": "tiny", "hash": tiny_space.hash}, "modality": "text",
                   "ids": TextCodec.from_space(tiny_space).encode(text), "meta": {"chars": len(text)}}
    assert len(path.read_text().splitlines()) == 1  # the file is the line `--json` prints
    assert invoke("encode", "--text", text, "--json").output == path.read_text()
    for args, stdin in (([str(path)], None), (["-"], path.read_bytes())):
        res = invoke("decode", *args, "--json", input=stdin)
        assert res.exit_code == 0 and json.loads(res.output) == {"modality": "text", "text": text}


def test_text_decode_writes_out(tmp_path):
    """--out of a text document writes the text (it was silently ignored before)."""
    _, path = encode_doc(tmp_path, "--text", "héllo\n")
    out = tmp_path / "decoded.txt"
    res = invoke("decode", str(path), "--out", str(out), "--json")
    assert res.exit_code == 0 and json.loads(res.output) == {"modality": "text", "text": "héllo\n", "out": str(out)}
    assert out.read_text(encoding="utf-8") == "héllo\n"


def test_image_round_trip_equals_the_codec(tmp_path, tiny_space):
    from safetensors.torch import load_file

    from uti.image.codec import ImageCodec, decode_codes, to_ids
    from uti.image.layout import Layout
    from uti.image.vq import Codebook

    doc, path = encode_doc(tmp_path, str(ASSETS / "panoramas" / "city.jpg"))
    enc = ImageCodec.from_space(tiny_space).encode(ASSETS / "panoramas" / "city.jpg")
    assert doc["ids"] == to_ids(enc, tiny_space) and doc["meta"] == json.loads(json.dumps(enc.meta))
    out = tmp_path / "feats.safetensors"
    res = invoke("decode", "-", "--out", str(out), "--json", input=path.read_bytes())
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["kind"] == "panorama" and json.loads(res.output)["num_views"] == 9
    section = tiny_space.abi["image"]
    ref = decode_codes(enc.codes, Codebook.load(tiny_space.asset("codebook")), Layout.from_abi(section["layout"]),
                       section["grid"][0])
    assert torch.equal(load_file(str(out))["features"], ref["features"])


def test_audio_round_trip_equals_the_codec(tmp_path, tiny_space):
    from uti.audio.codec import AudioCodec

    clip = ASSETS / "audio" / "bell.oga"
    doc, path = encode_doc(tmp_path, str(clip))
    codec = AudioCodec.from_space(tiny_space)
    enc = codec.encode_file(clip)
    assert doc["ids"] == codec.to_ids(enc) and doc["meta"] == {**enc.meta, "source": "bell.oga"}
    out = tmp_path / "back.wav"
    res = invoke("decode", str(path), "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    back, sr = sf.read(str(out), dtype="float32", always_2d=True)
    ref = codec.decode(codec.from_ids(doc["ids"], {"num_samples": doc["meta"]["num_samples"]}))
    assert sr == codec.sample_rate and torch.equal(torch.from_numpy(back.T.copy()), ref)
    assert back.shape[0] == doc["meta"]["num_samples"]


# --- decode-side checks of meta against the space and the IDs ---------------------------------------

@pytest.mark.parametrize("source, edit, needle", [
    ("audio/bell.oga", {"sample_rate": 16_000}, "meta.sample_rate is 16000, but"),
    ("audio/bell.oga", {"frames": 1}, "meta.frames is 1, but"),
    ("audio/bell.oga", {"num_samples": 1000.7}, "meta.num_samples must be an integer, got float 1000.7"),
    ("panoramas/city.jpg", {"kind": "plain"}, "meta.kind says plain, but the IDs decode to panorama"),
    ("panoramas/city.jpg", {"layout": {"fov": 60.0}}, "meta.layout differs from the image layout"),
], ids=["audio-rate", "audio-frames", "audio-num_samples-float", "image-kind", "image-layout"])
def test_meta_must_agree_with_space_and_ids(tmp_path, source, edit, needle):
    doc, path = encode_doc(tmp_path, str(ASSETS / source))
    doc["meta"].update(edit)
    path.write_text(json.dumps(doc))
    out = tmp_path / ("x.wav" if source.startswith("audio") else "x.safetensors")
    res = invoke("decode", str(path), "--out", str(out))
    assert res.exit_code == 2 and needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not out.exists()


# --- which space decodes ----------------------------------------------------------------------------

def _text_doc(path: Path, name: str, hash_: str) -> Path:
    path.write_text(json.dumps({"token_space": {"name": name, "hash": hash_}, "modality": "text", "ids": [72, 73]}))
    return path


def test_explicit_space_equal_to_the_default_is_honoured(tmp_path, tiny_space):
    path = _text_doc(tmp_path / "d.json", "qwen3-siglip2-encodec", tiny_space.hash)  # made with tiny, named other
    res = invoke("decode", str(path))
    assert res.exit_code == 2 and tiny_space.hash in res.output
    res = invoke("decode", str(path), "--space", "tiny")
    assert res.exit_code == 0 and res.output == "hi\n", res.output


def test_document_from_a_custom_space_suggests_its_path(tmp_path, tiny_space):
    root = tmp_path / "mine"
    shutil.copytree(REPO / "token_spaces" / "tiny", root)
    path = _text_doc(tmp_path / "d.json", "mine", tiny_space.hash)
    res = invoke("decode", str(path))
    assert res.exit_code == 2 and "'mine', which is not a registered space" in res.output
    assert "--space PATH/token_space.json" in res.output
    assert invoke("decode", str(path), "--space", str(root / "token_space.json")).output == "hi\n"


def test_a_name_is_never_opened_as_a_path(tmp_path, monkeypatch, tiny_space):
    """A folder `tiny/` in the working directory does not shadow the registered space `tiny`."""
    other = TokenSpace.from_abi({**tiny_space.abi, "pad_to_multiple": 7}, "tiny", assets=tiny_space.assets)
    (tmp_path / "tiny").mkdir()
    other.save(tmp_path / "tiny" / "token_space.json")
    monkeypatch.chdir(tmp_path)
    doc = EncodedDocument("tiny", other.hash, "text", [72, 73], where="d.json")
    with pytest.raises(HashMismatchError, match=f"d.json was made with .* hash {other.hash}, but space 'tiny' "
                                                f"\\({REPO}/token_spaces/tiny/token_space.json\\) has hash"):
        document_space(doc)
    assert document_space(doc, "tiny/token_space.json").hash == other.hash  # a path the user gives is a path
    for name in ("../tiny", ".tiny", "a\\b", "token_spaces/tiny", str(REPO / "token_spaces" / "tiny")):
        with pytest.raises(SpaceError, match="not a registered space"):
            document_space(EncodedDocument(name, tiny_space.hash, "text", [1]))


def test_hash_mismatch_names_both_hashes_and_both_files_once(tmp_path, tiny_space):
    path = _text_doc(tmp_path / "d.json", "tiny", "0" * 32)
    line = invoke("decode", str(path)).output.strip()
    assert line.count(str(path)) == 1 and line.count(str(tiny_space.path)) == 1
    assert line.count("0" * 32) == 1 and line.count(tiny_space.hash) == 1


# --- messages name a path once ------------------------------------------------------------------------

def test_unreadable_inputs_name_their_path_once(tmp_path):
    missing = tmp_path / "missing.json"
    line = invoke("decode", str(missing)).output.strip()
    assert line == f"error: {missing}: no such file"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage")
    line = invoke("encode", str(bad)).output.strip()
    assert line.startswith("error: ") and line.count(str(bad)) == 1 and line.count("bad.wav") == 1, line
    res = invoke("encode", "--text", "hi", "--out", str(tmp_path))  # --out is a folder
    assert res.exit_code == 2 and res.output.count(str(tmp_path)) == 1 and "cannot write" in res.output


# --- the module -------------------------------------------------------------------------------------------

def test_build_write_read_parse(tmp_path, tiny_space, monkeypatch):
    doc = EncodedDocument.for_space(tiny_space, "audio", np.array([5, 6], dtype=np.int64), {"num_samples": 3})
    assert doc.ids == [5, 6] and all(type(i) is int for i in doc.ids)
    assert isinstance(doc.typed_meta, AudioMeta) and doc.typed_meta.num_samples == 3
    path = tmp_path / "sub" / "d.json"
    write_document(path, doc)
    assert [p.name for p in path.parent.iterdir()] == ["d.json"]  # atomic: no temp file left
    assert read_document(path) == doc == parse_document(doc.dumps().encode())
    assert EncodedDocument.from_json(doc.to_json()) == doc
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    back = read_document("-")
    assert back == doc and back.where == "<stdin>"


def test_construction_validates_like_parsing(tiny_space):
    with pytest.raises(InputError, match="booleans"):
        EncodedDocument.for_space(tiny_space, "text", [True])
    with pytest.raises(InputError, match=r"ids\[0\] is true"):
        EncodedDocument("tiny", tiny_space.hash, "text", [True])
    with pytest.raises(InputError, match=r"ids\[0\] is -3"):
        EncodedDocument("tiny", tiny_space.hash, "text", [-3])
    with pytest.raises(InputError, match="meta.num_samples must be an integer, got float 1000.7"):
        EncodedDocument("tiny", tiny_space.hash, "audio", [1], {"num_samples": 1000.7})
    doc = EncodedDocument("tiny", tiny_space.hash, "text", [])  # an empty text encodes to no IDs
    assert doc.to_json()["meta"] == {} and doc.typed_meta.chars is None


@dataclass(frozen=True)
class DepthMeta:
    height: int
    scale: float = 1.0


def test_a_codec_owns_its_meta_schema(tiny_space):
    """A registered codec's `meta_type` is the schema of its documents: no edit of uti.document needed."""
    with pytest.raises(InputError, match="modality must be one of audio, image, text, got str 'depth'"):
        EncodedDocument("tiny", tiny_space.hash, "depth", [1], {"height": 4})

    class DepthCodec(ModalityCodec):
        meta_type = DepthMeta

    register_codec("depth")(DepthCodec)
    try:
        doc = EncodedDocument("tiny", tiny_space.hash, "depth", [1], {"height": 4})
        assert doc.typed_meta == DepthMeta(4)
        with pytest.raises(InputError, match="meta lacks required key.s. height"):
            EncodedDocument("tiny", tiny_space.hash, "depth", [1], {"scale": 2})
        with pytest.raises(InputError, match="meta.scale must be a number, got str"):
            EncodedDocument("tiny", tiny_space.hash, "depth", [1], {"height": 4, "scale": "2"})
    finally:
        unregister_codec("depth")
    with pytest.raises(InputError, match="modality must be one of"):
        EncodedDocument("tiny", tiny_space.hash, "depth", [1], {"height": 4})


def test_a_codec_without_a_meta_type_takes_empty_meta_only(tiny_space):
    register_codec("depth")(type("Bare", (ModalityCodec,), {}))
    try:
        assert EncodedDocument("tiny", tiny_space.hash, "depth", [1]).to_json()["meta"] == {}
        with pytest.raises(InputError, match="unknown key.s. 'height'"):
            EncodedDocument("tiny", tiny_space.hash, "depth", [1], {"height": 4})
    finally:
        unregister_codec("depth")
    with pytest.raises(Exception, match="meta_type must be a dataclass"):
        register_codec("depth")(type("BadMeta", (ModalityCodec,), {"meta_type": dict}))
    unregister_codec("depth")


@pytest.mark.parametrize("unpinned, error", [
    ("vision_tower", "unpinned must be a list"),
    ([1], "unpinned must be a list of at most 32 asset names"),
    ([""], "unpinned must be a list"),
    (["k"] * 33, "at most 32"),
])
def test_unpinned_is_validated(tiny_space, unpinned, error):
    obj = {"token_space": {"name": "tiny", "hash": tiny_space.hash}, "modality": "text", "ids": [1],
           "unpinned": unpinned}
    with pytest.raises(InputError, match=error):
        EncodedDocument.from_json(obj)


def test_unpinned_round_trips_and_is_absent_when_empty(tiny_space):
    doc = EncodedDocument.for_space(tiny_space, "text", [1], {"chars": 1}, {"tokenizer", "base_model"})
    assert doc.to_json()["unpinned"] == ["base_model", "tokenizer"]
    assert parse_document(doc.dumps().encode()) == doc
    assert "unpinned" not in EncodedDocument.for_space(tiny_space, "text", [1]).to_json()


def test_a_kill_while_writing_leaves_the_old_or_the_new_document(tmp_path, tiny_space):
    from killpoints import file_ops, kill_at_each_file_op

    old = EncodedDocument.for_space(tiny_space, "text", [1, 2], {"chars": 2})
    new = EncodedDocument.for_space(tiny_space, "text", [3, 4, 5], {"chars": 3})
    path = tmp_path / "d.json"
    write_document(path, old)
    count = len(file_ops(lambda: write_document(path, old)))
    assert count >= 3
    for k in kill_at_each_file_op(lambda: write_document(path, new), count):
        assert read_document(path) in ((new,) if k == count else (old, new))  # never half a document
        write_document(path, old)
