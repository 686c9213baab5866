"""Audio tokenizer speed on CPU: real-time factor of encode/decode and our overhead over the codec alone.

    python scripts/bench_audio.py                      # tiny + real-size 24 kHz EnCodec, 10 s of speech
    python scripts/bench_audio.py --seconds 30 --repeat 5 --threads 2
    python scripts/bench_audio.py --long-minutes 60    # + a generated one-hour file: time and peak memory
    python scripts/bench_audio.py --clock cpu --threads 1   # CPU seconds: stable on a shared machine

Baseline (measured in the same run, same model object, same waveform): transformers' own
`EncodecModel.encode(wav, bandwidth=...)` on an already-resampled 24 kHz tensor and `EncodecModel.decode`
of the codes. Ours: `AudioCodec.encode_file` (read, mix, resample, chunk, encode) + `to_ids`, and
`from_ids` + `decode` (checks, decode, trim); "dec+wav" adds the atomic wav write of `decode_to_file`. Overhead = ours / baseline - 1
(target < 5%). RTF = wall time / audio duration (lower is faster; < 1 is faster than real time).
The real-size model has random weights (no downloads here): its speed equals facebook/encodec_24khz's.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO / "tests" / "assets" / "audio" / "speech_courtyard.wav"


CLOCK = time.perf_counter  # --clock cpu switches to process CPU time (robust on a shared, loaded machine)


def _paired(base, ours, repeat: int) -> tuple[float, float, object, object]:
    """Median times of `base()` and `ours()`, run alternately after one warm-up each (fair to both)."""
    base_out, ours_out = base(), ours()
    tb, to = [], []
    for _ in range(repeat):
        t0 = CLOCK()
        base_out = base()
        t1 = CLOCK()
        ours_out = ours()
        t2 = CLOCK()
        tb.append(t1 - t0)
        to.append(t2 - t1)
    return statistics.median(tb), statistics.median(to), base_out, ours_out


def _real_size_codec(tmp: Path):
    from transformers import EncodecConfig, EncodecModel

    from uti.audio import AudioCodec, AudioConfig

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig()).eval()  # facebook/encodec_24khz architecture, random weights
    for layer in model.quantizer.layers:
        layer.codebook.embed.normal_(0, 0.05)
    model.save_pretrained(str(tmp / "encodec_24khz_random"))
    return AudioCodec.from_pretrained(tmp / "encodec_24khz_random", AudioConfig(bandwidth=6.0))


def _tiny_codec(tmp: Path):
    from tiny_assets import TINY_BANDWIDTH, make_tiny_encodec
    from uti.audio import AudioCodec, AudioConfig

    return AudioCodec.from_pretrained(make_tiny_encodec(tmp / "tiny"), AudioConfig(bandwidth=TINY_BANDWIDTH))


def _space_for(codec, tmp: Path):
    """An in-memory token space whose audio section is this codec's (for to_ids/from_ids)."""
    from uti.space import TokenSpace
    from uti.specials import default_specials

    abi = {"schema": 1, "text": {"tokenizer": "none", "tokenizer_hash": None, "base_vocab_size": 1000},
           "specials": default_specials(), "audio": codec.abi(), "pad_to_multiple": 128}
    return TokenSpace.from_abi(abi, name="bench")


