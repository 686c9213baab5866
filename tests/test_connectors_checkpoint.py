"""Connector-only checkpoints: round trip (incl. LoRA), generation after loading, and refusals."""

from __future__ import annotations

import json

import pytest
import torch

from connectors import ConnectorError, ContinuousVLM, TowerMismatchError, WidthMismatchError, expand_image_placeholders
from connectors.checkpoint import MANIFEST, checkpoint_tensors, load_connector, read_manifest, save_connector
from connectors.vlm import add_lora, generate_text
from uti.errors import HashMismatchError, UTIError

from train_fixtures import edit_manifest
from uti.testing import TINY_FEAT as FEAT
from uti.testing import TINY_IDS as IDS
from uti.testing import byte_encode as encode
from uti.testing import synthetic_image as pano
from uti.testing import tiny_connector, tiny_llm

TOWER = {"name": "tiny-tower", "weights_hash": "ab" * 16, "hidden_size": FEAT, "feature_layer": -1}


def _ids_and_image(vlm: ContinuousVLM) -> tuple[torch.Tensor, list]:
    img = pano()
    return torch.tensor([expand_image_placeholders("<image> this is", encode, IDS, [12])]), [img]


def test_round_trip_gives_same_outputs_and_generates(tmp_path) -> None:
    vlm = ContinuousVLM(tiny_llm(), tiny_connector(), IDS)
    save_connector(vlm, tmp_path, TOWER, space_hash="f" * 32)
    weights = tmp_path / read_manifest(tmp_path)["files"]["weights"]["name"]
    assert {p.name for p in tmp_path.iterdir()} == {MANIFEST, weights.name}
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["tower"]["hidden_size"] == FEAT and manifest["llm"]["hidden_size"] == 64
    assert manifest["stage"] == "resampler"
    # a saved connector is small: no LLM weights in it
    assert weights.stat().st_size < 4 * sum(p.numel() for p in vlm.connector.parameters()) + 10_000
    loaded = load_connector(tmp_path, tiny_llm(), TOWER, space_hash="f" * 32)
    ids, images = _ids_and_image(vlm)
    torch.testing.assert_close(loaded(ids, images).logits, vlm(ids, images).logits)
    new = loaded.generate(ids, images, max_new_tokens=4, do_sample=False)
    assert new.shape == (1, 4) and int(new.max()) < 512  # text IDs only
    text = generate_text(loaded, "<image> this is", images, encode, lambda t: "".join(map(chr, t)), 4)
    assert text == "".join(map(chr, new[0].tolist()))


def test_lora_round_trip(tmp_path) -> None:
    vlm = ContinuousVLM(tiny_llm(), tiny_connector(), IDS)
    add_lora(vlm, r=2, alpha=4)
    with torch.no_grad():
        for name, p in vlm.llm.named_parameters():
            if "lora_B" in name:
                p.normal_()  # LoRA B starts at zero; make the adapter matter
    save_connector(vlm, tmp_path, TOWER)
    assert checkpoint_tensors(tmp_path)[1]
    loaded = load_connector(tmp_path, tiny_llm(), TOWER)
    ids, images = _ids_and_image(vlm)
    torch.testing.assert_close(loaded(ids, images).logits, vlm.eval()(ids, images).logits)
    plain = load_connector(tmp_path, tiny_llm(), TOWER)
    plain.llm.disable_adapter_layers()  # the adapter changes the outputs: it was really restored
    assert not torch.allclose(plain(ids, images).logits, loaded(ids, images).logits)


