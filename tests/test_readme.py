"""The README's first two commands are the ones CI runs, in a fresh virtual environment, at the pinned versions."""

from __future__ import annotations

import os
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def _pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    assert all(len(p) == 2 for p in pairs), "constraints.txt holds only exact pins name==version"
    return {canonicalize_name(name): version for name, version in pairs}


def test_ci_runs_exactly_the_readme_commands_in_a_fresh_venv():
    ci = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    fresh, *commands = ci
    assert commands == _readme_commands() and len(commands) == 2
    assert re.search(r'rm -rf "\$venv"; python3 -m venv "\$venv"; \. "\$venv/bin/activate"$', fresh)
    assert "torch==2.13.0" in commands[0] and "pytest" in commands[1]


def test_readme_installs_the_pinned_versions():
    install = _readme_commands()[0]
    assert install.count("pip install") == install.count("-c constraints.txt") == 2


def test_constraints_pin_every_requirement_inside_the_pyproject_ranges():
    text = (REPO / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    dev = re.search(r"^dev = \[(.*?)\]", text, re.M).group(1)
    reqs = [Requirement(r) for r in re.findall(r'"([^"]+)"', deps + dev)]
    pins = _pins()
    assert len(reqs) > 15 and "torch" in pins
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt; run scripts/refresh_constraints.sh"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"
    torch_pin = re.search(r"torch==([0-9.]+)", _readme_commands()[0]).group(1)
    assert pins["torch"] == torch_pin


def test_the_lock_has_a_refresh_command():
    script = REPO / "scripts" / "refresh_constraints.sh"
    assert os.access(script, os.X_OK) and "scripts/refresh_constraints.sh" in (REPO / "README.md").read_text()
    assert "python3 -m venv" in script.read_text() and "pip freeze" in script.read_text()


def test_the_python_example_runs_and_prints_what_it_says(monkeypatch, capsys):
    """The README's opening Python example (uti.Tokenizer on text, a panorama and audio) runs as written."""
    code = re.search(r"## Python\n\n```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(REPO)
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["text a courtyard at noon", "image 155", "audio 1042"]
