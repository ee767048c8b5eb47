"""Reading JSON Lines files with errors that name the file and line.

Used by `labkit.bulk` (notebook 01), the evaluation test set loaders and the evaluation runner
(notebook 04).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def numbered_objects(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file.

    A line that is not JSON, or not a JSON object, raises ValueError naming `<file>:<line>`.
    """
    path = Path(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path.name}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path.name}:{number}: each line must be a JSON object")
            rows.append((number, row))
    return rows


def read_json_file(path: str | Path, what: str) -> Any:
    """One JSON document from a file; a missing file or invalid JSON raises with the path and `what` it
    should have been ("baseline file", "tokens file"): FileNotFoundError or ValueError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg})") from None
