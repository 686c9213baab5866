"""Stages `vision` and `resampler` (VICReg on, the tower's last layer tuned) under torchrun (2 CPU processes, gloo,
DDP) make the same update as one process on the same global batch: same losses, same saved tower layers and
connector. VICReg is a statistic of a batch of overlap pairs (variance, covariance), so it must be taken over
the pairs of the whole global micro-batch, not per process.

This file is also the program the test launches: `python -m torch.distributed.run ... <this file> OUT STAGE`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from launch import REPO, torchrun_beside

TOWER_DIR = REPO / "token_spaces" / "tiny" / "vision_tower"
STAGES = {"vision": dict(stage="vision", vision_trainable_blocks=1),
          "resampler": dict(stage="resampler", vision_trainable_blocks=1, vicreg_weight=0.5)}


def _panorama(seed: int) -> np.ndarray:
    """A smooth random 64 x 128 panorama (2:1), so overlapping tiles see the same content."""
    g = np.random.default_rng(seed)
    return np.kron(g.integers(0, 256, (4, 8, 3)).astype(np.float32), np.ones((16, 16, 1))).astype(np.uint8)


def run_stage(out: Path, stage: str, batch_size: int, accelerator=None):
    """Train `stage` 3 steps on 4 panorama captions (of different token counts), in float64: runs with other batch
    splits then agree closely (in float32, rounding noise in a near-zero gradient is amplified by AdamW)."""
    from connectors.data import CaptionExample
    from connectors.presets import resampler_config
    from connectors.train import ConnectorTrainConfig, train_connector
    from connectors.views import image_view_features
    from connectors.vlm import Connector, ConnectorConfig, ContinuousVLM
    from uti.image.layout import Layout
    from uti.image.vision import VisionTower
    from uti.testing import TINY_IDS, byte_encode, tiny_llm

    tower = VisionTower.from_pretrained(TOWER_DIR)
    data = [CaptionExample(image_view_features(_panorama(i), Layout(tile_size=64), tower, 1),
                           f" {('red', 'blue', 'green seven')[i % 3]}") for i in range(4)]
    tower.model.double()  # after the features: the tuned layer then trains in float64 like the rest
    for ex in data:
        ex.image.features = ex.image.features.double()
    torch.manual_seed(1)
    connector = Connector(ConnectorConfig(llm_width=64, resampler="mlp", resampler_cfg=resampler_config("mlp", 64, 32, 4)))
    vlm = ContinuousVLM(tiny_llm(), connector, TINY_IDS).double()
    cfg = ConnectorTrainConfig(steps=3, batch_size=batch_size, lr=1e-2, warmup_steps=1, **STAGES[stage])
    return train_connector(vlm, data, [], encode=byte_encode, config=cfg, out_dir=out, tower=tower.abi(),
                           accelerator=accelerator, resume=False, overwrite=True, vision=tower)


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_two_cpu_processes_match_one(tmp_path, stage) -> None:
    """Batch 1 on each of 2 processes == batch 2 on one process, for the stages that tune the tower with VICReg.
    Before VICReg was gathered over the processes the losses differed by 20 % (vision) and 14 % (resampler)."""
    from connectors.checkpoint import checkpoint_tensors, vision_tensors
    from uti.image.vision import VisionTower

    one, out = torchrun_beside([__file__, tmp_path / "ddp", stage],
                               lambda: run_stage(tmp_path / "one", stage, batch_size=2))
    ddp = json.loads(out.strip().splitlines()[-1])
    assert ddp["processes"] == 2
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(one.losses), rtol=1e-5, atol=1e-6)
    tower = VisionTower.from_pretrained(TOWER_DIR)  # the untrained layers, also the reference for the checks
    start = tower.block_state(1)
    (ca, _), (cb, _) = checkpoint_tensors(tmp_path / "ddp"), checkpoint_tensors(one.final_dir)
    va, vb = vision_tensors(tmp_path / "ddp", tower), vision_tensors(one.final_dir, tower)
    assert va.keys() == vb.keys() == start.keys() and ca.keys() == cb.keys() and len(ca) > 0
    assert any(not torch.equal(start[k].double(), va[k].double()) for k in va)  # the tuned layer moved
    for k in va:
        torch.testing.assert_close(va[k], vb[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
    for k in ca:
        torch.testing.assert_close(ca[k], cb[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")


def main() -> None:
    """torchrun worker: run_stage(OUT, STAGE) with batch 1 per process; the main process prints the losses."""
    sys.path.insert(0, str(REPO))
    from tokenlm.trainer import make_accelerator

    torch.set_num_threads(1)
    acc = make_accelerator("cpu")
    res = run_stage(Path(sys.argv[1]), sys.argv[2], batch_size=1, accelerator=acc)
    if acc.is_main_process:
        print(json.dumps({"processes": acc.num_processes, "losses": res.losses}))


if __name__ == "__main__":
    main()
