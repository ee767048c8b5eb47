"""The results file and what a row keeps: `results.jsonl`, one fsynced line per finished row.

Part of the evaluation runner (labkit.evaluation.runner; notebooks/04_evaluate.ipynb).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.evaluation.base import answer_of, field_of


class ResultsFile:
    """`results.jsonl`: append-only, one fsynced line per finished row; tolerant of a torn last line."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return rows
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write: that row did not finish
            if isinstance(record, dict) and "id" in record:
                earlier = rows.get(record["id"])
                if earlier is not None and earlier.get("status") == "ok" and record.get("status") != "ok":
                    continue  # two writers raced: keep the finished row
                rows[record["id"]] = record
        return rows

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the file atomically (drops error rows that are about to be retried, and torn lines)."""
        tmp = self.path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def result_record(result: Any) -> dict[str, Any]:
    """The parts of a target's result worth keeping per row (ids, not document texts)."""
    context = field_of(result, "context") or {}
    documents = context.get("documents", []) if isinstance(context, dict) else []
    return {
        "outputs.response": answer_of(result),
        "outputs.citations": list(field_of(result, "citations") or []),
        "outputs.dropped_citations": list(field_of(result, "dropped_citations") or []),
        "outputs.queries": list(field_of(result, "queries") or []),
        "outputs.retrieved": [{"id": d.get("id"), "product_id": d.get("product_id"),
                               "score": round(float(d.get("score") or 0), 4)} for d in documents],
        "outputs.orders": len(context.get("orders", [])) if isinstance(context, dict) else 0,
        "outputs.catalog_unavailable": bool(field_of(result, "catalog_unavailable") or False),
        "outputs.blocked": bool(field_of(result, "blocked") or False),
        "request_id": field_of(result, "request_id") or None,
        "model": field_of(result, "model") or None,
        "flow_version": field_of(result, "flow_version") or None,
        "timings": dict(field_of(result, "timings") or {}),
    }


def usage_of(result: Any) -> dict[str, Any]:
    usage = field_of(result, "usage") or {}
    return {"input_tokens": int(usage.get("input_tokens") or 0),
            "output_tokens": int(usage.get("output_tokens") or 0),
            "estimated": bool(usage.get("estimated") or False)}


@dataclass
class VariantRun:
    """One variant's run: its folder, rows and summary (`rows_frame()` and `worst()` for inspection)."""

    name: str
    out: Path
    summary: dict[str, Any]
    manifest: dict[str, Any]
    records: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)
    limiter_history: list[tuple[float, int]] = field(repr=False, default_factory=list)

    @property
    def status(self) -> str:
        return str(self.summary["status"])

    def values(self, metric: str) -> dict[str, float | None]:
        """Row id -> value of one metric (None where unmeasured or the row errored)."""
        return {rid: rec.get(f"outputs.{metric}") for rid, rec in self.records.items()}

    def rows_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(list(self.records.values()))

    def metrics_frame(self) -> Any:
        """One line per metric: mean, interval, measured and unmeasured counts."""
        import pandas as pd

        lines = []
        for metric, iv in self.summary["intervals"].items():
            lines.append({"metric": metric, "mean": iv["mean"], "low": iv["low"], "high": iv["high"],
                          "n": iv["n"], "unmeasured": self.summary["unmeasured"].get(metric, 0)})
        return pd.DataFrame(lines).set_index("metric") if lines else pd.DataFrame()

    def worst(self, metric: str, n: int = 5) -> Any:
        """The n rows with the lowest value of `metric`, with answers and the evaluators' reasons."""
        import pandas as pd

        scored = [rec for rec in self.records.values() if rec.get(f"outputs.{metric}") is not None]
        scored.sort(key=lambda r: (r[f"outputs.{metric}"], r["id"]))
        prefix = metric.split(".")[0]
        lines = []
        for rec in scored[:n]:
            reasons = {k: v for k, v in (rec.get("reasons") or {}).items() if k.startswith(prefix)}
            lines.append({"id": rec["id"], "category": rec.get("category"), metric: rec[f"outputs.{metric}"],
                          "query": rec.get("inputs.query"), "response": rec.get("outputs.response"),
                          "reason": "; ".join(f"{v}" for v in reasons.values())})
        return pd.DataFrame(lines)


def write_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
