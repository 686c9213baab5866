"""The toolkit's version, in one place: the installed distribution's metadata (pyproject's `version`).

`uti`, `tokenlm` and `connectors` export it as `__version__`, and checkpoints record it. It is "0+unknown"
only when the packages run from a source tree that was never installed (no `uti-toolkit` metadata).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["DISTRIBUTION", "toolkit_version", "__version__"]

DISTRIBUTION = "uti-toolkit"  # the name in pyproject.toml, not an import name


def toolkit_version() -> str:
    """Version of the installed `uti-toolkit` distribution, or "0+unknown" when it is not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


__version__ = toolkit_version()
