"""VisionTower against transformers' own SigLIP models and image processor (tiny random towers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_assets import make_tiny_vision_tower
from uti.errors import InputError, MissingAssetError
from uti.image.vision import VisionTower, VisionTowerError


@pytest.fixture(scope="module")
def tower_dir(tmp_path_factory):
    return make_tiny_vision_tower(tmp_path_factory.mktemp("tower") / "tiny_tower", seed=0)


@pytest.fixture(scope="module")
def views():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 64, 64, 3), dtype=np.uint8)


def _reference(folder, views, **kw):
    """Features from transformers' own processor + model, loaded independently of VisionTower."""
    from transformers import AutoImageProcessor, SiglipVisionModel

    proc = AutoImageProcessor.from_pretrained(folder)
    model = SiglipVisionModel.from_pretrained(folder).eval()
    pixels = proc(images=[Image.fromarray(v) for v in views], return_tensors="pt").pixel_values
    with torch.no_grad():
        return model(pixel_values=pixels, **kw)


def test_features_match_transformers_last_layer(tower_dir, views):
    tower = VisionTower.from_pretrained(tower_dir, batch_size=2)  # chunks of 2, 2, 1
    ours = tower.encode(views)
    ref = _reference(tower_dir, views).last_hidden_state
    assert ours.shape == (5, 16, 64) == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_feature_layer_indexes_hidden_states(tower_dir, views):
    ref = _reference(tower_dir, views, output_hidden_states=True).hidden_states
    for layer in (0, 1, -2):
        ours = VisionTower.from_pretrained(tower_dir, feature_layer=layer).encode(views)
        torch.testing.assert_close(ours, ref[layer], atol=1e-5, rtol=1e-5)
    with pytest.raises(VisionTowerError, match="feature_layer"):
        VisionTower.from_pretrained(tower_dir, feature_layer=7)


def test_abi_identity(tower_dir):
    a = VisionTower.from_pretrained(tower_dir).abi()
    assert a["image_size"] == 64 and a["patch_size"] == 16 and a["hidden_size"] == 64
    assert a["name"] == "tiny_tower"  # never an absolute path
    assert len(a["weights_hash"]) == 32
    other = make_tiny_vision_tower(tower_dir.parent / "other", seed=1)
    assert VisionTower.from_pretrained(other).abi()["weights_hash"] != a["weights_hash"]


def test_full_siglip_model_loads_vision_half(tmp_path, views):
    from transformers import SiglipConfig, SiglipModel

    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2}
    text = {"vocab_size": 50, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    torch.manual_seed(0)
    full = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    full.save_pretrained(tmp_path, safe_serialization=True)
    tower = VisionTower.from_pretrained(tmp_path)
    small = views[:, ::2, ::2]  # 32 x 32, no resize
    with torch.no_grad():
        ref = full.vision_model(pixel_values=tower.pixel_values(small)).last_hidden_state
    assert torch.equal(tower.encode(small), ref)


def test_siglip2_naflex_matches_model_forward(tmp_path, views):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        convert_image_to_patches,
        get_image_size_for_max_num_patches,
    )

    torch.manual_seed(0)
    cfg = Siglip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              patch_size=16, num_patches=16)
    model = Siglip2VisionModel(cfg).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    tower = VisionTower.from_pretrained(tmp_path)
    assert tower.naflex and (tower.image_size,) * 2 == get_image_size_for_max_num_patches(64, 64, 16, 16)
    pixels = tower.pixel_values(views).numpy()
    patches = torch.from_numpy(np.stack([convert_image_to_patches(p, 16) for p in pixels]))  # HF patch order
    with torch.no_grad():
        ref = model(pixel_values=patches, pixel_attention_mask=torch.ones(5, 16, dtype=torch.long),
                    spatial_shapes=torch.tensor([[4, 4]] * 5)).last_hidden_state
    torch.testing.assert_close(tower.encode(views), ref, atol=1e-5, rtol=1e-5)


def test_resize_and_bad_input(tower_dir):
    tower = VisionTower.from_pretrained(tower_dir)
    big = np.zeros((2, 96, 96, 3), np.uint8)
    assert tower.encode(big).shape == (2, 16, 64)
    with pytest.raises(InputError, match="uint8"):
        tower.encode(np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(MissingAssetError):
        VisionTower.from_pretrained(tower_dir / "nope")
