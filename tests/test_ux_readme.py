"""The README's newcomer path names only files that ship, documents the record schema the code enforces, and
`tokenlm train --help` says which options are required."""

from __future__ import annotations

import re

from click.testing import CliRunner

from conftest import REPO

README = (REPO / "README.md").read_text()


def test_readme_paths_under_tests_assets_and_scripts_exist():
    paths = set(re.findall(r"(?:tests/assets|scripts|token_spaces/tiny)/[\w./-]+\w", README))
    assert "tests/assets/panoramas" in paths and "scripts/make_captioned_panoramas.py" in paths
    assert [p for p in sorted(paths) if not (REPO / p).exists()] == []


def test_readme_codebook_fit_runs_on_shipped_images_and_builds_a_space():
    fit = re.search(r"^uti codebook fit .*$", README, re.M).group(0)
    assert "--images tests/assets/panoramas" in fit
    assert re.search(r"^uti space build myspace/space.yaml", README, re.M)


def test_readme_documents_every_record_key():
    from tokenlm.data import RECORD_KEYS

    section = README[README.index("**Training records**"):README.index("**Generation defaults.**")]
    assert all(f'"{k}"' in section or f"`{k}`" in section for k in RECORD_KEYS)
    assert "tokenlm train --data" in README


def test_train_help_marks_required_options():
    from tokenlm.cli import main

    out = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert "--data TEXT JSONL record file or uti-encode shard folder (repeatable). [required unless --config" in out
    assert "(rows checkpoint, checkpoints/, train_result.json). [required unless --config has out:]" in out
    assert "[default: 2048]" in out
