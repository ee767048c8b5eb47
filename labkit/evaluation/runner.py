"""The evaluation runner: many rows, one or more flow variants, resumable, rate-limit aware.

Introduced in notebooks/04_evaluate.ipynb; `labkit eval` is its command line.

`evaluate(data, configs, evaluators=..., out=...)` answers every row with each `FlowConfig`
variant (or with any `target(row)` callable), scores the answer with the evaluators and writes an
output folder per variant:

- `results.jsonl`: one line per row id, appended and fsynced as each row finishes. A re-run with the
  same folder skips finished rows and retries rows that ended in an error, so killing the runner or
  the model server loses no finished row and duplicates none.
- `summary.json`: means in the azure-ai-evaluation shape (`metrics["<evaluator>.<key>"]`) plus
  95% intervals, unmeasured counts, per-category means, usage, cost, latency, warnings and gates.
- `manifest.json`: what produced the numbers (data/prompt/index hashes, index configuration and
  document count, model and base model, evaluator versions, git commit, flow_version).

With several variants, each gets `<out>/<variant name>/` and `<out>/comparison.json` holds the paired
differences to the first variant with bootstrap intervals. Without `out`, each variant uses the
folder a run of that variant alone would use, so rows it already answered are reused, not re-asked.

Rate limits and faults: the runner keeps at most `concurrency` rows in flight; a 429 halves that
limit and it grows back by one after as many successes as the limit (AIMD); failed calls are retried
with exponential backoff that honours `Retry-After`; every row has a time limit (`row_timeout_s`)
that also bounds each HTTP call, so a stalled server cannot hang a worker; after `abort_after`
rows in a row fail to connect the run stops with status `aborted` instead of burning through the
data. With `LABKIT_BUDGET_USD` set (or `budget_usd=`), no row starts when the spend so far plus the
rows in flight plus one more row's estimate would pass the budget; the folder's earlier rows count.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from labkit import models, tracing
from labkit.config import ConfigError, Settings, get_settings
from labkit.evaluation.base import Score, answer_of, field_of
from labkit.evaluation.judges import JUDGES, JudgeEvaluator
from labkit.evaluation.registry import DETERMINISTIC, versions
from labkit.evaluation.registry import evaluators as make_evaluators
from labkit.evaluation.stats import (
    MIN_ROWS,
    Gate,
    GateError,
    GateResult,
    Interval,
    check_baseline,
    check_gate,
    mean_interval,
    paired_difference,
    parse_gate,
)
from labkit.jsonl import numbered_objects

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / "data" / "eval" / "testset.jsonl"
LOCAL_BASELINE = REPO / "eval" / "baseline.local.json"
JUDGE_NOTE = ("Judge scores come from {model}. The embedded SmolLM2-135M judge agrees with human labels at "
              "chance level (Cohen's kappa about 0, data/eval/calibration/results.local.json): treat its "
              "scores as unmeasured for decisions and gate on the deterministic metrics; calibrate a "
              "cloud judge with `python -m labkit.evaluation.calibration` before trusting it.")

# exit codes of `labkit eval` (docs/evaluation.md)
EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3  # budget guard, aborted (service unreachable) or interrupted: re-run to resume
EXIT_ROW_ERRORS = 4  # every row attempted, some ended in an error (gates passed on the rest)

Target = Callable[[dict[str, Any]], Any]


class BudgetError(ConfigError):
    """A budget is set but the run's cost cannot be estimated (an unpriced model)."""


# ----------------------------------------------------------------------------------------- data rows
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


SAMPLES = ("first", "stratified")
INTERRUPT_GRACE_S = 5.0  # on Ctrl-C, how long rows already running get to finish and be saved


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


# ----------------------------------------------------------------------------------------- targets
def flow_target(config: Any) -> Target:
    """The Contoso Chat flow with one `FlowConfig` as a target."""
    from labkit import flow

    def run(row: dict[str, Any]) -> Any:
        if not row.get("customer_id"):
            raise ValueError("row has no customer_id (the flow answers for a signed-in customer)")
        return flow.answer(row["query"], row["customer_id"], history=row.get("chat_history") or None,
                           config=config)

    run.__name__ = f"flow:{config.name}"
    return run


def bare_model_target(max_tokens: int = 16, model: str | None = None) -> Target:
    """One chat call with the question only (no retrieval): the light target of the throughput benchmark
    and of the fault tests, and the 'bare model' baseline of notebook 03."""

    def run(row: dict[str, Any]) -> dict[str, Any]:
        reply = models.chat(row["query"], model=model, max_tokens=max_tokens, seed=42)
        return {"answer": reply.text, "usage": reply.usage, "model": reply.model}

    run.__name__ = "bare_model"
    return run


