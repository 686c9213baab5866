"""`uti encode DIR --out S --workers N`: encoders are built before the threads start, so no input is lost to a
construction race; with the real tiny tower and codec, N workers give the codes of one; failures exit 1 and
are retried by a rerun."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from click.testing import CliRunner

from hostile import run_cli
from uti.batch import read_shards

SUFFIXES = {"image": ".jpg", "audio": ".wav"}


def test_encoders_are_built_in_the_main_thread(tmp_path, monkeypatch):
    """Deterministic form of the race: building a codec's model inside a worker thread is the bug. The models
    are built where the codec adapters build them (`ImageCodec.from_space`, `AudioCodec.from_space`, reached
    through `ModalityCodec.load` or lazily on first encode); encoding touches the model as real encoding does."""
    from uti.audio.codec import AudioCodec
    from uti.cli import main
    from uti.image.codec import ImageCodec
    from uti.modalities.audio import AudioModality
    from uti.modalities.image import ImageModality

    built = []

    def factory(kind):
        def build(space, **run):
            built.append((kind, threading.current_thread() is threading.main_thread()))
            return kind
        return build

    def encode_with_meta(self, item):
        return [self.space.special_id("<|image_start|>")], {"kind": self.codec}  # self.codec: built on first use

    monkeypatch.setattr(ImageCodec, "from_space", factory("image"))
    monkeypatch.setattr(AudioCodec, "from_space", factory("audio"))
    monkeypatch.setattr(ImageModality, "encode_with_meta", encode_with_meta)
    monkeypatch.setattr(AudioModality, "encode_with_meta", encode_with_meta)
    from uti.codecs import ModalityCodec  # the image stream's threads call encode_with_meta, as audio's do

    monkeypatch.setattr(ImageModality, "encode_stream", ModalityCodec.encode_stream)
    src = tmp_path / "in"
    src.mkdir()
    for k in range(6):
        (src / f"f{k}{SUFFIXES['image' if k % 2 else 'audio']}").write_bytes(b"x")
    result = CliRunner().invoke(main, ["encode", str(src), "--out", str(tmp_path / "out"), "--workers", "3"])
    assert result.exit_code == 0, result.output
    assert sorted(built) == [("audio", True), ("image", True)]


def _items(out, space):
    return {src.rsplit("/", 1)[-1]: (sh.item(j).tolist(), sh.meta[j])
            for sh in read_shards(out, space) for j, src in enumerate(sh.sources)}


def _encode(src, out, workers):
    proc = run_cli("uti", "encode", src, "--out", out, "--workers", str(workers), "--shard-size", "3", "--json")
    return proc, json.loads(proc.stdout.decode().splitlines()[-1])


@pytest.mark.slow
def test_workers_with_the_real_tiny_tower_and_codec(tmp_path, assets, tiny_space):
    src = tmp_path / "in"
    src.mkdir()
    for f in [*sorted((assets / "panoramas").glob("*.jpg")), *sorted((assets / "audio").glob("*.wav"))]:
        shutil.copy(f, src / f.name)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    proc2, s2 = _encode(src, tmp_path / "two", 2)
    assert proc2.returncode == 1, proc2.stderr.decode()[-2000:]
    assert s2["ok"] == 6 and [f["path"].rsplit("/", 1)[-1] for f in s2["failed"]] == ["broken.jpg"], s2["failed"]
    assert "1 of 7 inputs failed" in proc2.stderr.decode()
    proc1, s1 = _encode(src, tmp_path / "one", 1)
    assert proc1.returncode == 1 and s1["ok"] == 6
    one = _items(tmp_path / "one", tiny_space)
    assert _items(tmp_path / "two", tiny_space) == one and len(one) == 6
    shutil.copy(src / "city.jpg", src / "broken.jpg")  # the bad file is replaced: the rerun retries it, only it
    proc3, s3 = _encode(src, tmp_path / "two", 2)
    assert proc3.returncode == 0 and s3["ok"] == 7 and not s3["failed"], proc3.stderr.decode()[-2000:]
    assert s3["shards_written"] == ["part-0-of-1-00000.safetensors"] and len(s3["shards_skipped"]) == 2
    fixed = _items(tmp_path / "two", tiny_space)
    assert fixed["broken.jpg"] == fixed["city.jpg"] and {k: fixed[k] for k in one} == one
