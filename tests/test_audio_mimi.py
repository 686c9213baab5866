"""Mimi as the second registered audio codec: exactness against transformers' MimiModel on a tiny random
Mimi, its own ABI identity, level choice, chunking and token-space round trips."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import MimiConfig, MimiModel

from tiny_assets import make_tiny_encodec
from uti.audio import AudioCodec, AudioConfig
from uti.audio.io import load_audio
from uti.build import SpaceConfig, TextConfig, build_space
from uti.codec import Encoded
from uti.errors import ConfigError, HashMismatchError, TokenRangeError
from uti.space import TokenSpace

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO / "tests" / "assets" / "audio" / "speech_courtyard.wav"

#: Real Mimi framing (24 kHz, ratios 8*6*5*4 * downsample 2 = hop 1920, 12.5 Hz), everything else tiny.
TINY_MIMI = {"hidden_size": 16, "num_filters": 4, "num_hidden_layers": 1, "intermediate_size": 32,
             "num_attention_heads": 2, "num_key_value_heads": 2, "codebook_size": 64, "codebook_dim": 16,
             "num_quantizers": 4, "vector_quantization_hidden_dimension": 16, "upsample_groups": 16}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A seeded random tiny Mimi saved as safetensors; codebooks drawn at the latents' scale (transformers
    initialises them to zeros, which would map every frame to code 0)."""
    torch.manual_seed(0)
    model = MimiModel(MimiConfig(**TINY_MIMI)).eval()
    with torch.no_grad():
        latents = model.encoder(torch.randn(1, 1, 48_000) * 0.1).latents  # [1, 16, 25]
        quantizers = [model.quantizer.semantic_residual_vector_quantizer,
                      model.quantizer.acoustic_residual_vector_quantizer]
        for rvq in quantizers:
            for layer in rvq.layers:
                layer.codebook.embed_sum.normal_(0, float(latents.std()))
    out = tmp_path_factory.mktemp("mimi") / "mimi"
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def codec(tiny_dir: Path) -> AudioCodec:
    return AudioCodec.from_pretrained(tiny_dir, AudioConfig(codec="mimi"))


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return torch.from_numpy(load_audio(SPEECH, 24_000, "mono_mean"))  # [1, n]