# ------------------------------------------------------------------------------------- concurrency
class Limiter:
    """Additive-increase/multiplicative-decrease cap on rows in flight."""

    def __init__(self, maximum: int):
        self.maximum = max(1, int(maximum))
        self.limit = self.maximum
        self._successes = 0
        self._lock = threading.Lock()
        self.history: list[tuple[float, int]] = [(time.monotonic(), self.limit)]
        self.rate_limited = 0

    def on_rate_limit(self) -> None:
        with self._lock:
            self.rate_limited += 1
            self.limit = max(1, self.limit // 2)
            self._successes = 0
            self.history.append((time.monotonic(), self.limit))

    def on_success(self) -> None:
        with self._lock:
            self._successes += 1
            if self.limit < self.maximum and self._successes >= self.limit:
                self.limit += 1
                self._successes = 0
                self.history.append((time.monotonic(), self.limit))


@dataclass
class RunOptions:
    concurrency: int = 2
    row_timeout_s: float = 180.0
    max_attempts: int = 5
    backoff_s: float = 1.0  # first retry wait when the server gives no Retry-After; doubles, capped
    backoff_cap_s: float = 30.0
    abort_after: int | None = None  # consecutive unreachable rows before stopping; default 2*concurrency+2
    budget_usd: float | None = None
    progress: bool = True
    sample: str = "first"  # how `limit` picked the rows (recorded in the manifest)


# ------------------------------------------------------------------------------------------ results
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


SPEND_LEDGER = "spend.json"


def _spent(record: Mapping[str, Any]) -> float:
    """What a row cost: its measured cost plus the estimate for attempts that were retried."""
    return float(record.get("cost_usd") or 0) + float(record.get("retry_cost_estimate_usd") or 0)


def _charge_failed_attempts(record: dict[str, Any], estimate: float) -> float:
    """Charge one row's estimate for each failed attempt that may have been billed (a 429 or a
    timeout after earlier calls of the row); returns the amount, also kept on the record."""
    billed = int(record.get("billable_attempts") or 0)
    if billed <= 0 or estimate <= 0:
        return 0.0
    record["retry_cost_estimate_usd"] = round(billed * estimate, 6)
    return billed * estimate


def _scrub(text: str, settings: Settings) -> str:
    """Remove any configured secret value from an error message before it is written anywhere."""
    for name in ("azure_openai_api_key", "openai_api_key", "azure_search_api_key", "azure_cosmos_key"):
        secret = getattr(settings, name, None)
        value = secret.get_secret_value() if secret is not None else ""
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text[:500]


def _result_record(result: Any) -> dict[str, Any]:
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
        "timings": dict(field_of(result, "timings") or {}),
    }


def _usage_of(result: Any) -> dict[str, Any]:
    usage = field_of(result, "usage") or {}
    return {"input_tokens": int(usage.get("input_tokens") or 0),
            "output_tokens": int(usage.get("output_tokens") or 0),
            "estimated": bool(usage.get("estimated") or False)}


# -------------------------------------------------------------------------------------- one variant
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


