"""The continuous track's three stages on the tiny tower: what trains, the VICReg term, tuned tower layers in
checkpoints (round trips per stage and per resampler, another tower refused), the global view's own projector."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from connectors import ConnectorError, ContinuousVLM, TowerMismatchError, expand_image_placeholders
from connectors.checkpoint import MANIFEST, load_connector, load_vision_blocks, read_manifest
from connectors.data import CaptionExample
from connectors.presets import resampler_config
from connectors.registry import resampler_names
from connectors.train import ConnectorTask, ConnectorTrainConfig, train_connector
from connectors.views import image_view_features
from connectors.vlm import Connector, ConnectorConfig
from uti.image.layout import Layout
from uti.image.vision import VisionTower
from uti.testing import TINY_IDS as IDS
from uti.testing import byte_encode as encode
from uti.testing import tiny_llm

from train_fixtures import edit_manifest

TOWER_DIR = Path(__file__).resolve().parent.parent / "token_spaces" / "tiny" / "vision_tower"
LAYOUT = Layout(tile_size=64)  # the tiny space's: global view + 8 tiles of 4 x 4 patches


@pytest.fixture(scope="module")
def base_tower() -> VisionTower:
    return VisionTower.from_pretrained(TOWER_DIR)


@pytest.fixture()
def tower(base_tower) -> VisionTower:
    """A fresh copy per test: stages change the tower's layers in place."""
    return dataclasses.replace(base_tower, model=copy.deepcopy(base_tower.model))


def _panorama(seed: int) -> np.ndarray:
    """A smooth random 64 x 128 panorama (2:1), so overlapping tiles see the same content."""
    g = np.random.default_rng(seed)
    small = g.integers(0, 256, (4, 8, 3)).astype(np.float32)
    return np.kron(small, np.ones((16, 16, 1))).astype(np.uint8)


def _examples(tower: VisionTower, n: int, cut: int, seed: int = 0) -> list[CaptionExample]:
    words = ("red", "blue")
    return [CaptionExample(image_view_features(_panorama(seed + i), LAYOUT, tower, cut), f" {words[i % 2]}")
            for i in range(n)]


def _connector(name: str = "mlp", seed: int = 1) -> Connector:
    torch.manual_seed(seed)
    return Connector(ConnectorConfig(llm_width=64, resampler=name, resampler_cfg=resampler_config(name, 64, 32, 4)))


def _task(tower, stage: str, k: int, tmp: Path | None = None, w: float = 0.0, name: str = "mlp", **kw) -> ConnectorTask:
    cfg = ConnectorTrainConfig(stage=stage, steps=2, batch_size=2, warmup_steps=1, lora_r=2, lora_alpha=4,
                               vision_trainable_blocks=k, vicreg_weight=w)
    vlm = ContinuousVLM(tiny_llm(), _connector(name), IDS)
    return ConnectorTask(vlm, _examples(tower, 3, k), [], encode, cfg, tower.abi(), vision=tower, **kw)


def test_tower_top_on_cached_hidden_states_is_exact(tower) -> None:
    views = torch.from_numpy(np.stack([_panorama(0)[:, :64], _panorama(1)[:, 64:]]).copy())  # (2, 64, 64, 3)
    full = tower.encode(views)
    for k in range(tower.kept_layers + 1):
        torch.testing.assert_close(tower.top(k)(tower.encode_below(views, k)), full, rtol=0, atol=0)


