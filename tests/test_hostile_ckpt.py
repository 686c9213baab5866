"""Hostile rows checkpoints through the CLI: every tampered manifest or file is one `error:` line, exit 2,
under a 2 GB address-space cap (so a manifest asking for gigabytes is refused before allocating them).

Each case copies a good stage-`lora` checkpoint, damages it, and runs `tokenlm generate --rows DIR` (and
`tokenlm rows show DIR` where only the manifest is at fault). "rehashed" cases recompute the manifest's
content hash, as a forger who knows the scheme would, to reach the schema and size checks behind it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hostile import assert_one_line_error, run_cli  # noqa: E402


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict:
    import torch

    from tokenlm.checkpoint import save_rows
    from tokenlm.model import apply_stage, grow_model
    from uti.testing import tiny_qwen3, tiny_space
    from uti.space import TokenSpace

    root = tmp_path_factory.mktemp("hostile_ckpt")
    tiny_qwen3().save_pretrained(root / "base")
    tokenizer = Path(__file__).resolve().parent.parent / "token_spaces" / "tiny" / "tokenizer.json"
    shutil.copy(tokenizer, root / "tokenizer.json")  # a space names only files inside its folder
    abi = {**tiny_space().abi, "text": TokenSpace.load("tiny").abi["text"]}  # the tokenizer above, pinned
    space = TokenSpace.from_abi(abi, name="test", assets={"tokenizer": "tokenizer.json"})
    space.save(root / "space.json")
    model = apply_stage(grow_model(tiny_qwen3(), space), "lora")
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    save_rows(model, root / "rows", space)
    return {"rows": root / "rows", "base": root / "base"}


def _manifest(d: Path) -> dict:
    return json.loads((d / "trainable_rows.json").read_text())


def _write(d: Path, man, rehash: bool = False) -> None:
    from tokenlm.rows_manifest import content_hash

    if rehash:
        man["content_hash"] = content_hash(man)
    (d / "trainable_rows.json").write_text(json.dumps(man))


def _set(d: Path, path: str, value, rehash: bool = False) -> None:
    man = _manifest(d)
    *parents, leaf = path.split(".")
    target = man
    for p in parents:
        target = target[p]
    target[leaf] = value
    _write(d, man, rehash)


def _data(d: Path, role: str) -> Path:
    return d / _manifest(d)["files"][role]["name"]


def _truncate(d: Path) -> None:
    f = _data(d, "tensors")
    f.write_bytes(f.read_bytes()[:-100])


def _flip(d: Path) -> None:
    f = _data(d, "tensors")
    b = bytearray(f.read_bytes())
    b[-5] ^= 0x40
    f.write_bytes(bytes(b))


def _raw(text: str):
    return lambda d: (d / "trainable_rows.json").write_text(text)


def _huge_lora_tensor(d: Path) -> None:
    man = _manifest(d)
    key = next(k for k in man["tensors"] if "lora_A" in k)
    man["tensors"][key]["shape"] = [1 << 30, 64]
    _write(d, man, rehash=True)


def _old_layout(d: Path) -> None:
    man = _manifest(d)
    man["version"] = 1
    del man["content_hash"], man["files"]
    _write(d, man)


CASES = {
    # manifest edits without rehash: the content hash refuses them
    "dtype-float99": (lambda d: _set(d, "dtype", "float99"), "content hash"),
    "stage-edited": (lambda d: _set(d, "stage", "rows"), "content hash"),
    "lora-alpha-edited": (lambda d: _set(d, "lora_config.lora_alpha", 1000), "content hash"),
    "lora-r-2000000": (lambda d: _set(d, "lora_config.r", 2_000_000), "content hash"),
    # rehashed: the schema and the bounds refuse them before anything is built
    "rehashed-dtype-float99": (lambda d: _set(d, "dtype", "float99", True), "dtype must be one of"),
    "rehashed-lora-r-2000000": (lambda d: _set(d, "lora_config.r", 2_000_000, True), "exceeds the hidden size"),
    "rehashed-lora-null": (lambda d: _set(d, "lora_config", None, True), "stage lora needs its LoRA config"),
    "rehashed-unknown-lora-key": (lambda d: _set(d, "lora_config.rank", 4, True), "unknown key(s) rank"),
    "rehashed-unknown-key": (lambda d: _set(d, "comment", "hi", True), "unknown key(s) comment"),
    "rehashed-r-string": (lambda d: _set(d, "lora_config.r", "8", True), "expected int"),
    "rehashed-hidden-huge": (lambda d: _set(d, "hidden_size", 10**9, True), "hidden_size must be in"),
    "rehashed-hidden-other": (lambda d: _set(d, "hidden_size", 4096, True), "tensors.embed_rows must be"),
    "rehashed-5000-digit-int": (lambda d: _set(d, "total", 10**4000, True), "expected int"),
    "rehashed-path-escape": (lambda d: _set(d, "files.tensors.name", "../../../../etc/passwd", True),
                             "expected trainable_rows.<16 hex of its hash>"),
    "rehashed-huge-lora-tensor": (_huge_lora_tensor, "more than 3 x the base"),
    "rehashed-rows-shape": (lambda d: _set(d, "tensors.embed_rows.shape", [10**9, 64], True),
                            "tensors.embed_rows must be"),
    # not a manifest at all
    "list-body": (_raw("[1, 2, 3]"), "not a tokenlm-trainable-rows manifest"),
    "empty-file": (_raw(""), "not valid JSON"),
    "nan": (_raw('{"format": "tokenlm-trainable-rows", "version": 2, "init": NaN}'), "not valid JSON"),
    "5000-digits-raw": (_raw('{"format": "tokenlm-trainable-rows", "total": ' + "9" * 5000 + "}"),
                        "not acceptable JSON"),
    "deep-nesting": (_raw("[" * 100_000 + "]" * 100_000), "JSON"),
    "old-version-1": (_old_layout, "version 1"),
    # data files
    "truncated-tensors": (_truncate, "truncated"),
    "flipped-tensor-byte": (_flip, "edited or damaged"),
    "missing-tensors": (lambda d: _data(d, "tensors").unlink(), "is missing"),
    "edited-space-copy": (lambda d: _data(d, "space").write_text(_data(d, "space").read_text().replace("test", "tost")),
                          "was edited"),
    "no-manifest": (lambda d: (d / "trainable_rows.json").unlink(), "not a rows checkpoint"),
}
SHOW_TOO = ("dtype-float99", "rehashed-lora-r-2000000", "rehashed-unknown-lora-key", "rehashed-path-escape",
            "list-body", "empty-file", "no-manifest")  # `tokenlm rows show` reads only the manifest


@pytest.mark.slow  # one subprocess (torch + transformers import) per case
@pytest.mark.parametrize("case", sorted(CASES))
def test_generate_refuses_damaged_checkpoint(good, tmp_path, case):
    damage, message = CASES[case]
    d = tmp_path / "rows"
    shutil.copytree(good["rows"], d)
    damage(d)
    proc = run_cli("tokenlm", "generate", "--rows", d, "--prompt", "hi", "--base", good["base"],
                   "--max-new-tokens", "2")
    assert_one_line_error(proc, contains=message)
    if case in SHOW_TOO:
        assert_one_line_error(run_cli("tokenlm", "rows", "show", d), contains=message)


@pytest.mark.slow
def test_generate_refuses_a_base_that_is_not_a_model_folder(good):
    proc = run_cli("tokenlm", "generate", "--rows", good["rows"], "--prompt", "hi", "--base", "/etc")
    assert_one_line_error(proc, contains="/etc has no config.json")


@pytest.mark.slow
def test_good_checkpoint_generates(good):
    proc = run_cli("tokenlm", "generate", "--rows", good["rows"], "--prompt", "hi", "--base", good["base"],
                   "--max-new-tokens", "2", "--json")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
