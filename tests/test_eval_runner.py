"""The evaluation runner against real servers: resume after kills, 429s, stalls, the budget guard.

A light target (one short chat call per row, no judges) keeps 50+ row batches to seconds. Faults
come from real HTTP servers on 127.0.0.1 (tests/faults.py), never from patched SDK internals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.config import Settings
from labkit.evaluation import runner
from tests.conftest import module_home
from tests.faults import FaultProxy

ROWS = [{"id": f"R-{i:03d}", "query": f"Say the number {i}.", "category": "light"} for i in range(1, 101)]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with module_home(tmp_path_factory, "eval-runner") as settings:
        from labkit.services import ensure_running

        ensure_running(["model"], settings=settings)
        yield settings


@pytest.fixture
def proxy(local: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The chat backend is 'openai' pointed at a fault proxy in front of the local model server."""
    from labkit.services import ensure_running

    state = ensure_running(["model"], settings=local)["model"]
    with FaultProxy(state.base_url, local.labkit_local_chat_model) as fp:
        monkeypatch.setenv("LABKIT_CHAT_BACKEND", "openai")
        monkeypatch.setenv("OPENAI_BASE_URL", fp.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-canary-0000")
        monkeypatch.setenv("OPENAI_CHAT_MODEL", "gpt-4o-mini")
        yield fp


def ids_in(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            counts[json.loads(line)["id"]] += 1
        except json.JSONDecodeError:
            pass
    return counts


def run_light(rows: list[dict], out: Path, **kwargs) -> runner.EvalReport:
    kwargs.setdefault("concurrency", 2)
    kwargs.setdefault("progress", False)
    return runner.evaluate(rows, target=runner.bare_model_target(max_tokens=4), target_name="light", out=out,
                           **kwargs)


def start_runner_process(tmp_path: Path, out: Path, rows: list[dict], proxy: FaultProxy,
                         after: int = 10) -> tuple[Path, subprocess.Popen[str]]:
    """A light evaluation in its own process, talking to the model through `proxy`, returned once
    `after` rows are saved and the next two are held at the proxy: the rest of the batch is then
    certainly still in flight, however fast the machine is. The process prints its status."""
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Ctrl-C as in a terminal: a job started in the background by a non-interactive shell (nohup,
    # `cmd &` in a CI script) inherits SIGINT *ignored*, and Python then installs no KeyboardInterrupt
    # handler, so the test's SIGINT would be dropped and the runner would wait for the held rows forever
    script = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "from labkit.evaluation import runner\n"
              f"r = runner.evaluate({str(rows_file)!r}, target=runner.bare_model_target(max_tokens=4), "
              f"target_name='light', out={str(out)!r}, concurrency=2, progress=False)\n"
              "print('STATUS', r.status, r.exit_code)\n")
    proxy.hold_after(after)
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy(), stdout=subprocess.PIPE,
                            text=True)
    proxy.wait_held(2)  # concurrency 2: both workers are waiting on the proxy
    wait_for_rows(out / "results.jsonl", after)
    return rows_file, proc


def wait_for_rows(results: Path, n: int, limit_s: float = 600) -> None:
    """Until `results` holds `n` rows. The limit only ends a test that would otherwise hang."""
    deadline = time.monotonic() + limit_s
    while not results.exists() or len(ids_in(results)) < n:
        assert time.monotonic() < deadline, f"fewer than {n} rows saved after {limit_s:.0f} s"
        time.sleep(0.05)


def test_a_full_light_run_writes_the_output_folder(local: Settings, tmp_path: Path) -> None:
    report = run_light(ROWS[:6], tmp_path / "run")
    assert report.status == "complete" and report.exit_code == runner.EXIT_OK
    assert sorted(ids_in(tmp_path / "run" / "results.jsonl")) == [r["id"] for r in ROWS[:6]]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert summary["rows"] == {"selected": 6, "ok": 6, "error": 0, "pending": 0}
    assert "checks.length_ok" in summary["metrics"] and "checks.length_ok" in summary["intervals"]
    assert summary["cost_usd"] == 0.0 and summary["usage"]["input_tokens"] > 0
    assert manifest["model"]["chat"] == local.labkit_local_chat_model and manifest["git"]["commit"]
    assert manifest["evaluators"] == {"checks": manifest["evaluators"]["checks"]}
    record = json.loads((tmp_path / "run" / "results.jsonl").read_text().splitlines()[0])
    assert record["status"] == "ok" and record["latency_s"] > 0 and record["usage"]["output_tokens"] > 0
    # a second run skips every finished row
    again = run_light(ROWS[:6], tmp_path / "run")
    assert again.status == "complete" and ids_in(tmp_path / "run" / "results.jsonl") == Counter(
        {r["id"]: 1 for r in ROWS[:6]})


def test_killing_the_model_server_mid_batch_loses_and_duplicates_nothing(local: Settings, tmp_path: Path) -> None:
    from labkit.services import ensure_running

    out = tmp_path / "kill-server"
    rows = ROWS[:100]  # the reliability guide's 100-row batch (the issue asks for at least 50)
    pid = ensure_running(["model"], settings=local)["model"].pid
    killed: list[int] = []

    def kill_at_30(record: dict) -> None:  # the server dies with 70 rows still to go, on any machine
        if not killed and len(ids_in(out / "results.jsonl")) >= 30:
            killed.append(len(ids_in(out / "results.jsonl")))
            os.killpg(pid, signal.SIGKILL)

    first = run_light(rows, out, backoff_s=0.5, on_row=kill_at_30)
    assert killed and killed[0] < 100
    # the local backend restarts the server on the next call, so the batch may even finish by itself;
    # either way a resume completes it
    report = run_light(rows, out)
    assert report.status == "complete", report.lines()
    counts = ids_in(out / "results.jsonl")
    assert sorted(counts) == [r["id"] for r in rows] and set(counts.values()) == {1}
    assert ensure_running(["model"], settings=local)["model"].pid != pid  # a new server answered
    assert first.status in ("complete", "complete_with_errors", "aborted")
    print("first run after the kill:", first.run.summary["rows"], first.status)


def test_a_dead_server_aborts_the_run_and_a_resume_completes_it(proxy: FaultProxy, tmp_path: Path) -> None:
    out = tmp_path / "dead"
    rows = ROWS[:50]
    stop_at = 10

    def on_row(record: dict) -> None:
        if record["status"] == "ok" and len(ids_in(out / "results.jsonl")) >= stop_at and not proxy.closing.is_set():
            proxy.close()  # the endpoint goes away: connections are refused from now on

    first = run_light(rows, out, on_row=on_row, backoff_s=0.2, max_attempts=2, abort_after=4)
    assert first.status == "aborted" and first.exit_code == runner.EXIT_STOPPED
    assert "re-run" in first.run.summary["message"]
    saved = ids_in(out / "results.jsonl")
    assert stop_at <= sum(1 for v in saved.values()) < 50
    # a new endpoint comes up (same variables, new port) and the same command resumes
    from labkit.services import ensure_running

    state = ensure_running(["model"])["model"]
    with FaultProxy(state.base_url, proxy.upstream_model) as fp2:
        os.environ["OPENAI_BASE_URL"] = fp2.base_url
        report = run_light(rows, out)
    assert report.status == "complete"
    counts = ids_in(out / "results.jsonl")
    assert sorted(counts) == [r["id"] for r in rows] and set(counts.values()) == {1}
    assert json.loads((out / "summary.json").read_text())["rows"]["ok"] == 50


def test_killing_the_runner_process_loses_and_duplicates_nothing(proxy: FaultProxy, tmp_path: Path) -> None:
    out = tmp_path / "kill-runner"
    rows_file, proc = start_runner_process(tmp_path, out, ROWS[:50], proxy)
    results = out / "results.jsonl"
    proc.kill()  # SIGKILL with two rows held at the proxy: no cleanup runs
    proc.wait(timeout=60)
    proxy.release()
    assert len(ids_in(results)) == 10  # exactly the rows that were answered
    report = runner.evaluate(rows_file, target=runner.bare_model_target(max_tokens=4), target_name="light",
                             out=out, concurrency=2, progress=False)
    assert report.status == "complete"
    counts = ids_in(results)
    assert sorted(counts) == [r["id"] for r in ROWS[:50]] and set(counts.values()) == {1}


def test_ctrl_c_stops_promptly_saves_finished_rows_and_resumes(proxy: FaultProxy, tmp_path: Path) -> None:
    out = tmp_path / "ctrl-c"
    rows_file, proc = start_runner_process(tmp_path, out, ROWS[:50], proxy)
    results = out / "results.jsonl"
    proc.send_signal(signal.SIGINT)  # two rows are held at the proxy: they are in flight now
    sent = time.monotonic()
    # The held rows never answer, so only the runner's grace limit ends the run. The bound is loose
    # (a loaded 2-core machine needs seconds just to handle the signal); a runner that ignored its
    # grace limit would wait for the held rows forever and never print its status.
    assert proc.stdout is not None
    stdout = proc.stdout.readline()  # evaluate() has returned; pytest-timeout bounds a hang here
    stopped_after = time.monotonic() - sent
    proxy.release()  # the abandoned rows' threads end, and with them the process
    stdout += proc.communicate(timeout=120)[0]
    assert runner.INTERRUPT_GRACE_S - 0.5 <= stopped_after < runner.INTERRUPT_GRACE_S + 60
    assert f"STATUS interrupted {runner.EXIT_STOPPED}" in stdout
    assert len(ids_in(results)) == 10  # the finished rows are saved, the held ones are not
    report = runner.evaluate(rows_file, target=runner.bare_model_target(max_tokens=4), target_name="light",
                             out=out, concurrency=2, progress=False)
    counts = ids_in(results)
    assert report.status == "complete"
    assert sorted(counts) == [r["id"] for r in ROWS[:50]] and set(counts.values()) == {1}


def test_429_with_retry_after_is_waited_out_and_concurrency_halves(proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.mode, proxy.rate_limit_left, proxy.retry_after = "rate_limit", 3, "2"
    start = time.monotonic()
    report = run_light(ROWS[:8], tmp_path / "429", concurrency=4)
    elapsed = time.monotonic() - start
    assert report.status == "complete", report.lines()
    statuses = [s for _, _, s in proxy.requests]
    assert statuses.count(429) == 3 and statuses.count(200) == 8
    assert elapsed >= 2.0
    retried = [r for r in report.run.records.values() if r["attempts"] > 1]
    assert retried and all(r["latency_s"] >= 2.0 for r in retried)
    limits = [limit for _, limit in report.run.limiter_history]
    assert limits[0] == 4 and min(limits) <= 2  # halved on the 429s (and grows back after successes)
    # the first retry of a 429'd request comes no sooner than Retry-After
    times = [t for t, _, s in proxy.requests]
    first_429 = next(t for t, _, s in proxy.requests if s == 429)
    assert max(times) - first_429 >= 2.0


def test_endless_429s_give_up_after_bounded_tries(proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.mode, proxy.rate_limit_left, proxy.retry_after = "rate_limit", 10_000, "1"
    start = time.monotonic()
    report = run_light(ROWS[:2], tmp_path / "429s", concurrency=2, max_attempts=3)
    # ~2 s of Retry-After here; the loose bound still tells "gave up" from 10,000 tries of 1 s each
    assert time.monotonic() - start < 120
    assert report.status == "complete_with_errors" and report.exit_code == runner.EXIT_ROW_ERRORS
    assert {r["error_kind"] for r in report.run.records.values()} == {"rate_limited"}
    assert {r["attempts"] for r in report.run.records.values()} == {3}
    assert "sk-test-canary" not in (tmp_path / "429s" / "results.jsonl").read_text()


def test_a_stalled_server_hits_the_row_timeout(proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.mode = "stall"
    start = time.monotonic()
    report = run_light(ROWS[:3], tmp_path / "stall", concurrency=3, row_timeout_s=3)
    elapsed = time.monotonic() - start
    # The proxy stalls for 120 s: finishing well before that shows the 3 s row timeout worked. The
    # bounds are loose so that a loaded machine passes (the watchdog's own limit is timeout + 10 s).
    assert elapsed < 60, f"stalled rows took {elapsed:.1f} s"
    assert {r["error_kind"] for r in report.run.records.values()} == {"timeout"}
    assert all(r["latency_s"] < 3 + 10 for r in report.run.records.values())
    assert not [t for t in threading.enumerate() if t.name.startswith("labkit-eval") and t.is_alive()]


def test_the_budget_guard_stops_before_passing_the_budget(proxy: FaultProxy, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit.costs import estimate_cost

    one_row = estimate_cost("gpt-4o-mini", 40, 4).usd
    assert one_row and one_row > 0
    monkeypatch.setenv("LABKIT_BUDGET_USD", f"{one_row * 30:.10f}")
    report = run_light(ROWS[:50], tmp_path / "budget", concurrency=1)
    summary = report.run.summary
    assert report.status == "stopped_budget" and report.exit_code == runner.EXIT_STOPPED
    assert 0 < summary["rows"]["ok"] < 50
    assert summary["cost_usd"] <= one_row * 30
    assert "budget" in summary["message"] and f"{summary['rows']['ok']} of 50" in summary["message"]
    # raising the budget resumes where it stopped
    monkeypatch.setenv("LABKIT_BUDGET_USD", "1")
    again = run_light(ROWS[:50], tmp_path / "budget", concurrency=2)
    assert again.status == "complete" and again.run.summary["rows"]["ok"] == 50


def test_retried_attempts_count_against_the_budget(proxy: FaultProxy, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_BUDGET_USD", "1")
    proxy.retry_after = "1"

    def after_first_row(record: dict) -> None:  # the first row calibrates the estimate, then 429s
        if proxy.mode != "rate_limit":
            proxy.mode, proxy.rate_limit_left = "rate_limit", 2

    report = run_light(ROWS[:4], tmp_path / "retries", concurrency=1, on_row=after_first_row)
    assert report.status == "complete", report.lines()
    retried = [r for r in report.run.records.values() if r["attempts"] > 1]
    assert retried and all(r["retry_cost_estimate_usd"] > 0 for r in retried)
    assert report.run.summary["retry_cost_estimate_usd"] > 0


def test_a_budget_with_an_unpriced_model_is_refused(proxy: FaultProxy, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_CHAT_MODEL", "no-such-priced-model")
    monkeypatch.setenv("LABKIT_BUDGET_USD", "0.5")
    with pytest.raises(runner.BudgetError, match="no price"):
        run_light(ROWS[:2], tmp_path / "unpriced")


def test_resume_refuses_a_folder_from_another_run(local: Settings, tmp_path: Path) -> None:
    out = tmp_path / "mixed"
    run_light(ROWS[:2], out)
    with pytest.raises(runner.ConfigError, match="another run|other evaluators"):
        runner.evaluate(ROWS[:2], target=runner.bare_model_target(max_tokens=4), target_name="other", out=out,
                        progress=False)


def test_flow_variants_gates_and_baseline(local: Settings, tmp_path: Path) -> None:
    """Two real flow variants on three rows: comparison, an absolute gate and a baseline gate."""
    from labkit.flow import FlowConfig

    configs = [FlowConfig(name="hybrid", max_tokens=24, max_context_words=150),
               FlowConfig(name="keyword", retrieval_mode="keyword", max_tokens=24, max_context_words=150)]
    report = runner.evaluate(limit=3, configs=configs, evaluators=["retrieval", "checks"], out=tmp_path / "v",
                             progress=False, gates=["retrieval.hit_at_5 >= 0.1"])
    assert set(report.runs) == {"hybrid", "keyword"} and report.status == "complete"
    comparison = json.loads((tmp_path / "v" / "comparison.json").read_text())
    diff = comparison["differences"]["keyword"]["retrieval.hit_at_5"]
    assert diff["n"] == 3 and diff["low"] <= diff["mean"] <= diff["high"]
    for name in ("hybrid", "keyword"):
        manifest = json.loads((tmp_path / "v" / name / "manifest.json").read_text())
        assert manifest["index"]["document_count"] > 0 and len(manifest["index"]["sha256"]) == 64
        assert manifest["prompts"]["contoso_chat"]["sha256"] and manifest["flow_version"]
    assert [g.gate for g in report.gates] == ["[hybrid] retrieval.hit_at_5 >= 0.1",
                                              "[keyword] retrieval.hit_at_5 >= 0.1"]  # every variant gated
    gate = report.gates[0]
    assert gate.warning  # 3 rows: flagged as weak
    summary = json.loads((tmp_path / "v" / "hybrid" / "summary.json").read_text())
    assert summary["gates"][0]["passed"] == gate.passed
    assert any("fewer than" in w for w in summary["warnings"])
    baseline = runner.save_baseline(report.runs["hybrid"], tmp_path / "baseline.json",
                                    metrics=["retrieval.hit_at_5"])
    again = runner.evaluate(limit=3, configs=configs[0], evaluators=["retrieval", "checks"],
                            out=tmp_path / "v" / "hybrid", progress=False, baseline=baseline, max_drop=0.2)
    assert [g.passed for g in again.gates] == [True]
    assert again.gates[0].mean == 0.0


def test_judge_variance_judges_each_answer_once_per_seed(proxy: FaultProxy) -> None:
    """Against the local judge (through the proxy, which records what was asked): one call per
    repeat with seeds 42, 43 at the prompt's temperature 0, where the judge agrees with itself."""
    from labkit.evaluation.calibration import run_variance

    (v,) = run_variance(["fluency"], limit=1, repeats=2, progress=False)
    assert [(b["seed"], b["temperature"]) for b in proxy.bodies] == [(42, 0), (43, 0)]
    assert [s for _, _, s in proxy.requests] == [200, 200]
    assert (v.judge, v.rows, v.repeats) == ("fluency", 1, 2) and v.settings["seeds"] == [42, 43]
    # deterministic: both repeats read and equal, or both unreadable (the tiny model decides which)
    assert (v.compared, v.unmeasured, v.all_agree, v.mean_range) in {(1, 0, 1.0, 0.0), (0, 2, None, None)}


@pytest.mark.parametrize("reply,expected", [('{"score": 4, "reason": "reads well"}', (1, 0, 1.0)),
                                            ("no idea", (0, 2, None))])
def test_judge_variance_counts_unreadable_repeats_as_unmeasured(clean_env: pytest.MonkeyPatch, reply: str,
                                                                expected: tuple) -> None:
    """No model: a server on 127.0.0.1 gives the judge a fixed reply."""
    with FaultProxy("http://127.0.0.1:9", "unused") as server:
        server.mode, server.reply_text = "reply", reply
        clean_env.setenv("LABKIT_CHAT_BACKEND", "openai")
        clean_env.setenv("OPENAI_BASE_URL", server.base_url)
        clean_env.setenv("OPENAI_API_KEY", "sk-test")
        clean_env.setenv("OPENAI_CHAT_MODEL", "judge-under-test")
        from labkit.evaluation.calibration import run_variance

        (v,) = run_variance(["fluency"], limit=1, repeats=2, temperature=0.7, progress=False)
    assert [(b["seed"], b["temperature"]) for b in server.bodies] == [(42, 0.7), (43, 0.7)]
    assert (v.compared, v.unmeasured, v.all_agree) == expected


def test_a_comparison_reuses_the_rows_each_variant_already_answered(local: Settings) -> None:
    """Without `out`, a variant in a comparison uses the folder of its own single run (notebook 04)."""
    from labkit.flow import FlowConfig

    first = FlowConfig(name="reuse-a", max_tokens=8, max_context_words=100)
    second = FlowConfig(name="reuse-b", retrieval_mode="keyword", max_tokens=8, max_context_words=100)
    alone = runner.evaluate(limit=2, configs=first, evaluators=["retrieval"], progress=False)
    answered: list[str] = []
    both = runner.evaluate(limit=2, configs=[first, second], evaluators=["retrieval"], progress=False,
                           on_row=lambda record: answered.append(record["id"]))
    assert both.runs["reuse-a"].out == alone.out and both.runs["reuse-b"].out != alone.out
    assert len(answered) == 2  # only the new variant's rows were asked
    assert both.runs["reuse-a"].records == alone.run.records
    assert (both.out / "comparison.json").exists() and both.out not in (alone.out, both.runs["reuse-b"].out)
