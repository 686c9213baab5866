"""Unified Token Interface: text, 360° panoramas and audio as IDs of one hashed token space."""

from .codec import Encoded
from .codecs import ModalityCodec, register_codec
from .errors import (ConfigError, HashMismatchError, InputError, MissingAssetError, SpaceError, TokenRangeError,
                     UTIError)
from .space import IdRange, TokenSpace
from .items import Audio, Segment
from .text import TextCodec
from .tokenizer import Tokenizer

from .version import __version__

__all__ = [
    "Tokenizer", "Segment", "Audio", "register_codec", "ModalityCodec",
    "TokenSpace", "IdRange", "TextCodec", "Encoded",
    "UTIError", "ConfigError", "SpaceError", "HashMismatchError", "TokenRangeError", "MissingAssetError", "InputError",
    "__version__",
]
