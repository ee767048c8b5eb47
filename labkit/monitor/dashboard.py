"""Dashboards: requests, errors, tokens, cost, latency per step, customers, flow versions, feedback, guards.

Introduced in notebooks/08_monitor.ipynb; `labkit monitor summary` prints one, `labkit monitor report`
writes it as HTML (labkit.monitor.report).

Definitions (the tests recompute them from generated traffic):
- requests: lines of the service's request log in the window (one per `POST /api/chat`);
- errors: status 500 or above, or a stream that ended with an error event; `rate_limited`: status 429;
  `client_errors`: the other 4xx except 499; `abandoned`: 499 (the client left before the end);
- latency: the service's end-to-end time of answered requests (status 200); per flow step, span
  durations from the trace store; percentiles are numpy's default (linear interpolation);
- tokens and cost: every model call in the trace store (the flow, judges, bulk runs, the playground:
  `labkit.purpose` says which), priced from `data/prices.json` by base model. A model without a price is
  shown as unpriced with its tokens, never as 0; local models cost 0.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from labkit import costs
from labkit.monitor.source import Source, Window, load_feedback, load_requests, load_spans, window

STEP_ORDER = [
    "labkit.request",
    "contoso_chat",
    "guard input",
    "customer_lookup",
    "generate_queries",
    "chat (queries)",
    "embeddings",
    "retrieval",
    "guard documents",
    "chat (answer)",
    "guard output",
]


@dataclass
class Dashboard:
    """Everything one monitoring view shows, as numbers and tables (plots: `plot(dashboard)`)."""

    window: Window
    synthetic: bool
    overview: dict[str, Any]
    latency: pd.DataFrame
    by_flow_version: pd.DataFrame
    by_customer: pd.DataFrame
    tokens: pd.DataFrame
    guards: pd.DataFrame
    hourly: pd.DataFrame
    coverage: str
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "SYNTHETIC traffic (labkit.monitor.simulate)" if self.synthetic else "recorded traffic"


def percentile(values: Any, q: float) -> float | None:
    """The q-th percentile (numpy's linear interpolation), None for no values."""
    array = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").dropna(), dtype=float)
    return float(np.percentile(array, q)) if array.size else None


def _error_mask(requests: pd.DataFrame) -> pd.Series:
    status = requests["status"]
    streamed_error = (status == 200) & requests["error_code"].notna()
    return (status >= 500) | streamed_error


def _answered(requests: pd.DataFrame) -> pd.DataFrame:
    """Requests that got an answer: status 200 without an error event (a stream can end in one)."""
    if requests.empty:
        return requests
    return requests[(requests["status"] == 200) & ~_error_mask(requests)]


def _step(name: str, parent: str | None, purpose: str | None) -> str:
    for operation in ("chat", "embeddings", "retrieval"):
        if name.startswith(operation + " "):
            if operation == "chat":
                if parent == "generate_queries":
                    return "chat (queries)"
                if parent == "contoso_chat":
                    return "chat (answer)"
                return f"chat ({purpose or 'direct'})"
            if operation == "embeddings" and parent is None:
                return f"embeddings ({purpose or 'direct'})"
            return operation
    return name


def steps(spans: pd.DataFrame) -> pd.Series:
    """Each span's step name: flow steps by name, model calls by where they were made."""
    if spans.empty:
        return pd.Series([], dtype=object)
    parents = spans.set_index("span_id")["name"]
    parent_names = spans["parent_id"].map(parents)
    return pd.Series(
        [
            _step(n, p if isinstance(p, str) else None, u if isinstance(u, str) else None)
            for n, p, u in zip(spans["name"], parent_names, spans["purpose"], strict=True)
        ],
        index=spans.index,
    )


def latency_table(spans: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    """Count, p50 and p95 in ms per step; the first row is the service's end-to-end latency."""
    rows = []
    answered = _answered(requests)
    if len(answered):
        rows.append(
            {
                "step": "service request (end to end)",
                "count": len(answered),
                "p50_ms": percentile(answered["latency_s"] * 1000, 50),
                "p95_ms": percentile(answered["latency_s"] * 1000, 95),
            }
        )
    if not spans.empty:
        # FastAPI's own fine-grained spans (dependencies, serialization) are left out; its route spans
        # ("POST /api/chat") stay: the server-side time of a request
        spans = spans[~spans["name"].str.startswith("fastapi.")]
        named = spans.assign(step=steps(spans))
        order = {s: i for i, s in enumerate(STEP_ORDER)}
        for step, group in sorted(named.groupby("step"), key=lambda kv: (order.get(kv[0], 99), kv[0])):
            rows.append(
                {
                    "step": step,
                    "count": len(group),
                    "p50_ms": percentile(group["duration_ms"], 50),
                    "p95_ms": percentile(group["duration_ms"], 95),
                }
            )
    return pd.DataFrame(rows, columns=["step", "count", "p50_ms", "p95_ms"])


def model_calls(spans: pd.DataFrame) -> pd.DataFrame:
    """The spans that are model calls (chat or embeddings), each with its cost in USD (NaN when its
    model has no price), the name it was priced as, and whether it was priced."""
    columns = ["priced_as", "cost_usd", "priced", "note"]
    if spans.empty:
        return spans.assign(**{c: pd.Series(dtype=object) for c in columns})
    calls = spans[spans["operation"].isin(["chat", "embeddings"])].copy()
    calls["purpose"] = calls["purpose"].fillna("direct")
    prices = costs.load_prices()
    rates: dict[tuple[Any, Any], tuple[str, float, float, bool, str]] = {}
    for pair in set(zip(calls["response_model"], calls["model"], strict=True)):
        rate = None
        for name in pair:  # the model the backend reports, else the deployment name that was asked for
            if isinstance(name, str):
                unit_in = costs.estimate_cost(name, 1000, 0, prices=prices)
                if unit_in.priced:
                    unit_out = costs.estimate_cost(name, 0, 1000, prices=prices)
                    shown = unit_in.base_model or name  # grouped by the base model it is priced as
                    rate = (shown, unit_in.usd or 0.0, unit_out.usd or 0.0, True, unit_in.note)
                    break
        if rate is None:
            shown = next((n for n in pair if isinstance(n, str)), "(unknown)")
            rate = (shown, np.nan, np.nan, False, f"no price for {shown!r} in data/prices.json")
        rates[pair] = rate
    looked_up = [rates[pair] for pair in zip(calls["response_model"], calls["model"], strict=True)]
    calls["priced_as"] = [r[0] for r in looked_up]
    per_in = np.array([r[1] for r in looked_up], dtype=float)
    per_out = np.array([r[2] for r in looked_up], dtype=float)
    calls["priced"] = [r[3] for r in looked_up]
    calls["note"] = [r[4] for r in looked_up]
    calls["cost_usd"] = (
        calls["input_tokens"].fillna(0).to_numpy() / 1000 * per_in
        + calls["output_tokens"].fillna(0).to_numpy() / 1000 * per_out
    )
    return calls


def token_table(spans: pd.DataFrame) -> pd.DataFrame:
    """Calls, tokens and cost per purpose and model. `cost_usd` is None for a model without a price."""
    calls = model_calls(spans)
    columns = [
        "purpose",
        "model",
        "calls",
        "input_tokens",
        "output_tokens",
        "estimated_calls",
        "cost_usd",
        "priced",
        "note",
    ]
    rows = []
    for (purpose, model), group in calls.groupby(["purpose", "priced_as"], sort=True):
        priced = bool(group["priced"].all())
        rows.append(
            {
                "purpose": purpose,
                "model": model,
                "calls": len(group),
                "input_tokens": int(group["input_tokens"].fillna(0).sum()),
                "output_tokens": int(group["output_tokens"].fillna(0).sum()),
                "estimated_calls": int((group["estimated"].astype(object) == 1).sum()),
                "cost_usd": float(group["cost_usd"].sum()) if priced else None,
                "priced": priced,
                "note": group["note"].iloc[0],
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _group_table(requests: pd.DataFrame, feedback: pd.DataFrame, key: str) -> pd.DataFrame:
    columns = [
        key,
        "requests",
        "errors",
        "error_rate",
        "rate_limited",
        "blocked",
        "p50_latency_s",
        "p95_latency_s",
        "input_tokens",
        "output_tokens",
        "feedback_up",
        "feedback_down",
    ]
    if requests.empty:
        return pd.DataFrame(columns=columns)
    errors = _error_mask(requests)
    ratings = (
        feedback.merge(
            requests[["request_id", key]], on="request_id", how="inner", suffixes=("_feedback", "")
        )
        if len(feedback)
        else pd.DataFrame(columns=["rating", key])
    )
    rows = []
    for value, group in requests.groupby(requests[key].fillna("(none)"), sort=True):
        answered = _answered(group)
        mine = ratings[ratings[key].fillna("(none)") == value] if len(ratings) else ratings
        rows.append(
            {
                key: value,
                "requests": len(group),
                "errors": int(errors[group.index].sum()),
                "error_rate": float(errors[group.index].mean()),
                "rate_limited": int((group["status"] == 429).sum()),
                "blocked": int((group["blocked"].astype(object) == True).sum()),  # noqa: E712
                "p50_latency_s": percentile(answered["latency_s"], 50),
                "p95_latency_s": percentile(answered["latency_s"], 95),
                "input_tokens": int(pd.to_numeric(group["input_tokens"], errors="coerce").fillna(0).sum()),
                "output_tokens": int(pd.to_numeric(group["output_tokens"], errors="coerce").fillna(0).sum()),
                "feedback_up": int((mine["rating"] == "up").sum()) if len(mine) else 0,
                "feedback_down": int((mine["rating"] == "down").sum()) if len(mine) else 0,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def guard_table(requests: pd.DataFrame) -> pd.DataFrame:
    """Flags and blocks by guard and category, from the request log's `safety` entries."""
    counts: dict[tuple[str, str, str], int] = {}
    for entries in requests.get("safety", pd.Series(dtype=object)).dropna():
        for entry in entries if isinstance(entries, list) else []:
            parts = str(entry).split(":")
            if len(parts) >= 3:
                counts[(parts[0], parts[1], parts[2])] = counts.get((parts[0], parts[1], parts[2]), 0) + 1
    rows = [{"guard": g, "category": c, "action": a, "count": n} for (g, c, a), n in sorted(counts.items())]
    return pd.DataFrame(rows, columns=["guard", "category", "action", "count"])


def hourly_table(requests: pd.DataFrame, spans: pd.DataFrame, win: Window, freq: str = "h") -> pd.DataFrame:
    """Per time bucket: requests, errors, p95 latency, tokens and priced cost."""
    index = pd.date_range(
        pd.Timestamp(win.start).floor(freq), pd.Timestamp(win.end), freq=freq, inclusive="left"
    )
    out = pd.DataFrame(index=index)
    out.index.name = "time"
    if len(requests):
        bucket = requests["time"].dt.floor(freq)
        grouped = requests.groupby(bucket)
        out["requests"] = grouped.size()
        out["errors"] = _error_mask(requests).groupby(bucket).sum()
        answered = _answered(requests)
        out["p95_latency_s"] = answered.groupby(answered["time"].dt.floor(freq))["latency_s"].quantile(0.95)
    for column in ("requests", "errors"):
        out[column] = out[column].fillna(0).astype(int) if column in out else 0
    if "p95_latency_s" not in out:
        out["p95_latency_s"] = np.nan
    calls = model_calls(spans)
    if len(calls):
        bucket = calls["time"].dt.floor(freq)
        out["input_tokens"] = calls.groupby(bucket)["input_tokens"].sum()
        out["output_tokens"] = calls.groupby(bucket)["output_tokens"].sum()
        out["cost_usd"] = calls.groupby(bucket)["cost_usd"].sum(min_count=1)  # priced calls only
    for column in ("input_tokens", "output_tokens"):
        out[column] = out[column].fillna(0).astype(int) if column in out else 0
    if "cost_usd" not in out:
        out["cost_usd"] = np.nan
    return out


def overview(
    requests: pd.DataFrame, spans: pd.DataFrame, feedback: pd.DataFrame, tokens: pd.DataFrame, win: Window
) -> dict[str, Any]:
    """The headline numbers of a window."""
    n = len(requests)
    status = requests["status"] if n else pd.Series(dtype=float)
    errors = int(_error_mask(requests).sum()) if n else 0
    answered = _answered(requests)
    priced = tokens[tokens["priced"] == True] if len(tokens) else tokens  # noqa: E712
    unpriced = tokens[tokens["priced"] == False] if len(tokens) else tokens  # noqa: E712
    ups = int((feedback["rating"] == "up").sum()) if len(feedback) else 0
    downs = int((feedback["rating"] == "down").sum()) if len(feedback) else 0
    cost = float(priced["cost_usd"].sum()) if len(priced) else 0.0
    return {
        "requests": n,
        "answered": len(answered),
        "errors": errors,
        "error_rate": errors / n if n else None,
        "rate_limited": int((status == 429).sum()),
        "client_errors": int(((status >= 400) & (status < 500) & ~status.isin([429, 499])).sum()),
        "abandoned": int((status == 499).sum()),
        "blocked": int((requests["blocked"].astype(object) == True).sum()) if n else 0,  # noqa: E712
        "p50_latency_s": percentile(answered["latency_s"], 50) if n else None,
        "p95_latency_s": percentile(answered["latency_s"], 95) if n else None,
        "flow_runs": int((spans["name"] == "contoso_chat").sum()) if len(spans) else 0,
        "model_calls": int(tokens["calls"].sum()) if len(tokens) else 0,
        "input_tokens": int(tokens["input_tokens"].sum()) if len(tokens) else 0,
        "output_tokens": int(tokens["output_tokens"].sum()) if len(tokens) else 0,
        "cost_usd": cost,
        "cost_per_hour_usd": cost / win.hours,
        "priced_calls": int(priced["calls"].sum()) if len(priced) else 0,
        "unpriced_models": sorted(unpriced["model"].unique().tolist()) if len(unpriced) else [],
        "unpriced_tokens": int(unpriced["input_tokens"].sum() + unpriced["output_tokens"].sum())
        if len(unpriced)
        else 0,
        "feedback_up": ups,
        "feedback_down": downs,
        "feedback_down_rate": downs / (ups + downs) if ups + downs else None,
    }


def coverage_note(tokens: pd.DataFrame) -> str:
    purposes = sorted(tokens["purpose"].unique().tolist()) if len(tokens) else []
    return "every model call is traced (the flow, judges, bulk runs and the playground); purposes seen: " + (
        ", ".join(purposes) if purposes else "none"
    )


def build(
    source: Source | None = None,
    since: str | dt.datetime | dt.timedelta = "24h",
    until: str | dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Dashboard:
    """The dashboard of one window (default: the last 24 hours of the running kit's state)."""
    source = source or Source.current()
    win = window(since, until, now)
    spans = load_spans(source, win)
    requests = load_requests(source, win)
    feedback = load_feedback(source, win)
    tokens = token_table(spans)
    notes = []
    unpriced = tokens.loc[~tokens["priced"].astype(bool), "model"] if len(tokens) else []
    if len(unpriced):
        notes.append(
            "cost leaves out unpriced models (their tokens are counted): " + ", ".join(sorted(set(unpriced)))
        )
    if len(tokens) and tokens["estimated_calls"].sum():
        notes.append(
            f"{int(tokens['estimated_calls'].sum())} model calls have token counts estimated locally"
        )
    return Dashboard(
        window=win,
        synthetic=source.synthetic,
        overview=overview(requests, spans, feedback, tokens, win),
        latency=latency_table(spans, requests),
        by_flow_version=_group_table(requests, feedback, "flow_version"),
        by_customer=_group_table(requests, feedback, "customer"),
        tokens=tokens,
        guards=guard_table(requests),
        hourly=hourly_table(requests, spans, win, "h" if win.hours <= 72 else "D"),
        coverage=coverage_note(tokens),
        notes=notes,
    )


def _fmt(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if kind == "rate":
        return f"{value:.1%}"
    if kind == "usd":
        return f"${value:,.4f}"
    if kind == "s":
        return f"{value:.2f} s"
    return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"


def summary_text(dash: Dashboard) -> str:
    """A few lines for a terminal (`labkit monitor summary`)."""
    o = dash.overview
    cost = _fmt(o["cost_usd"], "usd") + (
        f" + unpriced: {', '.join(o['unpriced_models'])} ({o['unpriced_tokens']:,} tokens)"
        if o["unpriced_models"]
        else ""
    )
    lines = [
        f"Contoso Chat monitor - {dash.label}",
        f"window: {dash.window.label()}",
        f"requests {o['requests']:,}  answered {o['answered']:,}  errors {o['errors']:,} "
        f"({_fmt(o['error_rate'], 'rate')})  rate-limited {o['rate_limited']:,}  client errors "
        f"{o['client_errors']:,}  blocked {o['blocked']:,}",
        f"latency p50 {_fmt(o['p50_latency_s'], 's')}  p95 {_fmt(o['p95_latency_s'], 's')} "
        "(answered requests)",
        f"tokens in {o['input_tokens']:,}  out {o['output_tokens']:,} over {o['model_calls']:,} model calls; "
        f"cost {cost}",
        f"feedback up {o['feedback_up']}  down {o['feedback_down']} "
        f"(down rate {_fmt(o['feedback_down_rate'], 'rate')})",
        f"coverage: {dash.coverage}",
    ]
    if len(dash.by_flow_version):
        lines.append("by flow version:")
        for row in dash.by_flow_version.itertuples():
            lines.append(
                f"  {row.flow_version}: {row.requests:,} requests, error rate {_fmt(row.error_rate, 'rate')},"
                f" p95 {_fmt(row.p95_latency_s, 's')}"
            )
    if len(dash.latency):
        lines.append(
            "p95 per step (ms): "
            + ", ".join(
                f"{r.step} {r.p95_ms:,.0f}" for r in dash.latency.itertuples() if r.p95_ms is not None
            )
        )
    lines += [f"note: {n}" for n in dash.notes]
    return "\n".join(lines)


def plot(dash: Dashboard) -> Any:
    """Four panels: requests and errors, p95 latency, tokens and cost over time, p95 per step."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    hourly = dash.hourly
    ax = axes[0][0]
    ax.plot(hourly.index, hourly["requests"], label="requests")
    ax.plot(hourly.index, hourly["errors"], label="errors", color="tab:red")
    ax.set_title("requests and errors")
    ax.legend()
    ax = axes[0][1]
    ax.plot(hourly.index, hourly["p95_latency_s"], color="tab:purple")
    ax.set_title("p95 latency of answered requests (s)")
    ax = axes[1][0]
    ax.plot(hourly.index, hourly["input_tokens"], label="input tokens")
    ax.plot(hourly.index, hourly["output_tokens"], label="output tokens")
    ax.set_title("tokens (all model calls)")
    ax.legend(loc="upper left")
    if hourly["cost_usd"].notna().any():
        twin = ax.twinx()
        twin.plot(hourly.index, hourly["cost_usd"], color="tab:green", linestyle="--", label="cost (USD)")
        twin.set_ylabel("USD (priced models)")
    ax = axes[1][1]
    steps_only = dash.latency.dropna(subset=["p95_ms"])
    ax.barh(steps_only["step"], steps_only["p95_ms"], color="tab:blue")
    ax.invert_yaxis()
    ax.set_title("p95 per step (ms)")
    for axis in (axes[0][0], axes[0][1], axes[1][0]):
        axis.tick_params(axis="x", labelrotation=30)
    fig.suptitle(f"Contoso Chat - {dash.label} - {dash.window.label()}")
    fig.tight_layout()
    return fig
