"""The budget guard's arithmetic: what rows cost, what failed attempts may have cost, what is priced.

Part of the evaluation runner (labkit.evaluation.runner; notebooks/04_evaluate.ipynb). The budget
itself is a setting (`LABKIT_BUDGET_USD`, labkit.config) or `evaluate(budget_usd=...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from labkit.config import ConfigError, Settings


class BudgetError(ConfigError):
    """A budget is set but the run's cost cannot be estimated (an unpriced model)."""


SPEND_LEDGER = "spend.json"


def spent(record: Mapping[str, Any]) -> float:
    """What a row cost: its measured cost plus the estimate for attempts that were retried."""
    return float(record.get("cost_usd") or 0) + float(record.get("retry_cost_estimate_usd") or 0)


def charge_failed_attempts(record: dict[str, Any], estimate: float) -> float:
    """Charge one row's estimate for each failed attempt that may have been billed (a 429 or a
    timeout after earlier calls of the row); returns the amount, also kept on the record."""
    billed = int(record.get("billable_attempts") or 0)
    if billed <= 0 or estimate <= 0:
        return 0.0
    record["retry_cost_estimate_usd"] = round(billed * estimate, 6)
    return billed * estimate


def resolve_budget(budget_usd: float | None, settings: Settings) -> float | None:
    """The budget of a run: the argument, else the `LABKIT_BUDGET_USD` setting (validated there)."""
    import math

    budget = budget_usd if budget_usd is not None else settings.labkit_budget_usd
    if budget is not None and not (math.isfinite(budget) and budget >= 0):
        raise ConfigError("LABKIT_BUDGET_USD must be a finite, non-negative number of US dollars",
                          ["LABKIT_BUDGET_USD"])
    return budget


def check_priced(budget: float, price_model: str | None, row_estimate: float | None, judges: Sequence[str],
                 cost_of: Callable[[str | None, Mapping[str, Any]], float | None]) -> None:
    """With a budget, every model the run pays for must have a price, or spend cannot be estimated."""
    if row_estimate is None:
        raise BudgetError(f"a budget is set (LABKIT_BUDGET_USD={budget:g}) but the model "
                          f"{price_model!r} has no price in data/prices.json, so spend cannot "
                          "be estimated; add its price or unset the budget")
    for judge in judges:
        if cost_of(judge, {"input_tokens": 1, "output_tokens": 1}) is None:
            raise BudgetError(f"a budget is set but the judge model {judge!r} has no price in "
                              "data/prices.json; add its price or unset the budget")
