"""`uti verify`: every artifact kind verifies ok against its space, and each kind of drift is one BAD line.

One module fixture builds, with a small space (the tiny space's text section and tokenizer, synthetic image
and audio sections): a space folder, an encoded document, a shard folder, a rows checkpoint whose base is a
local folder (base checked) and one naming a hub id (base not checked), a connector checkpoint and an
exported model. Drift tests copy an artifact and damage the copy.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from connectors.checkpoint import save_connector
from connectors.inject import ImageTokenIds
from connectors.vlm import ContinuousVLM
from tests.hostile import assert_one_line_error, run_cli
from tokenlm.checkpoint import read_manifest, rows_file, save_rows
from tokenlm.export import export_merged
from tokenlm.model import apply_stage, grow_model, load_base
from uti.batch import run_batch
from uti.cli import main
from uti.document import EncodedDocument, write_document
from uti.space import TokenSpace
from uti.testing import TINY_IDS, tiny_connector, tiny_llm, tiny_qwen3, tiny_space
from uti.verify import verify_artifact

TOWER = {"name": "tiny-tower", "weights_hash": "ab" * 16, "hidden_size": 32, "feature_layer": -1}


def _space(folder: Path, audio: tuple[int, int] = (2, 16)) -> TokenSpace:
    """tiny's text section (its tokenizer copied in as a pinned asset) + synthetic image/audio sections."""
    tiny = TokenSpace.from_path(Path(__file__).resolve().parent.parent / "token_spaces" / "tiny")
    abi = copy.deepcopy(tiny_space(base_vocab=tiny.abi["text"]["base_vocab_size"], audio=audio).abi)
    abi["text"] = tiny.abi["text"]
    folder.mkdir(parents=True)
    shutil.copy(tiny.asset("tokenizer"), folder / "tokenizer.json")
    sp = TokenSpace.from_abi(abi, name=folder.name, assets={"tokenizer": "tokenizer.json"})
    sp.save(folder / "token_space.json")
    return sp


def _encode(path: str) -> tuple[list[int], dict]:
    return [1 + len(Path(path).read_text()), 7], {"chars": 2}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("verify")
    space = _space(root / "space")
    _space(root / "other", audio=(2, 32))  # another space: another hash
    write_document(root / "doc.json", EncodedDocument.for_space(space, "text", [5, 6, 7], {"chars": 3}))
    (root / "in").mkdir()
    for k in range(3):
        (root / "in" / f"f{k}.txt").write_text("x" * (k + 1))
    run_batch(sorted(map(str, (root / "in").iterdir())), _encode, root / "shards", space, shard_size=2,
              progress=False)
    tiny_qwen3(layers=1).save_pretrained(root / "base")
    model = apply_stage(grow_model(load_base(str(root / "base")), space), "rows")
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
    save_rows(model, root / "rows", space)
    save_rows(model, root / "rows_hub", space, base_model="nobody/tiny-base")
    save_connector(ContinuousVLM(tiny_llm(), tiny_connector(), TINY_IDS), root / "connector", TOWER,
                   space_hash=space.hash)
    export_merged(root / "rows", root / "export")
    return {"root": root, "space": root / "space", "other": root / "other", "document": root / "doc.json",
            "shards": root / "shards", "rows": root / "rows", "rows_hub": root / "rows_hub",
            "connector": root / "connector", "export": root / "export"}


KINDS = ("space", "document", "shards", "rows", "connector", "export")


def _verify(*args: str | Path) -> tuple[int, list[str]]:
    res = CliRunner().invoke(main, ["verify", *map(str, args)])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res.exit_code, res.output.strip().splitlines()


def _copy(built: dict, key: str, tmp_path: Path) -> Path:
    src, dst = built[key], tmp_path / built[key].name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return dst


