"""Alerts: rules in a YAML file, evaluated over a time window.

Introduced in notebooks/08_monitor.ipynb; `labkit monitor alerts` lists fired and quiet rules and
exits with code 1 when any fired, so a scheduler (cron, a CI job, an Azure Function) can act.

A rule file (`monitor/alerts.yaml` is the kit's):

    window: 1h                   # default window of every rule
    rules:
      - name: slow answers
        metric: p95_latency_s    # one of METRICS
        op: ">="                 # >=, >, <=, <
        threshold: 20
        window: 1h               # optional, overrides the default
        min_requests: 5          # optional: with fewer requests in the window the rule says "no data"
        severity: warning        # optional, shown as is
        description: p95 of answered requests

A rule fires when `value op threshold` holds: a `>=` rule fires exactly at its threshold. A metric
that cannot be computed in the window (no requests, no scored samples) gives "no data", never a
fire and never a silent zero.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from labkit.config import REPO_ROOT
from labkit.monitor.source import Source, Window, load_scores, parse_duration, window

RULES_PATH = REPO_ROOT / "monitor" / "alerts.yaml"
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
METRICS = {
    "requests": "requests to the chat service",
    "errors": "requests that failed (5xx, or a stream that ended in an error)",
    "error_rate": "errors / requests",
    "rate_limited": "requests refused with 429",
    "blocked": "answers blocked by a guard",
    "blocked_rate": "blocked / requests",
    "p50_latency_s": "median latency of answered requests (s)",
    "p95_latency_s": "95th percentile latency of answered requests (s)",
    "cost_usd": "cost of priced model calls in the window (USD)",
    "cost_per_hour_usd": "cost of priced model calls per hour (USD)",
    "unpriced_tokens": "tokens of models without a price",
    "feedback_down_rate": "thumbs down / all thumbs",
    "groundedness_mean": "mean online groundedness (judge, 1-5) of samples in the window",
    "citations_valid_rate": "share of sampled answers with no invented product id",
    "declined_rate": "share of sampled answers that declined",
    "online_samples": "samples scored by online evaluation in the window",
}


class RuleError(ValueError):
    """An alert rule file that cannot be used (the message names the rule and the field)."""


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    op: str
    threshold: float
    window: str = "1h"
    min_requests: int = 0
    severity: str = "warning"
    description: str = ""

    def fires(self, value: float | None) -> bool:
        return value is not None and OPS[self.op](value, self.threshold)


def load_rules(path: str | Path | None = None) -> list[Rule]:
    """Rules from a YAML file, checked: unknown metrics, operators or windows are errors."""
    path = Path(path or RULES_PATH)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise RuleError(f"no alert rules at {path}") from None
    except yaml.YAMLError as exc:
        raise RuleError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise RuleError(f"{path}: expected a mapping with a list under 'rules'")
    if not data["rules"]:
        raise RuleError(f"{path}: 'rules' is empty")
    default_window = str(data.get("window", "1h"))
    rules = []
    for i, entry in enumerate(data["rules"]):
        where = f"{path.name} rule {i + 1}"
        if not isinstance(entry, dict):
            raise RuleError(f"{where}: expected a mapping")
        missing = [k for k in ("name", "metric", "op", "threshold") if k not in entry]
        if missing:
            raise RuleError(f"{where}: missing {', '.join(missing)}")
        where = f"{path.name} rule {entry['name']!r}"
        if entry["metric"] not in METRICS:
            raise RuleError(f"{where}: unknown metric {entry['metric']!r}; known: {', '.join(METRICS)}")
        if entry["op"] not in OPS:
            raise RuleError(f"{where}: op must be one of {', '.join(OPS)}")
        try:
            threshold = float(entry["threshold"])
            parse_duration(str(entry.get("window", default_window)))
            min_requests = int(entry.get("min_requests", 0))
        except (TypeError, ValueError) as exc:
            raise RuleError(f"{where}: threshold, window or min_requests cannot be read ({exc})") from None
        unknown = set(entry) - {
            "name",
            "metric",
            "op",
            "threshold",
            "window",
            "min_requests",
            "severity",
            "description",
        }
        if unknown:
            raise RuleError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        rules.append(
            Rule(
                name=str(entry["name"]),
                metric=entry["metric"],
                op=entry["op"],
                threshold=threshold,
                window=str(entry.get("window", default_window)),
                min_requests=min_requests,
                severity=str(entry.get("severity", "warning")),
                description=str(entry.get("description", "")),
            )
        )
    return rules


def online_metrics(source: Source, win: Window) -> dict[str, float | None]:
    """Online-evaluation metrics of the samples taken inside the window."""
    scores = load_scores(source)
    if len(scores) and "time" in scores:
        times = pd.to_datetime(scores["time"], utc=True, format="ISO8601")
        scores = scores[(times >= pd.Timestamp(win.start)) & (times < pd.Timestamp(win.end))]
    else:
        scores = scores.iloc[0:0]

    def mean(column: str) -> float | None:
        if column not in scores:
            return None
        values = pd.to_numeric(scores[column], errors="coerce").dropna()
        return float(values.mean()) if len(values) else None

    return {
        "groundedness_mean": mean("groundedness"),
        "citations_valid_rate": mean("citations_valid"),
        "declined_rate": mean("declined"),
        "online_samples": float(len(scores)),
    }


def metrics(source: Source, win: Window) -> dict[str, float | None]:
    """Every metric in METRICS for one window (None where it cannot be computed)."""
    from labkit.monitor import dashboard

    dash = dashboard.build(source, since=win.start, until=win.end)
    o = dash.overview
    values: dict[str, float | None] = {k: o.get(k) for k in METRICS if k in o}
    values["blocked_rate"] = o["blocked"] / o["requests"] if o["requests"] else None
    # no priced call in the window: the cost is unknown (no data), not 0 - unpriced models never read as free
    values["cost_usd"] = o["cost_usd"] if o["priced_calls"] else None
    values["cost_per_hour_usd"] = o["cost_per_hour_usd"] if o["priced_calls"] else None
    values.update(online_metrics(source, win))
    return values


def evaluate(
    rules: list[Rule] | str | Path | None = None, source: Source | None = None, now: dt.datetime | None = None
) -> pd.DataFrame:
    """One row per rule: its window, value, threshold and state (fired, quiet or no data)."""
    source = source or Source.current()
    rules = rules if isinstance(rules, list) else load_rules(rules)
    if not rules:
        raise RuleError("no alert rules to evaluate")
    now = now or dt.datetime.now(dt.UTC)
    cache: dict[str, dict[str, float | None]] = {}
    rows = []
    for rule in rules:
        if rule.window not in cache:
            cache[rule.window] = metrics(source, window(rule.window, now=now))
        values = cache[rule.window]
        value = values.get(rule.metric)
        requests = values.get("requests") or 0
        if value is None:
            state = "no data"
        elif requests < rule.min_requests:
            state = "no data"
        else:
            state = "fired" if rule.fires(value) else "quiet"
        rows.append(
            {
                "rule": rule.name,
                "metric": rule.metric,
                "window": rule.window,
                "value": value,
                "op": rule.op,
                "threshold": rule.threshold,
                "state": state,
                "severity": rule.severity,
                "requests": requests,
                "synthetic": source.synthetic,
                "description": rule.description,
            }
        )
    return pd.DataFrame(rows)


def alert_lines(table: pd.DataFrame) -> list[str]:
    lines = []
    for row in table.itertuples():
        value = "n/a" if row.value is None or pd.isna(row.value) else f"{row.value:.4g}"
        mark = {"fired": "FIRED", "quiet": "quiet", "no data": "no data"}[row.state]
        lines.append(
            f"{mark:8} {row.rule}: {row.metric} = {value} ({row.op} {row.threshold:g} fires; "
            f"window {row.window}, {int(row.requests)} requests)"
        )
    return lines
