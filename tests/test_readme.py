"""The README's first two commands are the ones CI runs, and the CI verifies every shipped space."""

from __future__ import annotations

import re

from conftest import REPO


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_commands():
    ci = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert ci == _readme_commands() and len(ci) == 2
    assert "torch==2.13.0" in ci[0] and "pytest" in ci[1]
