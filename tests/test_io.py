"""Atomic writes: every output, JSON or safetensors, gets the permissions of a new file under the umask."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from uti.io import atomic_save_safetensors, atomic_write_json, atomic_write_text


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_follow_the_umask(tmp_path, umask):
    atomic_save_safetensors(tmp_path / "a.safetensors", {"x": torch.zeros(3)}, {"format": "test"})
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_text(tmp_path / "a.txt", "x")
    want = 0o666 & ~umask
    assert {p.name: _mode(p) for p in tmp_path.iterdir()} == dict.fromkeys(["a.safetensors", "a.json", "a.txt"], want)


def test_overwrite_keeps_following_the_umask(tmp_path, umask):
    path = tmp_path / "a.safetensors"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    atomic_save_safetensors(path, {"x": torch.ones(2)})
    assert _mode(path) == 0o666 & ~umask and not list(tmp_path.glob(".*.tmp"))
