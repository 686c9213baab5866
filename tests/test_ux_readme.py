"""The README's newcomer path names only files that ship, documents the record schema the code enforces, and
`tokenlm train --help` says which options are required."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
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
    assert ("--data TEXT JSONL or CSV record file (see README: Training records) or uti-encode shard folder "
            "(repeatable). [required unless --config") in out
    assert "(rows checkpoint, checkpoints/, train_result.json). [required unless --config has out:]" in out
    assert "[default: 2048]" in out


@pytest.mark.slow
def test_readme_codebook_to_space_block_runs_and_prints_what_it_shows(tmp_path):
    """The README's codebook -> space walkthrough, run as written from a folder holding the repo's tests/ and
    token_spaces/: every command succeeds and prints the lines the README shows after `# ` (hashes and the
    health numbers may differ on another CPU: the codebook is a float mean, see tests/test_tiny_assets.py)."""
    section = README[README.index("### From images to a codebook to a space"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    for name in ("tests", "token_spaces"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    printed = [line for line in run.stdout.splitlines() if not re.fullmatch(r"[\d ]+", line)]  # not the ID list
    shown = [line[2:] for line in block.splitlines() if line.startswith("# ")]

    def loose(line: str) -> str:
        line = re.sub(r"[0-9a-f]{32}|[0-9a-f]{12}\)", "#", line)
        return re.sub(r"(util|ppl|dead) [\d.]+", r"\1 #", line)

    assert [loose(line) for line in printed] == [loose(line) for line in shown]
