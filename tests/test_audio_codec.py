"""AudioCodec on the tiny EnCodec: exactness against transformers, chunking, token-space IDs, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from transformers import EncodecModel

from tiny_assets import TINY_BANDWIDTH, make_tiny_encodec
from uti.audio import AudioCodec, AudioConfig
from uti.audio.io import load_audio
from uti.build import SpaceConfig, TextConfig, build_space
from uti.codec import Encoded
from uti.errors import (
    ConfigError,
    HashMismatchError,
    InputError,
    MissingAssetError,
    TokenRangeError,
)
from uti.hashing import hash_safetensors
from uti.space import TokenSpace

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO / "tests" / "assets" / "audio" / "speech_courtyard.wav"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_encodec(tmp_path_factory.mktemp("tiny") / "encodec", seed=0)


@pytest.fixture(scope="module")
def codec(tiny_dir: Path) -> AudioCodec:
    return AudioCodec.from_pretrained(tiny_dir, AudioConfig(bandwidth=TINY_BANDWIDTH))


@pytest.fixture(scope="module")
def reference(tiny_dir: Path) -> EncodecModel:
    return EncodecModel.from_pretrained(str(tiny_dir)).eval()


@pytest.fixture(scope="module")
def space(tiny_dir: Path, tmp_path_factory) -> TokenSpace:
    return make_space(tmp_path_factory.mktemp("space"), tiny_dir)


@pytest.fixture(scope="module")
def space_codec(space: TokenSpace) -> AudioCodec:
    return AudioCodec.from_space(space)


def make_space(root: Path, tiny_dir: Path) -> TokenSpace:
    """A small space with an audio section, built by the lead's builder from our section function."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "token_spaces" / "tiny" / "tokenizer.json", root / "tokenizer.json")
    if not (root / "encodec").exists():
        shutil.copytree(tiny_dir, root / "encodec")
    cfg = SpaceConfig(name="audiotest", text=TextConfig(tokenizer="tiny", base_vocab_size=512),
                      assets={"tokenizer": "tokenizer.json", "audio_codec": "encodec"},
                      audio={"name": "tiny-encodec", "bandwidth": TINY_BANDWIDTH, "order": "frame_major",
                             "chunk_frames": 2250})
    space = build_space(cfg, root)
    space.save(root / "token_space.json")
    return TokenSpace.load(root / "token_space.json")


