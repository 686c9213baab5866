"""Token spaces by name: the entry-point registry, and a built wheel that runs the main job outside the repo."""

from __future__ import annotations

import json
import os
import shutil
import site
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from uti.errors import SpaceError
from uti.space import TokenSpace, known_spaces
from uti.space_registry import ENTRY_POINT_GROUP, resolve_space_name, space_roots

REAL = REPO / "token_spaces" / "qwen3-siglip2-encodec" / "token_space.json"  # assets by hub id: loads anywhere


def _fake_distribution(root: Path, package: str, spaces: dict[str, Path], entry: str | None = None,
                       name: str | None = None) -> Path:
    """A distribution on sys.path (dist-info + package) whose entry point `name` registers `package`'s spaces."""
    site_dir = root / "site"
    info = site_dir / f"{package}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name or package} = {entry or package}\n")
    (site_dir / package).mkdir()
    (site_dir / package / "__init__.py").write_text("")
    for name, src in spaces.items():
        (site_dir / package / name).mkdir()
        shutil.copy(src, site_dir / package / name / "token_space.json")
    return site_dir


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv("UTI_SPACES_DIR", raising=False)


def test_a_package_adds_spaces_through_its_entry_point(tmp_path, monkeypatch):
    site_dir = _fake_distribution(tmp_path, "fake_spaces", {"extra": REAL})
    assert "extra" not in known_spaces()
    monkeypatch.syspath_prepend(str(site_dir))
    assert {"tiny", "extra"} <= set(known_spaces())
    space = TokenSpace.load("extra")
    assert space.path == site_dir / "fake_spaces" / "extra" / "token_space.json"
    assert space.hash == TokenSpace.from_file(REAL).hash
    assert [r.provider for r in space_roots()][-1] == "fake_spaces"


def test_unknown_names_list_the_known_ones(tmp_path):
    with pytest.raises(SpaceError, match=r"unknown token space 'nope'; known spaces: .*tiny"):
        TokenSpace.load("nope")
    for bad in ["..", ".hidden", "a/b", ""]:  # never a path through the registry
        with pytest.raises(SpaceError, match="unknown token space"):
            resolve_space_name(bad)


def test_a_name_from_two_packages_is_ambiguous(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_fake_distribution(tmp_path, "other_spaces", {"tiny": REAL})))
    with pytest.raises(SpaceError, match=r"'tiny' is shipped by more than one package: uti-toolkit .*other_spaces"):
        TokenSpace.load("tiny")


def test_another_installed_copy_of_the_toolkit_does_not_shadow_the_running_one(tmp_path, monkeypatch):
    """A source tree run beside an installed toolkit (PYTHONPATH, a second checkout): the installed copy's
    `uti-toolkit` entry point names its own `token_spaces`; the running code's folder is the one used."""
    site_dir = _fake_distribution(tmp_path, "old_copy_spaces", {"tiny": REAL}, name="uti-toolkit")
    monkeypatch.syspath_prepend(str(site_dir))
    assert resolve_space_name("tiny") == REPO / "token_spaces" / "tiny" / "token_space.json"
    assert all(root.path != site_dir / "old_copy_spaces" for root in space_roots())


def test_a_broken_entry_point_warns_and_the_others_still_work(tmp_path, monkeypatch):
    site_dir = _fake_distribution(tmp_path, "broken_spaces", {}, entry="no_such_package_xyz")
    monkeypatch.syspath_prepend(str(site_dir))
    with pytest.warns(UserWarning, match="broken_spaces.*not an importable package"):
        assert "tiny" in known_spaces()


def test_env_override_replaces_the_registry(tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    shutil.copy(REAL, tmp_path / "mine" / "token_space.json")
    monkeypatch.setenv("UTI_SPACES_DIR", str(tmp_path))
    assert known_spaces() == ["mine"]


# --- the wheel -------------------------------------------------------------------------------------------

SOURCES = ["pyproject.toml", "README.md", "LICENSE", "uti", "tokenlm", "connectors", "token_spaces"]


def _build_wheel(tmp_path: Path) -> Path:
    """Build the wheel offline from a copy of the sources (the build leaves build/ and egg-info behind)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("uti_toolkit-*.whl")
    return wheel


def _venv_on_top_of_this_one(path: Path) -> Path:
    """A fresh venv that also sees this interpreter's site-packages (torch & co., no network), not its .pth files.

    `venv --system-site-packages` would expose the base interpreter's packages, not this venv's, so the
    fresh venv gets a .pth listing them; their .pth files (an editable install of the toolkit) are not run.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                             capture_output=True, text=True).stdout.strip()
    Path(purelib, "_outer_site_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.mark.slow
def test_wheel_ships_the_spaces_and_runs_the_main_job_elsewhere(tmp_path):
    wheel = _build_wheel(tmp_path)
    shipped = {f"token_spaces/{p.relative_to(REPO / 'token_spaces')}" for p in (REPO / "token_spaces").rglob("*")
               if p.suffix in {".json", ".safetensors", ".yaml"}}
    assert "token_spaces/tiny/codebook.safetensors" in shipped and shipped <= set(zipfile.ZipFile(wheel).namelist())

    python = _venv_on_top_of_this_one(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "UTI_SPACES_DIR"}}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(REPO / "tests" / "assets" / "panoramas" / "courtyard.jpg", work / "x.jpg")
    where = subprocess.run([python, "-c", "import uti, uti.space as s; print(uti.__file__, uti.__version__, s.known_spaces())"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert str(tmp_path / "venv") in where and f" {version} " in where and "'tiny'" in where
    proc = subprocess.run([tmp_path / "venv" / "bin" / "uti", "encode", "x.jpg", "--json"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["token_space"]["name"] == "tiny" and doc["token_space"]["hash"] == TokenSpace.load("tiny").hash
