"""`tokenlm generate` through `uti.Tokenizer`: a condition item of any codec (the CLI's `--input`, with
`--image`/`--audio` as aliases), targets the space holds, and decode summaries written by the codecs."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from tokenlm.cli import main
from tokenlm.generate import build_prompt_ids, continued_stream, decode_stream, targets
from uti import Tokenizer
from uti import specials as S
from uti.errors import InputError, UTIError
from uti.sequence import build_prompt

ASSETS = Path(__file__).resolve().parent / "assets"
PANO = ASSETS / "panoramas" / "city.jpg"
WAV = ASSETS / "audio" / "speech_courtyard.wav"


@pytest.mark.slow
def test_image_condition_prompt_is_the_i2t_prompt(tiny_space):
    tok = Tokenizer(tiny_space)
    got = build_prompt_ids(tiny_space, "a", PANO)
    assert got == build_prompt(tiny_space, "i2t", tok.encode(PANO)) + tok.encode("a")
    assert got[-len(tok.encode("a")) - 1] == tiny_space.special_id(S.TEXT_START)


def test_targets_and_refusals(tiny_space):
    assert targets(tiny_space) == ["text", "image", "audio"]
    with pytest.raises(InputError, match="has no depth section.*text, image, audio"):
        build_prompt_ids(tiny_space, "x", target="depth")
    with pytest.raises(UTIError, match="a condition item generates text"):
        build_prompt_ids(tiny_space, "x", PANO, target="audio")
    with pytest.raises(UTIError, match="needs a text prompt"):
        build_prompt_ids(tiny_space, "", target="image")


def test_cli_refuses_two_condition_files(tmp_path):
    (tmp_path / "rows").mkdir()
    res = CliRunner().invoke(main, ["generate", "--rows", str(tmp_path / "rows"), "--input", str(PANO),
                                    "--audio", str(WAV)])
    assert res.exit_code == 2 and "at most one condition file" in res.output, res.output


@pytest.mark.slow
def test_audio_condition_and_decoded_audio_file(tiny_space, tmp_path):
    tok = Tokenizer(tiny_space)
    audio = tok.encode(WAV)
    assert build_prompt_ids(tiny_space, "", WAV) == build_prompt(tiny_space, "a2t", audio)
    stream = continued_stream(tiny_space, [*tok.encode("x"), audio[0]], audio[1:])
    assert stream == audio
    (seg,) = decode_stream(tiny_space, stream, tmp_path)
    wav, rate = sf.read(seg["path"], always_2d=True)
    assert seg["path"] == str(tmp_path / "audio_0.wav") and seg["frames"] == (len(audio) - 2) // 4
    assert seg["samples"] == len(wav) == seg["frames"] * 320 and rate == 24000
    assert seg["complete"] and seg["num_ids"] == len(audio)


def test_split_stream_cuts_a_block_at_the_next_blocks_start(tiny_space):
    """A stream the grammar allows: `<|text_start|>` opens no grammar block, so an image may follow it
    before `<|text_end|>`; the image block is still found (before: swallowed by the open text block)."""
    from tokenlm.generate import split_stream

    sid, img = tiny_space.special_id, tiny_space.ranges["image"].start
    image = [sid(S.IMAGE_START), sid(S.VIEW_GLOBAL), *[img] * 16, sid(S.IMAGE_END)]
    stream = [sid(S.GEN_TEXT), sid(S.TEXT_START), 40, *image, 41, sid(S.TEXT_END)]
    segs = split_stream(tiny_space, stream)
    assert [(s.modality, s.complete, len(s.ids)) for s in segs] == [("text", False, 2), ("image", True, 19),
                                                                    ("text", True, 1)]
    with pytest.raises(UTIError, match="has no <\\|text_end\\|> before the next block"):
        Tokenizer(tiny_space).split(stream)