def test_codes_and_waveform_equal_transformers_bit_for_bit(codec: AudioCodec, reference: EncodecModel) -> None:
    assert codec.num_codebooks == 4 and codec.codebook_size == 256
    wav = torch.from_numpy(load_audio(SPEECH, 24_000, "mono_mean"))  # [1, T]
    ours = codec.encode(SPEECH)
    with torch.no_grad():
        ref = reference.encode(wav[None], bandwidth=TINY_BANDWIDTH, return_dict=True)
        ref_wav = reference.decode(ref.audio_codes, ref.audio_scales, return_dict=True).audio_values[0]
    assert torch.equal(ours.codes, ref.audio_codes[0, 0])
    assert ours.codes.shape == (4, -(-wav.shape[1] // 320)) and len(ours.codes[0].unique()) > 10
    ours_wav = codec.decode(ours)
    assert ours_wav.shape == wav.shape
    assert torch.equal(ours_wav, ref_wav[:, : wav.shape[1]])


def test_bandwidth_selects_levels(tiny_dir: Path, codec: AudioCodec) -> None:
    low = AudioCodec.from_pretrained(tiny_dir, AudioConfig(bandwidth=1.2))
    x = torch.from_numpy(load_audio(SPEECH, 24_000, "mono_mean"))[:, :8000]
    assert low.num_codebooks == 2 and low.abi()["bandwidth"] == 1.2 and low.abi() != codec.abi()
    assert torch.equal(low.encode(x).codes, codec.encode(x).codes[:2])  # residual VQ: a prefix of the levels
    with pytest.raises(ConfigError, match="bandwidth 3.0 kbps is not offered"):
        AudioCodec(codec.model, AudioConfig(bandwidth=3.0), "tiny", codec.weights_hash)


def test_chunked_encoding_equals_reference_per_chunk(tiny_dir: Path, reference: EncodecModel, tmp_path: Path) -> None:
    chunked = AudioCodec.from_pretrained(tiny_dir, AudioConfig(bandwidth=TINY_BANDWIDTH, chunk_frames=25))
    clip = tmp_path / "clip.wav"  # 1.1 s of speech at 24 kHz -> chunks of 8000, 8000, 8000, 2400 samples
    sf.write(str(clip), load_audio(SPEECH, 24_000, "mono_mean")[0, 12_000:38_400], 24_000, subtype="FLOAT")
    wav = torch.from_numpy(load_audio(clip, 24_000, "mono_mean"))
    enc = chunked.encode(clip)
    with torch.no_grad():
        parts = [reference.encode(wav[None, :, s:s + 8000], bandwidth=TINY_BANDWIDTH).audio_codes[0, 0]
                 for s in range(0, wav.shape[1], 8000)]
        ref_wav = torch.cat([reference.decode(p[None, None], [None]).audio_values[0] for p in parts], dim=1)
    assert torch.equal(enc.codes, torch.cat(parts, dim=1))
    assert enc.codes.shape[1] == -(-wav.shape[1] // 320)
    out = tmp_path / "chunked.wav"
    assert chunked.decode_to_file(enc, out) == wav.shape[1]
    back, sr = sf.read(str(out), dtype="float32", always_2d=True)
    assert sr == 24_000 and torch.equal(torch.from_numpy(back.T.copy()), ref_wav[:, : wav.shape[1]])


def test_short_silent_and_bad_waveforms(codec: AudioCodec) -> None:
    for n in (1, 319, 320, 321):  # shorter than, equal to and just over one frame
        enc = codec.encode(torch.zeros(n))
        assert enc.codes.shape == (4, -(-n // 320)) and codec.decode(enc).shape == (1, n)
    with pytest.raises(InputError, match="NaN"):
        codec.encode(torch.tensor([0.0, float("nan")]))
    with pytest.raises(InputError, match="no audio samples"):
        codec.encode(torch.zeros(0))
    with pytest.raises(TokenRangeError, match=r"\[0, 256\)"):
        codec.decode(Encoded(torch.full((4, 2), 256), {}))
    with pytest.raises(TokenRangeError, match=r"must be \[4, frames\]"):
        codec.decode(Encoded(torch.zeros(3, 2, dtype=torch.long), {}))


@pytest.mark.parametrize("order", ["frame_major", "delay"])
def test_space_ids_round_trip(space: TokenSpace, space_codec: AudioCodec, order: str) -> None:
    codec = space_codec
    if order == "delay":  # the same space with the other order (a different ABI, hence hash)
        space = TokenSpace.from_abi({**space.abi, "audio": {**space.abi["audio"], "order": order}}, "delay")
        codec = AudioCodec(space_codec.model, AudioConfig(bandwidth=TINY_BANDWIDTH, order=order, name="tiny-encodec"),
                           "tiny-encodec", space_codec.weights_hash, space)
        assert codec.abi() == space.abi["audio"]
    section = space.abi["audio"]
    assert section["order"] == order and section["weights_hash"] == hash_safetensors(space_codec.model.name_or_path)
    assert {"sample_rate", "frame_rate", "bandwidth", "num_codebooks", "codebook_size", "channels"} <= set(section)
    enc = codec.encode(torch.from_numpy(load_audio(SPEECH, 24_000, "mono_mean"))[:, :8000])
    ids = codec.to_ids(enc)
    assert ids[0] == space.special_id("<|audio_start|>") and ids[-1] == space.special_id("<|audio_end|>")
    body = ids[1:-1]
    if order == "frame_major":
        assert [space.range_of(i).name for i in body[:8]] == ["audio.0", "audio.1", "audio.2", "audio.3"] * 2
    back = codec.from_ids(ids, enc.meta)
    assert torch.equal(back.codes, enc.codes) and torch.equal(codec.decode(back), codec.decode(enc))
    with pytest.raises(TokenRangeError):
        codec.from_ids(ids[:-2] + ids[-1:])  # one ID short


def test_from_space_checks_hash_and_assets(tiny_dir: Path, space: TokenSpace, tmp_path: Path) -> None:
    shutil.copytree(space.root, tmp_path / "s")
    space = TokenSpace.load(tmp_path / "s" / "token_space.json")
    shutil.rmtree(tmp_path / "s" / "encodec")
    with pytest.raises(MissingAssetError):
        AudioCodec.from_space(space)
    shutil.copytree(tiny_dir, tmp_path / "s" / "encodec")
    weights = tmp_path / "s" / "encodec" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["quantizer.layers.0.codebook.embed"][0, 0] += 1.0  # same architecture, one changed value
    save_file(tensors, str(weights))
    with pytest.raises(HashMismatchError, match="abi.audio.weights_hash"):
        AudioCodec.from_space(space)


# --- CLI: `uti encode speech.wav --json`, `uti decode tokens.json --out speech.wav` ----------------------

def test_cli_encode_decode_round_trip(space: TokenSpace, space_codec: AudioCodec, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from uti.cli import main

    clip = tmp_path / "clip.flac"
    sf.write(str(clip), sf.read(str(SPEECH), dtype="float32")[0][:11_025], 22_050)  # 0.5 s
    runner = CliRunner()
    res = runner.invoke(main, ["encode", str(clip), "--space", str(space.path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["modality"] == "audio" and doc["token_space"]["hash"] == space.hash
    assert doc["meta"]["num_samples"] == 12_000 and len(doc["ids"]) == 2 + 4 * 38
    codec = space_codec
    assert doc["ids"] == codec.to_ids(codec.encode(clip))
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(doc))
    out = tmp_path / "back.wav"
    res = runner.invoke(main, ["decode", str(tokens), "--space", str(space.path), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    back, sr = sf.read(str(out), dtype="float32", always_2d=True)
    assert sr == 24_000 and torch.equal(torch.from_numpy(back.T.copy()), codec.decode(codec.from_ids(doc["ids"], doc["meta"])))

    doc["ids"][1], doc["ids"][2] = doc["ids"][2], doc["ids"][1]  # levels out of order
    tokens.write_text(json.dumps(doc))
    res = runner.invoke(main, ["decode", str(tokens), "--space", str(space.path), "--out", str(out)])
    assert res.exit_code == 2 and "levels must come in order" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["decode", str(tokens), "--space", str(space.path)])
    assert res.exit_code == 2 and "needs --out" in res.output
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16_000)
    res = runner.invoke(main, ["encode", str(empty), "--space", str(space.path), "--json"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "empty" in res.output


def test_batch_survives_bad_files(space: TokenSpace, tmp_path: Path) -> None:
    from uti import Tokenizer
    from uti.batch import list_inputs, read_shards, run_batch

    tok = Tokenizer.from_space(space)

    data = tmp_path / "data"
    data.mkdir()
    sf.write(str(data / "a.wav"), np.zeros(4000, np.float32), 16_000)  # silent is fine
    bad = np.full(100, 0.1, np.float32)
    bad[3] = np.inf
    sf.write(str(data / "b.wav"), bad, 16_000, subtype="FLOAT")
    (data / "c.ogg").write_bytes(b"junk")
    summary = run_batch(list_inputs(data, tok.file_suffixes()), lambda p: tok.encode_with_meta(Path(p)),
                        tmp_path / "out", space, progress=False)
    assert summary.ok == 1 and [Path(f["path"]).name for f in summary.failed] == ["b.wav", "c.ogg"]
    assert "NaN or infinite" in summary.failed[0]["reason"]
    shard = next(read_shards(tmp_path / "out", space))
    assert shard.item(0).tolist()[0] == space.special_id("<|audio_start|>") and len(shard.item(0)) == 2 + 4 * 19


def test_stereo_codec_duplicates_mono_and_writes_stereo(tmp_path: Path) -> None:
    from transformers import EncodecConfig

    from tiny_assets import TINY_ENCODEC_CONFIG

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(**{**TINY_ENCODEC_CONFIG, "audio_channels": 2})).eval()
    for layer in model.quantizer.layers:
        layer.codebook.embed.normal_(0, 0.05)
    codec = AudioCodec(model, AudioConfig(bandwidth=TINY_BANDWIDTH), "tiny-stereo", "0" * 32)
    assert codec.abi()["channels"] == "stereo"
    mono = load_audio(SPEECH, 24_000, "mono_mean")[:, :4800]  # [1, 4800]
    clip = tmp_path / "mono.wav"
    sf.write(str(clip), mono[0], 24_000, subtype="FLOAT")
    enc = codec.encode(clip)
    with torch.no_grad():
        ref = model.encode(torch.from_numpy(np.repeat(mono, 2, axis=0))[None], bandwidth=TINY_BANDWIDTH).audio_codes
    assert torch.equal(enc.codes, ref[0, 0])
    assert codec.decode_to_file(enc, tmp_path / "out.ogg") == 4800
    assert sf.info(str(tmp_path / "out.ogg")).channels == 2
