"""Token LM: grow a base LM's vocabulary to a token space, train only the new rows, save/load them, generate.

Modules: `rows` (GrownEmbedding, GrownHead, chunked_cross_entropy), `model` (grow_model, apply_stage),
`checkpoint` (save_rows, load_rows), `constraints` (token-space LogitsProcessor), `generate`, `export`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
