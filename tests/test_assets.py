"""The asset rule: typed locations inside the space folder or hub ids, and one pin check for every consumer."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from uti.cli import main
from uti.errors import HashMismatchError, MissingAssetError, SpaceError
from uti.hashing import hash_json
from uti.space import TokenSpace

TINY = Path(__file__).resolve().parent.parent / "token_spaces" / "tiny"


def make_space(folder: Path, assets: dict | None = None, abi_edit=None, files=("codebook.safetensors",
                                                                              "tokenizer.json")) -> Path:
    """A copy of the tiny space in `folder` with the given files, `assets` entries and abi edit (rehashed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copy(TINY / name, folder / name)
    doc = json.loads((TINY / "token_space.json").read_text())
    doc["assets"].update(assets or {})
    if abi_edit is not None:
        abi_edit(doc["abi"])
        doc["hash"] = hash_json(doc["abi"])
    (folder / "token_space.json").write_text(json.dumps(doc))
    return folder / "token_space.json"


def _perturb_codebook(path: Path) -> None:
    tensors = load_file(str(path))
    tensors["embed"][0, 0] += 1.0
    save_file(tensors, str(path), metadata={"format": "uti-codebook-1", "metric": "euclidean"})


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("entry, words", [
    ("/etc/passwd", "must be relative"),
    ({"path": "/etc/passwd"}, "must be relative"),
    ("../tiny/codebook.safetensors", "without '..'"),
    ({"path": "sub/../../x.safetensors"}, "without '..'"),
    ("~/codebook.safetensors", "must be relative"),
])
def test_paths_outside_the_folder_are_refused(tmp_path, entry, words):
    sp = TokenSpace.from_path(make_space(tmp_path / "s", {"codebook": entry}))
    with pytest.raises(SpaceError, match=words):
        sp.asset("codebook")
    with pytest.raises(SpaceError, match=words):
        sp.require_assets("codebook")


def test_symlink_out_of_the_folder_is_refused_and_inside_is_fine(tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(TINY / "codebook.safetensors", outside)
    path = make_space(tmp_path / "s", {"codebook": "cb.safetensors", "tokenizer": "tok/tokenizer.json"})
    (tmp_path / "s" / "cb.safetensors").symlink_to(outside)
    (tmp_path / "s" / "tok").mkdir()
    (tmp_path / "s" / "tok" / "tokenizer.json").symlink_to(tmp_path / "s" / "tokenizer.json")
    sp = TokenSpace.from_path(path)
    with pytest.raises(SpaceError, match="leads out of the space folder"):
        sp.asset("codebook")
    assert sp.check_asset("tokenizer") == tmp_path / "s" / "tok" / "tokenizer.json"


@pytest.mark.parametrize("entry", ["codebook.safetensors", {"path": "codebook.safetensors"}, "models/cb.safetensors",
                                   "encodec"])
def test_a_missing_local_path_is_an_error_never_a_hub_id(tmp_path, entry):
    sp = TokenSpace.from_path(make_space(tmp_path / "s", {"codebook": entry}, files=("tokenizer.json",)))
    with pytest.raises(MissingAssetError, match="does not exist in the space folder"):
        sp.asset("codebook")
    assert sp.missing_assets(["codebook"]) == ["codebook"]


@pytest.mark.parametrize("entry", [{"hub": "google/siglip2-so400m-patch14-384", "revision": "abc123"},
                                   "hub:google/siglip2-so400m-patch14-384@abc123"])
def test_hub_ids_with_revision_and_the_download_hint(tmp_path, entry):
    sp = TokenSpace.from_path(make_space(tmp_path / "s", {"vision_tower": entry}))
    resolved = sp.resolve_asset("vision_tower")
    assert resolved.path_or_id == "google/siglip2-so400m-patch14-384" and resolved.revision == "abc123"
    with pytest.raises(MissingAssetError, match=r"hf download google/siglip2-so400m-patch14-384 --revision abc123"):
        sp.require_assets("vision_tower")


def test_plain_owner_name_string_is_a_hub_id_and_hint_names_hf_download(tmp_path):
    sp = TokenSpace.from_path(make_space(tmp_path / "s", {"base_model": "Qwen/Qwen3-0.6B"}))
    assert sp.asset("base_model") == "Qwen/Qwen3-0.6B"
    with pytest.raises(MissingAssetError, match="hf download Qwen/Qwen3-0.6B") as err:
        sp.require_assets("base_model")
    assert "huggingface-cli" not in str(err.value)


def test_unpinned_asset_is_refused_unless_allowed(tmp_path, caplog):
    def unpin(abi):
        abi["image"]["codebook"]["hash"] = None

    sp = TokenSpace.from_path(make_space(tmp_path / "s", abi_edit=unpin))
    with pytest.raises(HashMismatchError, match="--allow-unpinned"):
        sp.check_asset("codebook")
    with caplog.at_level(logging.WARNING, logger="uti.assets"):
        assert sp.check_asset("codebook", allow_unpinned=True) == tmp_path / "s" / "codebook.safetensors"
    assert "unchecked" in caplog.text
    sp.allow_unpinned = True  # what --allow-unpinned sets
    assert sp.check_asset("codebook") == tmp_path / "s" / "codebook.safetensors"


def test_a_changed_asset_is_refused_by_every_consumer(tmp_path):
    from tokenlm.model import code_vectors
    from uti.modalities.image import ImageModality
    from uti.text import TextCodec

    sp = TokenSpace.from_path(make_space(tmp_path / "s"))
    assert code_vectors(sp)["image"].shape[0] == sp.abi["image"]["codebook_size"]
    _perturb_codebook(tmp_path / "s" / "codebook.safetensors")
    with pytest.raises(HashMismatchError, match="abi.image.codebook.hash"):
        code_vectors(sp)  # row initialisation (init="codebook") checked no hash before
    with pytest.raises(HashMismatchError, match="abi.image.codebook.hash"):
        ImageModality(sp).decode_block([])  # what `uti decode` of an image runs
    tok = json.loads((tmp_path / "s" / "tokenizer.json").read_text())
    tok["model"]["vocab"]["zzzz"] = len(tok["model"]["vocab"]) + 5
    (tmp_path / "s" / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(HashMismatchError, match="abi.text.tokenizer_hash"):
        TextCodec.from_space(sp)


def test_verify_checks_present_assets(tmp_path):
    path = make_space(tmp_path / "s")
    res = CliRunner().invoke(main, ["space", "verify", str(path), "--json"])
    result = json.loads(res.stdout)
    assert res.exit_code == 0 and result["ok"], res.output
    assert result["assets"] == {"tokenizer": "ok", "vision_tower": "not checked (missing)", "codebook": "ok",
                                "audio_codec": "not checked (missing)"}
    _perturb_codebook(tmp_path / "s" / "codebook.safetensors")
    res = CliRunner().invoke(main, ["space", "verify", str(path)])
    assert res.exit_code == 1 and res.stdout.startswith("BAD ") and "asset codebook" in res.stdout
    assert len(res.stdout.splitlines()) == 1


def test_verify_reports_a_forbidden_asset_path(tmp_path):
    path = make_space(tmp_path / "s", {"codebook": "/etc/passwd"})
    res = CliRunner().invoke(main, ["space", "verify", str(path)])
    assert res.exit_code == 1 and "must be relative" in res.stdout


def test_names_resolve_only_through_the_registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_space(tmp_path / "mine")
    for name in ("../../../../etc/passwd", "/etc/passwd", "mine", "mine/token_space.json", "", "tiny\n"):
        with pytest.raises(SpaceError):
            TokenSpace.named(name)
    assert TokenSpace.named("tiny").name == "tiny"
    assert TokenSpace.from_path("mine").path == Path("mine") / "token_space.json"
    assert TokenSpace.load("mine").name == "tiny"  # a CLI argument: not a registry name, but an existing path
    with pytest.raises(SpaceError, match="does not exist"):
        TokenSpace.from_path("nothing-here")


def test_build_refuses_absolute_asset_paths(tmp_path):
    from uti.build import build_space_file

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"name": "mine", "text": {"tokenizer": "tok", "base_vocab_size": 600},
                               "assets": {"tokenizer": str(TINY / "tokenizer.json")}}))
    with pytest.raises(SpaceError, match="must be relative"):
        build_space_file(cfg, tmp_path / "out")


