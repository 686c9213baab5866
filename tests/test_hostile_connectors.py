"""`connectors train` on hostile inputs: a damaged or forged --init-from checkpoint, missing files. Each is
refused with one `error:` line (exit 2, no traceback) under the 2 GB address-space cap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hostile import assert_one_line_error, run_cli
from train_fixtures import edit_manifest

STEPS = ["--steps", "1", "--batch-size", "2", "--device", "cpu", "--dim", "16", "--tokens", "4"]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, Path]:
    """(a manifest of two panoramas, a valid stage-vision checkpoint on the tiny space)."""
    from connectors.cli import main

    root = tmp_path_factory.mktemp("hostile_connectors")
    rows = []
    for i in range(2):
        small = np.random.default_rng(i).integers(0, 256, (4, 8, 3)).astype(np.uint8)
        Image.fromarray(np.kron(small, np.ones((16, 16, 1), np.uint8))).save(root / f"p{i}.png")
        rows.append({"image": f"p{i}.png", "instruction": "", "caption": "red"})
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(main, ["train", "--stage", "vision", "--vision-trainable-blocks", "1", "--data", str(data),
                                    "--out", str(root / "vision"), *STEPS])
    assert res.exit_code == 0, res.output
    return data, root / "vision"


def _schema_2(d: Path) -> None:
    edit_manifest(d / "connector.json", rehash=True, schema=2)


def _edited(d: Path) -> None:
    edit_manifest(d / "connector.json", rehash=False, vision_trainable_blocks=0)


def _other_tower(d: Path) -> None:
    man = json.loads((d / "connector.json").read_text())
    from uti.hashing import hash_json

    tower = {**man["tower"], "weights_hash": "0" * 32}
    edit_manifest(d / "connector.json", rehash=True, tower=tower, tower_hash=hash_json(tower))


def _deeper_tower(d: Path) -> None:
    edit_manifest(d / "connector.json", rehash=True, vision__depth=7)


def _truncated_vision(d: Path) -> None:
    man = json.loads((d / "connector.json").read_text())
    f = d / man["files"]["vision"]["name"]
    f.write_bytes(f.read_bytes()[:-64])


def _not_json(d: Path) -> None:
    (d / "connector.json").write_text("{not json")


def _no_manifest(d: Path) -> None:
    (d / "connector.json").unlink()


def _huge_shape(d: Path) -> None:
    man = json.loads((d / "connector.json").read_text())
    key = next(iter(man["vision_tensors"]))
    edit_manifest(d / "connector.json", rehash=True, **{f"vision_tensors__{key}__shape": [1 << 30, 1 << 10]})


@pytest.mark.slow
@pytest.mark.parametrize("damage, contains", [
    (_schema_2, "schema 2 is not 3"),
    (_edited, "edited or damaged"),
    (_other_tower, "differing in weights_hash"),
    (_deeper_tower, "the given tower has 2"),
    (_truncated_vision, "vision."),
    (_not_json, "not valid JSON"),
    (_no_manifest, "not found"),
    (_huge_shape, "tuned tower layers do not fit"),
])
def test_damaged_init_from_is_one_line(tmp_path, good, damage, contains) -> None:
    data, ckpt = good
    bad = tmp_path / "ckpt"
    shutil.copytree(ckpt, bad)
    damage(bad)
    proc = run_cli("connectors", "train", "--stage", "resampler", "--data", data, "--out", tmp_path / "out",
                   "--init-from", bad, *STEPS)
    assert_one_line_error(proc, contains)


def test_missing_data_file_is_one_line(tmp_path) -> None:
    proc = run_cli("connectors", "train", "--stage", "resampler", "--data", tmp_path / "nope.jsonl",
                   "--out", tmp_path / "out", *STEPS)
    assert_one_line_error(proc, "nope.jsonl")  # the wording is read_manifests's (connectors.data)
