"""`uti.Tokenizer` on the shipped tiny space, checked against the per-modality library paths (`ImageCodec`,
`AudioCodec`, `TextCodec`) and the registry-driven grammar against the pre-registry one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import reference_grammar as ref
from tokenlm.constraints import Grammar, _Walk, export_rules
from uti.testing import tiny_space
from uti import Audio, Tokenizer
from uti import specials as S
from uti.audio.serialize import codes_to_ids
from uti.errors import InputError, TokenRangeError
from uti.image.codec import from_ids as image_from_ids
from uti.text import TextCodec

ASSETS = Path(__file__).parent / "assets"
PANO = ASSETS / "panoramas" / "city.jpg"
WAV = ASSETS / "audio" / "speech_forest.wav"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    torch.set_num_threads(1)
    return Tokenizer.from_space("tiny")


@pytest.fixture(scope="module")
def image_ref(tok):
    from uti.image.codec import ImageCodec, to_ids
    from uti.image.load import load_image

    return to_ids(ImageCodec.from_space(tok.space).encode(load_image(PANO)), tok.space)


@pytest.fixture(scope="module")
def audio_ref(tok):
    from uti.audio.codec import AudioCodec

    codec = AudioCodec.from_space(tok.space)
    return codec.to_ids(codec.encode_file(WAV))


def test_text_round_trip(tok):
    s = "héllo, wörld 🌍\n\t<|image_start|> tabs"
    ids = tok.encode(s)
    assert ids == TextCodec.from_space(tok.space).encode(s)
    assert [(seg.modality, seg.value) for seg in tok.decode(ids)] == [("text", s)]
    assert tok.modalities == ["text", "image", "audio"] and tok.codec("text").encode("a") == tok.encode("a")


@pytest.mark.slow
def test_panorama_path_pil_array_match_uti_encode(tok, image_ref):
    assert len(image_ref) == 1 + 9 * (1 + 16) + 1  # global view + 8 tiles of 4x4 codes
    assert tok.encode(PANO) == image_ref
    with Image.open(PANO) as im:
        assert tok.encode(im) == image_ref
        assert tok.encode(np.asarray(im.convert("RGB"))) == image_ref
    other = ASSETS / "panoramas" / "forest.jpg"
    assert tok.encode_batch([PANO, "x", other]) == [image_ref, tok.encode("x"), tok.encode(other)]


@pytest.mark.slow
def test_audio_path_and_waveform_match_uti_encode(tok, audio_ref):
    assert tok.encode(WAV) == audio_ref
    wav, rate = sf.read(WAV, dtype="float32")  # 22050 Hz: resampled like the file path
    assert rate != tok.codec("audio").codec.sample_rate
    assert tok.encode(Audio(wav, rate)) == audio_ref
    assert tok.encode(Audio(torch.from_numpy(wav)[None], rate)) == audio_ref


@pytest.mark.slow
def test_decode_mixed_stream_in_order(tok, image_ref, audio_ref):
    sp = tok.space
    text = tok.encode("a city")
    stream = [sp.special_id(S.GEN_TEXT), *text, *image_ref, sp.special_id(S.TEXT_START), *text,
              sp.special_id(S.TEXT_END), *audio_ref]
    segs = tok.decode(stream)
    assert [s.modality for s in segs] == ["special", "text", "image", "text", "audio"]
    assert [i for s in segs for i in s.ids] == stream
    assert segs[0].value == S.GEN_TEXT and segs[1].value == segs[3].value == "a city"
    img = segs[2].value
    assert torch.equal(img["codes"], image_from_ids(image_ref, sp).codes) and img["kind"] == "panorama"
    assert img["features"].shape == (9, 16, 64) and len(img["views"]) == 9
    aud = segs[4].value
    assert isinstance(aud, Audio) and aud.sample_rate == 24000
    frames = (len(audio_ref) - 2) // 4  # 4 levels; a bare stream carries no sample count: whole frames
    assert aud.waveform.shape == (1, frames * 320) and frames == -(-round(len(sf.read(WAV)[0]) * 24000 / 22050) // 320)


def test_decode_and_encode_refuse_bad_input(tok):
    sp = tok.space
    img = sp.ranges["image"].start
    with pytest.raises(TokenRangeError, match="has no <\\|image_end\\|>"):
        tok.decode([sp.special_id(S.IMAGE_START), sp.special_id(S.VIEW_GLOBAL), img])
    with pytest.raises(TokenRangeError, match="image ID outside its block"):
        tok.decode([5, img])
    with pytest.raises(TokenRangeError, match="outside the used IDs"):
        tok.decode([sp.ranges["padding"].start])
    with pytest.raises(TokenRangeError, match="integers"):
        tok.decode([1.5])
    with pytest.raises(InputError, match="cannot encode a dict"):
        tok.encode({"a": 1})
    with pytest.raises(InputError, match="no audio section"):
        Tokenizer(tiny_space(audio=None)).encode(Audio(np.zeros(100, np.float32), 16000))


def test_run_options_reach_the_codecs_from_the_cli(tmp_path, monkeypatch):
    """`uti encode --device/--dtype/--strict` go through `Tokenizer.from_space` to the codec that builds the
    model and reads the file (the CLI names no modality)."""
    from click.testing import CliRunner

    from uti.audio.codec import AudioCodec
    from uti.cli import main
    from uti.image.codec import ImageCodec

    seen = []

    class Stop(Exception):
        pass

    def build(space, **kw):
        seen.append(kw)
        raise Stop

    monkeypatch.setattr(ImageCodec, "from_space", build)
    monkeypatch.setattr(AudioCodec, "from_space", build)
    for src in (PANO, WAV):
        res = CliRunner().invoke(main, ["encode", str(src), "--device", "cpu", "--dtype", "bfloat16", "--strict"])
        assert isinstance(res.exception, Stop), res.output
    assert seen == [{"device": torch.device("cpu"), "dtype": torch.bfloat16}] * 2
    tok = Tokenizer.from_space("tiny", strict=True)
    assert tok.codec("image").strict and tok.codec("audio").strict and not Tokenizer.from_space("tiny").codec("image").strict


def _streams(space) -> list[tuple[list[int], bool]]:
    """Real streams of a space (and whether only a prompt may hold it): text, a panorama, a plain-image
    prompt, audio."""
    sid, out = space.special_id, []
    gen = torch.Generator().manual_seed(0)
    text = [sid(S.GEN_TEXT), sid(S.TEXT_START), 40, 41, sid(S.TEXT_END)]
    img = space.ranges["image"]
    views = S.view_specials(space.abi["image"]["layout"]["num_tiles"])
    per_view = space.abi["image"]["tokens_per_view"]
    image = [sid(S.IMAGE_START)]
    for v in views:
        image += [sid(v), *torch.randint(img.start, img.stop, (per_view,), generator=gen).tolist()]
    out.append((text + [sid(S.GEN_IMAGE)] + image + [sid(S.IMAGE_END)], False))
    out.append((image[:2 + per_view] + [sid(S.IMAGE_END)] + text, True))  # a plain image
    audio = space.abi["audio"]
    body = codes_to_ids(torch.randint(0, audio["codebook_size"], (audio["num_codebooks"], 5), generator=gen),
                        [r.start for r in space.audio_ranges], audio["codebook_size"], audio["order"],
                        sid(S.PAD)).tolist()
    out.append((text + [sid(S.GEN_AUDIO), sid(S.AUDIO_START), *body, sid(S.AUDIO_END)] + text, False))
    return out


def _merged(ranges):
    return ref._merge(list(ranges))


@pytest.mark.parametrize("which", ["tiny", "frame_major", "delay"])
def test_grammar_via_registry_equals_the_old_grammar(which):
    space = Tokenizer.from_space("tiny").space if which == "tiny" else tiny_space(audio=(3, 16), order=which)
    for limit in (None, 300):
        new, old = Grammar(space, limit), ref.Grammar(space, limit)
        for stream, prompt_only in _streams(space):
            for prompt in (True,) if prompt_only else (True, False):
                w, r = _Walk(), ref._Walk()
                for tok in stream:
                    assert _merged(new.allowed(w, prompt)) == _merged(old.allowed(r, prompt))
                    new.advance(w, tok, prompt)
                    old.advance(r, tok, prompt)
                    assert w.mode == r.mode
        assert export_rules(space, limit) == ref.export_rules(space, limit)


def test_split_is_lazy_and_partial_for_cut_generations():
    tok = Tokenizer.from_space("tiny")
    sp, img = tok.space, tok.space.ranges["image"].start
    gen, start = sp.special_id(S.GEN_IMAGE), sp.special_id(S.IMAGE_START)
    ids = [5, 6, gen, 7, start, sp.special_id(S.VIEW_GLOBAL), img]
    segs = tok.split(ids, partial=True)
    assert [(s.modality, s.ids, s.complete) for s in segs] == [
        ("text", [5, 6], True), ("special", [gen], True), ("text", [7], True), ("image", ids[4:], False)]
    with pytest.raises(TokenRangeError, match="cut off"):
        tok.decode_segment(segs[3])
    with pytest.raises(TokenRangeError, match="has no"):
        tok.split(ids)
    assert tok.decode(ids[:4])[2].value == tok.codec("text").codec.decode([7])
    assert set(tok._codecs) == {"text"}  # nothing but the tokenizer was loaded


def test_code_token_names_equal_the_exported_ones():
    from tokenlm.export import code_token_names
    from uti.codecs import code_tokens

    for space in (Tokenizer.from_space("tiny").space, tiny_space(audio=(3, 16))):
        assert code_tokens(space) == [(i, n) for i, n, special in code_token_names(space) if not special]


def test_file_suffixes_cover_the_test_assets():
    tok = Tokenizer.from_space("tiny")
    suffixes = tok.file_suffixes()
    assert {".jpg", ".png", ".wav", ".oga"} <= set(suffixes)
    for p in (ASSETS / "panoramas").glob("*.jpg"):
        assert tok.codec_for(p).modality == "image"
    for p in (ASSETS / "audio").glob("*.wav"):
        assert tok.codec_for(p).modality == "audio"
    assert tok.codec_for("speech.wav").modality == "text"  # a str is always text