def _named(task: ConnectorTask, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Every parameter of the model and of the whole tower once, tower layers by their index in the tower."""
    tower = {id(p): f"tower.{n}" for n, p in task.vision.model.named_parameters()}
    out = {f"tower.{n}": p for n, p in task.vision.model.named_parameters()}
    out.update({f"model.{n}": p for n, p in model.named_parameters() if id(p) not in tower})
    return out


def _grads(task: ConnectorTask) -> set[str]:
    """Names of the parameters (of the model and the whole tower) that get a non-zero gradient from one backward."""
    model = task.build(None)
    total, _ = task.loss(model, task.batch([0, 1]), torch.device("cpu"))
    total.backward()
    return {n for n, p in _named(task, model).items() if p.grad is not None and p.grad.abs().sum() > 0}


def _groups(names: set[str]) -> set[str]:
    out = set()
    for n in names:
        if n.startswith("tower."):
            out.add("tower." + n.split("layers.")[1].split(".")[0] if "layers." in n else "tower.other")
        elif "lora_" in n:
            out.add("lora")
        elif ".connector." in n:
            out.add("connector")
        else:
            out.add("llm")
    return out


@pytest.mark.parametrize("stage, k, w, want", [
    ("vision", 1, 0.0, {"tower.1"}),  # only the last layer; the connector gets no gradient from patch VICReg
    ("vision", 2, 0.0, {"tower.0", "tower.1"}),
    ("resampler", 0, 0.0, {"connector"}),
    ("resampler", 1, 0.5, {"connector", "tower.1"}),
    ("finetune", 1, 0.0, {"connector", "lora", "tower.1"}),
    ("connector", 0, 0.0, {"connector"}),  # the former names still work
    ("lora", 0, 0.0, {"connector", "lora"}),
])
def test_only_the_stage_parameters_get_gradients(tower, stage, k, w, want) -> None:
    task = _task(tower, stage, k, w=w)
    assert _groups(_grads(task)) == want
    model = task.build(None)
    in_model = {id(p) for p in model.parameters()}
    trainable = {n for n, p in _named(task, model).items() if p.requires_grad and id(p) in in_model}
    assert _groups(trainable) == want  # and nothing else is handed to the optimizer


def _direct_vicreg(za: torch.Tensor, zb: torch.Tensor, inv=25.0, var=25.0, cov=1.0) -> torch.Tensor:
    """VICReg written out entry by entry (Bardes et al.), both branches' var/cov terms summed."""
    n, d = za.shape
    total = inv * ((za - zb) ** 2).sum() / (n * d)
    for z in (za, zb):
        m = z.mean(0)
        std = torch.sqrt(((z - m) ** 2).sum(0) / (n - 1) + 1e-4)
        total = total + var * torch.clamp(1 - std, min=0).mean()
        c = (z - m).T @ (z - m) / (n - 1)
        total = total + cov * sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    return total


def test_resampler_stage_adds_w_times_vicreg_of_the_overlap_pairs(tower) -> None:
    task0, task1 = _task(tower, "resampler", 1, w=0.0), _task(tower, "resampler", 1, w=0.5)
    batch = task0.batch([0, 1])
    lm, count = task0.loss(task0.build(None), batch, torch.device("cpu"))
    both, count1 = task1.loss(task1.build(None), batch, torch.device("cpu"))
    top = tower.top(1)
    za, zb = [], []
    for img in batch["images"]:  # each pair's two patches, looked up one by one
        feats = top(img.features)
        for va, pa, vb, pb in img.pairs.tolist():
            za.append(feats[va, pa])
            zb.append(feats[vb, pb])
    assert len(za) == 2 * 64 and count == count1 > 0
    want = 0.5 * count * _direct_vicreg(torch.stack(za), torch.stack(zb))
    torch.testing.assert_close((both - lm).detach(), want.detach(), rtol=1e-4, atol=1e-4)
    vision = _task(tower, "vision", 1)
    loss, one = vision.loss(vision.build(None), vision.batch([0, 1]), torch.device("cpu"))
    assert one == 1
    torch.testing.assert_close(loss.detach(), _direct_vicreg(torch.stack(za), torch.stack(zb)).detach(),
                               rtol=1e-4, atol=1e-4)


def test_vision_stage_without_overlap_pairs_is_refused(tower) -> None:
    task = _task(tower, "vision", 1)
    for ex in task.train:
        ex.image.pairs = None
    with pytest.raises(ConnectorError, match="stage vision needs overlap pairs"):
        task.loss(task.build(None), task.batch([0, 1]), torch.device("cpu"))


@pytest.mark.parametrize("cfg, message", [
    ({"stage": "vision"}, "vision_trainable_blocks must be an integer >= 0 .>= 1 in stage vision"),
    ({"vicreg_weight": 1.0}, "vicreg_weight > 0 needs vision_trainable_blocks >= 1"),
    ({"vicreg_inv": -1.0}, "finite and >= 0"),
    ({"vicreg_cov": float("nan")}, "finite and >= 0"),
    ({"vision_trainable_blocks": -1}, "integer >= 0"),
    ({"stage": "full"}, "stage must be one of vision, resampler, finetune"),
])
def test_config_checks(cfg, message) -> None:
    from uti.config import from_dict
    from uti.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        from_dict(ConnectorTrainConfig, cfg)


def _logits(vlm: ContinuousVLM, image) -> torch.Tensor:
    n = vlm.tokens_per_image(image.num_views)
    ids = torch.tensor([expand_image_placeholders("<image> this is", encode, IDS, [n])])
    return vlm.eval()(ids, [image]).logits


def test_stages_chain_and_round_trip(tmp_path, tower, base_tower) -> None:
    """vision -> resampler -> finetune, each from the previous checkpoint; each loads back onto a fresh tower."""
    cfgs = {"vision": dict(vision_trainable_blocks=1), "resampler": dict(vision_trainable_blocks=1, vicreg_weight=0.1),
            "finetune": dict(lora_r=2, lora_alpha=4)}
    prev = None
    for stage, extra in cfgs.items():
        cfg = ConnectorTrainConfig(stage=stage, steps=2, batch_size=2, warmup_steps=1, lr=1e-2, **extra)
        fresh = dataclasses.replace(base_tower, model=copy.deepcopy(base_tower.model))
        vlm = ContinuousVLM(tiny_llm(), _connector(), IDS) if prev is None else load_connector(prev, tiny_llm(), fresh)
        data = _examples(fresh, 3, cfg.vision_trainable_blocks)
        res = train_connector(vlm, data, data[:2], encode=encode, config=cfg, out_dir=tmp_path / stage,
                              tower=fresh.abi(), vision=fresh, init_from=prev)
        man = read_manifest(tmp_path / stage)
        assert man["stage"] == stage and man["vision_trainable_blocks"] == cfg.vision_trainable_blocks
        assert man["vision"] == {"tuned_blocks": 1, "depth": 2} and (man["lora"] is not None) == (stage == "finetune")
        assert "loss" in res.eval
        other = dataclasses.replace(base_tower, model=copy.deepcopy(base_tower.model))
        loaded = load_connector(tmp_path / stage, tiny_llm(), other)
        assert all(torch.equal(a, b) for a, b in zip(other.model.parameters(), fresh.model.parameters()))
        assert not torch.equal(other.model.encoder.layers[1].mlp.fc1.weight, base_tower.model.encoder.layers[1].mlp.fc1.weight)
        image = image_view_features(_panorama(5), LAYOUT, other)
        vlm.tower_top = None  # the trained model, on full features of the tuned tower
        torch.testing.assert_close(_logits(loaded, image), _logits(vlm, image), rtol=0, atol=0)
        prev = tmp_path / stage


@pytest.mark.parametrize("name", resampler_names())
def test_round_trip_per_resampler_with_tuned_layers_and_lora(tmp_path, tower, base_tower, name) -> None:
    task = _task(tower, "finetune", 1, name=name)
    model = task.build(None)
    with torch.no_grad():
        for p in task.vision.model.encoder.layers[1].parameters():
            p.add_(0.01)  # "trained"
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)  # LoRA B starts at zero: make it count
    task.save(model, tmp_path, None)
    other = dataclasses.replace(base_tower, model=copy.deepcopy(base_tower.model))
    loaded = load_connector(tmp_path, tiny_llm(), other)
    image = image_view_features(_panorama(3), LAYOUT, other)
    model.vlm.tower_top = None
    torch.testing.assert_close(_logits(loaded, image), _logits(model.vlm, image), rtol=0, atol=0)