def test_codes_and_waveform_equal_transformers_bit_for_bit(codec: AudioCodec, tiny_dir: Path,
                                                           speech: torch.Tensor) -> None:
    reference = MimiModel.from_pretrained(str(tiny_dir)).eval()
    assert codec.num_codebooks == 4 and codec.codebook_size == 64
    ours = codec.encode(SPEECH)
    with torch.no_grad():
        ref_codes = reference.encode(speech[None], num_quantizers=4).audio_codes  # [1, 4, T]
        ref_wav = reference.decode(ref_codes).audio_values[0]  # [1, T * 1920]
    assert ours.codes.shape == (4, -(-speech.shape[1] // 1920)) and ours.meta["num_samples"] == speech.shape[1]
    assert torch.equal(ours.codes, ref_codes[0])
    assert all(len(ours.codes[q].unique()) > 5 for q in range(4))  # the test can see a wrong level or frame
    ours_wav = codec.decode(ours)
    assert ours_wav.shape == speech.shape and torch.equal(ours_wav, ref_wav[:, : speech.shape[1]])


def test_abi_identity_and_levels(codec: AudioCodec, tiny_dir: Path, speech: torch.Tensor) -> None:
    abi = codec.abi()
    assert abi["codec"] == "mimi" and abi["frame_rate"] == 12.5 and abi["hop_length"] == 1920
    assert abi["sample_rate"] == 24_000 and abi["chunk_frames"] == 375 and abi["channels"] == "mono_mean"
    assert abi["num_codebooks"] == 4 and abi["bandwidth"] == pytest.approx(4 * 6 * 12.5 / 1000)
    encodec = AudioCodec.from_pretrained(make_tiny_encodec(tiny_dir.parent / "encodec"), AudioConfig(bandwidth=2.4))
    assert encodec.abi()["codec"] == "encodec" and encodec.abi()["config_hash"] != abi["config_hash"]
    two = AudioCodec.from_pretrained(tiny_dir, AudioConfig(codec="mimi", num_quantizers=2))
    x = speech[:, :9600]
    assert two.num_codebooks == 2 and two.abi() != abi
    assert torch.equal(two.encode(x).codes, codec.encode(x).codes[:2])  # split RVQ: a prefix of the levels
    with pytest.raises(ConfigError, match="num_quantizers 5 is not offered"):
        AudioCodec(codec.model, AudioConfig(codec="mimi", num_quantizers=5), "tiny", codec.weights_hash)
    with pytest.raises(ConfigError, match="bandwidth is for EnCodec"):
        AudioConfig(codec="mimi", bandwidth=1.1)
    with pytest.raises(ConfigError, match="valid: encodec, mimi"):
        AudioConfig(codec="dac")
    with pytest.raises(ConfigError, match="not Mimi"):
        AudioCodec(encodec.model, AudioConfig(codec="mimi"), "tiny", "0" * 32)
    with pytest.raises(ConfigError, match="not EnCodec"):
        AudioCodec(codec.model, AudioConfig(), "tiny", "0" * 32)


def test_short_and_chunked_inputs(tiny_dir: Path, codec: AudioCodec, speech: torch.Tensor) -> None:
    for n in (1, 1919, 1920, 1921):  # shorter than, equal to and just over one frame
        enc = codec.encode(torch.zeros(n))
        assert enc.codes.shape == (4, -(-n // 1920)) and codec.decode(enc).shape == (1, n)
    chunked = AudioCodec.from_pretrained(tiny_dir, AudioConfig(codec="mimi", chunk_frames=10))
    x = speech[:, :50_000]  # chunks of 19200, 19200 and 11600 samples
    enc = chunked.encode(x)
    parts = [codec.encode(x[:, s:s + 19_200]).codes for s in range(0, x.shape[1], 19_200)]
    assert torch.equal(enc.codes, torch.cat(parts, dim=1)) and enc.codes.shape[1] == 27
    wav = torch.cat([codec.decode_chunk(p) for p in parts], dim=1)[:, :50_000]
    assert torch.equal(chunked.decode(enc), wav)
    with pytest.raises(TokenRangeError, match=r"\[0, 64\)"):
        codec.decode(Encoded(torch.full((4, 2), 64), {}))


@pytest.mark.parametrize("order", ["frame_major", "delay"])
def test_space_round_trip(tiny_dir: Path, tmp_path: Path, speech: torch.Tensor, order: str) -> None:
    shutil.copy(REPO / "token_spaces" / "tiny" / "tokenizer.json", tmp_path / "tokenizer.json")
    shutil.copytree(tiny_dir, tmp_path / "mimi")
    cfg = SpaceConfig(name="mimitest", text=TextConfig(tokenizer="tiny", base_vocab_size=512),
                      assets={"tokenizer": "tokenizer.json", "audio_codec": "mimi"},
                      audio={"codec": "mimi", "name": "tiny-mimi", "num_quantizers": 3, "order": order})
    build_space(cfg, tmp_path).save(tmp_path / "token_space.json")
    space = TokenSpace.load(tmp_path / "token_space.json")
    codec = AudioCodec.from_space(space)
    assert space.abi["audio"]["codec"] == "mimi" and len(space.audio_ranges) == 3 and codec.num_codebooks == 3
    enc = codec.encode(speech[:, :24_000])  # 1 s -> 13 frames
    ids = codec.to_ids(enc)
    assert len(ids) == 2 + 3 * (13 if order == "frame_major" else 15)
    back = codec.from_ids(ids, enc.meta)
    assert torch.equal(back.codes, enc.codes) and torch.equal(codec.decode(back), codec.decode(enc))
    if order == "frame_major":
        assert [space.range_of(i).name for i in ids[1:7]] == ["audio.0", "audio.1", "audio.2"] * 2
        with pytest.raises(TokenRangeError, match="levels must come in order"):
            codec.from_ids([ids[0], ids[2], ids[1], *ids[3:]])
    weights = tmp_path / "mimi" / "model.safetensors"
    tensors = load_file(str(weights))
    key = next(k for k in tensors if k.endswith("embed_sum"))
    tensors[key][0, 0] += 1.0
    save_file(tensors, str(weights))
    with pytest.raises(HashMismatchError, match="weights_hash"):
        AudioCodec.from_space(space)
