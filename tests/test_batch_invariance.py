"""Codes do not depend on batching, and the dtype they were computed in is recorded and checked.

A panorama's codes are the same encoded alone and inside a batch of mixed panoramas and plain images, for
every batch size, including sizes that split one panorama's views across forwards of the tower. Every
encoded item records `compute_dtype`; decoding a document or reading shards of another dtype warns once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from test_image_codec import make_image_space

from uti.batch import read_shards, run_batch
from uti.document import EncodedDocument, document_space
from uti.dtypes import ComputeDtypeWarning, warn_compute_dtype
from uti.errors import InputError
from uti.image.codec import ImageCodec, to_ids
from uti.image.load import load_image
from uti.modalities.image import ImageModality

ASSETS = Path(__file__).parent / "assets" / "panoramas"


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    return make_image_space(tmp_path_factory.mktemp("space"))


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Mixed inputs: four panoramas of different sizes and content, a plain photo, and random noise."""
    rng = np.random.default_rng(0)
    panos = [load_image(p) for p in sorted(ASSETS.glob("*.jpg"))]
    plain = panos[0][:300, :400].copy()  # not 2:1: one plain view
    noise = rng.integers(0, 256, (128, 256, 3), dtype=np.uint8)  # a 2:1 panorama of noise
    return [panos[0], plain, panos[1], noise, panos[2], panos[3]]


def _codec(space, batch_size: int) -> ImageCodec:
    return ImageCodec.from_space(space, batch_size=batch_size)


@pytest.mark.parametrize("batch_size", [1, 4, 7, 9, 16, 64])
def test_codes_alone_equal_codes_in_a_mixed_batch(space, images, batch_size: int) -> None:
    alone = [_codec(space, 9).encode(img) for img in images]  # 9 = one panorama's views per forward
    batched = _codec(space, batch_size).encode_batch(images)  # 4 and 7 split panoramas across forwards
    assert len(batched) == len(images)
    for a, b in zip(alone, batched):
        assert a.codes.shape == b.codes.shape and torch.equal(a.codes, b.codes)
        assert a.meta == b.meta


def test_features_are_bit_identical_in_any_batch(space, images) -> None:
    """Why the codes agree: each view's features do not depend on the batch it is in, to the bit (see
    `uti.image.vision`; tests/test_view_batching.py uses a tower where plain PyTorch would differ)."""
    tower = _codec(space, 64).tower
    views = np.concatenate([ImageCodec.render(_codec(space, 1), img)[0] for img in images])  # (N, S, S, 3)
    together = tower.encode(views)
    one_by_one = torch.cat([tower.encode(views[i:i + 1]) for i in range(len(views))])
    assert torch.equal(together, one_by_one)


def test_the_modality_batch_path_gives_the_same_ids(space, images) -> None:
    modality = ImageModality(space)
    codec = _codec(space, 9)
    want = [to_ids(codec.encode(img), space) for img in images]
    assert modality.encode_batch(images) == want


def test_encode_batch_of_nothing_and_of_a_bad_item(space) -> None:
    codec = _codec(space, 4)
    assert codec.encode_batch([]) == []
    with pytest.raises(InputError):
        codec.encode_batch([np.zeros((64, 128), np.uint8)])


# --- compute dtype: recorded and checked ---------------------------------------------------------------


def test_meta_records_the_towers_compute_dtype(space, images) -> None:
    assert _codec(space, 9).encode(images[0]).meta["compute_dtype"] == "float32"
    bf16 = ImageCodec.from_space(space, dtype=torch.bfloat16)
    enc = bf16.encode(images[0])
    assert enc.meta["compute_dtype"] == "bfloat16"
    doc = EncodedDocument.for_space(space, "image", to_ids(enc, space), enc.meta)  # the schema accepts it
    assert doc.typed_meta.compute_dtype == "bfloat16"
    with pytest.raises(InputError, match="compute_dtype"):
        EncodedDocument.for_space(space, "image", [], {"compute_dtype": "float64"})


def test_decoding_a_document_of_another_dtype_warns_once(space, images, monkeypatch) -> None:
    from uti.space import TokenSpace

    monkeypatch.setattr(TokenSpace, "named", classmethod(lambda cls, name: space))
    monkeypatch.setattr("uti.space.known_spaces", lambda: [space.name])
    enc = _codec(space, 9).encode(images[1])
    doc = EncodedDocument.for_space(space, "image", to_ids(enc, space), enc.meta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a float32 document: no warning
        document_space(doc)
    bf16 = EncodedDocument.for_space(space, "image", doc.ids, {**enc.meta, "compute_dtype": "bfloat16"})
    with pytest.warns(ComputeDtypeWarning, match="bfloat16") as got:
        document_space(bf16)
    assert len(got) == 1 and "\n" not in str(got[0].message)


def test_shards_of_another_dtype_warn_once_per_folder(space, tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for k, p in enumerate(sorted(ASSETS.glob("*.jpg"))[:3]):
        (src / f"{k}.jpg").write_bytes(p.read_bytes())
    modality = ImageModality(space)
    modality._codec = ImageCodec.from_space(space, dtype=torch.bfloat16)
    summary = run_batch(sorted(str(p) for p in src.iterdir()), lambda p: modality.encode_with_meta(Path(p)),
                        tmp_path / "bf16", space, shard_size=1, progress=False)
    assert summary.ok == 3
    with pytest.warns(ComputeDtypeWarning, match="bfloat16") as got:
        shards = list(read_shards(tmp_path / "bf16", space))
    assert len(shards) == 3 and len(got) == 1
    assert all(m["compute_dtype"] == "bfloat16" for s in shards for m in s.meta)


def test_items_without_a_dtype_count_as_float32() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_compute_dtype([{}, {"compute_dtype": "float32"}, None], "x")
    with pytest.warns(ComputeDtypeWarning, match="x: codes were computed in float16"):
        assert warn_compute_dtype([{"compute_dtype": "float16"}], "x")


def test_audio_meta_records_the_codecs_compute_dtype(tmp_path) -> None:
    from tiny_assets import TINY_BANDWIDTH, make_tiny_encodec
    from uti.audio import AudioCodec, AudioConfig
    from uti.modalities.audio import AudioMeta

    folder = make_tiny_encodec(tmp_path / "encodec", seed=0)
    wave = np.random.default_rng(0).standard_normal(2400).astype(np.float32) * 0.1
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        codec = AudioCodec.from_pretrained(folder, AudioConfig(bandwidth=TINY_BANDWIDTH), dtype=dtype)
        meta = codec.encode(wave).meta
        assert meta["compute_dtype"] == name
        assert AudioMeta(**meta).compute_dtype == name  # the document schema has the field