def test_in_memory_space_uses_given_paths(tmp_path):
    tiny = TokenSpace.load("tiny")
    sp = TokenSpace.from_abi(tiny.abi, name="mem", assets={"codebook": str(TINY / "codebook.safetensors")})
    assert sp.check_asset("codebook") == TINY / "codebook.safetensors"
    assert torch.equal(torch.tensor(sp.ranges["image"].as_list()), torch.tensor(tiny.ranges["image"].as_list()))


def test_save_writes_no_absolute_paths(tmp_path):
    tiny = TokenSpace.load("tiny")
    shutil.copy(TINY / "codebook.safetensors", tmp_path / "codebook.safetensors")
    sp = TokenSpace.from_abi(tiny.abi, name="mem", assets={"codebook": str(tmp_path / "codebook.safetensors"),
                                                           "vision_tower": "google/siglip2-so400m-patch14-384"})
    sp.save(tmp_path / "token_space.json")
    saved = json.loads((tmp_path / "token_space.json").read_text())["assets"]
    assert saved == {"codebook": "codebook.safetensors", "vision_tower": "google/siglip2-so400m-patch14-384"}
    assert TokenSpace.from_path(tmp_path).check_asset("codebook") == tmp_path / "codebook.safetensors"
    outside = TokenSpace.from_abi(tiny.abi, name="mem", assets={"codebook": str(TINY / "codebook.safetensors")})
    with pytest.raises(SpaceError, match="outside"):
        outside.save(tmp_path / "other" / "token_space.json")
