"""`uti audio convert-encodec`: an original-layout EnCodec checkpoint -> HF folder, weights and codes equal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import EncodecConfig, EncodecModel
from transformers.models.encodec.modeling_encodec import EncodecConvTranspose1d

from tiny_assets import TINY_BANDWIDTH, TINY_ENCODEC_CONFIG
from uti.audio.convert import convert_encodec_checkpoint, rename_original_key
from uti.cli import main
from uti.errors import InputError


def to_original_layout(model: EncodecModel) -> dict[str, torch.Tensor]:
    """Inverse of the conversion, written from the original module tree (SConv1d/SConvTranspose1d wrappers,
    old-style weight_g/weight_v weight norm, `quantizer.vq.layers.N._codebook`)."""
    convtr = {name for name, m in model.named_modules() if isinstance(m, EncodecConvTranspose1d)}
    weight = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("quantizer."):
            key = key.replace("quantizer.layers.", "quantizer.vq.layers.").replace(".codebook.", "._codebook.")
        elif ".conv." in key:
            owner, tail = key.split(".conv.", 1)
            wrap = "convtr" if owner in convtr else "conv"
            key = f"{owner}.{wrap}.{wrap}.{weight.get(tail, tail)}"
        key = key.replace("encoder.layers.", "encoder.model.").replace("decoder.layers.", "decoder.model.")
        out[key] = value.clone()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[EncodecModel, Path, Path]:
    torch.manual_seed(0)
    config = EncodecConfig(**TINY_ENCODEC_CONFIG)
    model = EncodecModel(config).eval()
    for layer in model.quantizer.layers:
        layer.codebook.embed.normal_(0, 0.05)  # transformers initialises codebooks to zeros
    root = tmp_path_factory.mktemp("convert")
    ckpt = root / "encodec_tiny.th"
    torch.save(to_original_layout(model), ckpt)
    config.save_pretrained(str(root / "cfg"))
    return model, ckpt, root / "cfg"


def test_convert_gives_identical_weights_and_codes(tiny, tmp_path: Path) -> None:
    model, ckpt, cfg = tiny
    res = CliRunner().invoke(main, ["audio", "convert-encodec", str(ckpt), "--out", str(tmp_path / "hf"),
                                    "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["out"] == str(tmp_path / "hf")
    converted = EncodecModel.from_pretrained(str(tmp_path / "hf")).eval()
    ours, ref = converted.state_dict(), model.state_dict()
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)
    x = torch.randn(1, 1, 4800, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        a = converted.encode(x, bandwidth=TINY_BANDWIDTH).audio_codes
        b = model.encode(x, bandwidth=TINY_BANDWIDTH).audio_codes
    assert torch.equal(a, b) and len(a.unique()) > 1
    assert (tmp_path / "hf" / "preprocessor_config.json").is_file()


def test_rename_facts() -> None:
    assert rename_original_key("encoder.model.0.conv.conv.weight_g") == "encoder.layers.0.conv.parametrizations.weight.original0"
    assert rename_original_key("decoder.model.3.convtr.convtr.weight_v") == "decoder.layers.3.conv.parametrizations.weight.original1"
    assert rename_original_key("decoder.model.3.convtr.norm.weight") == "decoder.layers.3.norm.weight"
    assert rename_original_key("encoder.model.1.shortcut.conv.conv.bias") == "encoder.layers.1.shortcut.conv.bias"
    assert rename_original_key("encoder.model.13.lstm.weight_hh_l1") == "encoder.layers.13.lstm.weight_hh_l1"
    assert rename_original_key("quantizer.vq.layers.7._codebook.embed_avg") == "quantizer.layers.7.codebook.embed_avg"


def test_convert_refuses_bad_checkpoints(tiny, tmp_path: Path) -> None:
    _, ckpt, cfg = tiny
    state = torch.load(ckpt, weights_only=True)
    state.pop("decoder.model.15.conv.conv.bias")
    torch.save(state, tmp_path / "missing.th")
    with pytest.raises(InputError, match="missing 1 .*decoder.layers.15.conv.bias"):
        convert_encodec_checkpoint(tmp_path / "missing.th", tmp_path / "a", config_path=cfg)
    EncodecConfig(**{**TINY_ENCODEC_CONFIG, "num_lstm_layers": 2}).save_pretrained(str(tmp_path / "cfg2"))
    with pytest.raises(InputError, match="does not match the .*cfg2 architecture; missing 8"):
        convert_encodec_checkpoint(ckpt, tmp_path / "b", config_path=tmp_path / "cfg2")  # 2-layer LSTMs
    (tmp_path / "junk.th").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="weights-only torch checkpoint"):
        convert_encodec_checkpoint(tmp_path / "junk.th", tmp_path / "c", config_path=cfg)
    res = CliRunner().invoke(main, ["audio", "convert-encodec", str(tmp_path / "junk.th"), "--out",
                                    str(tmp_path / "d"), "--config", str(cfg)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folders left behind
