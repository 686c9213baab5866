"""Token LM: grow a base LM's vocabulary to a token space, train only the new rows, save/load them, generate.

Modules: `rows` (GrownEmbedding, GrownHead, chunked_cross_entropy), `model` (grow_model, apply_stage),
`checkpoint` (save_rows, load_rows), `constraints` (token-space LogitsProcessor), `generate`, `export`,
`train` (Accelerate loop).
"""

from __future__ import annotations

from uti.version import __version__  # before the imports: checkpoint records it

from .checkpoint import load_rows, save_rows  # noqa: E402
from .constraints import TokenSpaceLogitsProcessor, export_rules  # noqa: E402
from .export import export_merged  # noqa: E402
from .model import apply_stage, grow_model, load_base  # noqa: E402
from .rows import GrownEmbedding, GrownHead, chunked_cross_entropy  # noqa: E402
from .train import TrainConfig, train  # noqa: E402

__all__ = [
    "GrownEmbedding", "GrownHead", "chunked_cross_entropy",
    "load_base", "grow_model", "apply_stage",
    "save_rows", "load_rows",
    "TokenSpaceLogitsProcessor", "export_rules", "export_merged",
    "TrainConfig", "train",
    "__version__",
]
