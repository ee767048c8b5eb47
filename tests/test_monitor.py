"""Monitoring (labkit.monitor): dashboards recomputed from known generated traffic, the online sample's
privacy, alert thresholds, drift verdicts, the report, resumable online evaluation and 100,000 spans.

No service is started: traffic comes from `labkit.monitor.simulate` (seeded), whose own records are
the ground truth the dashboards must reproduce. The service's sampling is tested in test_app.py.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from labkit import costs
from labkit.cli import app as cli
from labkit.evaluation.base import Score, Unmeasured
from labkit.monitor import alerts, dashboard, drift, online, report, simulate
from labkit.monitor.source import Source, load_scores, window
from labkit.schema import load_customers

END = dt.datetime(2026, 11, 30, 18, 0, tzinfo=dt.UTC)


def _baseline(n: int = 60, seed: int = 1) -> dict[str, Any]:
    """A small offline baseline (the shape `drift.build_baseline` writes)."""
    rng = np.random.default_rng(seed)
    kinds = ["product"] * 40 + ["comparison"] * 10 + ["order"] * 10
    rows = []
    for i in range(n):
        rows.append({"id": f"E-{i:03d}", "kind": kinds[i % len(kinds)], "top_score": float(rng.choice([0.031, 0.032, 0.033])),
                     "length_words": int(rng.integers(25, 60)), "citations_valid": float(rng.random() < 0.85),
                     "declined": float(rng.random() < 0.1), "groundedness": float(rng.choice([3, 4, 5, 5])),
                     "top_category": str(rng.choice(["Tents", "Camp Stoves", "Navigation"])), "documents": 5,
                     "mean_score": 0.03})
    return {"description": "test baseline", "label": "test", "rows": rows}


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> simulate.Traffic:
    home = tmp_path_factory.mktemp("synthetic")
    return simulate.simulate(home, days=3, requests_per_hour=30, seed=7, end=END,
                             drift_at=END - dt.timedelta(hours=24), baseline=_baseline())


def _in(records: list[dict[str, Any]], start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    return [r for r in records if start <= dt.datetime.fromisoformat(r["time"]) < end]


def test_dashboard_numbers_equal_counts_from_the_generated_traffic(traffic: simulate.Traffic) -> None:
    dash = dashboard.build(traffic.source, since="3d", now=END)
    o = dash.overview
    requests = traffic.requests
    assert o["requests"] == len(requests) > 1000
    assert o["errors"] == sum(1 for r in requests if r["status"] >= 500)
    assert o["rate_limited"] == sum(1 for r in requests if r["status"] == 429)
    assert o["blocked"] == sum(1 for r in requests if r.get("blocked"))
    latencies = [r["latency_s"] for r in requests if r["status"] == 200]
    assert o["p95_latency_s"] == pytest.approx(float(np.percentile(latencies, 95)))
    assert o["p50_latency_s"] == pytest.approx(float(np.percentile(latencies, 50)))

    # tokens and cost from the spans written, priced straight from data/prices.json
    prices = costs.load_prices()["models"]
    tokens_in = tokens_out = 0
    cost = 0.0
    unpriced = 0
    lo, hi = (END - dt.timedelta(days=3)).timestamp() * 1e9, END.timestamp() * 1e9
    for row in traffic.span_rows:
        attributes = json.loads(row[8])
        if not lo <= row[5] < hi:  # spans that start after the window's end (a late judge call)
            continue
        if attributes.get("gen_ai.operation.name") not in ("chat", "embeddings"):
            continue
        t_in = attributes.get("gen_ai.usage.input_tokens", 0)
        t_out = attributes.get("gen_ai.usage.output_tokens", 0)
        tokens_in, tokens_out = tokens_in + t_in, tokens_out + t_out
        model = attributes.get("gen_ai.response.model") or attributes["gen_ai.request.model"]
        base = {"gpt-4o-mini-2024-07-18": "gpt-4o-mini", "gpt-4o-2024-08-06": "gpt-4o", "chat": "gpt-4o-mini",
                "text-embedding-3-small": "text-embedding-3-small"}.get(model)
        if base is None:
            unpriced += t_in + t_out
            continue
        cost += t_in / 1000 * prices[base]["input_per_1k"] + t_out / 1000 * prices[base]["output_per_1k"]
    assert (o["input_tokens"], o["output_tokens"]) == (tokens_in, tokens_out)
    assert o["cost_usd"] == pytest.approx(cost)
    assert o["unpriced_models"] == [simulate.UNPRICED_MODEL] and o["unpriced_tokens"] == unpriced > 0
    unpriced_rows = dash.tokens[dash.tokens["model"] == simulate.UNPRICED_MODEL]
    assert unpriced_rows["cost_usd"].isna().all() and not unpriced_rows["priced"].any()  # never shown as 0
    assert set(dash.tokens["purpose"]) == {"service", "judge", "bulk"}

    ratings = [f["rating"] for f in traffic.feedback]
    assert (o["feedback_up"], o["feedback_down"]) == (ratings.count("up"), ratings.count("down"))
    # the hourly series adds up to the totals
    assert dash.hourly["requests"].sum() == len(requests)
    assert dash.hourly["input_tokens"].sum() == tokens_in
    assert dash.synthetic and "SYNTHETIC" in dashboard.summary_text(dash)


def test_a_window_counts_only_its_own_requests(traffic: simulate.Traffic) -> None:
    start = END - dt.timedelta(hours=6)
    dash = dashboard.build(traffic.source, since="6h", now=END)
    mine = _in(traffic.requests, start, END)
    assert dash.overview["requests"] == len(mine) > 0
    by_version = dash.by_flow_version.set_index("flow_version")["requests"].to_dict()
    assert by_version == {simulate.FLOW_VARIANT: len(mine)}  # drift began 24 h before the end
    per_customer = dash.by_customer.set_index("customer")["requests"]
    assert per_customer.sum() == len(mine) and len(per_customer) <= len(simulate.CUSTOMERS)
    # per-step latency: the answer's chat spans of the window, straight from the span rows
    latency = dash.latency.set_index("step")
    inside = [r for r in traffic.span_rows if start.timestamp() * 1e9 <= r[5] < END.timestamp() * 1e9]
    flow_ids = {r[1] for r in inside if r[3] == "contoso_chat"}
    answers = [(r[6] - r[5]) / 1e6 for r in inside if r[3].startswith("chat ") and r[2] in flow_ids]
    assert latency.loc["chat (answer)", "count"] == len(answers)
    assert latency.loc["chat (answer)", "p95_ms"] == pytest.approx(float(np.percentile(answers, 95)))


def test_windows_and_durations_are_read_or_refused_clearly() -> None:
    win = window("90m", now=END)
    assert win.end - win.start == dt.timedelta(minutes=90)
    assert window("2026-11-30T00:00:00", now=END).start == dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="duration"):
        window("yesterday-ish", now=END)
    with pytest.raises(ValueError, match="empty"):
        window("2026-12-01T00:00:00", until="2026-11-30T00:00:00")


def test_an_empty_state_folder_gives_an_empty_dashboard_not_an_error(tmp_path: Path) -> None:
    dash = dashboard.build(Source(tmp_path), since="1h")
    assert dash.overview["requests"] == 0 and dash.overview["error_rate"] is None
    assert dash.overview["p95_latency_s"] is None and not dash.synthetic
    assert "requests 0" in dashboard.summary_text(dash)


# ---- online samples ----------------------------------------------------------------------------
class _Result:
    def __init__(self, answer: str, request_id: str = "ab" * 16):
        self.answer = answer
        self.request_id = request_id
        self.flow_version = "fv"
        self.model = "m"
        self.context = {"documents": [{"id": "P-001-section-000", "product_id": "P-001", "score": 0.03,
                                       "content": "secret document text"}], "orders": [{"id": "O-0001"}]}
        self.citations = ["P-001"]
        self.dropped_citations: list[str] = []
        self.blocked = False


def test_the_online_sample_never_holds_a_customers_email_phone_or_name() -> None:
    customers = load_customers()
    personal = []
    for c in customers:
        personal += [c.email, c.phone, c.first_name, c.last_name, c.id,
                     f"{c.phone[:3]}.{c.phone[4:]}", f"(425) {c.phone}"]
    question = "Hi, " + "; ".join(f"I am {c.first_name} {c.last_name.upper()}, {c.email}, call {c.phone} or "
                                  f"(425) {c.phone}, id {c.id}, at {c.address.street}" for c in customers)
    dash = "\u2013"  # an en dash between the digits
    answer = "Sure " + ", ".join(f"{c.first_name.lower()} ({c.email.upper()}, {c.phone[:3]}.{c.phone[4:]}, "
                                 f"{c.phone.replace('-', '')}, {c.phone.replace('-', dash)}, "
                                 f"{c.id.lower()}, {c.first_name}_{c.last_name}2)" for c in customers)
    record = online.sample_record(_Result(answer), question, "hash", "products-section", extra_names=["Zed"])
    text = json.dumps(record).lower()
    for value in personal:
        assert value.lower() not in text, value
    assert not re.search(r"@example\.com", text)
    assert "secret document text" not in text  # ids and scores only
    assert record["documents"] == [{"id": "P-001-section-000", "product_id": "P-001", "score": 0.03}]
    long = online.sample_record(_Result("x" * 10_000), "q" * 10_000, "hash", None)
    assert len(long["question"]) == len(long["answer"]) == online.MAX_CHARS
    # product facts, dates and order ids survive the redaction
    for fact in ("The Spark stove weighs 85 g and costs $49.95 [P-016]", "300-1200 lumens",
                 "order O-0001 of 2026-03-14, part RL-PS-14"):
        assert online.redact(fact) == fact


def test_sampling_is_a_stable_share_of_request_ids() -> None:
    ids = [f"{i:032x}" for i in range(4000)]
    chosen = [i for i in ids if online.sampled(i, 0.1)]
    assert 300 < len(chosen) < 500 and chosen == [i for i in ids if online.sampled(i, 0.1)]
    assert all(online.sampled(i, 1.0) for i in ids[:10]) and not any(online.sampled(i, 0.0) for i in ids[:10])


def test_the_sample_store_keeps_only_the_newest(isolated_home_no_services: Path) -> None:
    from labkit.config import get_settings

    settings = get_settings()
    assert settings.labkit_monitor_sample_max == 50
    for i in range(300):
        assert online.maybe_sample(_Result("an answer", f"{i:032x}"), "a question", "C-001", settings=settings)
    lines = Source.current(settings).samples.read_text().splitlines()
    assert len(lines) <= 60 and json.loads(lines[-1])["request_id"] == f"{299:032x}"


@pytest.fixture
def isolated_home_no_services(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    clean_env.setenv("LABKIT_MONITOR_SAMPLE_RATE", "1")
    clean_env.setenv("LABKIT_MONITOR_SAMPLE_MAX", "50")
    return tmp_path / "home"


def _append_sample(source: Source, request_id: str) -> None:
    record = online.sample_record(_Result("The tent [P-001] answer", request_id), "Which tent?", "h", "products-section")
    with source.samples.open("a") as f:
        f.write(json.dumps(record) + "\n")


class _Judge:
    """A judge double with a fixed script of outcomes (the real judge runs in test_app.py)."""

    def __init__(self, outcomes: list[Any]):
        self.outcomes = list(outcomes)
        self.calls = 0

    def judge(self, query: str, response: str, context: str = "") -> Any:
        self.calls += 1
        assert "document" in context
        return self.outcomes.pop(0)


def test_online_evaluation_is_resumable_and_counts_unreadable_judgements_as_unmeasured(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = Source(tmp_path)
    source.samples.parent.mkdir(parents=True)
    samples = []
    for i in range(4):
        record = online.sample_record(_Result(f"The tent [P-001] answer {i}", f"{i:032x}"),
                                      "Which tent is lighter?", "h", "products-section")
        samples.append(json.dumps(record))
    source.samples.write_text("\n".join(samples) + "\n")
    monkeypatch.setattr(online, "fetch_documents", lambda index, ids, settings=None: [f"document {i}" for i in ids])
    first = online.evaluate(source, limit=2, progress=False,
                            judge_factory=lambda: _Judge([Score(4.0), Unmeasured("no number in the reply")]))
    assert [s["groundedness"] for s in first] == [4.0, None]
    assert first[1]["groundedness_unmeasured"] == "no number in the reply"
    judge = _Judge([Score(5.0), Score(2.0)])
    second = online.evaluate(source, progress=False, judge_factory=lambda: judge)
    assert judge.calls == 2 and [s["request_id"] for s in second] == [f"{2:032x}", f"{3:032x}"]
    scores = load_scores(source)
    assert len(scores) == 4 and scores["groundedness"].isna().sum() == 1  # unmeasured, not zero
    assert online.evaluate(source, progress=False, judge_factory=lambda: _Judge([])) == []
    # a failed judge call is retried by the next run; an unreadable reply (above) is not
    _append_sample(source, f"{9:032x}")
    failed = online.evaluate(source, progress=False,
                             judge_factory=lambda: _Judge([Unmeasured("judge call failed: APIConnectionError: down")]))
    assert [s["groundedness_retry"] for s in failed] == [True]
    again = online.evaluate(source, progress=False, judge_factory=lambda: _Judge([Score(3.0)]))
    assert [(s["request_id"], s["groundedness"]) for s in again] == [(f"{9:032x}", 3.0)]
    assert load_scores(source).set_index("request_id").loc[f"{9:032x}", "groundedness"] == 3.0
    # the alert metric averages measured scores only: (4 + 5 + 2) / 3
    metrics = alerts.online_metrics(source, window("1h"))
    assert metrics["groundedness_mean"] == pytest.approx(14 / 4)
    assert scores.iloc[0]["kind"] == "comparison" and scores.iloc[0]["citations_valid"] == 1.0


# ---- alerts ------------------------------------------------------------------------------------
def _rules(path: Path, threshold: float, op: str = ">=", metric: str = "p95_latency_s") -> Path:
    path.write_text(f"window: 6h\nrules:\n  - name: r\n    metric: {metric}\n    op: '{op}'\n"
                    f"    threshold: {threshold!r}\n")
    return path


def test_an_alert_fires_exactly_at_its_threshold(traffic: simulate.Traffic, tmp_path: Path) -> None:
    value = alerts.metrics(traffic.source, window("6h", now=END))["p95_latency_s"]
    assert value is not None
    at = alerts.evaluate(_rules(tmp_path / "a.yaml", value), traffic.source, now=END)
    assert at.loc[0, "state"] == "fired" and at.loc[0, "value"] == value
    above = alerts.evaluate(_rules(tmp_path / "b.yaml", float(np.nextafter(value, np.inf))), traffic.source, now=END)
    assert above.loc[0, "state"] == "quiet"
    strict = alerts.evaluate(_rules(tmp_path / "c.yaml", value, ">"), traffic.source, now=END)
    assert strict.loc[0, "state"] == "quiet"
    below = alerts.evaluate(_rules(tmp_path / "d.yaml", value, "<="), traffic.source, now=END)
    assert below.loc[0, "state"] == "fired"


def test_a_rule_without_data_says_so_and_never_fires(tmp_path: Path) -> None:
    table = alerts.evaluate(_rules(tmp_path / "r.yaml", 0.0, ">=", "groundedness_mean"), Source(tmp_path / "empty"))
    assert table.loc[0, "state"] == "no data"


def test_cost_with_only_unpriced_model_calls_is_no_data_not_zero(tmp_path: Path) -> None:
    """Only the nightly bulk job (a model without a price) in the window: the cost is unknown."""
    made = simulate.simulate(tmp_path / "s", days=1, requests_per_hour=0, seed=5, end=END, baseline=_baseline())
    assert made.spans > 0 and not made.requests
    values = alerts.metrics(made.source, window("1d", now=END))
    assert values["cost_per_hour_usd"] is None and values["unpriced_tokens"] > 0
    table = alerts.evaluate(_rules(tmp_path / "c.yaml", 0.0, ">=", "cost_usd"), made.source, now=END)
    assert table.loc[0, "state"] == "no data"


def test_simulate_never_writes_over_recorded_traffic(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from labkit.config import get_settings

    home = get_settings().home
    with pytest.raises(ValueError, match="recorded traffic"):
        simulate.simulate(home, days=1, baseline=_baseline())
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    (recorded / "traces.sqlite").write_bytes(b"")
    with pytest.raises(ValueError, match="SYNTHETIC"):
        simulate.simulate(recorded, days=1, baseline=_baseline())


def test_bad_rules_are_refused_with_the_rule_and_field_named(tmp_path: Path) -> None:
    with pytest.raises(alerts.RuleError, match="unknown metric 'latency'"):
        alerts.load_rules(_rules(tmp_path / "x.yaml", 1, ">=", "latency"))
    with pytest.raises(alerts.RuleError, match="op must be"):
        alerts.load_rules(_rules(tmp_path / "y.yaml", 1, "=>"))
    (tmp_path / "z.yaml").write_text("rules:\n  - name: r\n    metric: errors\n")
    with pytest.raises(alerts.RuleError, match="missing op, threshold"):
        alerts.load_rules(tmp_path / "z.yaml")
    (tmp_path / "e.yaml").write_text("rules:\n  - name: r\n    metric: errors\n    op: '>='\n    threshold:\n")
    with pytest.raises(alerts.RuleError, match="threshold"):
        alerts.load_rules(tmp_path / "e.yaml")
    (tmp_path / "n.yaml").write_text("rules: []\n")
    with pytest.raises(alerts.RuleError, match="empty"):
        alerts.load_rules(tmp_path / "n.yaml")
    assert len(alerts.load_rules()) >= 5  # the kit's own file is valid


def test_the_alerts_command_exits_1_when_a_rule_fires(traffic: simulate.Traffic, tmp_path: Path) -> None:
    runner = CliRunner()
    fired = runner.invoke(cli, ["monitor", "alerts", "--home", str(traffic.home), "--rules",
                                str(_rules(tmp_path / "f.yaml", 0.0, ">=", "requests"))])
    # the window ends now, long after the synthetic traffic: zero requests is still a value
    assert fired.exit_code == 1, fired.output
    assert "FIRED" in fired.output
    quiet = runner.invoke(cli, ["monitor", "alerts", "--home", str(traffic.home), "--rules",
                                str(_rules(tmp_path / "q.yaml", 10**9, ">=", "requests"))])
    assert quiet.exit_code == 0 and "quiet" in quiet.output
    bad = runner.invoke(cli, ["monitor", "alerts", "--home", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2


# ---- drift -------------------------------------------------------------------------------------
def test_drift_is_seen_after_the_change_and_not_before(traffic: simulate.Traffic) -> None:
    scores = load_scores(traffic.source)
    times = pd.to_datetime(scores["time"], utc=True)
    change = pd.Timestamp(END - dt.timedelta(hours=24))
    before = drift.check(scores[times < change], _baseline()).set_index("metric")["verdict"]
    after = drift.check(scores[times >= change], _baseline()).set_index("metric")["verdict"]
    assert (before == "no drift detected").all(), before.to_dict()
    for metric in ("kind", "length_words", "groundedness", "citations_valid"):
        assert after[metric] == "drifted", after.to_dict()
    few = drift.check(scores.head(5), _baseline()).set_index("metric")["verdict"]
    assert (few == "too few samples").all()
    assert any("drifted" in line for line in drift.verdict_lines(drift.check(scores[times >= change], _baseline())))


def test_the_baseline_is_built_from_an_evaluation_folder(tmp_path: Path) -> None:
    rows = [{"id": "E-1", "status": "ok", "category": "product_fact", "inputs.query": "How heavy is the Spark stove?",
             "outputs.response": "It weighs 85 g [P-016].", "outputs.citations": ["P-016"],
             "outputs.dropped_citations": [], "outputs.retrieved": [{"id": "a", "product_id": "P-016", "score": 0.03}],
             "outputs.groundedness.score": 5.0},
            {"id": "E-2", "status": "error"}]
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"model": {"backend": "local", "chat": "m"}}))
    baseline = drift.build_baseline(tmp_path, tmp_path / "b.json")
    assert len(baseline["rows"]) == 1 and "offline proxy" in baseline["label"]
    row = baseline["rows"][0]
    assert (row["top_score"], row["citations_valid"], row["groundedness"], row["kind"]) == (0.03, 1.0, 5.0, "product")
    assert json.loads((tmp_path / "b.json").read_text())["rows"] == baseline["rows"]
    with pytest.raises(FileNotFoundError, match="labkit monitor baseline"):
        drift.load_baseline(tmp_path / "missing.json")


# ---- the report and scale ----------------------------------------------------------------------
def test_the_report_is_self_contained_and_says_synthetic(traffic: simulate.Traffic, tmp_path: Path) -> None:
    dash = dashboard.build(traffic.source, since="3d", now=END)
    table = alerts.evaluate(None, traffic.source, now=END)
    path = report.write(dash, tmp_path / "monitor.html", table, drift.check(load_scores(traffic.source), _baseline()))
    text = path.read_text()
    assert text.startswith("<!doctype html>") and "SYNTHETIC DATA" in text and "<title>" in text
    assert not re.search(r"(?:src|href)=['\"]?(?:https?:)?//", text)  # nothing loaded from elsewhere
    assert "<script" not in text and "data:image/png;base64," in text
    assert not re.search(r"\bC-\d{3}\b", text)  # customers appear only as keyed hashes


def test_the_summary_and_report_commands(traffic: simulate.Traffic, tmp_path: Path) -> None:
    runner = CliRunner()
    summary = runner.invoke(cli, ["monitor", "summary", "--home", str(traffic.home), "--since", "30d"])
    assert summary.exit_code == 0 and "SYNTHETIC" in summary.output and "requests" in summary.output
    bad = runner.invoke(cli, ["monitor", "summary", "--home", str(traffic.home), "--since", "soon"])
    assert bad.exit_code == 2 and "duration" in bad.output
    out = tmp_path / "r.html"
    baseline = tmp_path / "b.json"
    baseline.write_text(json.dumps(_baseline()))
    made = runner.invoke(cli, ["monitor", "report", "--home", str(traffic.home), "--since", "30d", "--out", str(out),
                               "--baseline", str(baseline)])
    assert made.exit_code == 0, made.output
    assert out.exists()


def test_a_hundred_thousand_spans_summarise(tmp_path: Path) -> None:
    """The scale the issue names; the time it takes is measured in benchmarks/monitor.py, not here."""
    made = simulate.simulate(tmp_path, days=7, requests_per_hour=72, seed=3, end=END, baseline=_baseline())
    assert made.spans >= 100_000
    dash = dashboard.build(made.source, since="7d", now=END)
    assert dash.overview["requests"] == len(made.requests)
    assert int(dash.latency.set_index("step").loc["contoso_chat", "count"]) == \
        sum(1 for r in made.span_rows if r[3] == "contoso_chat")


def test_a_failing_span_records_the_error_type_never_its_message(clean_env: pytest.MonkeyPatch) -> None:
    """Spans can leave the machine (OTLP, Azure Monitor): an exception's text may quote a key."""
    from labkit.config import get_settings
    from labkit.tracing import get_trace, get_tracer, model_span, purpose

    with pytest.raises(RuntimeError), get_tracer().start_as_current_span("step") as span:
        trace_id = f"{span.get_span_context().trace_id:032x}"
        with purpose("judge"), model_span("chat", "m"):
            raise RuntimeError("Incorrect API key provided: sk-canary-123")
    stored = (get_settings().home / "traces.sqlite").read_bytes()
    assert b"sk-canary" not in stored
    spans = {s["name"]: s for s in get_trace(trace_id)}
    assert spans["step"]["status"] == spans["chat m"]["status"] == "ERROR"
    assert spans["chat m"]["attributes"]["error.type"] == "RuntimeError" and spans["chat m"]["events"] == []
    assert spans["chat m"]["attributes"]["labkit.purpose"] == "judge"
