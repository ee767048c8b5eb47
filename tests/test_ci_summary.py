"""The CI job summary (labkit.evaluation.ci_summary): gates, metrics against the baseline with paired
intervals, per-category means and the rows that got worse, from real runner output folders."""

from __future__ import annotations

from pathlib import Path

from labkit.evaluation import ci_summary, runner

ROWS = [{"id": f"R{i}", "query": f"question {i} | with a pipe", "category": "product_fact" if i % 2 else "comparison",
         "expected_facts": ["42"]} for i in range(6)]


def _run(tmp_path: Path, name: str, good: set[str], **kwargs) -> runner.EvalReport:
    def target(row: dict) -> dict:
        return {"answer": "It is 42 grams." if row["id"] in good else "I am not sure."}

    return runner.evaluate(ROWS, target=target, target_name=name, out=tmp_path / name, progress=False,
                           evaluators=["fact_recall"], **kwargs)


def test_the_summary_compares_the_branch_with_the_baseline(tmp_path: Path) -> None:
    main = _run(tmp_path, "main", {r["id"] for r in ROWS})
    baseline = runner.save_baseline(main.run, tmp_path / "baseline.json")
    branch = _run(tmp_path, "branch", {"R0", "R1", "R2"}, baseline=baseline, max_drop=0.2)
    assert branch.exit_code == runner.EXIT_GATE_FAILED
    text = ci_summary.render(tmp_path / "branch", baseline)
    assert text.startswith("## Evaluation gate: FAILED")
    assert "| `fact_recall.value` | 0.500 [" in text and "| 1.000 |" in text
    assert "-0.500 [" in text  # the paired difference with its interval
    assert "### By category" in text and "| comparison | 3 |" in text
    assert "### Rows that got worse (3)" in text
    for rid in ("R3", "R4", "R5"):
        assert f"| {rid} |" in text
    assert "question 3 \\| with a pipe" in text  # table cells are escaped


def test_a_missing_run_is_said_not_raised(tmp_path: Path) -> None:
    assert "No finished run" in ci_summary.render(tmp_path / "nothing", tmp_path / "b.json")
    assert ci_summary.main([str(tmp_path / "nothing")]) == 2


def test_a_run_that_stopped_early_is_never_called_passed(tmp_path: Path) -> None:
    import json

    main = _run(tmp_path, "main", {r["id"] for r in ROWS})
    summary = json.loads((main.run.out / "summary.json").read_text())
    summary.update(status="aborted", gates=[])
    (main.run.out / "summary.json").write_text(json.dumps(summary))
    baseline = runner.save_baseline(main.run, tmp_path / "baseline.json")
    assert ci_summary.render(main.run.out, baseline).startswith("## Evaluation gate: FAILED (the run stopped early")
