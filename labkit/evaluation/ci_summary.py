"""A Markdown job summary of an evaluation run against a recorded baseline (the CI evaluation gate).

Part of the evaluation runner (notebooks/04_evaluate.ipynb); `.github/workflows/eval-gate.yml` runs

    python -m labkit.evaluation.ci_summary build/eval-gate eval/baseline.local.json >> "$GITHUB_STEP_SUMMARY"

It prints: the gates and whether they passed; every metric of the branch with its 95% interval, the
baseline's mean and the paired difference over the rows both measured (with its interval); the means
per category, branch beside baseline; and the rows that got worse. Texts from the run (queries, gate
messages) are escaped for Markdown tables. It never fails the job itself: a missing run says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from labkit.evaluation.stats import Interval, paired_difference

WORST_ROWS = 15


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ").replace("\r", " ")[:160]


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _interval(iv: Interval | dict[str, Any] | None) -> str:
    if iv is None:
        return "n/a"
    data = iv if isinstance(iv, dict) else iv.as_dict()
    if data.get("mean") is None:
        return "n/a"
    return f"{data['mean']:.3f} [{data['low']:.3f}, {data['high']:.3f}] (n={data['n']})"


def _read_run(folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {}
    records: dict[str, dict[str, Any]] = {}
    results = folder / "results.jsonl"
    if results.exists():
        for line in results.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "id" in record:
                records[record["id"]] = record
    return summary, records, manifest


def render(run_dir: str | Path, baseline_path: str | Path) -> str:
    """The job summary as Markdown."""
    folder = Path(run_dir)
    if not (folder / "summary.json").exists():
        return (f"## Evaluation gate\n\nNo finished run in `{folder}`: the evaluation stopped before its "
                "summary.\n")
    summary, records, manifest = _read_run(folder)
    baseline = json.loads(Path(baseline_path).read_text(encoding="utf-8"))
    base_rows: dict[str, dict[str, Any]] = baseline.get("rows", {})
    ok = {rid: rec for rid, rec in records.items() if rec.get("status") == "ok"}
    gates = summary.get("gates", [])
    status = summary.get("status")
    passed = status == "complete" and bool(gates) and all(g.get("passed") for g in gates)
    if status not in ("complete", "complete_with_errors"):
        verdict = f"FAILED (the run stopped early: {status}; gates were not evaluated)"
    elif status == "complete_with_errors":
        verdict = "FAILED (rows ended in errors)"
    elif not gates:
        verdict = "no gate was run"
    else:
        verdict = "passed" if passed else "FAILED"
    lines = [f"## Evaluation gate: {verdict}", ""]
    model = manifest.get("model") or {}
    lines.append(f"Branch: flow_version `{summary.get('flow_version')}`, model `{model.get('chat')}` "
                 f"({model.get('backend')}); baseline: flow_version `{baseline.get('flow_version')}`, "
                 f"created {baseline.get('created')}. Status: {summary.get('status')}; rows ok "
                 f"{summary['rows']['ok']} of {summary['rows']['selected']}.")
    if model.get("backend") == "local":
        lines.append("")
        lines.append("> These numbers come from the embedded 135M model: an offline proxy for regressions, "
                     "not a quality measurement.")
    lines += ["", "### Gates", ""]
    marks = [f"- {'PASS' if g.get('passed') else 'FAIL'}: {_cell(g.get('message') or g.get('gate'))}"
             for g in gates]
    lines += marks or ["- (no gates)"]

    lines += ["", "### Metrics", "",
              "| metric | branch | baseline | difference (branch - baseline) | unmeasured |",
              "|---|---|---|---|---|"]
    for metric, iv in summary.get("intervals", {}).items():
        before = {rid: values.get(metric) for rid, values in base_rows.items()}
        now = {rid: rec.get(f"outputs.{metric}") for rid, rec in ok.items()}
        diff = paired_difference(before, now) if any(v is not None for v in before.values()) else None
        base_mean = baseline.get("metrics", {}).get(metric)
        lines.append(f"| `{metric}` | {_interval(iv)} | {_number(base_mean)} | {_interval(diff)} | "
                     f"{summary.get('unmeasured', {}).get(metric, 0)} |")

    categories = sorted({str(rec.get("category")) for rec in ok.values()})
    metrics = list(summary.get("intervals", {}))
    if categories and metrics:
        lines += ["", "### By category (branch / baseline, same rows)", "",
                  "| category | rows | " + " | ".join(f"`{m}`" for m in metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        for category in categories:
            members = [rid for rid, rec in ok.items() if str(rec.get("category")) == category]
            cells = []
            for metric in metrics:
                now = [ok[rid].get(f"outputs.{metric}") for rid in members]
                was = [base_rows.get(rid, {}).get(metric) for rid in members]
                now_v = [v for v in now if v is not None]
                was_v = [v for v in was if v is not None]
                cells.append(f"{_number(sum(now_v) / len(now_v) if now_v else None)} / "
                             f"{_number(sum(was_v) / len(was_v) if was_v else None)}")
            lines.append(f"| {_cell(category)} | {len(members)} | " + " | ".join(cells) + " |")

    worse = []
    for rid, rec in ok.items():
        for metric in metrics:
            now_value, was = rec.get(f"outputs.{metric}"), base_rows.get(rid, {}).get(metric)
            if now_value is not None and was is not None and now_value < was:
                worse.append((was - now_value, rid, rec, metric, was, now_value))
    lines += ["", f"### Rows that got worse ({len(worse)})", ""]
    if worse:
        lines += ["| row | category | metric | baseline | branch | query |", "|---|---|---|---|---|---|"]
        for _, rid, rec, metric, was, now_value in sorted(worse, key=lambda w: (-w[0], w[1]))[:WORST_ROWS]:
            lines.append(f"| {_cell(rid)} | {_cell(rec.get('category'))} | `{metric}` | {_number(was)} | "
                         f"{_number(now_value)} | {_cell(rec.get('inputs.query'))} |")
        if len(worse) > WORST_ROWS:
            lines.append(f"\n{len(worse) - WORST_ROWS} more in the run's results.jsonl (artifact).")
    else:
        lines.append("None.")
    errors = summary.get("errors") or {}
    if errors:
        lines += ["", f"### Rows with errors ({len(errors)})", ""]
        lines += [f"- {_cell(rid)}: {_cell(message)}" for rid, message in sorted(errors.items())[:WORST_ROWS]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m labkit.evaluation.ci_summary RUN_FOLDER BASELINE_JSON", file=sys.stderr)
        return 2
    try:
        print(render(args[0], args[1]), end="")
    except (OSError, ValueError, KeyError) as exc:  # a summary must never hide the gate's own result
        print(f"## Evaluation gate\n\nThe summary could not be written: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
