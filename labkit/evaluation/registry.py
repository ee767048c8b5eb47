"""Evaluators by name, and one row's outcomes as flat `<evaluator>.<key>` entries.

Introduced in notebooks/04_evaluate.ipynb. The flat keys are the ones the gate grammar uses
(`groundedness.score`, `retrieval.hit_at_5`, `checks.declined`, ...).
"""

from __future__ import annotations

from typing import Any

from labkit.evaluation.base import Evaluator, Score, Unmeasured
from labkit.evaluation.deterministic import (
    ChecksEvaluator,
    FactRecallEvaluator,
    FormatEvaluator,
    RetrievalEvaluator,
    SimilarityEvaluator,
)
from labkit.evaluation.judges import JUDGES, JudgeEvaluator

DETERMINISTIC = ("retrieval", "fact_recall", "checks", "format", "similarity")
ALL = (*DETERMINISTIC, *JUDGES)


def evaluators(names: list[str] | tuple[str, ...] | None = None, judge_model: str | None = None,
               k: int = 5) -> list[Evaluator]:
    """Evaluator objects for the given names (default: all of them)."""
    out: list[Evaluator] = []
    for name in names or ALL:
        if name == "retrieval":
            out.append(RetrievalEvaluator(k=k))
        elif name == "fact_recall":
            out.append(FactRecallEvaluator())
        elif name == "checks":
            out.append(ChecksEvaluator())
        elif name == "format":
            out.append(FormatEvaluator())
        elif name == "similarity":
            out.append(SimilarityEvaluator())
        elif name in JUDGES:
            out.append(JudgeEvaluator(name, model=judge_model))
        else:
            raise ValueError(f"unknown evaluator {name!r}; choose from {', '.join(ALL)}")
    return out


def outcome_json(outcome: Score | Unmeasured) -> dict[str, Any]:
    """One outcome as JSON; `details` (a judge call's model and usage) only when there are any."""
    details = {"details": outcome.details} if outcome.details else {}
    if isinstance(outcome, Score):
        return {"value": outcome.value, "label": outcome.label, "reason": outcome.reason, **details}
    return {"value": None, "unmeasured": outcome.why, "raw": outcome.raw, **details}


def evaluate_row(row: dict[str, Any], result: Any, chosen: list[Evaluator]) -> dict[str, dict[str, Any]]:
    """`{"groundedness.score": {...}, "retrieval.hit_at_5": {...}, ...}` for one row."""
    flat: dict[str, dict[str, Any]] = {}
    for ev in chosen:
        outcome = ev.evaluate(row, result)
        if isinstance(outcome, dict):
            for key, value in outcome.items():
                flat[f"{ev.name}.{key}"] = outcome_json(value)
        else:
            key = "score" if ev.name in JUDGES else "value"
            flat[f"{ev.name}.{key}"] = outcome_json(outcome)
    return flat


def versions(chosen: list[Evaluator]) -> dict[str, str]:
    """Evaluator name -> version, for manifests."""
    return {ev.name: ev.version for ev in chosen}


__all__ = ["ALL", "DETERMINISTIC", "evaluators", "evaluate_row", "outcome_json", "versions"]
