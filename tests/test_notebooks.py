"""Execute every notebook in order with papermill (kernel python3, cwd notebooks/, LABKIT_CI=1).

Executed copies go to build/test-notebooks/. A failing notebook fails with its failing cell's error.
Services the notebooks start in the repo's LABKIT_HOME are stopped afterwards unless they were
already running before the tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from labkit.config import REPO_ROOT
from labkit.workshop import notebooks, run_notebook
from tests.notebook_checks import problems_in

pytestmark = pytest.mark.notebooks
OUT_DIR = REPO_ROOT / "build" / "test-notebooks"
CELL_TIMEOUT_S = 600


@pytest.fixture(scope="module", autouse=True)
def ci_mode_and_cleanup() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_CI", "1")  # kernels inherit the environment: small workloads
        mp.setenv("TQDM_DISABLE", "1")
        from labkit.services import status, stop

        before = {r["name"] for r in status() if r["state"] == "running"}
        yield
        started = [r["name"] for r in status() if r["state"] == "running" and r["name"] not in before]
        if started:
            stop(started)


@pytest.mark.timeout(2 * CELL_TIMEOUT_S)  # a whole notebook: longer than pytest-timeout's default
@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_executes(path) -> None:
    run = run_notebook(path, out_dir=OUT_DIR, cell_timeout=CELL_TIMEOUT_S)
    if run.status != "ok":
        pytest.fail(f"{path.name} failed after {run.seconds:.0f} s at {run.error}\n"
                    f"executed copy: {run.output}", pytrace=False)
    # what must hold whatever the model said (a gate fails, a dropped citation shows, pictures render)
    assert problems_in(run.output) == [], run.output


def test_setup_notebook_stops_with_one_line_without_azure_variables(tmp_path, monkeypatch) -> None:
    """LABKIT_BACKEND=azure and no Azure variables: notebook 00 stops at setup with one line."""
    import nbformat

    for name in list(__import__("os").environ):
        if name.startswith(("AZURE_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LABKIT_BACKEND", "azure")
    monkeypatch.setenv("LABKIT_ENV_FILE", "none")
    path = next(p for p in notebooks() if p.name.startswith("00_"))
    run = run_notebook(path, out_dir=tmp_path, cell_timeout=120)
    assert run.status == "failed" and "AZURE_OPENAI_ENDPOINT" in run.error
    errors = [o for c in nbformat.read(run.output, as_version=4).cells for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert len(errors) == 1 and len(errors[0]["traceback"]) == 1
    assert errors[0]["traceback"][0].startswith("ConfigError: missing configuration")
