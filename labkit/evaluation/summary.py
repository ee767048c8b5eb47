"""summary.json: means with intervals, unmeasured counts, categories, usage, cost and latency.

Part of the evaluation runner (labkit.evaluation.runner; notebooks/04_evaluate.ipynb).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from labkit.evaluation.judges import JUDGES
from labkit.evaluation.stats import MIN_ROWS, mean_interval

JUDGE_NOTE = ("Judge scores come from {model}. The embedded SmolLM2-135M judge agrees with human labels at "
              "chance level (Cohen's kappa about 0, data/eval/calibration/results.local.json): treat its "
              "scores as unmeasured for decisions and gate on the deterministic metrics; calibrate a "
              "cloud judge with `python -m labkit.evaluation.calibration` before trusting it.")


def metric_names(records: Iterable[dict[str, Any]]) -> list[str]:
    skip = {"outputs.response", "outputs.citations", "outputs.dropped_citations", "outputs.queries",
            "outputs.retrieved", "outputs.orders", "outputs.catalog_unavailable", "outputs.blocked"}
    names: dict[str, None] = {}
    for rec in records:
        for key in rec:
            if key.startswith("outputs.") and key not in skip:
                names[key.removeprefix("outputs.")] = None
    return list(names)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    idx = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
    return round(values[idx], 4)


def summarize(name: str, rows: list[dict[str, Any]], records: Mapping[str, dict[str, Any]], status: str,
              message: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """summary.json for one variant (rows outside `rows` are ignored; error rows count as unmeasured)."""
    selected = [records[r["id"]] for r in rows if r["id"] in records]
    ok = [rec for rec in selected if rec.get("status") == "ok"]
    metrics = metric_names(ok)
    intervals = {m: mean_interval([rec.get(f"outputs.{m}") for rec in ok]) for m in metrics}
    unmeasured = {m: len(selected) - intervals[m].n for m in metrics}
    warnings = []
    small = [m for m, iv in intervals.items() if 0 < iv.n < MIN_ROWS]
    if small:
        warnings.append(f"fewer than {MIN_ROWS} measured rows for {', '.join(small)}: intervals are wide; "
                        "use more rows before trusting a gate")
    if any(rec.get("outputs.catalog_unavailable") for rec in ok):
        warnings.append("some answers were 'catalog unavailable': the search service was down for them")
    categories: dict[str, dict[str, Any]] = {}
    for cat in sorted({str(rec.get("category")) for rec in ok}):
        members = [rec for rec in ok if str(rec.get("category")) == cat]
        means = {}
        for m in metrics:
            vals = [rec[f"outputs.{m}"] for rec in members if rec.get(f"outputs.{m}") is not None]
            means[m] = round(sum(vals) / len(vals), 4) if vals else None
        categories[cat] = {"rows": len(members), "metrics": means}
    usage = {"input_tokens": sum(rec.get("usage", {}).get("input_tokens", 0) for rec in ok),
             "output_tokens": sum(rec.get("usage", {}).get("output_tokens", 0) for rec in ok),
             "judge_input_tokens": sum(rec.get("judge_usage", {}).get("input_tokens", 0) for rec in ok),
             "judge_output_tokens": sum(rec.get("judge_usage", {}).get("output_tokens", 0) for rec in ok),
             "estimated": any(rec.get("usage", {}).get("estimated") for rec in ok)}
    costs = [rec.get("cost_usd") for rec in ok]
    latencies = [float(rec["latency_s"]) for rec in ok if rec.get("latency_s") is not None]
    judged = [m for m in metrics if m.split(".")[0] in JUDGES]
    judge_model = manifest.get("model", {}).get("judge")
    return {
        "variant": name,
        "flow_version": manifest.get("flow_version"),
        "status": status,
        "message": message,
        "metrics": {m: (round(iv.mean, 4) if iv.mean is not None else None) for m, iv in intervals.items()},
        "intervals": {m: iv.as_dict() for m, iv in intervals.items()},
        "unmeasured": unmeasured,
        "rows": {"selected": len(rows), "ok": len(ok),
                 "error": sum(1 for rec in selected if rec.get("status") == "error"),
                 "pending": len(rows) - len(selected)},
        "errors": {rec["id"]: rec.get("error") for rec in selected if rec.get("status") == "error"},
        "by_category": categories,
        "usage": usage,
        "cost_usd": None if any(c is None for c in costs) else round(sum(costs), 6),
        "cost_note": ("some rows used an unpriced model: no total" if any(c is None for c in costs)
                      else "estimated from data/prices.json and the responses' token usage"),
        "retry_cost_estimate_usd": round(sum(float(rec.get("retry_cost_estimate_usd") or 0)
                                             for rec in selected), 6),
        "latency_s": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                      "mean": round(sum(latencies) / len(latencies), 4) if latencies else None},
        "judge_note": JUDGE_NOTE.format(model=judge_model) if judged else None,
        "warnings": warnings,
        "gates": [],
    }
