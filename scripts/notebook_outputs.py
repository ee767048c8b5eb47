"""Enforce the committed-outputs policy (docs/notebooks.md).

    python scripts/notebook_outputs.py strip notebooks/*.ipynb
        remove outputs and execution counts, except in cells tagged `nbval-check-output`
    python scripts/notebook_outputs.py refresh notebooks/00_setup.ipynb build/notebooks/00_setup.ipynb
        copy the reference outputs of `nbval-check-output` cells from an executed copy

Cell metadata (tags such as `parameters`) is never touched.
"""

from __future__ import annotations

import sys

import nbformat

CHECK_TAG = "nbval-check-output"


def _checked(cell: dict) -> bool:
    return cell.get("cell_type") == "code" and CHECK_TAG in cell.get("metadata", {}).get("tags", [])


def strip(path: str) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and not _checked(cell):
            cell.outputs = []
            cell.execution_count = None
    nbformat.write(nb, path)


def refresh(source: str, executed: str) -> None:
    nb = nbformat.read(source, as_version=4)
    done = nbformat.read(executed, as_version=4)
    by_id = {c.get("id"): c for c in done.cells}
    for cell in nb.cells:
        if _checked(cell):
            ran = by_id.get(cell.get("id"))
            if ran is None:
                raise SystemExit(f"{executed} has no cell {cell.get('id')}: execute the current source first")
            cell.outputs = ran.outputs
            cell.execution_count = ran.execution_count or 1
    nbformat.write(nb, source)
    strip(source)


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["help"]
    if command == "strip":
        for p in args:
            strip(p)
    elif command == "refresh" and len(args) == 2:
        refresh(*args)
    else:
        print(__doc__)
        sys.exit(2)
