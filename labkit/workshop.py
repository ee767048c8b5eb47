"""Run every notebook headlessly with papermill: `make workshop` and tests/test_notebooks.py.

Introduced in notebooks/00_setup.ipynb (README quick start). Executed copies go to
`build/notebooks/`, never over the sources; each cell has a timeout; the table at the end
gives notebook, status and seconds, and the exit code is non-zero if any notebook failed.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.config import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BUILD_DIR = REPO_ROOT / "build" / "notebooks"
NAME_RE = re.compile(r"^\d{2}_[a-z0-9_]+\.ipynb$")
CELL_TIMEOUT_S = 900


@dataclass
class NotebookRun:
    name: str
    status: str  # "ok" | "failed"
    seconds: float
    output: Path
    error: str = ""


def notebooks(only: list[str] | None = None, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The workshop's notebooks in order (NN_snake_case.ipynb), optionally filtered by substring."""
    found = sorted(p for p in folder.glob("*.ipynb") if NAME_RE.match(p.name))
    if only:
        found = [p for p in found if any(o in p.name for o in only)]
    return found


def _ipc_kernel_manager(folder: str) -> type:
    """A kernel manager whose kernel talks over IPC files instead of five TCP ports.

    jupyter_client picks free ports, releases them and lets the kernel bind them; the notebooks'
    own local HTTP connections draw from the same ephemeral range, so now and then a port is taken
    in between: the kernel's heartbeat dies ("Address already in use") and the run hung after its
    last cell. Files in a private temporary folder cannot collide."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(Path(folder) / "kernel")

    return IPCKernelManager


def run_notebook(path: Path, out_dir: Path = BUILD_DIR, cell_timeout: int = CELL_TIMEOUT_S,
                 parameters: dict[str, Any] | None = None) -> NotebookRun:
    """Execute one notebook with papermill (kernel python3, cwd = its folder)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / path.name
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="labkit-kernel-") as ipc_folder:
            pm.execute_notebook(
                str(path), str(output), parameters=parameters or {}, kernel_name="python3",
                cwd=str(path.parent), execution_timeout=cell_timeout, progress_bar=False,
                request_save_on_cell_execute=True, kernel_manager_class=_ipc_kernel_manager(ipc_folder),
            )
    except PapermillExecutionError as exc:
        return NotebookRun(path.name, "failed", time.perf_counter() - start, output,
                           f"cell {exc.cell_index}: {exc.ename}: {exc.evalue}")
    except Exception as exc:  # kernel died, timeout, bad notebook: report it, run the others
        return NotebookRun(path.name, "failed", time.perf_counter() - start, output,
                           f"{type(exc).__name__}: {exc}")
    return NotebookRun(path.name, "ok", time.perf_counter() - start, output)


def print_table(runs: list[NotebookRun]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("notebook", "status", "seconds", "error", title="Workshop run")
    for run in runs:
        colour = "green" if run.status == "ok" else "red"
        table.add_row(run.name, f"[{colour}]{run.status}[/{colour}]", f"{run.seconds:.1f}", run.error[:120])
    Console().print(table)


def main(only: list[str] | None = None) -> int:
    from labkit.doctor import setup

    report = setup()
    if not report.ok:
        return 1
    paths = notebooks(only)
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 1
    runs = []
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        runs.append(run_notebook(path))
    print_table(runs)
    ci = os.environ.get("LABKIT_CI", "0")
    print(f"executed copies: {BUILD_DIR.relative_to(REPO_ROOT)}/  (LABKIT_CI={ci})")
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or None))
