"""Static notebook lint: names, skeleton, kernel, parameters cell, outputs policy, no secrets.

Committed-outputs policy (docs/notebooks.md): committed notebooks carry no outputs and no execution
counts, except cells tagged `nbval-check-output`, which keep the reference output nbval compares.
"""

from __future__ import annotations

import ast
import re

import nbformat
import pytest

from labkit.workshop import NAME_RE, NOTEBOOKS_DIR, notebooks

ALL = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CHECK_TAG = "nbval-check-output"
SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_-]{20,}"),                                  # OpenAI keys
    re.compile(r"(?i)(api[_-]?key|secret|password)\s*[=:]\s*['\"][^'\"\s]{12,}['\"]"),
    re.compile(r"\b[A-Za-z0-9]{52}\b"),                                   # Azure AI Search / Cosmos style
    re.compile(r"\b[a-f0-9]{32}\b"),                                        # Azure OpenAI style
]
FORBIDDEN_CODE = [
    (re.compile(r"\binput\("), "input()"),
    (re.compile(r"^\s*[%!]\s*pip\b|\bpip install\b", re.M), "a pip install cell"),
    (re.compile(r"os\._exit|do_shutdown|%reset\b|kernel\.shutdown|kernel\.restart", re.M),
     "a restart cell"),
]


def test_there_are_notebooks_and_names_are_snake_case() -> None:
    assert ALL, "no notebooks"
    assert [p.name for p in ALL if not NAME_RE.match(p.name)] == []
    numbers = [p.name[:2] for p in notebooks()]
    assert len(numbers) == len(set(numbers)), "two notebooks share a number"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_lint(path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    cells = nb.cells
    code = [c for c in cells if c.cell_type == "code"]
    assert any(c.source.strip() and not all(line.lstrip().startswith("#") for line in c.source.splitlines()
                                            if line.strip()) for c in code), "no executable code cell"

    # skeleton: title, what you will learn, prerequisites ... summary, exercises, next notebook
    first = cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# ")
    assert re.search(r"(?i)you will learn", first.source) and re.search(r"(?i)prerequisites", first.source)
    tail = "\n".join(c.source for c in cells[-3:] if c.cell_type == "markdown")
    for heading in ("Summary", "Exercises", "Next"):
        assert re.search(rf"(?im)^#+ .*{heading}", tail), f"missing a '{heading}' section at the end"

    # exactly one parameters cell, of literals only
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "need exactly one code cell tagged 'parameters'"
    for node in ast.parse(params[0].source).body:
        assert isinstance(node, ast.Assign | ast.AnnAssign), "parameters cell holds assignments only"
        assert node.value is not None
        ast.literal_eval(node.value)  # raises if not a literal

    for i, cell in enumerate(code):
        for pattern, what in FORBIDDEN_CODE:
            assert not pattern.search(cell.source), f"cell {i} contains {what}"
        tags = cell.metadata.get("tags", [])
        if CHECK_TAG in tags:
            assert cell.outputs, f"cell {i} is tagged {CHECK_TAG} but has no reference output"
        else:
            assert not cell.outputs and cell.execution_count is None, \
                f"cell {i} has committed outputs (policy: strip outputs except {CHECK_TAG} cells)"
        for output in cell.outputs:
            assert output.get("output_type") != "error", f"cell {i} has an error output"

    text = path.read_text()
    for pattern in SECRET_PATTERNS:
        match = pattern.search(text)
        assert match is None, f"possible secret in {path.name}: {match.group(0)[:6]}..."


def test_parameters_cells_are_found_by_papermill() -> None:
    import papermill as pm

    for path in notebooks():
        assert pm.inspect_notebook(str(path)), f"papermill finds no parameters in {path.name}"
