"""Prompt, retrieve or fine-tune: four variants on the same evaluation rows.

Introduced in notebooks/05_fine_tune.ipynb. `variants(model)` gives the base model and a fine-tuned
model, each with and without retrieval, all in the short prompt shape for small models. `run()`
evaluates them with the runner on the test set's product-fact and comparison rows (facts never
used as training targets) plus the out-of-scope rows (declining), and `save()` / `load()` keep the
full comparison in `eval/finetune-comparison.json`, which the notebook shows beside a small live
re-run. Figures from the embedded 135M model on 2 CPU cores: offline proxy numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from labkit.config import REPO_ROOT
from labkit.finetune.data import EVAL_SET, SMALL_SHAPE
from labkit.flow import FlowConfig

RESULTS = REPO_ROOT / "eval" / "finetune-comparison.json"
CATEGORIES = ("product_fact", "comparison", "out_of_scope")
EVALUATORS = ["fact_recall", "checks", "format", "retrieval"]
METRICS = [
    "fact_recall.value",
    "checks.citations_valid",
    "format.value",
    "checks.declined",
    "retrieval.hit_at_5",
]


def variants(model: str) -> list[FlowConfig]:
    """base + prompt, base + RAG, fine-tuned, fine-tuned + RAG (the short prompt shape throughout)."""
    no_rag = {"retrieval_mode": "none"}
    return [
        SMALL_SHAPE.model_copy(update={"name": "base+prompt", **no_rag}),
        SMALL_SHAPE.model_copy(update={"name": "base+RAG"}),
        SMALL_SHAPE.model_copy(update={"name": "fine-tuned", "chat_model": model, **no_rag}),
        SMALL_SHAPE.model_copy(update={"name": "fine-tuned+RAG", "chat_model": model}),
    ]


def rows(categories: tuple[str, ...] = CATEGORIES, limit: int | None = None) -> list[dict[str, Any]]:
    """The evaluation rows of these categories, in file order (a `limit` keeps a few of each)."""
    out = [json.loads(line) for line in EVAL_SET.read_text(encoding="utf-8").splitlines()]
    out = [r for r in out if r.get("category") in categories]
    if limit is not None:
        per = max(1, limit // len(categories))
        out = [r for c in categories for r in [x for x in out if x["category"] == c][:per]]
    return out


def run(model: str, *, limit: int | None = None, out: str | Path | None = None, progress: bool = True) -> Any:
    """Evaluate the four variants on the same rows (paired differences against base + RAG)."""
    import labkit

    configs = variants(model)
    ordered = [configs[1], configs[0], configs[2], configs[3]]  # base + RAG first: the comparisons' reference
    return labkit.evaluate(
        rows(limit=limit), ordered, evaluators=EVALUATORS, out=out, progress=progress, concurrency=1
    )


def summarise(report: Any, model: str, adapter_sha256: str | None = None) -> dict[str, Any]:
    """The parts of an evaluation report the notebook shows: per-variant means with intervals,
    unmeasured counts, latency, and the paired differences to base + RAG."""
    table: dict[str, Any] = {}
    for name, run_ in report.runs.items():
        s = run_.summary
        table[name] = {
            "intervals": {m: s["intervals"].get(m) for m in METRICS},
            "unmeasured": {m: s["unmeasured"].get(m) for m in METRICS},
            "latency_s": s.get("latency_s"),
            "rows": s["rows"],
            "by_category": s.get("by_category"),
        }
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": model,
        "adapter_sha256": adapter_sha256,
        "rows": sorted({rid for r in report.runs.values() for rid in r.records}),
        "note": "embedded SmolLM2-135M (Q4_1) on 2 CPU cores: offline proxy numbers, not a cloud model's",
        "variants": table,
        "comparison": report.comparison,
    }


def save(summary: dict[str, Any], path: str | Path = RESULTS) -> Path:
    Path(path).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(path)


def load(path: str | Path = RESULTS) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def frame(summary: dict[str, Any]) -> Any:
    """Variants x metrics: 'mean [low, high]' strings, for display."""
    import pandas as pd

    cells: dict[str, dict[str, str]] = {}
    for name, v in summary["variants"].items():
        row = {}
        for m in METRICS:
            iv = v["intervals"].get(m)
            row[m] = "n/a" if not iv else f"{iv['mean']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}] n={iv['n']}"
        lat = v.get("latency_s") or {}
        row["latency p50 s"] = f"{lat.get('p50', float('nan')):.1f}"
        cells[name] = row
    return pd.DataFrame(cells).T