def test_another_tower_is_refused(tmp_path, tower, base_tower) -> None:
    task = _task(tower, "vision", 1)
    task.save(task.build(None), tmp_path, None)
    for changed, what in ((dataclasses.replace(base_tower, weights_hash="0" * 32), "weights_hash"),
                          (VisionTower.from_pretrained(TOWER_DIR, feature_layer=1), "feature_layer")):
        with pytest.raises(TowerMismatchError, match=what) as err:
            load_vision_blocks(tmp_path, changed)
        assert "\n" not in str(err.value)
        with pytest.raises(TowerMismatchError, match=what):
            load_connector(tmp_path, tiny_llm(), changed)
    with pytest.raises(ConnectorError, match="pass the VisionTower itself"):
        load_connector(tmp_path, tiny_llm(), base_tower.abi())
    edit_manifest(tmp_path / MANIFEST, rehash=True, vision__depth=3)  # a forged depth: refused all the same
    with pytest.raises(TowerMismatchError, match="has 2"):
        load_vision_blocks(tmp_path, base_tower)


def test_schema_2_checkpoint_is_refused_in_one_line(tmp_path, tower) -> None:
    task = _task(tower, "resampler", 0)
    task.save(task.build(None), tmp_path, None)
    edit_manifest(tmp_path / MANIFEST, rehash=True, schema=2)
    with pytest.raises(ConnectorError, match="schema 2 is not 3.*no global-view projector") as err:
        load_connector(tmp_path, tiny_llm(), tower)
    assert "\n" not in str(err.value)


