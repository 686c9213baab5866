"""The tiny space's vision tower: a random (untrained) SigLIP-architecture tower from a seed."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from uti.io import atomic_write_text

from .hf import unstamp

__all__ = ["make_tiny_vision_tower"]


def make_tiny_vision_tower(out_dir: str | Path, seed: int = 0, image_size: int = 64, patch_size: int = 16) -> Path:
    """Write a tiny random SigLIP-architecture tower (config, safetensors, preprocessor config) to `out_dir`.

    hidden 64, 2 layers, 4 heads, MLP 128: a few hundred KB, fast on CPU, real transformers architecture.
    Its weights are transformers' seeded initialisation: the features are random projections, not learned.
    """
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        vision_use_head=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipVisionModel(config).eval()
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    preprocessor = {  # written here, not by transformers' processor class, whose defaults may change
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5],
        "resample": 3, "rescale_factor": 1 / 255, "size": {"height": image_size, "width": image_size},
    }
    atomic_write_text(out / "preprocessor_config.json", json.dumps(preprocessor, indent=2, sort_keys=True) + "\n")
    unstamp(out)
    return out
