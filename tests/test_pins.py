"""One source of truth for pins: requirements/*.txt. Everything else must point at it, not copy it."""

from __future__ import annotations

import importlib.metadata
import json
import re
import tomllib

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from labkit.config import REPO_ROOT

REQ = REPO_ROOT / "requirements"
LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)(\[[a-z,]+\])?(?P<op>==|~=)(?P<version>[0-9][0-9.]*)\s+#\s*\S")


def _requirement_lines(name: str) -> list[str]:
    return [line.strip() for line in (REQ / name).read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("name", ["base.txt", "llama.txt", "nodeps.txt"])
def test_every_requirement_is_pinned_with_a_reason(name: str) -> None:
    for line in _requirement_lines(name):
        assert LINE.match(line), f"{name}: '{line}' needs ==/~= to a minor version and a '# why' comment"


def test_torch_and_llama_are_exact() -> None:
    base = "\n".join(_requirement_lines("base.txt"))
    assert re.search(r"^torch==2\.13\.0\s", base, re.M), "torch must be exactly 2.13.0 (the CPU build)"
    llama = "\n".join(_requirement_lines("llama.txt"))
    assert re.search(r"^llama-cpp-python\[server\]==\d+\.\d+\.\d+\s", llama, re.M)


def test_pyproject_reads_requirements_and_pins_nothing_itself() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["dependencies"]
    assert "dependencies" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements/base.txt"]


def test_every_installer_goes_through_the_install_script() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "scripts/install.sh" in makefile
    devcontainer = json.loads((REPO_ROOT / ".devcontainer" / "devcontainer.json").read_text())
    assert "scripts/install.sh" in devcontainer["postCreateCommand"]
    assert "download.pytorch.org/whl/cpu" in devcontainer["containerEnv"]["PIP_EXTRA_INDEX_URL"]
    assert "download.pytorch.org" not in makefile  # this machine cannot reach that index
    env_yml = (REPO_ROOT / "environment.yml").read_text()
    assert "scripts/install.sh --here" in env_yml
    assert not re.search(r"^\s*-\s*[A-Za-z0-9_.\-]+\s*(==|~=|>=)", env_yml, re.M), \
        "environment.yml must not pin pip packages itself"
    python = re.search(r"python=(\d+\.\d+)", env_yml)
    assert python and tuple(map(int, python.group(1).split("."))) >= (3, 11)
    install = (REPO_ROOT / "scripts" / "install.sh").read_text()
    for name in ("requirements/base.txt", "requirements/llama.txt", "requirements/nodeps.txt", "--no-deps",
                 "GGML_NATIVE=OFF", "--only-binary llama-cpp-python"):
        assert name in install
    assert (REPO_ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_installed_environment_matches_the_pins() -> None:
    """Drift between the files and the active environment (e.g. a stale .venv) fails here."""
    problems = []
    for name in ("base.txt", "llama.txt", "nodeps.txt"):
        for line in _requirement_lines(name):
            m = LINE.match(line)
            assert m
            try:
                installed = importlib.metadata.version(m["name"])
            except importlib.metadata.PackageNotFoundError:
                problems.append(f"{m['name']} not installed")
                continue
            spec = SpecifierSet(f"{m['op']}{m['version']}")
            if Version(installed).public not in spec:
                problems.append(f"{m['name']} {installed} does not satisfy {m['op']}{m['version']}")
    assert problems == [], "run `make setup`: " + "; ".join(problems)
