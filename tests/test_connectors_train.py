"""Continuous-track training: stage 1 learns from the image, exact resume, stage 2 LoRA checkpoint generates."""

from __future__ import annotations

import pytest
import torch

from connectors import ConnectorError, ContinuousVLM
from connectors.checkpoint import checkpoint_tensors, load_connector
from connectors.train import ConnectorTrainConfig, train_connector
from tokenlm.trainer import latest_checkpoint
from uti.config import from_dict
from uti.errors import ConfigError
from uti.testing import TINY_FEAT, TINY_IDS, byte_encode, tiny_connector, tiny_llm, toy_captions

TOWER = {"name": "toy", "hidden_size": TINY_FEAT}


def _vlm() -> ContinuousVLM:
    return ContinuousVLM(tiny_llm(), tiny_connector(resampler="mlp"), TINY_IDS)


def test_stage1_learns_to_read_the_image(tmp_path) -> None:
    torch.manual_seed(0)
    vlm = _vlm()
    llm_before = {k: v.clone() for k, v in vlm.llm.state_dict().items()}
    cfg = ConnectorTrainConfig(steps=12, batch_size=8, lr=1e-2, warmup_steps=2)
    res = train_connector(vlm, toy_captions(32, 0), toy_captions(8, 1), encode=byte_encode, config=cfg,
                          out_dir=tmp_path, tower=TOWER)
    assert sum(res.losses[-3:]) / 3 < sum(res.losses[:3]) / 3 - 0.2
    assert res.eval["gap"] > 0.1  # own image beats a shuffled one: the connector carries image information
    assert all(torch.equal(llm_before[k], v) for k, v in vlm.llm.state_dict().items())
    assert res.trainable_params == sum(p.numel() for p in vlm.connector.parameters())


def test_resume_replays_the_uninterrupted_run(tmp_path) -> None:
    cfg = ConnectorTrainConfig(steps=4, batch_size=3, lr=1e-3, warmup_steps=1)
    data = toy_captions(5, 0)
    full = _vlm()
    train_connector(full, data, [], encode=byte_encode, config=cfg, out_dir=tmp_path / "a", tower=TOWER)
    part = _vlm()
    train_connector(part, data, [], encode=byte_encode, config=cfg, out_dir=tmp_path / "b", tower=TOWER, stop_at=2)
    assert latest_checkpoint(tmp_path / "b").name == "step-000002"
    resumed = _vlm()  # fresh process: weights come from the step checkpoint
    res = train_connector(resumed, data, [], encode=byte_encode, config=cfg, out_dir=tmp_path / "b", tower=TOWER)
    assert len(res.losses) == 4
    for (name, a), b in zip(full.connector.state_dict().items(), resumed.connector.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_stage2_lora_checkpoint_loads_and_generates(tmp_path) -> None:
    cfg = ConnectorTrainConfig(stage="lora", steps=2, batch_size=2, lora_r=2, lora_alpha=4, warmup_steps=1)
    vlm = _vlm()
    res = train_connector(vlm, toy_captions(4, 0), toy_captions(2, 1), encode=byte_encode, config=cfg,
                          out_dir=tmp_path, tower=TOWER, space_hash="a" * 32)
    assert checkpoint_tensors(res.final_dir)[1] and set(res.eval) == {"loss", "shuffled_loss", "gap"}
    trained = {n for n, p in vlm.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trained) and not any("lora" not in n and n.startswith("llm") for n in trained)
    loaded = load_connector(res.final_dir, tiny_llm(), TOWER, space_hash="a" * 32)
    from connectors.data import collate_captions

    batch = collate_captions(toy_captions(1, 5), byte_encode, TINY_IDS, loaded.tokens_per_image(1))
    prompt = batch["input_ids"][:, : int((batch["labels"][0] == -100).sum())]
    new = loaded.generate(prompt, batch["images"], max_new_tokens=3, do_sample=False)
    assert new.shape == (1, 3)


def test_config_rejects_unknown_keys_and_bad_stage() -> None:
    with pytest.raises(ConfigError, match="valid keys"):
        from_dict(ConnectorTrainConfig, {"stepz": 3})
    with pytest.raises(ConfigError, match="stage must be one of vision, resampler, finetune"):
        from_dict(ConnectorTrainConfig, {"stage": "full"})


def test_resume_refuses_other_data_or_stage(tmp_path) -> None:
    cfg = ConnectorTrainConfig(steps=3, batch_size=2, warmup_steps=1)
    train_connector(_vlm(), toy_captions(4, 0), [], encode=byte_encode, config=cfg, out_dir=tmp_path, tower=TOWER,
                    stop_at=1)
    with pytest.raises(ConnectorError, match="data_hash="):
        train_connector(_vlm(), toy_captions(4, 7), [], encode=byte_encode, config=cfg, out_dir=tmp_path, tower=TOWER)
    lora = ConnectorTrainConfig(stage="lora", steps=3, batch_size=2, warmup_steps=1, lora_r=2)
    with pytest.raises(ConnectorError, match="stage='resampler', this run has 'finetune'"):
        train_connector(_vlm(), toy_captions(4, 0), [], encode=byte_encode, config=lora, out_dir=tmp_path, tower=TOWER)


def test_out_dir_needs_resume_or_overwrite_and_is_cleaned(tmp_path) -> None:
    cfg = ConnectorTrainConfig(steps=3, batch_size=2, warmup_steps=1, save_every=1, keep_checkpoints=1)
    data = toy_captions(4, 0)
    train_connector(_vlm(), data, [], encode=byte_encode, config=cfg, out_dir=tmp_path, tower=TOWER, stop_at=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002"]  # step-1 pruned
    with pytest.raises(ConnectorError, match="--resume.*--overwrite"):
        train_connector(_vlm(), data, [], encode=byte_encode, config=cfg, out_dir=tmp_path, tower=TOWER, resume=False)
    (tmp_path / "checkpoints" / "step-000002" / ".connector.json.k1.tmp").write_text("")  # left by a killed save
    res = train_connector(_vlm(), data, [], encode=byte_encode, config=cfg, out_dir=tmp_path, tower=TOWER,
                          resume=False, overwrite=True)
    assert len(res.losses) == 3 and not list(tmp_path.rglob("*.tmp"))
    # the final connector in out_dir itself, the newest step checkpoint only (keep_checkpoints=1)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("connector.")) == [
        "checkpoints", "train_result.json"]
    assert (tmp_path / "connector.json").is_file() and len(list(tmp_path.glob("connector.*.safetensors"))) == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000003"]
