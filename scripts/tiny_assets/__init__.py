"""Makers of the tiny default space's assets (token_spaces/tiny/), run by scripts/make_tiny_space.py.

Not part of the installed packages: tests import them by putting scripts/ on sys.path (tests/conftest.py).
One module per asset: `tokenizer`, `vision`, `codebook`, `encodec`, `lm`, over the self-contained `corpus`.
"""

from .codebook import make_tiny_codebook
from .encodec import TINY_BANDWIDTH, TINY_ENCODEC_CONFIG, make_tiny_encodec
from .lm import make_tiny_lm, tiny_qwen3_config
from .tokenizer import TOKENIZER_SIZE, make_tiny_tokenizer
from .vision import make_tiny_vision_tower

__all__ = [
    "TINY_BANDWIDTH",
    "TINY_ENCODEC_CONFIG",
    "TOKENIZER_SIZE",
    "make_tiny_codebook",
    "make_tiny_encodec",
    "make_tiny_lm",
    "make_tiny_tokenizer",
    "make_tiny_vision_tower",
    "tiny_qwen3_config",
]