def test_refuses_other_tower_llm_or_damaged_file(tmp_path) -> None:
    vlm = ContinuousVLM(tiny_llm(), tiny_connector(), IDS)
    save_connector(vlm, tmp_path, TOWER, space_hash="f" * 32)
    with pytest.raises(TowerMismatchError, match="weights_hash") as err:
        load_connector(tmp_path, tiny_llm(), TOWER | {"weights_hash": "cd" * 16})
    assert isinstance(err.value, UTIError) and "\n" not in str(err.value)
    with pytest.raises(WidthMismatchError, match="48 wide"):
        load_connector(tmp_path, tiny_llm(), TOWER | {"hidden_size": 48})
    with pytest.raises(HashMismatchError, match="token space"):
        load_connector(tmp_path, tiny_llm(), TOWER, space_hash="e" * 32)
    from transformers import Qwen3Config, Qwen3ForCausalLM

    other = Qwen3ForCausalLM(Qwen3Config(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    with pytest.raises(TowerMismatchError, match="hidden_size=64"):
        load_connector(tmp_path, other, TOWER)
    with pytest.raises(WidthMismatchError, match="tower width 48"):
        save_connector(vlm, tmp_path / "x", TOWER | {"hidden_size": 48})
    from safetensors.torch import load_file, save_file

    weights = tmp_path / read_manifest(tmp_path)["files"]["weights"]["name"]
    tensors = load_file(str(weights))
    tensors["special_rows"] = tensors["special_rows"] + 1
    save_file(tensors, str(weights))
    with pytest.raises(ConnectorError, match="damaged"):
        load_connector(tmp_path, tiny_llm(), TOWER)


def _edit(path, rehash: bool, **changes) -> None:
    """Edit `connector.json` (keys joined by `__` for nesting); `rehash` recomputes its content hash."""
    edit_manifest(path / MANIFEST, rehash, **changes)


def _lora_vlm() -> ContinuousVLM:
    vlm = ContinuousVLM(tiny_llm(), tiny_connector(), IDS)
    add_lora(vlm, r=2, alpha=4)
    return vlm


def test_refuses_another_llm_of_the_same_shape(tmp_path) -> None:
    save_connector(ContinuousVLM(tiny_llm(), tiny_connector(), IDS), tmp_path, TOWER)
    with pytest.raises(TowerMismatchError, match="fingerprint"):
        load_connector(tmp_path, tiny_llm(seed=5), TOWER)  # same widths and vocabulary, other weights


@pytest.mark.parametrize("changes", [{"lora": None}, {"stage": "resampler"}, {"lora__alpha": 64},
                                     {"connector__view_freqs": 8}, {"extra": {"x": 1}}])
def test_manifest_edits_are_refused(tmp_path, changes) -> None:
    save_connector(_lora_vlm(), tmp_path, TOWER)
    _edit(tmp_path, rehash=False, **changes)
    with pytest.raises(ConnectorError, match="content hash .* edited or damaged"):
        load_connector(tmp_path, tiny_llm(), TOWER)


@pytest.mark.parametrize("changes, message", [
    ({"lora": None}, "stage finetune needs its LoRA settings"),  # silently dropped the LoRA before
    ({"lora__r": 2_000_000}, "exceeds the LLM width"),
    ({"lora__rank": 2}, "unknown key.*rank"),
    ({"connector__resampler_cfg__num_latents": 10**9}, "more than twice its LLM's"),  # refused on the meta device
    ({"connector__resampler_cfg__num_latents": "64"}, "num_latents must be an integer >= 1, got .64."),
    ({"connector__resampler_cfg__heads": 3}, "cannot be built|divisible|tensor list"),
    ({"tensors__special_rows__shape": [2, 10**6]}, "tensor list does not match"),
    ({"files__weights__name": "../x.safetensors"}, "expected connector"),
])
def test_rehashed_manifest_is_bounded_before_building(tmp_path, changes, message) -> None:
    save_connector(_lora_vlm(), tmp_path, TOWER)
    _edit(tmp_path, rehash=True, **changes)
    with pytest.raises(ConnectorError, match=message):
        load_connector(tmp_path, tiny_llm(), TOWER)


@pytest.mark.parametrize("role", ["weights", "lora"])
def test_truncated_files_are_refused(tmp_path, role) -> None:
    save_connector(_lora_vlm(), tmp_path, TOWER)
    path = tmp_path / read_manifest(tmp_path)["files"][role]["name"]
    path.write_bytes(path.read_bytes()[:-64])
    with pytest.raises(ConnectorError, match="truncated"):
        load_connector(tmp_path, tiny_llm(), TOWER)
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(ConnectorError, match="not a connector manifest"):
        load_connector(tmp_path, tiny_llm(), TOWER)
