"""Saved transformers folders that do not depend on the installed transformers version."""

from __future__ import annotations

import json
from pathlib import Path

from uti.io import atomic_write_text

__all__ = ["unstamp"]


def unstamp(folder: str | Path) -> None:
    """Drop the `transformers_version` stamp from `config.json` / `generation_config.json` in `folder`.

    transformers writes its own version into every saved config; the tiny assets must come out byte for
    byte the same whatever version made them. The rest is rewritten as transformers writes it (indent 2,
    sorted keys, final newline), so configs without the stamp are left unchanged.
    """
    for name in ("config.json", "generation_config.json"):
        path = Path(folder) / name
        if path.is_file():
            config = json.loads(path.read_text(encoding="utf-8"))
            config.pop("transformers_version", None)
            atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
