"""Tiny builders for tests and examples (no downloads), like `transformers.testing_utils`.

The only test code in the installed packages. `tiny_qwen3()` builds a 2-layer Qwen3 from a config with
seeded random weights; `tiny_space()` builds an in-memory TokenSpace whose text range is that model's
vocabulary, with optional image and audio sections (synthetic identities: only the sizes and layout the
token LM needs). For the continuous track: `tiny_llm()`, `tiny_connector()`, `TINY_IDS`, byte-level text IDs
and synthetic panorama features with view angles. `connectors` is imported inside the functions (and for
`TINY_IDS` on first use), so `import uti.testing` stays light. The makers of the shipped tiny space's assets
are not here: they live in scripts/tiny_assets/; the toy connector training demo is
scripts/toy_connector_train.py.
"""

from __future__ import annotations

from typing import Any

import torch

from uti.space import SCHEMA, TokenSpace
from uti.specials import default_specials

__all__ = [
    "tiny_qwen3", "tiny_space", "TINY_IDS", "TINY_FEAT", "TOY_WORDS", "tiny_llm", "tiny_connector", "byte_encode",
    "synthetic_image", "toy_captions",
]

TINY_FEAT = 32  # width of the synthetic tower features
TOY_WORDS = ("red", "blue", "green", "gold")
TINY_IDS: Any  # connectors.inject.ImageTokenIds(start=515, end=516, patch=517, base_vocab_size=512), see __getattr__


def __getattr__(name: str) -> Any:
    """`TINY_IDS`: the image token IDs of the tiny continuous-track vocabulary (a `connectors` object, so built
    on first use rather than at import)."""
    if name == "TINY_IDS":
        from connectors.inject import ImageTokenIds

        return ImageTokenIds(start=515, end=516, patch=517, base_vocab_size=512)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tiny_qwen3(vocab: int = 512, hidden: int = 64, layers: int = 2, tied: bool = True, seed: int = 0,
               dtype: torch.dtype = torch.float32) -> Any:
    """A seeded random Qwen3ForCausalLM small enough for unit tests (eval mode, eager attention)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                      max_position_embeddings=512, tie_word_embeddings=tied, attn_implementation="eager")
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg).to(dtype)
    return model.eval()


def tiny_space(base_vocab: int = 512, image_codes: int | None = 64, grid: int = 2,
               audio: tuple[int, int] | None = (2, 16), order: str = "frame_major", pad_to_multiple: int = 128,
               name: str = "test") -> TokenSpace:
    """An in-memory space over `base_vocab` text IDs; image: `image_codes` codes, a global view + 4 tiles
    (fov 90, no overlap) of `grid` x `grid` codes each; audio: (levels, codebook size) in `order`."""
    from uti.image.layout import Layout

    abi: dict[str, Any] = {"schema": SCHEMA,
                           "text": {"tokenizer": "test", "tokenizer_hash": None, "base_vocab_size": base_vocab}}
    if image_codes is not None:
        layout = Layout(overlap=0.0, tile_size=16).abi()
        abi["image"] = {"codebook_size": image_codes, "grid": [grid, grid], "tokens_per_view": grid * grid,
                        "layout": layout}
    if audio is not None:
        abi["audio"] = {"num_codebooks": audio[0], "codebook_size": audio[1], "order": order}
    abi["specials"] = default_specials(layout["num_tiles"] if image_codes is not None else None)
    abi["pad_to_multiple"] = pad_to_multiple
    return TokenSpace.from_abi(abi, name=name)


def tiny_llm(seed: int = 0, hidden: int = 64) -> Any:
    """The continuous track's tiny LLM: a seeded random Qwen3ForCausalLM (vocab 512, 2 layers, untied) in eval
    mode with transformers' default attention. Same weights as `tiny_qwen3(tied=False)`, but not eager attention:
    the DDP test's float64 one-process vs two-process match was measured to hold with SDPA and not with eager."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=512, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=512)
    return Qwen3ForCausalLM(cfg).eval()


def tiny_connector(seed: int = 1, resampler: str = "perceiver", in_dim: int = TINY_FEAT, llm_width: int = 64) -> Any:
    """A small seeded `connectors.vlm.Connector`: 4 vectors of width 32 per view, projected to `llm_width`."""
    from connectors.vlm import Connector, ConnectorConfig

    torch.manual_seed(seed)
    cfg: dict[str, Any] = {"in_dim": in_dim, "dim": 32, "num_latents": 4}
    if resampler == "perceiver":
        cfg |= {"depth": 1, "heads": 2, "head_dim": 16}
    return Connector(ConnectorConfig(llm_width=llm_width, resampler=resampler, resampler_cfg=cfg))


def byte_encode(text: str) -> list[int]:
    """UTF-8 bytes as text IDs (valid in any vocabulary of >= 256 rows)."""
    return list(text.encode("utf-8"))


def synthetic_image(views: int = 3, seed: int = 2, patches: int = 6, width: int = TINY_FEAT) -> Any:
    """Random `connectors.inject.ViewFeatures` of a panorama: a global view then `views - 1` tiles evenly spaced
    in yaw at pitch 0."""
    from connectors.inject import ViewFeatures

    g = torch.Generator().manual_seed(seed)
    yaw = torch.tensor([0.0] + [-180.0 + 360.0 * k / max(views - 1, 1) for k in range(views - 1)])
    return ViewFeatures(torch.randn(views, patches, width, generator=g), torch.stack([yaw, torch.zeros(views)], 1),
                        torch.arange(views) == 0)


def toy_captions(n: int, seed: int, views: int = 2, width: int = TINY_FEAT) -> list[Any]:
    """`n` `connectors.data.CaptionExample`s whose features cluster around one of four centres and whose target
    names it."""
    from connectors.data import CaptionExample
    from connectors.inject import ViewFeatures

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
