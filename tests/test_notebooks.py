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


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_executes(path) -> None:
    run = run_notebook(path, out_dir=OUT_DIR, cell_timeout=CELL_TIMEOUT_S)
    if run.status != "ok":
        pytest.fail(f"{path.name} failed after {run.seconds:.0f} s at {run.error}\n"
                    f"executed copy: {run.output}", pytrace=False)