def bench_one(label: str, codec, clip: Path, seconds: float, repeat: int, tmp: Path) -> list[dict]:
    from uti.audio.io import load_audio

    codec.space = _space_for(codec, tmp)
    wav = torch.from_numpy(load_audio(clip, codec.sample_rate, codec.channel_policy))  # [1, T] at 24 kHz
    bw = float(codec.config.bandwidth)
    model = codec.model

    def base_encode():
        with torch.no_grad():
            return [model.encode(wav[None, :, s:s + codec.chunk_samples], bandwidth=bw).audio_codes[0, 0]
                    for s in range(0, wav.shape[1], codec.chunk_samples)]

    def ours_encode():
        enc = codec.encode_file(clip)
        return enc, codec.to_ids(enc)

    t_base_enc, t_ours_enc, parts, (enc, ids) = _paired(base_encode, ours_encode, repeat)
    assert torch.equal(torch.cat(parts, dim=1), enc.codes), "our codes differ from transformers'"

    def base_decode():
        with torch.no_grad():
            return [model.decode(p[None, None], [None]).audio_values[0] for p in parts]

    out = tmp / "decoded.wav"

    def ours_decode():
        return codec.decode(codec.from_ids(ids, enc.meta))

    def ours_decode_file():
        return codec.decode_to_file(codec.from_ids(ids, enc.meta), out)

    t_base_dec, t_ours_dec, _, _ = _paired(base_decode, ours_decode, repeat)
    t_base_dec2, t_ours_file, _, _ = _paired(base_decode, ours_decode_file, repeat)
    rows = []
    for op, base, ours in (("encode", t_base_enc, t_ours_enc), ("decode", t_base_dec, t_ours_dec),
                           ("dec+wav", t_base_dec2, t_ours_file)):
        rows.append({"model": label, "op": op, "audio_s": seconds, "codec_s": base, "ours_s": ours,
                     "rtf_codec": base / seconds, "rtf_ours": ours / seconds, "overhead": ours / base - 1})
    return rows


def make_clip(path: Path, seconds: float) -> Path:
    """`seconds` of real speech (the test asset repeated) at its own 22.05 kHz rate, so resampling is timed."""
    speech, sr = sf.read(str(SPEECH), dtype="float32")
    reps = int(np.ceil(seconds * sr / len(speech)))
    sf.write(str(path), np.tile(speech, reps)[: int(seconds * sr)], sr, subtype="PCM_16")
    return path


def long_file(codec, minutes: float, tmp: Path) -> dict:
    """Encode a generated `minutes`-long 44.1 kHz file (written block by block) and report peak memory."""
    path, sr, block = tmp / "long.wav", 44_100, 44_100 * 10
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as f:
        for _ in range(int(minutes * 60 * sr // block)):
            t = np.arange(block) / sr
            f.write(0.2 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) + 0.01 * rng.standard_normal(block))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    enc = codec.encode_file(path)
    took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"minutes": minutes, "frames": int(enc.codes.shape[1]), "encode_s": took, "rtf": took / (minutes * 60),
            "peak_rss_mb_before": before, "peak_rss_mb_after": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the benchmark clip")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (median is reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--models", default="tiny,real", help="comma list of tiny, real")
    ap.add_argument("--long-minutes", type=float, default=0.0, help="also encode a generated file this long")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall time, or process CPU time (use with --threads 1 on a busy machine)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clip = make_clip(tmp / "clip.wav", args.seconds)
        makers = {"tiny": _tiny_codec, "real": _real_size_codec}
        codecs = {m: makers[m](tmp) for m in args.models.split(",")}
        rows = [r for label, codec in codecs.items() for r in bench_one(label, codec, clip, args.seconds,
                                                                        args.repeat, tmp)]
        print(f"torch threads {torch.get_num_threads()}, clip {args.seconds:g} s speech @22.05 kHz, "
              f"median of {args.repeat}, {args.clock} clock")
        print(f"{'model':<6} {'op':<7} {'codec s':>8} {'ours s':>8} {'RTF codec':>10} {'RTF ours':>9} {'overhead':>9}")
        for r in rows:
            print(f"{r['model']:<6} {r['op']:<7} {r['codec_s']:>8.3f} {r['ours_s']:>8.3f} {r['rtf_codec']:>10.4f} "
                  f"{r['rtf_ours']:>9.4f} {100 * r['overhead']:>8.1f}%")
        if args.long_minutes:
            codec = codecs.get("tiny") or _tiny_codec(tmp)
            print("long file:", long_file(codec, args.long_minutes, tmp))


if __name__ == "__main__":
    main()
