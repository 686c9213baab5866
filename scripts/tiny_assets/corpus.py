"""A small English corpus that needs no download, for the tiny tokenizer and base LM.

Two deterministic sources: scene captions from a small grammar (the same wording the learning check's
captioned panoramas use, so the tiny LM already reads them as fluent text) and paragraphs of the docstrings
of a fixed list of standard-library modules (plain technical English, PSF licence). The docstrings differ
between Python versions, so they are read from `docstrings.json` (a snapshot taken once with
`collect_docstring_paragraphs`), never from the running interpreter: the corpus is the same everywhere.
The shipped model records the corpus hash in its maker manifest.
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
from pathlib import Path

__all__ = ["COLOURS", "SHAPES", "DIRECTIONS", "SCENES", "caption", "scene_sentences", "docstring_paragraphs",
           "collect_docstring_paragraphs", "corpus"]

DOCSTRINGS = Path(__file__).resolve().parent / "docstrings.json"

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("square", "circle", "triangle", "cross")
DIRECTIONS = ("north", "east", "south", "west")
SCENES = ("city", "courtyard", "forest", "interior")

_DOC_MODULES = ("textwrap", "json", "collections", "string", "random", "statistics", "fractions", "heapq", "bisect",
                "calendar", "pathlib", "functools", "itertools", "shutil", "csv", "argparse", "logging", "difflib")
_VERBS = ("there is", "you can see", "we see", "the panorama shows", "this view shows")
_PLACES = ("in the city", "in a courtyard", "in a forest", "in a room", "under the sky", "near the trees")


def caption(colour: str, shape: str, direction: str, scene: str | None = None) -> str:
    """The learning check's caption: e.g. 'a red square to the north.' (scene adds ' in the forest')."""
    where = f" in the {scene}" if scene else ""
    return f"a {colour} {shape} to the {direction}{where}."


def scene_sentences(n: int, seed: int) -> list[str]:
    """`n` grammar sentences about coloured shapes, directions and places, drawn from `seed`."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c, s, d = rng.choice(COLOURS), rng.choice(SHAPES), rng.choice(DIRECTIONS)
        kind = rng.randrange(4)
        if kind == 0:
            out.append(caption(c, s, d, rng.choice(SCENES + (None,))))
        elif kind == 1:
            out.append(f"{rng.choice(_VERBS)} a {c} {s} {rng.choice(_PLACES)}, to the {d}.")
        elif kind == 2:
            c2, s2, d2 = rng.choice(COLOURS), rng.choice(SHAPES), rng.choice(DIRECTIONS)
            out.append(f"a {c} {s} to the {d} and a {c2} {s2} to the {d2}.")
        else:
            out.append(f"the {s} is {c}. it stands to the {d} {rng.choice(_PLACES)}.")
    return out


def docstring_paragraphs() -> list[str]:
    """The snapshot of `collect_docstring_paragraphs` stored in `docstrings.json` (taken with Python 3.11.7)."""
    return list(json.loads(DOCSTRINGS.read_text(encoding="utf-8"))["paragraphs"])


def collect_docstring_paragraphs() -> list[str]:
    """Paragraphs (> 40 ASCII chars, no doctests) of the docstrings of `_DOC_MODULES` and their public
    members in this interpreter, in a fixed order, deduplicated; used once to write `docstrings.json`."""
    paras: list[str] = []
    for name in _DOC_MODULES:
        mod = importlib.import_module(name)
        docs = [inspect.getdoc(mod) or ""]
        for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
            if not attr.startswith("_"):
                docs.append(inspect.getdoc(getattr(mod, attr, None)) or "")
        for doc in docs:
            for p in doc.split("\n\n"):
                p = " ".join(p.split())
                if len(p) > 40 and p.isascii() and ">>>" not in p:
                    paras.append(p)
    return list(dict.fromkeys(paras))  # dedupe (inherited docstrings repeat), keep order


def corpus(seed: int, n_scene: int = 6000) -> list[str]:
    """The pretraining documents: docstring paragraphs plus `n_scene` scene sentences, shuffled by `seed`."""
    docs = docstring_paragraphs() + scene_sentences(n_scene, seed)
    random.Random(seed).shuffle(docs)
    return docs
