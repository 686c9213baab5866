"""The toy space of the add-a-modality tests: the tiny tokenizer's text plus a registered `depth` codec."""

from __future__ import annotations

import shutil
from pathlib import Path

from uti.build import SpaceConfig, TextConfig, build_space
from uti.space import spaces_dir


def build_toy_space(root: Path) -> Path:
    """Build and save the toy space in `root` (the `depth` codec, 8 levels on a 2 x 2 grid, must be registered)."""
    shutil.copy(spaces_dir() / "tiny" / "tokenizer.json", root / "tokenizer.json")
    cfg = SpaceConfig(name="toy", text=TextConfig(tokenizer="tokenizer.json", base_vocab_size=512),
                      assets={"tokenizer": "tokenizer.json"}, codecs={"depth": {"levels": 8, "grid": 2}},
                      pad_to_multiple=64)
    build_space(cfg, root).save(root / "token_space.json")
    return root
