"""The version comes from package metadata, in one place, and checkpoints record it."""

from __future__ import annotations

import json
from importlib import metadata

import connectors
import tokenlm
import uti
from uti import version as version_module


def test_packages_report_the_installed_distribution_version():
    installed = metadata.version("uti-toolkit")
    assert uti.__version__ == tokenlm.__version__ == connectors.__version__ == installed != "0+unknown"


def test_unknown_only_when_not_installed(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module, "version", missing)
    assert version_module.toolkit_version() == "0+unknown"


def test_connector_manifest_records_the_version(tmp_path):
    from connectors import ContinuousVLM
    from connectors.checkpoint import MANIFEST, save_connector
    from uti.testing import TINY_FEAT, TINY_IDS, tiny_connector, tiny_llm

    tower = {"name": "tiny-tower", "weights_hash": "ab" * 16, "hidden_size": TINY_FEAT, "feature_layer": -1}
    save_connector(ContinuousVLM(tiny_llm(), tiny_connector(), TINY_IDS), tmp_path, tower)
    assert json.loads((tmp_path / MANIFEST).read_text())["toolkit_version"] == metadata.version("uti-toolkit")