def test_every_kind_verifies_ok(built):
    code, lines = _verify(*(built[k] for k in KINDS), built["rows_hub"], "--space", built["space"])
    assert code == 0, lines
    assert [line.split()[:3] for line in lines] == [["ok", k, str(built[k])] for k in KINDS] + \
        [["ok", "rows", str(built["rows_hub"])]]
    assert "base=checked" in lines[3] and "base not checked" in lines[6]


def test_kind_is_read_from_content_not_name(built, tmp_path):
    for key in ("document", "shards", "connector"):
        renamed = tmp_path / f"renamed-{key}"
        (shutil.copytree if built[key].is_dir() else shutil.copy)(built[key], renamed)
        assert verify_artifact(renamed, TokenSpace.from_path(built["space"])).kind == key


def test_another_space_is_bad_for_every_kind(built):
    code, lines = _verify(*(built[k] for k in KINDS), "--space", built["other"])
    assert code == 1 and len(lines) == len(KINDS)
    assert [line.split()[:2] for line in lines] == [["BAD", k] for k in KINDS]
    assert all("hash" in line for line in lines), lines


def test_space_file_drift(built, tmp_path):
    edited = _copy(built, "space", tmp_path)
    data = json.loads((edited / "token_space.json").read_text())
    data["abi"]["pad_to_multiple"] = 64
    (edited / "token_space.json").write_text(json.dumps(data))
    code, lines = _verify(edited, "--space", built["space"])
    assert code == 1 and lines[0].startswith(f"BAD space {edited}:") and "stored hash" in lines[0]
    asset = _copy(built, "space", tmp_path / "asset")
    tok = json.loads((asset / "tokenizer.json").read_text())
    tok["model"]["vocab"]["zzz-new"] = 99999
    (asset / "tokenizer.json").write_text(json.dumps(tok))
    code, lines = _verify(asset, "--space", built["space"])
    assert code == 1 and "asset tokenizer" in lines[0], lines
    # the --space itself with a drifted asset: one extra BAD line for it, before the artifacts
    code, lines = _verify(built["document"], "--space", asset)
    assert code == 1 and len(lines) == 2 and lines[0].startswith("BAD space") and lines[1].startswith("ok document")


