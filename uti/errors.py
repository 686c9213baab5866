"""Exceptions of the toolkit.

Every error a user can cause (bad file, wrong hash, out-of-range ID, missing asset) is a `UTIError`: its
message is one line that says what was wrong, what was expected and what to do. The CLIs print that line
and exit with code 2 instead of showing a traceback.
"""

from __future__ import annotations

__all__ = [
    "UTIError",
    "ConfigError",
    "SpaceError",
    "HashMismatchError",
    "TokenRangeError",
    "MissingAssetError",
    "InputError",
    "UTIWarning",
]


class UTIError(Exception):
    """Base class of user-facing errors; `str(err)` is a single line."""

    exit_code = 2

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


class ConfigError(UTIError, ValueError):
    """A config file or dataclass has a missing, unknown or invalid field."""


class SpaceError(UTIError, ValueError):
    """A token-space file is malformed or breaks an invariant."""


class HashMismatchError(SpaceError):
    """Two things that must share a token-space (or asset) hash do not."""


class TokenRangeError(UTIError, ValueError):
    """An ID or local code lies outside the range it must belong to, or a stream is malformed."""


class MissingAssetError(UTIError, FileNotFoundError):
    """An asset the token space names (tokenizer, tower, codebook, codec, base model) is not on this machine."""


class InputError(UTIError, ValueError):
    """A user input file (image, audio, JSON) cannot be read or is not acceptable."""


class UTIWarning(UserWarning):
    """Something was accepted but may be wrong (e.g. a JPEG the decoder repaired); the CLIs print one
    `warning: <line>` on stderr."""
