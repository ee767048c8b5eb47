"""The evaluator protocol: `name`, `version`, `evaluate(row, result) -> Score | Unmeasured`.

Introduced in notebooks/04_evaluate.ipynb. A `Score` carries a value, an optional label and a
reason; `Unmeasured` carries why no value could be given (unparseable judge output, a metric that
does not apply to the row). Unmeasured results are counted, never dropped and never averaged as 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Score:
    value: float
    label: str | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    measured = True


@dataclass(frozen=True)
class Unmeasured:
    why: str
    raw: str | None = None  # e.g. the judge's unparseable output, kept for inspection
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the judge call's usage

    measured = False


Outcome = Score | Unmeasured


@runtime_checkable
class Evaluator(Protocol):
    name: str
    version: str

    def evaluate(self, row: dict[str, Any], result: Any) -> Outcome | dict[str, Outcome]: ...


def answer_of(result: Any) -> str:
    """The answer text from a ChatResult, a dict, or a plain string."""
    if isinstance(result, str):
        return result
    if isinstance(result, dict):
        return str(result.get("answer") or "")
    return str(getattr(result, "answer", "") or "")


def field_of(result: Any, name: str, default: Any = None) -> Any:
    if isinstance(result, dict):
        return result.get(name, default)
    return getattr(result, name, default)
