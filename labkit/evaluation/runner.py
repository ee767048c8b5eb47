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

The runner is in parts, each one job: `rows` (data and sampling), `targets` (the flow, a bare model,
a deployed service over HTTP), `ratecontrol` (AIMD, retries, time limits), `results` (the results
file and per-row records), `budget`, `summary`, `manifest` (and resume checks), `gates` (gates,
baselines, variant comparison) and `variant` (one variant's rows in a thread pool). This module
ties them together: `evaluate()` and its `EvalReport`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from labkit import models
from labkit.config import ConfigError, Settings, get_settings
from labkit.evaluation.budget import BudgetError, resolve_budget
from labkit.evaluation.gates import (
    LOCAL_BASELINE,
    compare,
    compare_to_baseline,
    gate_run,
    load_baseline,
    save_baseline,
)
from labkit.evaluation.manifest import build_manifest, check_resume, default_out, safe_name
from labkit.evaluation.ratecontrol import INTERRUPT_GRACE_S, Limiter, RunOptions
from labkit.evaluation.registry import DETERMINISTIC
from labkit.evaluation.registry import evaluators as make_evaluators
from labkit.evaluation.results import ResultsFile, VariantRun, write_json
from labkit.evaluation.rows import DEFAULT_DATA, read_rows, resolve_data_path, select_rows
from labkit.evaluation.stats import GateError, GateResult, Interval, parse_gate
from labkit.evaluation.summary import summarize
from labkit.evaluation.targets import Target, bare_model_target, flow_target, http_target, load_tokens
from labkit.evaluation.variant import VariantRunner

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3  # budget guard, aborted (service unreachable) or interrupted: re-run to resume
EXIT_ROW_ERRORS = 4  # every row attempted, some ended in an error (gates passed on the rest)


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
    target_info: Mapping[str, Any] | None = None,
) -> EvalReport:
    """Run an evaluation (see the module docstring). Returns an `EvalReport`.

    `configs`: a FlowConfig, a list of them (variants; names must differ), or None for the default
    flow. `target`: any `callable(row) -> result` instead of the flow (one variant, `target_name`).
    `limit` with `sample="first"` takes the first rows; `sample="stratified"` takes them in turn from
    each `category` so a small run still covers every kind of question.
    `evaluators`: names from `labkit.evaluation.registry` (default: the deterministic ones; add
    judges explicitly, they are slow and locally uncalibrated). `budget_usd`: default from
    `LABKIT_BUDGET_USD`. `target_info`: facts about the target merged into the manifest (the URL of
    a deployed service); with a service target, the flow version its answers report is recorded.
    """
    from labkit.flow import FlowConfig

    settings = settings or get_settings()
    gate_list = [parse_gate(g) for g in gates]  # a malformed gate fails before any row runs
    data_path: Path | None
    if data is None or isinstance(data, str | Path):
        data_path = resolve_data_path(data)
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
    budget = resolve_budget(budget_usd, settings)
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
    if target_info and target_info.get("url"):  # another deployment: another folder
        identity["target"] = target_info["url"]
    base_out = Path(out) if out is not None else default_out(data_path, variants, chosen_names, identity)
    base_out.mkdir(parents=True, exist_ok=True)
    report = EvalReport(out=base_out, runs={})
    for name, config, run_target in variants:
        if len(variants) == 1:
            folder = base_out
        elif out is None:  # the folder of this variant run alone: its finished rows are reused
            folder = default_out(data_path, [(name, config, run_target)], chosen_names, identity)
        else:
            folder = base_out / safe_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        with folder_lock(folder):  # one writer per folder (two kernels, two terminals)
            chosen = make_evaluators(chosen_names, judge_model=settings.labkit_judge_model)
            manifest = build_manifest(name, config, data_path, rows, limit, chosen, settings, options,
                                      f"{name}:{getattr(run_target, '__name__', 'target')}")
            if target_info:
                manifest["target_info"] = dict(target_info)
            check_resume(folder, manifest, fresh)
            write_json(folder / "manifest.json", {**manifest, "status": "running"})
            price_model = manifest["model"]["chat"]
            runner = VariantRunner(name, run_target, rows, chosen, folder, options, manifest, settings,
                                    price_model, on_row, config)
            records = runner.run()
            summary = summarize(name, rows, records, runner.status, runner.message, manifest)
            if config is None:  # a deployed service says which flow and model answered (kept apart from
                # the manifest's own flow_version, which a resumed run must match)
                reported = sorted({str(r["flow_version"]) for r in records.values() if r.get("flow_version")})
                served = sorted({str(r["model"]) for r in records.values() if r.get("model")})
                if reported:
                    manifest["service_flow_version"] = summary["flow_version"] = ",".join(reported)
                if served:
                    manifest["service_model"] = ",".join(served)
            manifest = {**manifest, "status": runner.status,
                        "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
            write_json(folder / "manifest.json", manifest)
            run = VariantRun(name, folder, summary, manifest, {r["id"]: records[r["id"]] for r in rows
                                                               if r["id"] in records}, runner.limiter.history)
            report.runs[name] = run
            write_json(folder / "summary.json", summary)
        if runner.status in ("stopped_budget", "aborted", "interrupted"):
            break  # later variants would only hit the same wall

    if len(report.runs) > 1:
        report.comparison = compare(list(report.runs.values()))
        write_json(base_out / "comparison.json", report.comparison)

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
            write_json(run.out / "summary.json", run.summary)
    if complete:
        _register(report, settings)
    return report


def _register(report: EvalReport, settings: Settings) -> None:
    """Record each finished variant in the registry (lineage and promotion, notebook 09); a registry
    that cannot be written is a warning, never a failed evaluation."""
    from labkit.registry.store import RegistryError, record_evaluation

    for run in report.runs.values():
        try:
            record = record_evaluation(run, settings)
        except (RegistryError, OSError) as exc:
            run.summary["warnings"].append(f"not recorded in the registry: {exc}")
            continue
        if record is not None:
            run.summary["registry_id"] = record["id"]
            write_json(run.out / "summary.json", run.summary)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
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


# names the one-file runner had, re-exported for callers outside the kit
from labkit.evaluation.budget import SPEND_LEDGER  # noqa: E402
from labkit.evaluation.manifest import git_commit, index_facts  # noqa: E402
from labkit.evaluation.rows import REPO, SAMPLES, sha256_file  # noqa: E402
from labkit.evaluation.summary import JUDGE_NOTE, metric_names  # noqa: E402

__all__ = ["JUDGE_NOTE", "REPO", "SAMPLES", "SPEND_LEDGER", "git_commit", "index_facts", "metric_names",
           "sha256_file", "DEFAULT_DATA", "EXIT_GATE_FAILED", "EXIT_OK", "EXIT_ROW_ERRORS", "EXIT_STOPPED",
           "EXIT_USAGE",
           "INTERRUPT_GRACE_S", "LOCAL_BASELINE", "BudgetError", "ConfigError", "EvalReport", "Limiter",
           "ResultsFile", "RunOptions", "VariantRun", "bare_model_target", "compare", "compare_to_baseline",
           "evaluate", "flow_target", "gate_run", "http_target", "load_baseline", "load_tokens", "read_rows",
           "save_baseline", "select_rows", "summarize"]
