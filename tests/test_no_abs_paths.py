"""No artifact the toolkit saves records an absolute path of the machine that made it (issue 10, item 4).

Every kind is saved from inside one temp folder, given absolute paths (the strictest case: a writer that
stores what it was given would leak them), then every JSON value and every safetensors metadata value under
that folder is searched for the folder's absolute path.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

from click.testing import CliRunner
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import make_setup  # noqa: E402


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included; a string that holds JSON (safetensors metadata) is walked too."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value
        if value[:1] in "[{":
            try:
                yield from _strings(json.loads(value))
            except ValueError:
                pass


def _saved_values(root: Path) -> Iterator[tuple[Path, str]]:
    """(file, string) of every JSON file and safetensors metadata value under `root`."""
    for path in sorted(root.rglob("*")):
        if path.suffix == ".json":
            for s in _strings(json.loads(path.read_text(encoding="utf-8"))):
                yield path, s
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                for s in _strings(f.metadata() or {}):
                    yield path, s


def _leaks(root: Path) -> list[str]:
    needles = {str(root), str(root.resolve()), root.as_posix()}
    return [f"{p.relative_to(root)}: {s[:120]}" for p, s in _saved_values(root) if any(n in s for n in needles)]


def test_no_saved_artifact_holds_an_absolute_path(tmp_path, assets, monkeypatch) -> None:
    from connectors import ContinuousVLM
    from connectors.checkpoint import load_connector, read_manifest, save_connector
    from connectors.train import ConnectorTrainConfig, train_connector
    from tokenlm.export import export_merged
    from tokenlm.model import load_base
    from tokenlm.train import TrainConfig, train
    from uti.cli import main
    from uti.testing import TINY_FEAT, TINY_IDS, byte_encode, tiny_connector, tiny_llm, toy_captions

    root = tmp_path.resolve()
    monkeypatch.chdir(root)
    setup = make_setup(root / "setup", n_records=6)  # a space saved with its asset, a base model, data
    # encoded documents and shards, through the CLI (its input root is the folder given)
    (root / "in" / "sub").mkdir(parents=True)
    shutil.copy(assets / "panoramas" / "city.jpg", root / "in" / "sub" / "city.jpg")
    (root / "in" / "broken.jpg").write_bytes(b"not a jpeg")  # a failure: its reason is recorded too
    run = CliRunner().invoke
    for args in (["encode", str(root / "in"), "--out", str(root / "shards")],
                 ["encode", "--text", "hello", "--out", str(root / "doc.json")],
                 ["encode", str(root / "in" / "sub" / "city.jpg"), "--out", str(root / "img.json")]):
        res = run(main, args)
        assert res.exit_code == (1 if args[1].endswith("in") else 0), res.output  # 1: a batch with a failure
    marker = json.loads(next((root / "shards").glob("*.done.json")).read_text())
    assert [f["path"] for f in marker["failed"]] == ["broken.jpg"]  # inputs: relative to the folder given
    with safe_open(str(next((root / "shards").glob("*.safetensors"))), framework="pt") as f:
        assert json.loads(f.metadata()["sources"]) == ["sub/city.jpg"]
    # a rows checkpoint, its step checkpoints and train_result.json; an export of it
    train(TrainConfig(out=str(root / "rows"), data=(setup["data"],), space=setup["space"], base=setup["base"],
                      steps=2, batch_size=2, max_len=64, tasks=("text", "i2t"), lr=1e-2, progress=False))
    export_merged(root / "rows", root / "export")
    # a connector checkpoint (saved directly and by training)
    tower = {"name": "toy", "hidden_size": TINY_FEAT}
    local_llm = load_base(setup["base"])  # an LLM loaded from a local folder, by its absolute path
    save_connector(ContinuousVLM(local_llm, tiny_connector(llm_width=32), TINY_IDS), root / "connector", tower)
    assert read_manifest(root / "connector")["llm"]["name"] == "../setup/base"
    assert load_connector(root / "connector", load_base(setup["base"]), tower)  # still loads
    train_connector(ContinuousVLM(tiny_llm(), tiny_connector(resampler="mlp"), TINY_IDS), toy_captions(4, 0), [],
                    encode=byte_encode, config=ConnectorTrainConfig(steps=1, batch_size=2, progress=False),
                    out_dir=root / "connector_run", tower=tower)
    # a codebook and its fit report (broken.jpg is listed as a failure)
    res = run(main, ["codebook", "fit", "--space", "tiny", "--images", str(root / "in"), "--size", "4", "--out",
                     str(root / "codebook" / "codebook.safetensors"), "--held-out", "0"])
    assert res.exit_code == 0, res.output
    report = json.loads((root / "codebook" / "codebook.safetensors.report.json").read_text())
    assert [f["path"] for f in report["failed"]] == ["broken.jpg"]
    assert os.getcwd() == str(root)
    leaks = _leaks(root)
    assert not leaks, "\n".join(leaks)


def test_portable_refs_round_trip(tmp_path) -> None:
    from uti.io import portable_ref, resolve_ref

    (tmp_path / "models" / "base").mkdir(parents=True)
    (tmp_path / "ckpt" / "inner").mkdir(parents=True)
    ckpt = tmp_path / "ckpt"
    assert portable_ref("Qwen/Qwen3-0.6B", ckpt) == "Qwen/Qwen3-0.6B"  # a hub id (no such local folder) as given
    assert portable_ref(str(tmp_path / "models" / "base"), ckpt) == "../models/base"
    assert portable_ref(str(ckpt / "inner"), ckpt) == "./inner"  # never bare "inner", which reads as a hub id
    for ref in ("../models/base", "./inner"):
        assert Path(resolve_ref(ref, ckpt)).resolve() == (ckpt / ref).resolve()
    assert resolve_ref("Qwen/Qwen3-0.6B", ckpt) == "Qwen/Qwen3-0.6B"
    assert resolve_ref("/old/absolute/base", ckpt) == "/old/absolute/base"  # older artifacts still load