class _VariantRunner:
    def __init__(self, name: str, target: Target, rows: list[dict[str, Any]], chosen: list[Any],
                 out: Path, options: RunOptions, manifest: dict[str, Any], settings: Settings,
                 price_model: str | None, on_row: Callable[[dict[str, Any]], None] | None = None,
                 config: Any = None):
        self.name, self.target, self.rows, self.chosen = name, target, rows, chosen
        self.config = config
        self.out, self.options, self.manifest, self.settings = out, options, manifest, settings
        self.price_model = price_model
        self.on_row = on_row
        self.results = ResultsFile(out / "results.jsonl")
        self.limiter = Limiter(options.concurrency)
        self.stop_event = threading.Event()
        self.status = "complete"
        self.message = ""
        self.consecutive_unreachable = 0
        for ev in chosen:
            if isinstance(ev, JudgeEvaluator):
                ev.raise_transient = True

    # ---- cost ----------------------------------------------------------------------------------
    def cost_of(self, model: str | None, usage: Mapping[str, Any]) -> float | None:
        from labkit.costs import estimate_cost

        return estimate_cost(model or self.price_model, usage.get("input_tokens"), usage.get("output_tokens"),
                             settings=self.settings).usd

    def a_priori_row_cost(self) -> float | None:
        """Before any row finished: a generous guess for the flow (0 for other targets: the first row
        then runs alone and its measured cost becomes the estimate). None: the model is unpriced."""
        judges = sum(1 for ev in self.chosen if isinstance(ev, JudgeEvaluator))
        max_tokens = getattr(self.config, "max_tokens", 0) if self.config is not None else 0
        tokens_in = (400 + 2000 + 2000 * judges) if self.config is not None else 0
        tokens_out = (100 + max_tokens + 200 * judges) if self.config is not None else 0
        return self.cost_of(self.price_model, {"input_tokens": tokens_in, "output_tokens": tokens_out})

    # ---- one row -------------------------------------------------------------------------------
    def score(self, row: dict[str, Any], result: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any],
                                                              list[tuple[str | None, dict[str, Any]]]]:
        values: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        unmeasured: dict[str, str] = {}
        judge_calls: list[tuple[str | None, dict[str, Any]]] = []
        for ev in self.chosen:
            outcome = ev.evaluate(row, result)
            items = outcome.items() if isinstance(outcome, dict) else [
                ("score" if ev.name in JUDGES else "value", outcome)]
            for key, value in items:
                metric = f"{ev.name}.{key}"
                if isinstance(value, Score):
                    values[metric] = value.value
                    if value.reason:
                        reasons[metric] = value.reason
                else:
                    values[metric] = None
                    unmeasured[metric] = value.why
                details = getattr(value, "details", {}) or {}
                if details.get("usage"):
                    judge_calls.append((details.get("judge_model"), details["usage"]))
        return values, reasons, unmeasured, judge_calls

    def run_row(self, row: dict[str, Any]) -> dict[str, Any]:
        opts = self.options
        start = time.monotonic()
        deadline = start + opts.row_timeout_s
        attempts = 0
        record = self._base_record(row)
        record["billable_attempts"] = 0  # failed attempts (429, timeout) whose earlier calls may be billed
        while True:
            attempts += 1
            remaining = max(1.0, float(int(deadline - time.monotonic())))  # whole seconds: clients are reused
            try:
                with models.client_options(max_retries=0, timeout=remaining), tracing.purpose("evaluation"):
                    result = self.target(row)
                    values, reasons, unmeasured, judge_calls = self.score(row, result)
            except Exception as exc:
                import openai

                kind = "rate_limited" if isinstance(exc, openai.RateLimitError) else (
                    "timeout" if isinstance(exc, openai.APITimeoutError) else (
                        "unreachable" if models.is_transient(exc) else "error"))
                if kind == "rate_limited":
                    self.limiter.on_rate_limit()
                if kind in ("rate_limited", "timeout"):
                    record["billable_attempts"] += 1
                if kind == "error":  # bad row or a bug: retrying will not help
                    return self._error(record, exc, attempts, start, kind)
                wait = models.retry_after(exc)
                if wait is None:
                    wait = min(opts.backoff_cap_s, opts.backoff_s * 2 ** (attempts - 1))
                if attempts >= opts.max_attempts or time.monotonic() + wait >= deadline or kind == "timeout":
                    if kind == "timeout" or time.monotonic() + wait >= deadline:
                        kind = "timeout"
                    return self._error(record, exc, attempts, start, kind)
                if self.stop_event.wait(wait):
                    return self._error(record, exc, attempts, start, "interrupted")
                continue
            usage = _usage_of(result)
            model = field_of(result, "model") or self.price_model
            cost = self.cost_of(model, usage)
            judge_usage = {"input_tokens": 0, "output_tokens": 0}
            for judge_model, u in judge_calls:
                judge_usage["input_tokens"] += int(u.get("input_tokens") or 0)
                judge_usage["output_tokens"] += int(u.get("output_tokens") or 0)
                judge_cost = self.cost_of(judge_model, u)
                cost = None if cost is None or judge_cost is None else cost + judge_cost
            record.update(_result_record(result))
            record.update({f"outputs.{k}": v for k, v in values.items()})
            record.update({
                "status": "ok", "reasons": {k: _scrub(str(v), self.settings) for k, v in reasons.items()},
                "unmeasured": {k: _scrub(str(v), self.settings) for k, v in unmeasured.items()},
                "usage": usage,
                "judge_usage": judge_usage, "cost_usd": cost, "latency_s": round(time.monotonic() - start, 4),
                "attempts": attempts, "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            })
            return record

    def _base_record(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "variant": self.name, "category": row.get("category"),
                "inputs.query": row["query"], "inputs.customer_id": row.get("customer_id")}

    def _error(self, record: dict[str, Any], exc: BaseException, attempts: int, start: float,
               kind: str) -> dict[str, Any]:
        record.update({"status": "error", "error_kind": kind,
                       "error": _scrub(f"{type(exc).__name__}: {exc}", self.settings), "attempts": attempts,
                       "latency_s": round(time.monotonic() - start, 4), "cost_usd": 0.0,
                       "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
        return record

    # ---- the batch -----------------------------------------------------------------------------
    def run(self) -> dict[str, dict[str, Any]]:
        opts = self.options
        done = self.results.load()
        keep = {rid: rec for rid, rec in done.items() if rec.get("status") == "ok"}
        ledger = self.out / SPEND_LEDGER
        carried = float(json.loads(ledger.read_text(encoding="utf-8")).get("carried_usd", 0.0)) \
            if ledger.exists() else 0.0
        dropped = sum(_spent(rec) for rec in done.values() if rec.get("status") != "ok")
        if dropped:  # error rows are about to be dropped: what their attempts may have cost stays counted
            carried += dropped
            _write_json(ledger, {"carried_usd": round(carried, 6),
                                 "note": "estimated spend of error rows dropped on resume"})
        if self.results.path.exists():
            self.results.rewrite(keep.values())  # error rows are retried; torn lines dropped
        records = dict(keep)
        wanted = {r["id"] for r in self.rows}
        pending = deque(r for r in self.rows if r["id"] not in keep)
        spent = carried + sum(_spent(rec) for rid, rec in keep.items() if rid in wanted)
        priced_rows = [float(rec["cost_usd"]) for rid, rec in keep.items() if rec.get("cost_usd") is not None]
        budget = opts.budget_usd
        if budget is not None:
            guess = self.a_priori_row_cost()
            if guess is None:
                raise BudgetError(f"a budget is set (LABKIT_BUDGET_USD={budget:g}) but the model "
                                  f"{self.price_model!r} has no price in data/prices.json, so spend cannot "
                                  "be estimated; add its price or unset the budget")
            for ev in self.chosen:
                judge = getattr(ev, "model", None) if isinstance(ev, JudgeEvaluator) else None
                if judge and self.cost_of(judge, {"input_tokens": 1, "output_tokens": 1}) is None:
                    raise BudgetError(f"a budget is set but the judge model {judge!r} has no price in "
                                      "data/prices.json; add its price or unset the budget")
        abort_after = opts.abort_after or 2 * opts.concurrency + 2
        bar = _progress(len(self.rows), len(self.rows) - len(pending), f"eval {self.name}", opts.progress)
        pool = cf.ThreadPoolExecutor(max_workers=2 * opts.concurrency + 2, thread_name_prefix="labkit-eval")
        in_flight: dict[cf.Future[dict[str, Any]], tuple[dict[str, Any], float, float]] = {}
        abandoned = 0
        try:
            while pending or in_flight:
                while pending and len(in_flight) < self.limiter.limit and self.status == "complete":
                    if budget is not None and not priced_rows and in_flight:
                        break  # with a budget, the first row runs alone: its cost calibrates the estimate
                    estimate = (sum(priced_rows[-20:]) / len(priced_rows[-20:]) if priced_rows
                                else (self.a_priori_row_cost() or 0.0))
                    if budget is not None:
                        committed = sum(e for _, _, e in in_flight.values())
                        if spent + committed + estimate > budget:
                            self.status = "stopped_budget"
                            break
                    row = pending.popleft()
                    in_flight[pool.submit(self.run_row, row)] = (row, time.monotonic(), estimate)
                if not in_flight:
                    break
                finished, _ = cf.wait(list(in_flight), timeout=0.25, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    row, started, estimate = in_flight.pop(fut)
                    try:
                        record = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a bug in a target or evaluator: one row's error
                        record = self._error(self._base_record(row), exc, 1, started, "error")
                    spent += _charge_failed_attempts(record, estimate)
                    self._finish(record, records)
                    if record["status"] == "ok":
                        self.limiter.on_success()
                        self.consecutive_unreachable = 0
                        if record.get("cost_usd") is not None:
                            spent += float(record["cost_usd"])
                            priced_rows.append(float(record["cost_usd"]))
                        elif budget is not None:
                            spent += estimate  # a call the price table cannot price: count the estimate
                    elif record.get("error_kind") == "unreachable":
                        self.consecutive_unreachable += 1
                    bar.update(1)
                    if self.consecutive_unreachable >= abort_after and self.status == "complete":
                        self.status = "aborted"
                        self.stop_event.set()
                # watchdog: a row past its limit (plus grace) is recorded as timed out and abandoned
                now = time.monotonic()
                for fut, (row, started, estimate) in list(in_flight.items()):
                    if not fut.done() and now - started > opts.row_timeout_s + 10:
                        in_flight.pop(fut)
                        if not fut.cancel():
                            abandoned += 1  # still running: its thread is left behind, its result ignored
                        record = self._error(self._base_record(row),
                                             TimeoutError(f"row exceeded {opts.row_timeout_s:g} s"), 1,
                                             started, "timeout")
                        record["billable_attempts"] = 1  # it was still running, and maybe being billed
                        spent += _charge_failed_attempts(record, estimate)
                        self._finish(record, records)
                        bar.update(1)
        except KeyboardInterrupt:
            self.status = "interrupted"
            self.stop_event.set()
            grace = time.monotonic() + INTERRUPT_GRACE_S
            for fut, (_, _, estimate) in list(in_flight.items()):  # rows about to finish are saved
                try:
                    record = fut.result(timeout=max(0.0, grace - time.monotonic()))
                except (Exception, KeyboardInterrupt):  # noqa: BLE001 - that row simply stays pending
                    continue
                _charge_failed_attempts(record, estimate)
                self._finish(record, records)
            abandoned += len(in_flight)
        finally:
            bar.close()
            pool.shutdown(wait=abandoned == 0, cancel_futures=True)
        left = sum(1 for r in self.rows if r["id"] not in records)
        errors = sum(1 for r in self.rows if records.get(r["id"], {}).get("status") == "error")
        if self.status == "stopped_budget":
            self.message = (f"budget guard: stopped before passing ${budget:g}: {len(self.rows) - left} of "
                            f"{len(self.rows)} rows done, ${spent:.4f} spent; raise LABKIT_BUDGET_USD and "
                            "re-run to resume")
        elif self.status == "aborted":
            self.message = (f"stopped: {self.consecutive_unreachable} rows in a row could not reach a "
                            f"service; {len(self.rows) - left - errors} rows are saved. Check "
                            "`labkit services status` and re-run the same command to resume")
        elif self.status == "interrupted":
            self.message = (f"interrupted: {len(self.rows) - left} of {len(self.rows)} rows saved; "
                            "re-run to resume")
        elif errors:
            self.status = "complete_with_errors"
            self.message = f"{errors} rows ended in an error (see results.jsonl); a re-run retries them"
        return records

    def _finish(self, record: dict[str, Any], records: dict[str, dict[str, Any]]) -> None:
        self.results.append(record)
        records[record["id"]] = record
        if self.on_row:
            self.on_row(record)


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    from labkit.progress import bar

    return bar(total=total, initial=initial, desc=desc, unit="row", enabled=enabled)


# ------------------------------------------------------------------------------------------ summary
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


# ----------------------------------------------------------------------------------------- manifest
def git_commit() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def index_facts(index: str) -> dict[str, Any]:
    """Name, document count and a hash of (id, content) of every document, read through the SDK."""
    from labkit import search

    facts: dict[str, Any] = {"name": index}
    try:
        strategy = index.removeprefix("products-")
        if strategy in search.STRATEGIES:
            search.ensure_index(strategy)  # the flow would build it on its first question anyway
        client = search.search_client(index, retry_total=1)
        digest = hashlib.sha256()
        ids = []
        for doc in client.search(search_text="*", select=["id", "content"], top=100000):
            ids.append((doc["id"], doc.get("content") or ""))
        for doc_id, content in sorted(ids):
            digest.update(doc_id.encode() + b"\0" + content.encode() + b"\0")
        facts.update({"document_count": len(ids), "sha256": digest.hexdigest()})
        if strategy in search.STRATEGIES:
            facts["strategy"] = strategy
            if strategy == "window":
                facts["window_tokens"], facts["window_overlap"] = search.WINDOW_TOKENS, search.WINDOW_OVERLAP
        facts["embedding_dimensions"] = models.embedding_dimensions()
    except Exception as exc:  # noqa: BLE001 - a manifest records what it could not read
        facts["error"] = f"{type(exc).__name__}"
    return facts


def build_manifest(name: str, config: Any, data_path: Path | None, rows: list[dict[str, Any]],
                   limit: int | None, chosen: list[Any], settings: Settings, options: RunOptions,
                   target_name: str) -> dict[str, Any]:
    from labkit import __version__
    from labkit.costs import base_model, load_prices
    from labkit.prompts import load_prompt

    chat_model = (getattr(config, "chat_model", None) if config is not None else None) or \
        models.chat_model_name(settings)
    judge_model = settings.labkit_judge_model or chat_model
    prompts: dict[str, Any] = {}
    if config is not None:
        for pname in (config.prompt, config.query_prompt):
            prompts[pname] = load_prompt(pname).identity
    for ev in chosen:
        if isinstance(ev, JudgeEvaluator):
            prompts[ev.prompt.name] = ev.prompt.identity
    prices = load_prices()
    manifest = {
        "labkit_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "variant": name,
        "target": target_name,
        "flow_config": config.model_dump() if config is not None else None,
        "flow_version": config.flow_version() if config is not None else None,
        "data": {"path": _display_path(data_path), "sha256": sha256_file(data_path) if data_path else None,
                 "rows": len(rows), "limit": limit, "sample": options.sample, "ids_sha256": hashlib.sha256(
                     "\n".join(r["id"] for r in rows).encode()).hexdigest()},
        "prompts": prompts,
        "index": (index_facts(config.index) if config is not None and config.retrieval_mode != "none"
                  else None),
        "model": {"chat": chat_model, "base_model": base_model(chat_model, prices),
                  "backend": settings.backend_for("chat"), "judge": judge_model},
        "embedding": {"model": models.embedding_model_name(settings),
                      "backend": settings.backend_for("embed")},
        "search_backend": settings.backend_for("search"),
        "evaluators": versions(chosen),
        "prices_version": prices.get("version"),
        "git": git_commit(),
        "options": {"concurrency": options.concurrency, "row_timeout_s": options.row_timeout_s,
                    "max_attempts": options.max_attempts, "budget_usd": options.budget_usd},
    }
    return manifest


def _display_path(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- report
@dataclass
class EvalReport:
    """What `evaluate()` returns: the variant runs, their comparison, the gates and an exit code."""

    out: Path
    runs: dict[str, VariantRun]
    comparison: dict[str, Any] | None = None
    gates: list[GateResult] = field(default_factory=list)

    @property
    def run(self) -> VariantRun:
        """The first (or only) variant."""
        return next(iter(self.runs.values()))

    @property
    def status(self) -> str:
        order = ["interrupted", "aborted", "stopped_budget", "complete_with_errors", "complete"]
        statuses = [r.status for r in self.runs.values()]
        return next(s for s in order if s in statuses) if statuses else "complete"

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def exit_code(self) -> int:
        if self.status in ("interrupted", "aborted", "stopped_budget"):
            return EXIT_STOPPED
        if not self.gates_passed:
            return EXIT_GATE_FAILED
        if self.status == "complete_with_errors":
            return EXIT_ROW_ERRORS
        return EXIT_OK

    def metrics_frame(self) -> Any:
        """Variants side by side: mean [low, high] per metric."""
        import pandas as pd

        frames = {name: run.metrics_frame() for name, run in self.runs.items()}
        return pd.concat(frames, axis=1) if frames else pd.DataFrame()

    def comparison_frame(self) -> Any:
        import pandas as pd

        if not self.comparison:
            return pd.DataFrame()
        lines = []
        for variant, diffs in self.comparison["differences"].items():
            for metric, iv in diffs.items():
                lines.append({"variant": variant, "metric": metric, "difference": iv["mean"],
                              "low": iv["low"], "high": iv["high"], "n": iv["n"]})
        return pd.DataFrame(lines)

    def lines(self) -> list[str]:
        """A short text report (what `labkit eval` prints)."""
        out = []
        for name, run in self.runs.items():
            s = run.summary
            rows = s["rows"]
            out.append(f"{name}: {s['status']} - {rows['ok']} ok, {rows['error']} errors, "
                       f"{rows['pending']} pending of {rows['selected']} (flow_version {s['flow_version']}) "
                       f"-> {run.out}")
            if s["message"]:
                out.append(f"  {s['message']}")
            for metric, iv in s["intervals"].items():
                out.append(f"  {metric:<28} {Interval(**iv)!s:<36} unmeasured {s['unmeasured'][metric]}")
            cost = "n/a (unpriced)" if s["cost_usd"] is None else f"${s['cost_usd']:.4f}"
            out.append(f"  cost {cost}; latency p50 {s['latency_s']['p50']} s")
            out.extend(f"  warning: {w}" for w in s["warnings"])
            if s.get("judge_note"):
                out.append(f"  note: {s['judge_note']}")
        if self.comparison:
            base = self.comparison["baseline_variant"]
            for variant, diffs in self.comparison["differences"].items():
                for metric, iv in diffs.items():
                    out.append(f"  {variant} - {base}: {metric:<28} {Interval(**iv)!s}")
        out.extend(g.message for g in self.gates)
        out.extend(f"warning: {g.warning}" for g in self.gates if g.warning)
        return out


# -------------------------------------------------------------------------------------------- entry
def evaluate(
    data: str | Path | Sequence[dict[str, Any]] | None = None,
    configs: Any = None,
    *,
    evaluators: Sequence[str] | None = None,
    limit: int | None = None,
    ids: Sequence[str] | None = None,
    sample: str = "first",
    out: str | Path | None = None,
    concurrency: int | None = None,
    target: Target | None = None,
    target_name: str = "target",
    row_timeout_s: float = 180.0,
    max_attempts: int = 5,
    budget_usd: float | None = None,
    gates: Sequence[str] = (),
    baseline: str | Path | None = None,
    max_drop: float = 0.2,
    fresh: bool = False,
    progress: bool = True,
    settings: Settings | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    abort_after: int | None = None,
    backoff_s: float = 1.0,
) -> EvalReport:
    """Run an evaluation (see the module docstring). Returns an `EvalReport`.

    `configs`: a FlowConfig, a list of them (variants; names must differ), or None for the default
    flow. `target`: any `callable(row) -> result` instead of the flow (one variant, `target_name`).
    `limit` with `sample="first"` takes the first rows; `sample="stratified"` takes them in turn from
    each `category` so a small run still covers every kind of question.
    `evaluators`: names from `labkit.evaluation.registry` (default: the deterministic ones; add
    judges explicitly, they are slow and locally uncalibrated). `budget_usd`: default from
    `LABKIT_BUDGET_USD`.
    """
    from labkit.flow import FlowConfig

    settings = settings or get_settings()
    gate_list = [parse_gate(g) for g in gates]  # a malformed gate fails before any row runs
    data_path: Path | None
    if data is None or isinstance(data, str | Path):
        data_path = Path(data) if data is not None else DEFAULT_DATA
        if not data_path.is_absolute() and not data_path.exists() and (REPO / data_path).exists():
            data_path = REPO / data_path  # `labkit eval --data data/eval/testset.jsonl` from any folder
        rows = read_rows(data_path)
    else:
        data_path, rows = None, [dict(r) for r in data]
    if ids is not None:
        wanted = set(ids)
        rows = [r for r in rows if r["id"] in wanted]
    rows = select_rows(rows, limit, sample)
    if not rows:
        raise ValueError("no rows to evaluate (check --limit / ids)")

    if target is not None:
        variants: list[tuple[str, Any, Target]] = [(target_name, None, target)]
    else:
        config_list = [FlowConfig()] if configs is None else (
            list(configs) if isinstance(configs, list | tuple) else [configs])
        names = [c.name for c in config_list]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must differ: {names}")
        variants = [(c.name, c, flow_target(c)) for c in config_list]

    chosen_names = list(evaluators) if evaluators is not None else list(DETERMINISTIC)
    if target is not None and evaluators is None:
        chosen_names = ["checks"]
    budget = budget_usd
    if budget is None and os.environ.get("LABKIT_BUDGET_USD"):
        try:
            budget = float(os.environ["LABKIT_BUDGET_USD"])
        except ValueError as exc:
            raise ConfigError("LABKIT_BUDGET_USD must be a number of US dollars",
                              ["LABKIT_BUDGET_USD"]) from exc
    if budget is not None and not (math.isfinite(budget) and budget >= 0):
        raise ConfigError("LABKIT_BUDGET_USD must be a finite, non-negative number of US dollars",
                          ["LABKIT_BUDGET_USD"])
    if concurrency is None:
        # the local llama.cpp server answers one request at a time: two rows in flight gave the same
        # rows/s (benchmarks/eval_throughput.py) and would add queueing to each row's latency
        concurrency = 1 if settings.backend_for("chat") == "local" else 4
    options = RunOptions(concurrency=max(1, concurrency), row_timeout_s=row_timeout_s,
                         max_attempts=max_attempts, budget_usd=budget, progress=progress,
                         abort_after=abort_after, backoff_s=backoff_s, sample=sample)

    for gate in gate_list:
        if gate.metric.split(".")[0] not in chosen_names:
            raise GateError(f"gate {gate} names the evaluator {gate.metric.split('.')[0]!r}, which this run "
                            f"does not use (evaluators: {', '.join(chosen_names)})")
    if baseline is not None:
        load_baseline(baseline)  # a missing or malformed file fails now, not after the whole run
    identity = {"chat": models.chat_model_name(settings), "judge": settings.labkit_judge_model,
                "backend": settings.backend_for("chat")}
    base_out = Path(out) if out is not None else _default_out(data_path, variants, chosen_names, identity)
    base_out.mkdir(parents=True, exist_ok=True)
    report = EvalReport(out=base_out, runs={})
    for name, config, run_target in variants:
        if len(variants) == 1:
            folder = base_out
        elif out is None:  # the folder of this variant run alone: its finished rows are reused
            folder = _default_out(data_path, [(name, config, run_target)], chosen_names, identity)
        else:
            folder = base_out / _safe(name)
        folder.mkdir(parents=True, exist_ok=True)
        with _folder_lock(folder):  # one writer per folder (two kernels, two terminals)
            chosen = make_evaluators(chosen_names, judge_model=settings.labkit_judge_model)
            manifest = build_manifest(name, config, data_path, rows, limit, chosen, settings, options,
                                      f"{name}:{getattr(run_target, '__name__', 'target')}")
            _check_resume(folder, manifest, fresh)
            _write_json(folder / "manifest.json", {**manifest, "status": "running"})
            price_model = manifest["model"]["chat"]
            runner = _VariantRunner(name, run_target, rows, chosen, folder, options, manifest, settings,
                                    price_model, on_row, config)
            records = runner.run()
            summary = summarize(name, rows, records, runner.status, runner.message, manifest)
            manifest = {**manifest, "status": runner.status,
                        "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
            _write_json(folder / "manifest.json", manifest)
            run = VariantRun(name, folder, summary, manifest, {r["id"]: records[r["id"]] for r in rows
                                                               if r["id"] in records}, runner.limiter.history)
            report.runs[name] = run
            _write_json(folder / "summary.json", summary)
        if runner.status in ("stopped_budget", "aborted", "interrupted"):
            break  # later variants would only hit the same wall

    if len(report.runs) > 1:
        report.comparison = compare(list(report.runs.values()))
        _write_json(base_out / "comparison.json", report.comparison)

    complete = report.status in ("complete", "complete_with_errors")
    if complete:
        several = len(report.runs) > 1
        for run in report.runs.values():  # every variant is gated: a candidate never slips through
            gated = gate_run(run, gate_list, baseline, max_drop)
            if several:
                gated = [replace(g, gate=f"[{run.name}] {g.gate}", message=f"[{run.name}] {g.message}")
                         for g in gated]
            report.gates.extend(gated)
            run.summary["gates"] = [g.as_dict() for g in gated]
            run.summary["warnings"].extend(g.warning for g in gated if g.warning)
            _write_json(run.out / "summary.json", run.summary)
    return report


def gate_run(run: VariantRun, gates: Sequence[Gate], baseline: str | Path | None,
             max_drop: float) -> list[GateResult]:
    """The absolute gates and, with a baseline file, the non-inferiority gates of one variant."""
    results: list[GateResult] = []
    for gate in gates:
        if gate.metric not in run.summary["intervals"]:
            measured = ", ".join(run.summary["intervals"]) or "nothing"
            results.append(GateResult(str(gate), False, None, None, 0,
                                      f"FAIL {gate}: this run has no metric {gate.metric!r} "
                                      f"(measured: {measured})"))
            continue
        results.append(check_gate(gate, Interval(**run.summary["intervals"][gate.metric])))
    if baseline is not None:
        results.extend(compare_to_baseline(run, baseline, max_drop))
    return results


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold `folder/.run.lock` (the OS releases it if the process dies); a second writer gets an error."""
    lock = FileLock(str(folder / ".run.lock"))
    try:
        lock.acquire(timeout=0)
    except FileLockTimeout:
        raise ConfigError(f"another evaluation is writing to {folder} right now; wait for it to finish or "
                          "use another output folder") from None
    try:
        yield
    finally:
        lock.release()


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "variant"


def _default_out(data_path: Path | None, variants: list[tuple[str, Any, Target]],
                 evaluator_names: Sequence[str], identity: Mapping[str, Any]) -> Path:
    stem = data_path.stem if data_path else "rows"
    key = "+".join(f"{name}-{config.flow_version() if config is not None else 'target'}"
                   for name, config, _ in variants) + "|" + ",".join(sorted(evaluator_names))
    if identity.get("backend") != "local" or identity.get("judge"):
        # the local default keeps its earlier folder names; any other model gets a folder of its own
        key += "|" + json.dumps(dict(identity), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    label = variants[0][0] if len(variants) == 1 else "compare"
    return get_settings().home / "evals" / f"{stem}-{_safe(label)}-{digest}"


def _check_resume(folder: Path, manifest: Mapping[str, Any], fresh: bool) -> None:
    results = folder / "results.jsonl"
    if fresh:
        for name in ("results.jsonl", "summary.json", "comparison.json", SPEND_LEDGER):
            (folder / name).unlink(missing_ok=True)
        return
    old_path = folder / "manifest.json"
    if not results.exists() or not old_path.exists():
        return
    old = json.loads(old_path.read_text(encoding="utf-8"))
    for key in ("flow_version", "target"):
        if old.get(key) != manifest.get(key):
            raise ConfigError(f"{folder} holds results of another run ({key} {old.get(key)!r}, now "
                              f"{manifest.get(key)!r}); use another output folder or --fresh")
    old_model, new_model = old.get("model") or {}, manifest.get("model") or {}
    for part in ("chat", "judge", "backend"):
        if old_model.get(part) != new_model.get(part):
            raise ConfigError(f"{folder} holds results from another {part} model "
                              f"({old_model.get(part)!r}, now {new_model.get(part)!r}); use another output "
                              "folder or --fresh")
    old_sha, new_sha = (old.get("data") or {}).get("sha256"), (manifest.get("data") or {}).get("sha256")
    if old_sha and new_sha and old_sha != new_sha:
        raise ConfigError(f"{folder} holds results for another version of the data file (its sha256 "
                          "changed); use another output folder or --fresh")
    if old.get("evaluators") != manifest.get("evaluators"):
        before = ", ".join(old.get("evaluators") or [])
        raise ConfigError(f"{folder} was scored with other evaluators ({before}); use another output folder "
                          "or --fresh")


def compare(runs: list[VariantRun]) -> dict[str, Any]:
    """Paired differences of every later variant to the first, per metric, with intervals."""
    base = runs[0]
    differences: dict[str, dict[str, Any]] = {}
    for run in runs[1:]:
        diffs = {}
        for metric in base.summary["intervals"]:
            if metric in run.summary["intervals"]:
                diffs[metric] = paired_difference(base.values(metric), run.values(metric)).as_dict()
        differences[run.name] = diffs
    return {"baseline_variant": base.name, "flow_versions": {r.name: r.summary["flow_version"] for r in runs},
            "differences": differences,
            "note": "difference = variant - baseline variant, over rows measured in both; 95% interval"}


# --------------------------------------------------------------------------------------- baselines
def save_baseline(run: VariantRun, path: str | Path, metrics: Sequence[str] | None = None,
                  description: str = "") -> Path:
    """Write a baseline file (per-row values for paired comparison) from a finished run."""
    path = Path(path)
    chosen = list(metrics) if metrics else [m for m, iv in run.summary["intervals"].items() if iv["n"] > 0]
    payload = {
        "description": description or f"baseline from variant {run.name}",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "flow_version": run.summary["flow_version"],
        "model": run.manifest.get("model"),
        "data": run.manifest.get("data"),
        "git": run.manifest.get("git"),
        "metrics": {m: run.summary["metrics"].get(m) for m in chosen},
        "rows": {rid: {m: rec.get(f"outputs.{m}") for m in chosen} for rid, rec in sorted(run.records.items())
                 if rec.get("status") == "ok"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, payload)
    return path


def load_baseline(baseline: str | Path) -> dict[str, Any]:
    """A baseline file written by `save_baseline`; a missing or malformed one raises with its path."""
    path = Path(baseline)
    if not path.exists():
        raise FileNotFoundError(f"no baseline file at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rows"), dict) or \
            not isinstance(data.get("metrics"), dict):
        raise ValueError(f"{path} is not a baseline file (needs 'metrics' and per-row 'rows')")
    return data


def compare_to_baseline(run: VariantRun, baseline: str | Path, max_drop: float) -> list[GateResult]:
    data = load_baseline(baseline)
    rows = data["rows"]
    results = []
    for metric in data["metrics"]:
        if metric not in run.summary["intervals"]:
            results.append(GateResult(f"{metric} vs baseline", False, None, None, 0,
                                      f"FAIL {metric} vs baseline: this run did not measure {metric}"))
            continue
        before = {rid: values.get(metric) for rid, values in rows.items()}
        now = run.values(metric)
        measured_before = [rid for rid in now if before.get(rid) is not None]
        name = f"{metric} vs baseline (max drop {max_drop:g})"
        if not measured_before:
            # e.g. a subset with no order-history rows: nothing to compare, which is not a failure
            results.append(GateResult(name, True, None, None, 0,
                                      f"SKIP {name}: none of this run's {len(now)} rows has a baseline "
                                      f"value", f"{metric}: not compared (no rows in common with the "
                                      f"baseline's measured rows)"))
            continue
        lost = [rid for rid in measured_before if now[rid] is None]
        result = check_baseline(metric, paired_difference(before, now), max_drop)
        if lost:
            # measured in the baseline, unmeasured now (an unparseable judge, an errored row): say so
            note = f"{len(lost)} rows measured in the baseline are unmeasured in this run"
            result = replace(result, message=f"{result.message}; {note}",
                             warning=f"{metric}: {note}" + (f"; {result.warning}" if result.warning else ""))
        results.append(result)
    if results and all(r.message.startswith("SKIP") for r in results):
        # a wrong baseline file or other data: nothing was compared, which must not pass
        results.append(GateResult(f"baseline {Path(baseline).name}", False, None, None, 0,
                                  f"FAIL baseline {Path(baseline).name}: no row of this run was measured in "
                                  "the baseline (another data file?)"))
    return results


__all__ = ["EXIT_GATE_FAILED", "EXIT_OK", "EXIT_ROW_ERRORS", "EXIT_STOPPED", "EXIT_USAGE", "BudgetError",
           "EvalReport", "Limiter", "ResultsFile", "VariantRun", "bare_model_target", "compare",
           "compare_to_baseline", "evaluate", "flow_target", "gate_run", "load_baseline", "read_rows",
           "save_baseline", "summarize"]
