"""Rows and sampling: the labelled data a run evaluates.

Part of the evaluation runner (labkit.evaluation.runner; notebooks/04_evaluate.ipynb).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from labkit.jsonl import numbered_objects

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / "data" / "eval" / "testset.jsonl"
SAMPLES = ("first", "stratified")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; each needs a unique `id` and a `query`. Errors name the line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no data file at {path}")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, row in numbered_objects(path):
        missing = [k for k in ("id", "query") if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            raise ValueError(f"{path.name}:{number}: missing {', '.join(missing)}")
        if row["id"] in seen:
            raise ValueError(f"{path.name}:{number}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        rows.append(row)
    if not rows:
        raise ValueError(f"{path.name}: no rows")
    return rows


def select_rows(rows: list[dict[str, Any]], limit: int | None, sample: str = "first") -> list[dict[str, Any]]:
    """`limit` rows: the first ones, or `stratified` - one from each `category` in turn (categories in
    order of first appearance, rows in file order), returned in file order. Deterministic."""
    if sample not in SAMPLES:
        raise ValueError(f"sample must be one of {', '.join(SAMPLES)}, not {sample!r}")
    if limit is None or limit >= len(rows):
        return list(rows)
    limit = max(0, int(limit))
    if sample == "first":
        return rows[:limit]
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row.get("category") or ""), []).append(i)
    chosen: list[int] = []
    queues = [list(reversed(g)) for g in groups.values()]
    while len(chosen) < limit:
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop())
    return [rows[i] for i in sorted(chosen)]


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def resolve_data_path(data: str | Path | None) -> Path:
    """The data file: the default test set, or a path (relative to the repo when not found here)."""
    path = Path(data) if data is not None else DEFAULT_DATA
    if not path.is_absolute() and not path.exists() and (REPO / path).exists():
        path = REPO / path  # `labkit eval --data data/eval/testset.jsonl` from any folder
    return path
