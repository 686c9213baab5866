"""Tiny seeded pieces for tests and examples of the continuous track (no downloads).

A 2-layer Qwen3 with a 512-row vocabulary, a small connector, byte-level text IDs and synthetic
panorama features with view angles.
"""

from __future__ import annotations

from typing import Any

import torch

from .inject import ImageTokenIds, ViewFeatures
from .vlm import Connector, ConnectorConfig

__all__ = [
    "TINY_IDS", "TINY_FEAT", "TOY_WORDS", "tiny_llm", "tiny_connector", "byte_encode", "synthetic_image",
    "toy_captions",
]

TINY_IDS = ImageTokenIds(start=515, end=516, patch=517, base_vocab_size=512)
TINY_FEAT = 32  # width of the synthetic tower features


def tiny_llm(seed: int = 0, hidden: int = 64) -> Any:
    """A seeded random Qwen3ForCausalLM (vocab 512, 2 layers) in eval mode."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=512, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=512)
    return Qwen3ForCausalLM(cfg).eval()


def tiny_connector(
    seed: int = 1, resampler: str = "perceiver", in_dim: int = TINY_FEAT, llm_width: int = 64
) -> Connector:
    """A small seeded connector: 4 vectors of width 32 per view, projected to `llm_width`."""
    torch.manual_seed(seed)
    cfg: dict[str, Any] = {"in_dim": in_dim, "dim": 32, "num_latents": 4}
    if resampler == "perceiver":
        cfg |= {"depth": 1, "heads": 2, "head_dim": 16}
    return Connector(ConnectorConfig(llm_width=llm_width, resampler=resampler, resampler_cfg=cfg))


def byte_encode(text: str) -> list[int]:
    """UTF-8 bytes as text IDs (valid in any vocabulary of >= 256 rows)."""
    return list(text.encode("utf-8"))


def synthetic_image(views: int = 3, seed: int = 2, patches: int = 6, width: int = TINY_FEAT) -> ViewFeatures:
    """Random features of a panorama: a global view then `views - 1` tiles evenly spaced in yaw at pitch 0."""
    g = torch.Generator().manual_seed(seed)
    yaw = torch.tensor([0.0] + [-180.0 + 360.0 * k / max(views - 1, 1) for k in range(views - 1)])
    return ViewFeatures(torch.randn(views, patches, width, generator=g), torch.stack([yaw, torch.zeros(views)], 1),
                        torch.arange(views) == 0)


TOY_WORDS = ("red", "blue", "green", "gold")


def toy_captions(n: int, seed: int, views: int = 2, width: int = TINY_FEAT) -> list[Any]:
    """`n` CaptionExamples whose features cluster around one of four centres and whose target names it."""
    from .data import CaptionExample

    centres = torch.randn(len(TOY_WORDS), width, generator=torch.Generator().manual_seed(99)) * 2  # (4, width)
    g = torch.Generator().manual_seed(seed)
    yaw_pitch = torch.tensor([[0.0, 0.0]] + [[-180.0 + 360.0 * k / views, 0.0] for k in range(views - 1)])
    is_global = torch.arange(views) == 0
    out = []
    for i in range(n):
        c = i % len(TOY_WORDS)
        feats = centres[c] + 0.5 * torch.randn(views, 6, width, generator=g)  # (V, 6, width)
        out.append(CaptionExample(ViewFeatures(feats, yaw_pitch, is_global), f" {TOY_WORDS[c]}"))
    return out
