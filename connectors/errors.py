"""Errors of the continuous-embedding track; all are one-line `UTIError`s the CLIs print without a traceback."""

from __future__ import annotations

from uti.errors import UTIError

__all__ = ["ConnectorError", "PlaceholderCountError", "WidthMismatchError", "TowerMismatchError"]


class ConnectorError(UTIError, ValueError):
    """A connector config, checkpoint or input is not acceptable."""


class PlaceholderCountError(ConnectorError):
    """The number of `<|image_patch|>` placeholders does not match the projected vectors (or images)."""


class WidthMismatchError(ConnectorError):
    """Feature, tower, connector or LLM widths do not line up."""


class TowerMismatchError(ConnectorError):
    """A connector checkpoint was trained on another vision tower (or another LLM) than the one given."""
