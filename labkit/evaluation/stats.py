"""Confidence intervals, paired differences and the CI gate.

Introduced in notebooks/04_evaluate.ipynb.

- `mean_interval(values)`: the mean with a 95% interval - the Wilson score interval when every value
  is 0 or 1 (hit rates, pass/fail checks: it stays honest for small n and for 4 out of 4, where a
  bootstrap collapses to [1, 1]), otherwise `bootstrap_mean`.
- `bootstrap_mean(values)`: the mean with a percentile-bootstrap 95% interval (2,000 resamples, fixed
  seed, so the same values always give the same interval).
- `paired_difference(a, b)`: mean of `b - a` over the row ids measured in both, with its interval.
  Pairing removes the row-to-row spread (easy vs hard questions) that unpaired intervals carry.
- Gates use the pinned grammar `"<evaluator>.<key> <op> <value>"`. A `>=`/`>` gate passes only when
  the interval's *lower* bound clears the threshold (a `<=`/`<` gate: the *upper* bound), so a small
  or noisy run cannot pass by luck. A baseline gate is a non-inferiority check: it fails when the
  lower bound of the paired difference to the baseline is below `-max_drop`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
MIN_ROWS = 20  # below this many measured rows an interval is reported with a warning
METHOD = f"percentile bootstrap, {RESAMPLES} resamples, seed {SEED}"


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval over `n` measured values (None when n is 0)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    method: str = METHOD

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.mean is None:
            return "unmeasured (n=0)"
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def _finite(values: Iterable[Any]) -> np.ndarray:
    out = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return np.asarray(out, dtype=float)


def bootstrap_mean(values: Iterable[Any], *, resamples: int = RESAMPLES, level: float = LEVEL,
                   seed: int = SEED) -> Interval:
    """Mean and percentile-bootstrap interval. None/NaN values are unmeasured and left out (counted
    by the caller), never treated as 0."""
    data = _finite(values)
    n = len(data)
    if n == 0:
        return Interval(None, None, None, 0)
    mean = float(data.mean())
    if n == 1:
        return Interval(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(mean, float(low), float(high), n)


WILSON = "Wilson score interval"


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval for a proportion of `successes` out of `n` (n > 0)."""
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Iterable[Any], **kwargs: Any) -> Interval:
    """Mean and 95% interval of measured values: Wilson for 0/1 values, else the bootstrap."""
    data = _finite(values)
    if len(data) and np.isin(data, (0.0, 1.0)).all():
        low, high = wilson_interval(int(data.sum()), len(data))
        return Interval(float(data.mean()), low, high, len(data), WILSON)
    return bootstrap_mean(data, **kwargs)


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any], **kwargs: Any) -> Interval:
    """`b - a` over the ids where both have a value (row id -> value mappings)."""
    common = [k for k in a if k in b and _finite([a[k]]).size and _finite([b[k]]).size]
    return bootstrap_mean([float(b[k]) - float(a[k]) for k in common], **kwargs)


# ------------------------------------------------------------------------------------------------ gates
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_GATE_RE = re.compile(r"^\s*([A-Za-z_][\w]*\.[A-Za-z_][\w]*)\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")


class GateError(ValueError):
    """A gate expression that does not follow the grammar, or names a metric the run does not have."""


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def parse_gate(expr: str) -> Gate:
    """`"retrieval.hit_at_5 >= 0.8"` -> Gate. Raises GateError with the grammar on anything else."""
    match = _GATE_RE.match(expr or "")
    if not match:
        raise GateError(f"cannot read gate {expr!r}: write \"<evaluator>.<key> <op> <value>\" with op one of "
                        ">=, >, <=, < (for example \"retrieval.hit_at_5 >= 0.8\")")
    return Gate(match.group(1), match.group(2), float(match.group(3)))


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    bound: float | None  # the interval bound that was compared
    mean: float | None
    n: int
    message: str
    warning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_gate(gate: Gate, interval: Interval | None) -> GateResult:
    """Compare the conservative bound of `interval` with the gate's threshold."""
    if interval is None or interval.mean is None:
        return GateResult(str(gate), False, None, None, 0, f"FAIL {gate}: no measured rows")
    upper = gate.op in ("<=", "<")
    bound = interval.high if upper else interval.low
    assert bound is not None
    passed = _OPS[gate.op](bound, gate.threshold)
    which = "upper" if upper else "lower"
    message = (f"{'PASS' if passed else 'FAIL'} {gate}: mean {interval.mean:.3f}, {which} 95% bound "
               f"{bound:.3f} (n={interval.n})")
    warning = None
    if interval.n < MIN_ROWS:
        warning = f"{gate.metric}: only {interval.n} measured rows; the interval is wide and the gate weak"
    return GateResult(str(gate), passed, bound, interval.mean, interval.n, message, warning)


def check_baseline(metric: str, difference: Interval, max_drop: float) -> GateResult:
    """Non-inferiority: fail when the lower bound of (current - baseline) is below -max_drop."""
    name = f"{metric} vs baseline (max drop {max_drop:g})"
    if difference.mean is None:
        return GateResult(name, False, None, None, 0, f"FAIL {name}: no rows measured in both runs")
    assert difference.low is not None
    passed = difference.low >= -max_drop
    message = (f"{'PASS' if passed else 'FAIL'} {name}: paired difference {difference.mean:+.3f}, "
               f"lower 95% bound {difference.low:+.3f} (n={difference.n})")
    warning = None
    if difference.n < MIN_ROWS:
        warning = f"{metric}: only {difference.n} rows in common with the baseline; the comparison is weak"
    return GateResult(name, passed, difference.low, difference.mean, difference.n, message, warning)


__all__ = ["Gate", "GateError", "GateResult", "Interval", "MIN_ROWS", "bootstrap_mean", "check_baseline",
           "check_gate", "mean_interval", "paired_difference", "parse_gate", "wilson_interval"]