def test_shard_drift(built, tmp_path):
    zeroed = _copy(built, "shards", tmp_path / "z")
    shard = sorted(zeroed.glob("part-*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-16:] = bytes(16)
    shard.write_bytes(bytes(data))
    code, lines = _verify(zeroed, "--space", built["space"])
    assert code == 1 and lines[0].startswith(f"BAD shards {zeroed}:") and "checksum" in lines[0]
    unmarked = _copy(built, "shards", tmp_path / "u")
    next(unmarked.glob("*.done.json")).unlink()
    code, lines = _verify(unmarked, "--space", built["space"])
    assert code == 1 and ".done.json" in lines[0]
    failed = _copy(built, "shards", tmp_path / "f")
    marker = sorted(failed.glob("*.done.json"))[0]
    done = json.loads(marker.read_text())
    marker.write_text(json.dumps({**done, "failed": [{"path": "x.jpg", "reason": "broken"}]}))
    code, lines = _verify(failed, "--space", built["space"])
    assert code == 1 and "1 input(s) failed" in lines[0]
    other = _copy(built, "shards", tmp_path / "s")
    marker = sorted(other.glob("*.done.json"))[0]
    marker.write_text(json.dumps({**done, "token_space_hash": "e" * 32}))
    code, lines = _verify(other, "--space", built["space"])
    assert code == 1 and "e" * 32 in lines[0]
    orphan = _copy(built, "shards", tmp_path / "o")
    gone = sorted(orphan.glob("part-*.safetensors"))[-1]
    gone.unlink()
    code, lines = _verify(orphan, "--space", built["space"])
    assert code == 1 and f"missing: ['{gone.name}']" in lines[0]  # index.json lists it
    (orphan / "index.json").unlink()
    code, lines = _verify(orphan, "--space", built["space"])
    assert code == 1 and "has no shard" in lines[0]


def test_rows_drift(built, tmp_path):
    flipped = _copy(built, "rows_hub", tmp_path / "t")
    tensors = rows_file(flipped)
    data = bytearray(tensors.read_bytes())
    data[-3] ^= 0xFF
    tensors.write_bytes(bytes(data))
    code, lines = _verify(flipped, "--space", built["space"])
    assert code == 1 and lines[0].startswith(f"BAD rows {flipped}:") and "tensors hash" in lines[0]
    edited = _copy(built, "rows", tmp_path / "m")
    manifest = read_manifest(edited)
    (edited / "trainable_rows.json").write_text(json.dumps({**manifest, "stage": "full"}))
    code, lines = _verify(edited, "--space", built["space"])
    assert code == 1 and "content" in lines[0], lines


def test_rows_on_another_base_is_bad_when_the_base_is_here(built, tmp_path):
    """The space's base_model asset (not part of the abi, so the hash is the same) is another model; as for
    `tokenlm generate`, the space's local base wins over the id the checkpoint recorded."""
    folder = _copy(built, "space", tmp_path)
    tiny_qwen3(layers=1, seed=3).save_pretrained(folder / "lm")
    data = json.loads((folder / "token_space.json").read_text())
    (folder / "token_space.json").write_text(json.dumps({**data, "assets": {**data["assets"], "base_model": "lm"}}))
    code, lines = _verify(built["rows"], built["rows_hub"], "--space", folder)
    assert code == 1 and len(lines) == 2 and all("base fingerprint" in line for line in lines), lines


def test_connector_drift(built, tmp_path):
    flipped = _copy(built, "connector", tmp_path / "t")
    weights = next(flipped.glob("connector.*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    code, lines = _verify(flipped, "--space", built["space"])
    assert code == 1 and lines[0].startswith(f"BAD connector {flipped}:") and "does not match" in lines[0]
    unrecorded = tmp_path / "none"
    save_connector(ContinuousVLM(tiny_llm(), tiny_connector(), TINY_IDS), unrecorded, TOWER)
    code, lines = _verify(unrecorded, "--space", built["space"])
    assert code == 1 and "records no token space hash" in lines[0]
    other_ids = tmp_path / "ids"
    ids = ImageTokenIds(start=TINY_IDS.end, end=TINY_IDS.start, patch=TINY_IDS.patch, base_vocab_size=512)
    space = TokenSpace.from_path(built["space"])
    save_connector(ContinuousVLM(tiny_llm(), tiny_connector(), ids), other_ids, TOWER, space_hash=space.hash)
    code, lines = _verify(other_ids, "--space", built["space"])
    assert code == 1 and "image IDs" in lines[0]


def test_connector_tower_must_be_the_one_the_space_pins(tmp_path):
    """The shipped tiny space pins a vision tower: a connector trained on another one is BAD."""
    tiny = TokenSpace.from_path(Path(__file__).resolve().parent.parent / "token_spaces" / "tiny")
    tower = tiny.abi["image"]["tower"]
    vlm = ContinuousVLM(tiny_llm(), tiny_connector(in_dim=tower["hidden_size"]), TINY_IDS)
    save_connector(vlm, tmp_path / "same", tower, space_hash=tiny.hash)
    save_connector(vlm, tmp_path / "other", {**tower, "weights_hash": "cd" * 16}, space_hash=tiny.hash)
    code, lines = _verify(tmp_path / "same", tmp_path / "other", "--space", tiny.path)
    assert code == 1 and lines[0].startswith("ok connector"), lines
    assert lines[1].startswith("BAD connector") and "tower" in lines[1] and "weights_hash" in lines[1]


def test_export_with_a_changed_added_token_is_bad(built, tmp_path):
    changed = _copy(built, "export", tmp_path)
    tok = json.loads((changed / "tokenizer.json").read_text())
    entry = next(t for t in tok["added_tokens"] if t["content"] == "<|img_3|>")
    entry["content"] = "<|img_x|>"
    (changed / "tokenizer.json").write_text(json.dumps(tok))
    code, lines = _verify(changed, "--space", built["space"])
    assert code == 1 and lines[0].startswith(f"BAD export {changed}:") and "<|img_x|>" in lines[0], lines
    config = _copy(built, "export", tmp_path / "c")
    cfg = json.loads((config / "config.json").read_text())
    (config / "config.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] + 128}))
    code, lines = _verify(config, "--space", built["space"])
    assert code == 1 and lines[0].startswith("BAD export") and "vocab_size" in lines[0]


def test_document_ids_outside_the_space_are_bad(built, tmp_path):
    space = TokenSpace.from_path(built["space"])
    write_document(tmp_path / "doc.json", EncodedDocument.for_space(space, "text", [5, space.total], {}))
    code, lines = _verify(tmp_path / "doc.json", "--space", built["space"])
    assert code == 1 and f"ID {space.total} is outside" in lines[0]


@pytest.mark.parametrize("content", [b"", b"\xff\xfe", b"[1, 2]", b'{"a": ' * 5000, b'{"token_space": 1, "ids": 2}',
                                     b'{"abi": {}, "hash": "x"}', b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage"])
def test_hostile_files_are_bad_lines(built, tmp_path, content):
    bad = tmp_path / "artifact"
    bad.write_bytes(content)
    code, lines = _verify(bad, built["document"], "--space", built["space"])
    assert code == 1 and len(lines) == 2 and lines[0].startswith("BAD ") and lines[1].startswith("ok document")


@pytest.mark.parametrize("name,content", [("trainable_rows.json", b"{}"), ("connector.json", b"[1]"),
                                          ("tokenlm_export.json", b'{"format": "tokenlm-export"}'),
                                          ("part-0-of-1-00000.safetensors", b"\xff" * 8 + b"{}"),
                                          ("part-0-of-1-00000.safetensors.done.json", b"{}"),
                                          ("trainable_rows.pt", b"\x80\x04not a pickle")])
def test_hostile_folders_are_bad_lines(built, tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    code, lines = _verify(tmp_path, "--space", built["space"])
    assert code == 1 and len(lines) == 1 and lines[0].startswith("BAD "), lines


def test_mixed_list_and_json(built, tmp_path):
    missing = tmp_path / "missing"
    res = CliRunner().invoke(main, ["verify", str(built["document"]), str(missing), str(built["shards"]),
                                    "--space", str(built["space"]), "--json"])
    assert res.exit_code == 1
    rows = [json.loads(line) for line in res.output.strip().splitlines()]
    assert [(r["kind"], r["ok"]) for r in rows] == [("document", True), ("unknown", False), ("shards", True)]
    assert "no such file" in rows[1]["error"] and rows[2]["items"] == 3


def test_usage_errors_exit_2(built):
    res = CliRunner().invoke(main, ["verify", str(built["document"])])  # no --space
    assert res.exit_code == 2 and "--space" in res.output
    res = CliRunner().invoke(main, ["verify", str(built["document"]), "--space", str(built["root"] / "nowhere")])
    assert res.exit_code == 2 and res.output.count("error:") == 1 and "unknown token space" in res.output


@pytest.mark.slow
def test_cli_process_one_line_per_artifact(built):
    """As a user runs it: a fresh process, no traceback, one line per artifact, exit 1 for the bad one."""
    assert_one_line_error(run_cli("uti", "verify", built["document"], "--space", built["root"] / "nowhere"),
                          contains="unknown token space")
    proc = run_cli("uti", "verify", built["document"], built["root"], "--space", built["space"])
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr
    assert [line.split()[:2] for line in proc.stdout.decode().splitlines()] == [["ok", "document"], ["BAD", "unknown"]]
