"""Intervals, paired differences, gates and the runner's bookkeeping (no servers needed)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from labkit.evaluation import runner
from labkit.evaluation.stats import (
    GateError,
    Interval,
    bootstrap_mean,
    check_baseline,
    check_gate,
    paired_difference,
    parse_gate,
)


def test_bootstrap_interval_contains_the_mean_and_is_reproducible() -> None:
    values = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 3
    a, b = bootstrap_mean(values), bootstrap_mean(values)
    assert a == b  # fixed seed
    assert a.n == 30 and math.isclose(a.mean, 0.7)
    assert a.low < 0.7 < a.high and 0.5 < a.low and a.high < 0.9
    # a normal-approximation check of the width: 1.96 * sd / sqrt(n) ~ 0.164
    assert 0.12 < (a.high - a.low) / 2 < 0.2


def test_unmeasured_values_are_left_out_not_zero() -> None:
    iv = bootstrap_mean([5, None, 4, float("nan"), 3])
    assert iv.n == 3 and iv.mean == 4.0
    assert bootstrap_mean([]) == Interval(None, None, None, 0)
    assert bootstrap_mean([None, None]).n == 0
    one = bootstrap_mean([2.5])
    assert one.low == one.high == one.mean == 2.5


def test_paired_difference_uses_rows_measured_in_both() -> None:
    a = {"r1": 1, "r2": 0, "r3": 1, "r4": None, "r5": 1}
    b = {"r1": 1, "r2": 1, "r3": 1, "r4": 1, "r6": 0}
    diff = paired_difference(a, b)
    assert diff.n == 3 and math.isclose(diff.mean, 1 / 3)
    # pairing: a constant shift has a zero-width interval, an unpaired comparison would not
    base = {f"r{i}": float(i % 5) for i in range(40)}
    shifted = {k: v + 0.5 for k, v in base.items()}
    d = paired_difference(base, shifted)
    assert math.isclose(d.low, 0.5) and math.isclose(d.high, 0.5)


@pytest.mark.parametrize("expr,metric,op,value", [
    ("groundedness.score >= 3.5", "groundedness.score", ">=", 3.5),
    ("retrieval.hit_at_5>=0.8", "retrieval.hit_at_5", ">=", 0.8),
    ("checks.length_ok > 0", "checks.length_ok", ">", 0.0),
    (" similarity.value <= -0.25 ", "similarity.value", "<=", -0.25),
])
def test_gate_grammar(expr: str, metric: str, op: str, value: float) -> None:
    gate = parse_gate(expr)
    assert (gate.metric, gate.op, gate.threshold) == (metric, op, value)


@pytest.mark.parametrize("expr", ["", "groundedness >= 3", "groundedness.score => 3", "a.b >= x",
                                  "a.b == 3", "a.b >= 3; rm -rf /", "a.b.c >= 1"])
def test_bad_gates_name_the_grammar(expr: str) -> None:
    with pytest.raises(GateError, match="<evaluator>.<key> <op> <value>"):
        parse_gate(expr)


def test_gates_use_the_conservative_bound() -> None:
    iv = Interval(mean=0.85, low=0.72, high=0.95, n=40)
    assert check_gate(parse_gate("retrieval.hit_at_5 >= 0.8"), iv).passed is False  # mean passes, bound not
    assert check_gate(parse_gate("retrieval.hit_at_5 >= 0.7"), iv).passed is True
    assert check_gate(parse_gate("retrieval.hit_at_5 <= 0.9"), iv).passed is False  # upper bound 0.95
    small = check_gate(parse_gate("retrieval.hit_at_5 >= 0.5"), Interval(0.9, 0.7, 1.0, 5))
    assert small.passed and small.warning and "5 measured rows" in small.warning
    none = check_gate(parse_gate("groundedness.score >= 3"), Interval(None, None, None, 0))
    assert none.passed is False and "no measured rows" in none.message


def test_baseline_gate_is_non_inferiority() -> None:
    assert check_baseline("m.v", Interval(-0.05, -0.15, 0.05, 30), 0.2).passed
    assert not check_baseline("m.v", Interval(-0.1, -0.3, 0.1, 30), 0.2).passed
    assert not check_baseline("m.v", Interval(None, None, None, 0), 0.2).passed


def test_limiter_halves_on_429_and_grows_back() -> None:
    lim = runner.Limiter(8)
    lim.on_rate_limit()
    lim.on_rate_limit()
    assert lim.limit == 2
    for _ in range(2):
        lim.on_success()
    assert lim.limit == 3
    for _ in range(100):
        lim.on_success()
    assert lim.limit == 8
    lim2 = runner.Limiter(1)
    lim2.on_rate_limit()
    assert lim2.limit == 1


def test_results_file_survives_a_torn_line_and_keeps_one_line_per_row(tmp_path: Path) -> None:
    f = runner.ResultsFile(tmp_path / "results.jsonl")
    f.append({"id": "a", "status": "ok"})
    f.append({"id": "b", "status": "error"})
    with (tmp_path / "results.jsonl").open("a") as fh:
        fh.write('{"id": "c", "sta')  # killed mid-write
    loaded = f.load()
    assert set(loaded) == {"a", "b"}
    f.rewrite(r for r in loaded.values() if r["status"] == "ok")
    assert [json.loads(line)["id"] for line in (tmp_path / "results.jsonl").read_text().splitlines()] == ["a"]


def test_read_rows_checks_ids_and_queries(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "x", "query": "q"}\n{"id": "x", "query": "r"}\n')
    with pytest.raises(ValueError, match="rows.jsonl:2: duplicate id"):
        runner.read_rows(path)
    path.write_text('{"id": "x"}\n')
    with pytest.raises(ValueError, match="rows.jsonl:1: missing query"):
        runner.read_rows(path)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="rows.jsonl:1: not valid JSON"):
        runner.read_rows(path)
    with pytest.raises(FileNotFoundError):
        runner.read_rows(tmp_path / "missing.jsonl")


def test_summary_counts_unmeasured_and_errors() -> None:
    rows = [{"id": f"r{i}"} for i in range(4)]
    records = {
        "r0": {"id": "r0", "status": "ok", "category": "a", "outputs.j.score": 4, "usage": {}, "latency_s": 1,
               "cost_usd": 0.0},
        "r1": {"id": "r1", "status": "ok", "category": "a", "outputs.j.score": None, "usage": {}, "latency_s": 2,
               "cost_usd": 0.0},
        "r2": {"id": "r2", "status": "error", "error": "boom", "latency_s": 1},
    }
    s = runner.summarize("v", rows, records, "complete_with_errors", "", {"model": {"judge": "x"}})
    assert s["metrics"]["j.score"] == 4 and s["unmeasured"]["j.score"] == 2
    assert s["rows"] == {"selected": 4, "ok": 2, "error": 1, "pending": 1}
    assert s["errors"] == {"r2": "boom"} and s["by_category"]["a"]["rows"] == 2


def test_retry_after_header_forms() -> None:
    from email.utils import formatdate

    import httpx
    import openai

    from labkit.models import is_transient, retry_after

    def error(headers: dict[str, str], status: int = 429) -> openai.APIStatusError:
        request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
        response = httpx.Response(status, headers=headers, request=request)
        cls = openai.RateLimitError if status == 429 else openai.APIStatusError
        return cls("x", response=response, body=None)

    assert retry_after(error({"retry-after": "2"})) == 2.0
    assert retry_after(error({"retry-after-ms": "1500"})) == 1.5
    assert retry_after(error({"retry-after": "9999"})) == 60.0
    later = retry_after(error({"retry-after": formatdate(time.time() + 5, usegmt=True)}))
    assert later is not None and 3 <= later <= 6
    assert retry_after(error({})) is None and retry_after(ValueError("x")) is None
    assert is_transient(error({})) and is_transient(error({}, 503))
    assert not is_transient(error({}, 400)) and not is_transient(ValueError("x"))


def test_baseline_gate_skips_metrics_without_common_rows_and_flags_lost_measurements(tmp_path) -> None:
    from labkit.evaluation.runner import VariantRun, compare_to_baseline

    base_rows = {f"R{i}": {"m.a": 1.0, "m.b": (1.0 if i < 5 else None)} for i in range(30)}
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"metrics": {"m.a": 1.0, "m.b": 1.0}, "rows": base_rows}))

    def run(records: dict[str, dict]) -> VariantRun:
        intervals = {"m.a": {}, "m.b": {}}
        return VariantRun("v", tmp_path, {"status": "complete", "intervals": intervals}, {}, records)

    # rows 10..29: m.b was never measured there in the baseline -> skipped, not failed
    subset = run({f"R{i}": {"outputs.m.a": 1.0, "outputs.m.b": None} for i in range(10, 30)})
    a, b = compare_to_baseline(subset, baseline, max_drop=0.2)
    assert a.passed and a.n == 20 and a.message.startswith("PASS")
    assert b.passed and b.message.startswith("SKIP") and b.warning

    # rows 0..4 were measured in the baseline; now two are unmeasured: compared on 3, and said
    lost = run({f"R{i}": {"outputs.m.a": 1.0, "outputs.m.b": (None if i < 2 else 1.0)} for i in range(5)})
    b = compare_to_baseline(lost, baseline, max_drop=0.2)[1]
    assert b.passed and b.n == 3 and "2 rows measured in the baseline are unmeasured" in b.message

    # all of them unmeasured now: that is a failure, not a skip
    gone = run({f"R{i}": {"outputs.m.a": 1.0, "outputs.m.b": None} for i in range(5)})
    b = compare_to_baseline(gone, baseline, max_drop=0.2)[1]
    assert not b.passed and b.message.startswith("FAIL")


def test_select_rows_first_and_stratified() -> None:
    rows = [{"id": f"R{i}", "category": c} for i, c in enumerate("aaaabbbcca")]
    assert [r["id"] for r in runner.select_rows(rows, 3)] == ["R0", "R1", "R2"]
    picked = runner.select_rows(rows, 4, "stratified")
    assert [r["id"] for r in picked] == ["R0", "R1", "R4", "R7"]  # a, b, c, then a again; file order
    assert runner.select_rows(rows, 4, "stratified") == picked  # deterministic
    assert len(runner.select_rows(rows, 99, "stratified")) == len(rows)
    with pytest.raises(ValueError, match="sample must be one of"):
        runner.select_rows(rows, 2, "random")


def _light(tmp_path: Path, rows: list[dict], target, **kwargs) -> runner.EvalReport:
    return runner.evaluate(rows, target=target, target_name="light", out=tmp_path / "run", progress=False,
                           **kwargs)


def test_a_folder_holding_only_a_torn_line_resumes_cleanly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    rows = [{"id": f"r{i}", "query": "q"} for i in range(3)]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.jsonl").write_text('{"id": "r0", "sta')  # killed mid-write, nothing else
    report = _light(tmp_path, rows, lambda row: {"answer": "fine"})
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert report.status == "complete" and sorted(json.loads(x)["id"] for x in lines) == ["r0", "r1", "r2"]


def test_a_target_returning_odd_data_is_that_rows_error_not_a_traceback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    rows = [{"id": "good", "query": "q"}, {"id": "odd", "query": "q"}]
    report = _light(tmp_path, rows, lambda row: {"answer": "a", "usage": 5 if row["id"] == "odd" else {}})
    assert report.status == "complete_with_errors" and report.exit_code == runner.EXIT_ROW_ERRORS
    assert report.run.records["odd"]["status"] == "error" and report.run.records["good"]["status"] == "ok"


def test_gates_and_baseline_are_checked_before_any_row_runs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    calls: list[str] = []
    rows = [{"id": "r0", "query": "q"}]

    def target(row: dict) -> dict:
        calls.append(row["id"])
        return {"answer": "a"}

    with pytest.raises(GateError, match="does not use"):
        _light(tmp_path, rows, target, gates=["groundedness.score >= 3"])
    with pytest.raises(FileNotFoundError, match="no baseline file"):
        _light(tmp_path, rows, target, baseline=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"metrics": {}}')
    with pytest.raises(ValueError, match="not a baseline file"):
        _light(tmp_path, rows, target, baseline=tmp_path / "bad.json")
    monkeypatch.setenv("LABKIT_BUDGET_USD", "nan")
    with pytest.raises(runner.ConfigError, match="finite"):
        _light(tmp_path, rows, target)
    assert calls == []


def test_a_baseline_sharing_no_rows_fails_the_gate(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"metrics": {"m.a": 1.0}, "rows": {"X1": {"m.a": 1.0}}}))
    run = runner.VariantRun("v", tmp_path, {"status": "complete", "intervals": {"m.a": {}}}, {},
                            {"r1": {"outputs.m.a": 1.0}})
    results = runner.compare_to_baseline(run, baseline, max_drop=0.2)
    assert [r.passed for r in results] == [True, False] and "no row of this run" in results[-1].message


def test_a_finished_row_is_never_hidden_by_a_later_error_line(tmp_path: Path) -> None:
    f = runner.ResultsFile(tmp_path / "results.jsonl")
    f.append({"id": "a", "status": "ok"})
    f.append({"id": "a", "status": "error"})  # a second writer raced
    assert f.load()["a"]["status"] == "ok"


def test_a_folder_in_use_by_another_run_is_refused(tmp_path: Path, monkeypatch) -> None:
    from filelock import FileLock

    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    (tmp_path / "run").mkdir()
    with FileLock(str(tmp_path / "run" / ".run.lock")):  # as another process would hold it
        with pytest.raises(runner.ConfigError, match="another evaluation is writing"):
            _light(tmp_path, [{"id": "r0", "query": "q"}], lambda row: {"answer": "a"})
    assert _light(tmp_path, [{"id": "r0", "query": "q"}], lambda row: {"answer": "a"}).status == "complete"


def test_pass_fail_metrics_get_a_wilson_interval_that_does_not_collapse() -> None:
    from labkit.evaluation.stats import mean_interval, wilson_interval

    four = mean_interval([1, 1, 1, 1])
    assert four.mean == 1.0 and four.high == 1.0 and 0.50 < four.low < 0.52 and four.method.startswith("Wilson")
    low, high = wilson_interval(3, 10)  # textbook value: 0.108 to 0.603
    assert abs(low - 0.1078) < 1e-3 and abs(high - 0.6032) < 1e-3
    assert mean_interval([0.5, 1.0, 0.0]).method.startswith("percentile bootstrap")
    assert mean_interval([None, None]).n == 0
    assert not check_gate(parse_gate("retrieval.hit_at_5 >= 0.8"), mean_interval([1])).passed
