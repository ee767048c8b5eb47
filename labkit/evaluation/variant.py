"""One variant's run over its rows: scoring, retries, the budget guard, the watchdog, Ctrl-C.

Part of the evaluation runner (labkit.evaluation.runner; notebooks/04_evaluate.ipynb).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from labkit import models, tracing
from labkit.config import Settings
from labkit.evaluation.base import field_of
from labkit.evaluation.budget import SPEND_LEDGER, charge_failed_attempts, check_priced
from labkit.evaluation.budget import spent as spent_on
from labkit.evaluation.judges import JudgeEvaluator
from labkit.evaluation.ratecontrol import INTERRUPT_GRACE_S, Limiter, RunOptions, classify, retry_wait
from labkit.evaluation.registry import evaluate_row
from labkit.evaluation.results import ResultsFile, result_record, usage_of, write_json
from labkit.evaluation.targets import Target


class VariantRunner:
    """One variant over its rows: a thread pool bounded by the limiter, retries, the budget guard,
    the watchdog for stalled rows, and Ctrl-C that saves what finished."""


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
        """Values, reasons, unmeasured reasons and judge calls of one row, from the registry's
        `evaluate_row` (the same scoring notebooks and tests use)."""
        values: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        unmeasured: dict[str, str] = {}
        judge_calls: list[tuple[str | None, dict[str, Any]]] = []
        for metric, outcome in evaluate_row(row, result, self.chosen).items():
            values[metric] = outcome["value"]
            if "unmeasured" in outcome:
                unmeasured[metric] = outcome["unmeasured"]
            elif outcome.get("reason"):
                reasons[metric] = outcome["reason"]
            details = outcome.get("details") or {}
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
                kind = classify(exc)
                if kind == "rate_limited":
                    self.limiter.on_rate_limit()
                if kind in ("rate_limited", "timeout"):
                    record["billable_attempts"] += 1
                if kind == "error":  # bad row or a bug: retrying will not help
                    return self._error(record, exc, attempts, start, kind)
                wait = retry_wait(exc, attempts, opts)
                if attempts >= opts.max_attempts or time.monotonic() + wait >= deadline or kind == "timeout":
                    if kind == "timeout" or time.monotonic() + wait >= deadline:
                        kind = "timeout"
                    return self._error(record, exc, attempts, start, kind)
                if self.stop_event.wait(wait):
                    return self._error(record, exc, attempts, start, "interrupted")
                continue
            usage = usage_of(result)
            model = field_of(result, "model") or self.price_model
            cost = self.cost_of(model, usage)
            judge_usage = {"input_tokens": 0, "output_tokens": 0}
            for judge_model, u in judge_calls:
                judge_usage["input_tokens"] += int(u.get("input_tokens") or 0)
                judge_usage["output_tokens"] += int(u.get("output_tokens") or 0)
                judge_cost = self.cost_of(judge_model, u)
                cost = None if cost is None or judge_cost is None else cost + judge_cost
            record.update(result_record(result))
            record.update({f"outputs.{k}": v for k, v in values.items()})
            record.update({
                "status": "ok", "reasons": {k: self.settings.scrub(str(v)) for k, v in reasons.items()},
                "unmeasured": {k: self.settings.scrub(str(v)) for k, v in unmeasured.items()},
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
                       "error": self.settings.scrub(f"{type(exc).__name__}: {exc}"), "attempts": attempts,
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
        dropped = sum(spent_on(rec) for rec in done.values() if rec.get("status") != "ok")
        if dropped:  # error rows are about to be dropped: what their attempts may have cost stays counted
            carried += dropped
            write_json(ledger, {"carried_usd": round(carried, 6),
                                 "note": "estimated spend of error rows dropped on resume"})
        if self.results.path.exists():
            self.results.rewrite(keep.values())  # error rows are retried; torn lines dropped
        records = dict(keep)
        wanted = {r["id"] for r in self.rows}
        pending = deque(r for r in self.rows if r["id"] not in keep)
        spent = carried + sum(spent_on(rec) for rid, rec in keep.items() if rid in wanted)
        priced_rows = [float(rec["cost_usd"]) for rid, rec in keep.items() if rec.get("cost_usd") is not None]
        budget = opts.budget_usd
        if budget is not None:
            judges = [ev.model for ev in self.chosen if isinstance(ev, JudgeEvaluator) and ev.model]
            check_priced(budget, self.price_model, self.a_priori_row_cost(), judges, self.cost_of)
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
                    spent += charge_failed_attempts(record, estimate)
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
                        spent += charge_failed_attempts(record, estimate)
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
                charge_failed_attempts(record, estimate)
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
