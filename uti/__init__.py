"""Unified Token Interface: text, 360° panoramas and audio as IDs of one hashed token space."""

from .codec import Codec, Encoded
from .errors import (ConfigError, HashMismatchError, InputError, MissingAssetError, SpaceError, TokenRangeError,
                     UTIError)
from .space import IdRange, TokenSpace
from .text import TextCodec

from .version import __version__

__all__ = [
    "TokenSpace", "IdRange", "TextCodec", "Codec", "Encoded",
    "UTIError", "ConfigError", "SpaceError", "HashMismatchError", "TokenRangeError", "MissingAssetError", "InputError",
    "__version__",
]
