"""Where token spaces are found by name: an entry-point registry that any installed package can add to.

A package ships spaces as package data, one folder per space holding a `token_space.json`, and names its
folder of spaces in its `pyproject.toml`:

    [project.entry-points."uti.token_spaces"]
    my-spaces = "my_package.spaces"      # a package (an importable folder); its subfolders are spaces

The toolkit registers its own `token_spaces/` the same way. A source tree that was never installed (or was
installed before the registry existed) still finds `token_spaces/` next to the packages. `$UTI_SPACES_DIR`,
when set, replaces all of them. A name shipped by two providers is refused as ambiguous rather than one
silently winning.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from .errors import SpaceError

__all__ = ["ENTRY_POINT_GROUP", "SpaceRoot", "space_roots", "own_spaces_dir", "known_spaces", "resolve_space_name"]

ENTRY_POINT_GROUP = "uti.token_spaces"
OWN = "uti-toolkit"  # the toolkit's own entry point; another install of the toolkit must not shadow this one
SPACE_FILE = "token_space.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a plain folder name: no separators, no "..", no hidden files


@dataclass(frozen=True)
class SpaceRoot:
    """A folder whose subfolders holding a token_space.json are spaces, and who provides it."""

    provider: str  # entry-point name ("uti-toolkit" for the toolkit's own) or "UTI_SPACES_DIR"
    path: Path


def own_spaces_dir() -> Path:
    """The toolkit's own spaces: $UTI_SPACES_DIR, else `token_spaces/` beside the `uti` package.

    That is the repository's folder in a source tree or an editable install, and the installed package data
    in a wheel install (the wheel puts the `token_spaces` package beside `uti`).
    """
    env = os.environ.get("UTI_SPACES_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "token_spaces"


def _entry_point_roots() -> list[SpaceRoot]:
    """Folders named by the `uti.token_spaces` entry points, by entry-point name."""
    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    roots = []
    for ep in eps:
        try:
            spec = importlib.util.find_spec(ep.module)
        except Exception:  # a third party's package that fails to import must not break every other space
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            warnings.warn(f"token-space entry point {ep.name!r} names {ep.value!r}, which is not an importable "
                          "package; its spaces are skipped", stacklevel=3)
        roots += [SpaceRoot(ep.name, Path(loc)) for loc in locations]
    return roots


def space_roots() -> list[SpaceRoot]:
    """Every folder searched for spaces by name, the toolkit's own first, without duplicates (by resolved path).

    The toolkit's own entry point is replaced by `own_spaces_dir()`, the folder beside the running `uti`: the
    same folder in a normal install, and the right one when a source tree runs beside another installed copy
    of the toolkit (its entry point would name that copy's spaces, and every name would be ambiguous).
    """
    if os.environ.get("UTI_SPACES_DIR"):
        return [SpaceRoot("UTI_SPACES_DIR", own_spaces_dir())]
    roots, seen = [], set()
    others = [r for r in _entry_point_roots() if r.provider != OWN]  # ours is the folder beside the running code
    for root in [SpaceRoot(OWN, own_spaces_dir()), *others]:
        key = root.path.resolve()
        if key not in seen and root.path.is_dir():
            seen.add(key)
            roots.append(root)
    return roots


def _providers(name: str) -> list[tuple[SpaceRoot, Path]]:
    """(root, space file) for every root that holds a space called `name`."""
    found = [(root, root.path / name / SPACE_FILE) for root in space_roots()]
    return [(root, path) for root, path in found if path.is_file()]


def known_spaces() -> list[str]:
    """Names of every registered space, sorted."""
    names = {p.parent.name for root in space_roots() for p in root.path.glob(f"*/{SPACE_FILE}")}
    return sorted(n for n in names if _NAME.fullmatch(n))


def resolve_space_name(name: str) -> Path:
    """The `token_space.json` of the registered space `name`; an unknown or ambiguous name raises SpaceError."""
    found = _providers(name) if _NAME.fullmatch(name) else []
    if not found:
        known = ", ".join(known_spaces()) or "none"
        raise SpaceError(f"unknown token space {name!r}; known spaces: {known} (or give a path to a token_space.json)")
    if len(found) > 1:
        where = ", ".join(f"{root.provider} ({path})" for root, path in found)
        raise SpaceError(f"token space {name!r} is shipped by more than one package: {where}; "
                         "give the path of the one you mean")
    return found[0][1]
