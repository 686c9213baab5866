"""Shared fixtures for the training tests: a tiny random Qwen3 base, a space with a tokenizer, JSONL data."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKENIZER = REPO / "token_spaces" / "tiny" / "tokenizer.json"
WORDS = ("red", "green", "blue", "square", "circle", "north", "south", "a", "the", "to")


def make_setup(root: Path, n_records: int = 24, seed: int = 0, tied: bool = True, with_model: bool = True) -> dict:
    """Write base/ (tiny Qwen3), space/token_space.json and data.jsonl under `root`; return their paths."""
    from uti.testing import tiny_qwen3, tiny_space
    from uti.space import TokenSpace

    if with_model:
        tiny_qwen3(vocab=512, hidden=32, layers=1, tied=tied, seed=seed).save_pretrained(root / "base")
    base = tiny_space(base_vocab=512, image_codes=32, audio=None, name="traintest")
    abi = {**base.abi, "text": TokenSpace.load("tiny").abi["text"]}  # the tokenizer below, pinned
    (root / "space").mkdir(parents=True, exist_ok=True)
    shutil.copy(TOKENIZER, root / "space" / "tokenizer.json")  # assets live inside the space folder
    space = TokenSpace.from_abi(abi, name="traintest", assets={"tokenizer": "tokenizer.json"})
    space.save(root / "space" / "token_space.json")
    rng = random.Random(seed)
    img = space.ranges["image"]
    n_img = space.abi["image"]["tokens_per_view"]
    lines = []
    for i in range(n_records):
        caption = " ".join(rng.choice(WORDS) for _ in range(4))
        if i % 3 == 2:
            lines.append({"text": caption})
        else:
            lines.append({"image_ids": [img.start + rng.randrange(len(img)) for _ in range(n_img)], "caption": caption})
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return {"base": str(root / "base"), "space": str(root / "space" / "token_space.json"), "data": str(data)}


def edit_manifest(file: Path, rehash: bool, **changes) -> None:
    """Edit a checkpoint manifest (keys joined by `__` for nesting); with `rehash` its content hash is recomputed,
    as a forger who knows the scheme would (rows and connector manifests share `content_hash`)."""
    from tokenlm.rows_manifest import content_hash

    man = json.loads(file.read_text())
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        target = man
        for p in parents:
            target = target[p]
        target[leaf] = value
    if rehash:
        man["content_hash"] = content_hash(man)
    file.write_text(json.dumps(man))
