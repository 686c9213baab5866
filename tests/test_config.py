"""Typed configs: unknown keys listed, nested dataclasses, file parsing errors."""

from __future__ import annotations

import pytest

from uti.build import SpaceConfig
from uti.config import from_dict, read_config_file
from uti.errors import ConfigError


def test_nested_config_and_unknown_keys():
    cfg = from_dict(SpaceConfig, {"name": "x", "text": {"tokenizer": "t"}})
    assert cfg.text.tokenizer == "t" and cfg.pad_to_multiple == 128
    with pytest.raises(ConfigError, match=r"SpaceConfig.text: unknown key\(s\) vocab; valid keys: base_vocab_size"):
        from_dict(SpaceConfig, {"name": "x", "text": {"tokenizer": "t", "vocab": 3}})
    with pytest.raises(ConfigError, match="missing required key"):
        from_dict(SpaceConfig, {"name": "x"})
    with pytest.raises(ConfigError, match="pad_to_multiple must be positive"):
        from_dict(SpaceConfig, {"name": "x", "text": {"tokenizer": "t"}, "pad_to_multiple": 0})
    with pytest.raises(ConfigError, match="assets: unknown"):
        from_dict(SpaceConfig, {"name": "x", "text": {"tokenizer": "t"}, "assets": {"weights": "w"}})


def test_read_config_file_errors(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(bad)
    lst = tmp_path / "c.json"
    lst.write_text("[1]")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_config_file(lst)
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(tmp_path / "missing.json")
