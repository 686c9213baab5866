"""Tiny builders for tests and examples (no downloads), like `transformers.testing_utils`.

The only test code in the installed packages. `tiny_qwen3()` builds a 2-layer Qwen3 from a config with
seeded random weights; `tiny_space()` builds an in-memory TokenSpace whose text range is that model's
vocabulary, with optional image and audio sections (synthetic identities: only the sizes and layout the
token LM needs). The makers of the shipped tiny
space's assets are not here: they live in scripts/tiny_assets/.
"""

from __future__ import annotations

from typing import Any

import torch

from uti.space import SCHEMA, TokenSpace
from uti.specials import default_specials

__all__ = ["tiny_qwen3", "tiny_space"]


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