def test_init_from_needs_its_tuned_layers_in_the_tower(tmp_path, tower, base_tower) -> None:
    task = _task(tower, "vision", 1)
    task.save(task.build(None), tmp_path / "v", None)
    with torch.no_grad():
        tower.model.encoder.layers[1].mlp.fc1.weight.add_(1.0)  # the saved layer differs from the tower now
    task.save(task.build(None), tmp_path / "v", None)
    fresh = dataclasses.replace(base_tower, model=copy.deepcopy(base_tower.model))
    with pytest.raises(ConnectorError, match="load_vision_blocks"):
        _task(fresh, "resampler", 0, init_from=tmp_path / "v").build(None)
    assert load_vision_blocks(tmp_path / "v", fresh) == 1
    _task(fresh, "resampler", 0, init_from=tmp_path / "v").build(None)  # now it starts


def test_global_view_has_its_own_projector_and_no_view_encoding() -> None:
    conn = _connector("mlp").eval()
    img = image_view_features(_panorama(0), LAYOUT, _StubTower())
    assert bool(img.is_global[0]) and not bool(img.is_global[1:].any())
    out = conn([img]).reshape(img.num_views, -1, 64)
    lat = conn.resampler(img.features)
    torch.testing.assert_close(out[0], conn.global_projector(lat[0]))
    torch.testing.assert_close(out[1], conn.projector(lat[1] + conn.view_pos(img.yaw_pitch[1:2])[0]))
    moved = dataclasses.replace(img, yaw_pitch=img.yaw_pitch + 30.0)
    again = conn([moved]).reshape(img.num_views, -1, 64)
    torch.testing.assert_close(again[0], out[0], rtol=0, atol=0)  # the global view ignores yaw/pitch
    assert not torch.allclose(again[1], out[1])
    tiles_only = dataclasses.replace(img, is_global=torch.zeros_like(img.is_global))
    conn.train()
    conn([tiles_only]).sum().backward()  # no global view in the batch: its projector still joins the graph (DDP)
    assert all(p.grad is not None for p in conn.global_projector.parameters())


class _StubTower:
    """Features without a model: 4 x 4 patches of 64 random channels per view (the tiny tower's shape)."""

    grid, hidden_size = 4, 64

    def encode(self, views):
        return torch.randn(len(views), 16, 64, generator=torch.Generator().manual_seed(len(views)))


def test_manifest_json_records_the_stage_fields(tmp_path, tower) -> None:
    task = _task(tower, "resampler", 1, w=0.2)
    task.save(task.build(None), tmp_path, None)
    man = json.loads((tmp_path / MANIFEST).read_text())
    assert man["schema"] == 3 and man["stage"] == "resampler" and man["vision_trainable_blocks"] == 1
    assert man["files"]["vision"]["name"].startswith("vision.") and set(man["vision_tensors"]) == {
        k for k in tower.block_state(1)}


@pytest.mark.parametrize("forge", ["truncate", "tuned_blocks", "shape"])
def test_damaged_or_forged_tower_layers_are_refused(tmp_path, tower, base_tower, forge) -> None:
    task = _task(tower, "vision", 1)
    task.save(task.build(None), tmp_path, None)
    man = read_manifest(tmp_path)
    if forge == "truncate":
        path = tmp_path / man["files"]["vision"]["name"]
        path.write_bytes(path.read_bytes()[:-100])
    elif forge == "tuned_blocks":  # claims both layers: its tensor list no longer fits the tower's last 2
        edit_manifest(tmp_path / MANIFEST, rehash=True, vision__tuned_blocks=2)
    else:
        key = next(iter(man["vision_tensors"]))
        edit_manifest(tmp_path / MANIFEST, rehash=True, **{f"vision_tensors__{key}__shape": [10**6]})
    with pytest.raises(ConnectorError) as err:
        load_vision_blocks(tmp_path, base_tower)
    assert "\n" not in str(err.value)
