"""Gates and baselines: absolute gates, non-inferiority against a baseline file, variant comparison.

Part of the evaluation runner (labkit.evaluation.runner; notebooks/04_evaluate.ipynb).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from labkit.evaluation.results import VariantRun, write_json
from labkit.evaluation.rows import REPO
from labkit.evaluation.stats import Gate, GateResult, Interval, check_baseline, check_gate, paired_difference
from labkit.jsonl import read_json_file

LOCAL_BASELINE = REPO / "eval" / "baseline.local.json"


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
    write_json(path, payload)
    return path


def load_baseline(baseline: str | Path) -> dict[str, Any]:
    """A baseline file written by `save_baseline`; a missing or malformed one raises with its path."""
    path = Path(baseline)
    data = read_json_file(path, "baseline file")
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
