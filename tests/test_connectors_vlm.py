"""Continuous-track injection and model wrapper on a tiny Qwen3: placeholders, embeddings, freezing, errors."""

from __future__ import annotations

import pytest
import torch

from connectors import (
    Connector,
    ConnectorConfig,
    ContinuousVLM,
    ImageTokenIds,
    PlaceholderCountError,
    ViewFeatures,
    WidthMismatchError,
    expand_image_placeholders,
)
from connectors.vlm import add_lora
from uti.errors import TokenRangeError
from uti.testing import TINY_FEAT, TINY_IDS, byte_encode, synthetic_image, tiny_connector, tiny_llm

IDS, FEAT = TINY_IDS, TINY_FEAT
encode, pano = byte_encode, synthetic_image


@pytest.fixture(scope="module")
def vlm() -> ContinuousVLM:
    return ContinuousVLM(tiny_llm(), tiny_connector(), IDS)


def test_expand_places_exact_placeholders() -> None:
    ids = expand_image_placeholders("a <image> b<image>", encode, IDS, [3, 2])
    assert ids == encode("a ") + [515, 517, 517, 517, 516] + encode(" b") + [515, 517, 517, 516]
    with pytest.raises(PlaceholderCountError, match="1 <image> marker"):
        expand_image_placeholders("<image>", encode, IDS, [3, 3])


def test_patch_embeddings_are_the_projected_views(vlm: ContinuousVLM) -> None:
    img = pano()
    n = vlm.tokens_per_image(img.num_views)
    assert n == 3 * 4
    ids = torch.tensor([expand_image_placeholders("see <image> ok", encode, IDS, [n])])
    emb = vlm.embed(ids, [img])
    patch = ids[0] == IDS.patch
    torch.testing.assert_close(emb[0, patch], vlm.connector([img]))
    text = ids[0] < 512
    torch.testing.assert_close(emb[0, text], vlm.llm.get_input_embeddings()(ids[0, text]))
    torch.testing.assert_close(emb[0, ids[0] == IDS.start][0], vlm.connector.special_rows[0])
    torch.testing.assert_close(emb[0, ids[0] == IDS.end][0], vlm.connector.special_rows[1])
    # view encoding: the same features seen from another yaw give other vectors
    turned = ViewFeatures(img.features, img.yaw_pitch + torch.tensor([90.0, 0.0]), img.is_global)
    assert not torch.allclose(vlm.connector([turned])[4:], vlm.connector([img])[4:])
    torch.testing.assert_close(vlm.connector([turned])[:4], vlm.connector([img])[:4])  # global view has no yaw


def test_text_only_matches_plain_llm(vlm: ContinuousVLM) -> None:
    ids = torch.tensor([encode("plain text")])
    torch.testing.assert_close(vlm(ids, []).logits, vlm.llm(input_ids=ids).logits)


def test_batch_with_two_images_in_reading_order(vlm: ContinuousVLM) -> None:
    a, b = pano(3, seed=3), pano(2, seed=4)
    rows = [expand_image_placeholders("x<image>", encode, IDS, [vlm.tokens_per_image(3)]),
            expand_image_placeholders("y<image>", encode, IDS, [vlm.tokens_per_image(2)])]
    rows[1] += [0] * (len(rows[0]) - len(rows[1]))
    ids = torch.tensor(rows)
    emb = vlm.embed(ids, [a, b])
    torch.testing.assert_close(emb[0, ids[0] == IDS.patch], vlm.connector([a]))
    torch.testing.assert_close(emb[1, ids[1] == IDS.patch], vlm.connector([b]))


def test_bad_inputs_are_one_line_errors(vlm: ContinuousVLM) -> None:
    img = pano()
    ids = torch.tensor([expand_image_placeholders("<image>", encode, IDS, [vlm.tokens_per_image(3) - 1])])
    with pytest.raises(PlaceholderCountError, match="11 <|image_patch|>.*12 vectors") as err:
        vlm.embed(ids, [img])
    assert "\n" not in str(err.value)
    with pytest.raises(PlaceholderCountError, match="1 <|image_start|>.*0 image"):
        vlm.embed(ids, [])
    ok = torch.tensor([expand_image_placeholders("<image>", encode, IDS, [12])])
    wide = ViewFeatures(torch.randn(3, 6, FEAT * 2), img.yaw_pitch, img.is_global)
    with pytest.raises(WidthMismatchError, match="64 wide but the connector expects 32"):
        vlm.embed(ok, [wide])
    with pytest.raises(TokenRangeError, match="ID 600"):
        vlm.embed(torch.tensor([[1, 600]]), [])
    with pytest.raises(WidthMismatchError, match="hidden size is 64"):
        ContinuousVLM(tiny_llm(), Connector(ConnectorConfig(llm_width=48, resampler_cfg={"in_dim": FEAT})), IDS)


def test_stage1_trains_connector_only_and_stage2_adds_lora() -> None:
    vlm = ContinuousVLM(tiny_llm(), tiny_connector(resampler="mlp"), IDS)
    before = {k: v.clone() for k, v in vlm.llm.state_dict().items()}
    img = pano()
    ids = torch.tensor([expand_image_placeholders("<image> a view", encode, IDS, [12])])
    labels = ids.masked_fill(ids >= 512, -100)
    trainable = [p for p in vlm.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in vlm.connector.parameters())
    opt = torch.optim.SGD(trainable, lr=0.1)
    vlm(ids, [img], labels=labels).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vlm.connector.parameters())
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in vlm.llm.state_dict().items())
    add_lora(vlm, r=2, alpha=4)
    names = {n for n, p in vlm.llm.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)
    vlm(ids, [img], labels=labels).loss.backward()


def test_ids_from_token_space() -> None:
    from uti.testing import tiny_space

    space = tiny_space()
    ids = ImageTokenIds.from_space(space)
    assert ids.base_vocab_size == 512 and ids.patch == space.special_id("<|image_patch|>") >= 512
    assert len({ids.start, ids.end, ids.patch}) == 3


def test_real_panorama_views_through_tiny_tower(tmp_path, assets) -> None:
    import numpy as np
    from PIL import Image

    from connectors.views import image_view_features
    from uti.image import Layout
    from tiny_assets import make_tiny_vision_tower
    from uti.image.vision import VisionTower

    tower = VisionTower.from_pretrained(make_tiny_vision_tower(tmp_path / "tower", seed=0))
    layout = Layout(tile_size=tower.image_size)
    pano_img = np.asarray(Image.open(assets / "panoramas" / "forest.jpg").convert("RGB"))
    img = image_view_features(pano_img, layout, tower)
    assert img.num_views == layout.num_views and bool(img.is_global[0]) and not bool(img.is_global[1:].any())
    assert img.features.shape == (layout.num_views, tower.num_patches, tower.hidden_size)
    torch.testing.assert_close(img.yaw_pitch[1:, 0], torch.tensor([v.yaw for v in layout.views()[1:]]))
    plain = image_view_features(pano_img[:, :600], layout, tower)
    assert plain.num_views == 1
    vlm = ContinuousVLM(tiny_llm(), tiny_connector(in_dim=tower.hidden_size), IDS)
    ids = torch.tensor([expand_image_placeholders("<image>", encode, IDS, [vlm.tokens_per_image(img.num_views)])])
    assert vlm.embed(ids, [img]).shape == (1, ids.shape[1], 64)
