"""Adding a modality touches no CLI code: a toy depth codec that reads `.depth` files (JSON, an (H, W) grid of
metres), defined and registered only in this test, goes through `uti encode FILE --json`, `uti decode` and
batch `uti encode DIR --out SHARDS` with `uti/cli.py`, `uti/batch.py` and `uti/document.py` unchanged: the
CLI lists inputs by the registry's suffixes, picks the codec that accepts a file, validates the document's
meta with the codec's own `meta_type` and writes decoded output through the codec's `decode_to_file`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from uti import ModalityCodec, Tokenizer, register_codec
from uti.batch import read_shards
from uti.cli import main
from uti.codecs import unregister_codec
from uti.errors import InputError, TokenRangeError
from uti.io import atomic_write_json
from uti.space import TokenSpace

from toy_space import build_toy_space


@dataclass(frozen=True)
class DepthMeta:
    """What a depth document records: the input grid's size."""

    height: int
    width: int


class FileDepthCodec(ModalityCodec):
    """A G x G grid of mean depths, each quantised to one of K levels in [0, max_depth)."""

    meta_type = DepthMeta

    @classmethod
    def build_section(cls, section_cfg: dict[str, Any], assets: dict[str, Any]) -> dict[str, Any]:
        return {"levels": int(section_cfg.get("levels", 8)), "grid": int(section_cfg.get("grid", 2)),
                "max_depth": float(section_cfg.get("max_depth", 10.0))}

    @classmethod
    def range_sizes(cls, section: dict[str, Any]) -> list[tuple[str, int]]:
        return [("depth", section["levels"])]

    @classmethod
    def file_suffixes(cls) -> tuple[str, ...]:
        return (".depth",)

    @classmethod
    def accepts(cls, item: Any) -> bool:
        return isinstance(item, Path) and item.suffix.lower() == ".depth"

    def encode(self, item: Path) -> list[int]:
        return self.encode_with_meta(item)[0]

    def encode_with_meta(self, item: Path) -> tuple[list[int], dict[str, Any]]:
        try:
            values = np.array(json.loads(item.read_text())["values"], dtype=np.float32)  # (H, W)
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{item}: not a depth file (JSON with a \"values\" grid)") from None
        g, k, top = self.section["grid"], self.section["levels"], self.section["max_depth"]
        cells = [c.mean() for rows in np.array_split(values, g, 0) for c in np.array_split(rows, g, 1)]
        codes = np.clip(np.floor(np.array(cells) / top * k), 0, k - 1).astype(int)  # (G*G,)
        start, end = (self.space.special_id(n) for n in self.markers())
        ids = [start, *self.space.ranges["depth"].to_global(codes.tolist()), end]
        return ids, {"height": int(values.shape[0]), "width": int(values.shape[1])}

    def decode_block(self, ids: list[int]) -> np.ndarray:
        g, k, top = self.section["grid"], self.section["levels"], self.section["max_depth"]
        start, end = (self.space.special_id(n) for n in self.markers())
        if len(ids) != g * g + 2 or ids[0] != start or ids[-1] != end or not all(i in self.space.ranges["depth"]
                                                                                  for i in ids[1:-1]):
            raise TokenRangeError(f"a depth block is {start}, {g * g} depth codes, {end}")
        codes = np.array(self.space.ranges["depth"].to_local(ids[1:-1]))
        return ((codes + 0.5) * top / k).reshape(g, g)  # level centres, (G, G)

    def decode_to_file(self, ids: list[int], out: str | None, meta: DepthMeta, where: str = "document") -> dict:
        grid = self.decode_block(ids).tolist()
        if out:
            atomic_write_json(out, {"values": grid})
        return {"modality": "depth", "grid": grid, "height": meta.height, **({"out": str(out)} if out else {})}


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> TokenSpace:
    register_codec("depth")(FileDepthCodec)
    yield TokenSpace.load(build_toy_space(tmp_path_factory.mktemp("toy")))
    unregister_codec("depth")


def _depth_file(path: Path, seed: int) -> Path:
    path.write_text(json.dumps({"values": np.random.default_rng(seed).uniform(0, 10, (6, 8)).round(3).tolist()}))
    return path


def test_encode_file_and_decode_through_the_cli(space, tmp_path):
    src = _depth_file(tmp_path / "room.depth", 0)
    res = CliRunner().invoke(main, ["encode", str(src), "--space", str(space.path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    ids = Tokenizer.from_space(space).encode(src)
    assert doc == {"token_space": {"name": "toy", "hash": space.hash}, "modality": "depth", "ids": ids,
                   "meta": {"height": 6, "width": 8}}
    path = tmp_path / "room.json"
    path.write_text(res.stdout)
    out = tmp_path / "decoded.json"
    res = CliRunner().invoke(main, ["decode", str(path), "--space", str(space.path), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    grid = json.loads(out.read_text())["values"]
    assert json.loads(res.stdout) == {"modality": "depth", "grid": grid, "height": 6, "out": str(out)}
    values = np.array(json.loads(src.read_text())["values"])
    assert np.abs(np.array(grid) - [[values[:3, :4].mean(), values[:3, 4:].mean()],
                                    [values[3:, :4].mean(), values[3:, 4:].mean()]]).max() <= 10 / 8 / 2 + 1e-6


def test_the_codecs_meta_schema_guards_its_documents(space, tmp_path):
    src = _depth_file(tmp_path / "room.depth", 1)
    doc = json.loads(CliRunner().invoke(main, ["encode", str(src), "--space", str(space.path), "--json"]).stdout)
    doc["meta"]["height"] = "6"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    res = CliRunner().invoke(main, ["decode", str(path), "--space", str(space.path)])
    assert res.exit_code == 2 and "meta.height must be an integer, got str '6'" in res.stderr
    doc["meta"]["height"], doc["ids"] = 6, doc["ids"][:-1]
    path.write_text(json.dumps(doc))
    res = CliRunner().invoke(main, ["decode", str(path), "--space", str(space.path)])
    assert res.exit_code == 2 and f"{path}: a depth block is" in res.stderr


def test_a_file_no_codec_reads_is_one_line(space, tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("hello")
    res = CliRunner().invoke(main, ["encode", str(src), "--space", str(space.path)])
    assert res.exit_code == 2 and res.stderr == f"error: {src}: unsupported file type '.txt'; space 'toy' reads .depth\n"


def test_batch_lists_the_codecs_suffixes(space, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        _depth_file(src / f"d{k}.depth", k)
    (src / "notes.txt").write_text("not an input")
    (src / "bad.depth").write_text("{")
    res = CliRunner().invoke(main, ["encode", str(src), "--space", str(space.path), "--out", str(tmp_path / "out"),
                                    "--json"])
    assert res.exit_code == 1, res.output
    summary = json.loads(res.stdout)
    assert summary["ok"] == 3 and [Path(f["path"]).name for f in summary["failed"]] == ["bad.depth"]
    tok = Tokenizer.from_space(space)
    (shard,) = read_shards(tmp_path / "out", space)
    assert [Path(s).name for s in shard.sources] == ["d0.depth", "d1.depth", "d2.depth"]
    assert [shard.item(j).tolist() for j in range(3)] == [tok.encode(src / f"d{k}.depth") for k in range(3)]
    assert shard.meta == [{"height": 6, "width": 8}] * 3 and shard.unpinned == []
