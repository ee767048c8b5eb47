"""Synthetic traffic: days of Contoso Chat requests in the real span, log and sample schemas.

Introduced in notebooks/08_monitor.ipynb.

The embedded model answers a few questions a minute, too few to fill a dashboard, so notebook 08
builds its dashboards, drift checks and alerts on traffic made here. Everything it writes is marked
synthetic: a `SYNTHETIC` file in the folder (dashboards and reports then say so in their titles) and
`labkit.synthetic` on every span. It is made from a seed, so the same call writes the same files.

What a request looks like (chosen to resemble a cloud deployment, so cost means something):
- a spread of statuses (200; 429 rate limited; 422 bad input; 503 downstream errors; 504 timeouts)
  and guard blocks, a daily rhythm of traffic, 14 customers (stored only as keyed hashes);
- spans named like the flow's: `labkit.request` > `contoso_chat` > guards, `customer_lookup`,
  `generate_queries` > `chat <model>`, `embeddings <model>`, `retrieval <index>`, `chat <model>`;
- chat on `gpt-4o-mini` (deployment `chat`), embeddings on `text-embedding-3-small`, online judges
  on `gpt-4o`, and a bulk job on a model without a price (shown as unpriced, never as free);
- feedback on some answers; a sampled share in `monitor/samples.jsonl` with scores in
  `monitor/scores.jsonl`, drawn from the offline drift baseline so healthy traffic matches it.

`drift_at` switches, from that instant on, to another question mix (`"mix"`: more order and
comparison questions) and/or a worse prompt variant (`"prompt"`: new flow version, longer answers,
lower groundedness, more invented citations, slower), so a notebook can watch drift and alerts fire.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.monitor.source import SYNTHETIC_MARKER, Source

CHAT_MODEL, CHAT_RESPONSE_MODEL = "chat", "gpt-4o-mini-2024-07-18"
EMBED_MODEL, JUDGE_MODEL, UNPRICED_MODEL = "text-embedding-3-small", "gpt-4o", "contoso-ft-experimental"
INDEX = "products-section"
FLOW_BASE, FLOW_VARIANT = "sim-base-v1", "sim-variant-v2"
CUSTOMERS = [f"C-{i:03d}" for i in range(1, 15)]
# healthy traffic asks what the offline baseline asked; drifted traffic asks about orders far more often
MIX_DRIFTED = {"product": 0.25, "comparison": 0.25, "order": 0.50}
QUESTIONS = {
    "product": [
        "How heavy is the Spark stove?",
        "Is the Stormshell jacket waterproof?",
        "What temperature is the Glacier sleeping bag rated to?",
        "Does the Skyfall 2 tent have a footprint?",
        "How long does the Beacon headlamp run on high?",
        "What fuel does the Spark stove use?",
    ],
    "comparison": [
        "Which tent is lighter, the Skyfall 2 or the Ridgeback 3?",
        "Should I buy the Waypoint or the Waypoint Plus pack?",
        "Which sleeping bag is warmer for winter camping?",
    ],
    "order": [
        "What did I order last month?",
        "When will my order arrive?",
        "Can I return the boots I bought?",
        "Which stove did I buy in March?",
    ],
}
_STEP_MS = {
    "guard input": 6,
    "customer_lookup": 4,
    "embeddings": 70,
    "retrieval": 35,
    "guard documents": 9,
    "guard output": 5,
}


@dataclass
class Traffic:
    """What `simulate` wrote: the request log lines, feedback, samples and scores, and the span count."""

    home: Path
    start: dt.datetime
    end: dt.datetime
    requests: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    spans: int = 0
    span_rows: list[tuple[Any, ...]] = field(default_factory=list, repr=False)

    @property
    def source(self) -> Source:
        return Source(self.home)


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds")


def _ns(when: dt.datetime) -> int:
    return int(when.timestamp() * 1_000_000) * 1000


class _Writer:
    def __init__(self, rng: random.Random, traffic: Traffic):
        self.rng = rng
        self.traffic = traffic
        self.rows: list[tuple[Any, ...]] = []

    def span(
        self,
        trace_id: str,
        parent: str | None,
        name: str,
        start: dt.datetime,
        ms: float,
        attributes: dict[str, Any] | None = None,
        status: str = "UNSET",
    ) -> tuple[str, dt.datetime]:
        span_id = _hex(self.rng, 16)
        end = start + dt.timedelta(milliseconds=ms)
        attrs = {"labkit.synthetic": True, **(attributes or {})}
        self.rows.append(
            (
                trace_id,
                span_id,
                parent,
                name,
                attrs.get("gen_ai.operation.name"),
                _ns(start),
                _ns(end),
                status,
                json.dumps(attrs),
                "[]",
            )
        )
        return span_id, end


def _lognormal(rng: random.Random, median: float, spread: float = 0.35) -> float:
    return median * math.exp(rng.gauss(0, spread))


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _baseline_rows(baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    if baseline is None:
        from labkit.monitor.drift import load_baseline

        baseline = load_baseline()
    rows = list(baseline.get("rows", []))
    if not rows:
        raise ValueError("the drift baseline has no rows to draw healthy traffic from")
    return rows


def simulate(
    home: str | Path,
    *,
    days: float = 7.0,
    requests_per_hour: float = 40.0,
    seed: int = 0,
    end: dt.datetime | None = None,
    drift_at: dt.datetime | None = None,
    drift: Sequence[str] = ("mix", "prompt"),
    sample_rate: float = 0.25,
    feedback_rate: float = 0.1,
    baseline: dict[str, Any] | None = None,
) -> Traffic:
    """Write `days` of synthetic traffic ending at `end` (default now) into the folder `home`.

    The folder is replaced (its trace store, logs, feedback and samples), never merged."""
    from labkit import requestlog
    from labkit.config import Settings, get_settings
    from labkit.tracing import SCHEMA

    home = Path(home).resolve()
    source = Source(home)
    if home == get_settings().home or (source.traces.exists() and not source.synthetic):
        raise ValueError(f"{home} holds recorded traffic (it is LABKIT_HOME, or has a trace store without "
                         f"the {SYNTHETIC_MARKER} marker): simulate writes only into its own folder")
    rng = random.Random(seed)
    end = (end or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    start = end - dt.timedelta(days=days)
    for path in (source.traces, source.request_log, source.feedback, source.samples, source.scores):
        path.unlink(missing_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    (home / SYNTHETIC_MARKER).write_text("written by labkit.monitor.simulate: synthetic traffic, not real\n")
    settings = Settings(labkit_home=home)
    hashes = {c: requestlog.customer_hash(c, settings) for c in CUSTOMERS}
    rows = _baseline_rows(baseline)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_kind.setdefault(row.get("kind") or "product", []).append(row)

    traffic = Traffic(home=home, start=start, end=end)
    writer = _Writer(rng, traffic)
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        # a daily rhythm: quiet at night (UTC), busy in the afternoon
        rate = requests_per_hour * (0.35 + 0.65 * (1 + math.sin((hour.hour - 9) / 24 * 2 * math.pi)) / 2)
        count = _poisson(rng, rate)
        moments = sorted(hour + dt.timedelta(seconds=rng.uniform(0, 3600)) for _ in range(count))
        for when in moments:
            if start <= when < end:
                drifted = drift_at is not None and when >= drift_at
                _request(
                    writer,
                    rng,
                    traffic,
                    when,
                    drifted,
                    set(drift),
                    hashes,
                    by_kind,
                    rows,
                    sample_rate,
                    feedback_rate,
                )
        if hour.hour == 3 and start <= hour < end:  # a nightly bulk job on a model with no price
            _bulk_job(writer, rng, hour + dt.timedelta(minutes=5))
        hour += dt.timedelta(hours=1)

    home.joinpath("logs").mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source.traces) as conn:
        conn.executescript(SCHEMA)
        conn.executemany("INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", writer.rows)
    traffic.spans = len(writer.rows)
    traffic.span_rows = writer.rows
    for path, items in (
        (source.request_log, traffic.requests),
        (source.feedback, traffic.feedback),
        (source.samples, traffic.samples),
        (source.scores, traffic.scores),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return traffic


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:  # normal approximation keeps big rates fast
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _bulk_job(writer: _Writer, rng: random.Random, when: dt.datetime) -> None:
    for _ in range(rng.randint(5, 15)):
        trace_id = _hex(rng, 32)
        ms = _lognormal(rng, 900)
        writer.span(
            trace_id,
            None,
            f"chat {UNPRICED_MODEL}",
            when,
            ms,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": UNPRICED_MODEL,
                "labkit.purpose": "bulk",
                "gen_ai.usage.input_tokens": rng.randint(150, 400),
                "gen_ai.usage.output_tokens": rng.randint(20, 120),
            },
        )
        when += dt.timedelta(milliseconds=ms + 50)


def _chat(
    writer: _Writer,
    rng: random.Random,
    trace_id: str,
    parent: str | None,
    when: dt.datetime,
    tokens_in: int,
    tokens_out: int,
    ms: float,
    purpose: str = "service",
    model: str = CHAT_MODEL,
    response_model: str = CHAT_RESPONSE_MODEL,
) -> dt.datetime:
    _, finished = writer.span(
        trace_id,
        parent,
        f"chat {model}",
        when,
        ms,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "azure",
            "gen_ai.request.model": model,
            "gen_ai.response.model": response_model,
            "gen_ai.usage.input_tokens": tokens_in,
            "gen_ai.usage.output_tokens": tokens_out,
            "labkit.purpose": purpose,
        },
    )
    return finished


def _request(
    writer: _Writer,
    rng: random.Random,
    traffic: Traffic,
    when: dt.datetime,
    drifted: bool,
    drift: set[str],
    hashes: dict[str, str],
    by_kind: dict[str, list[dict[str, Any]]],
    rows: list[dict[str, Any]],
    sample_rate: float,
    feedback_rate: float,
) -> None:
    customer = rng.choice(CUSTOMERS)
    variant = drifted and "prompt" in drift
    if drifted and "mix" in drift:
        kind = _pick(rng, MIX_DRIFTED)
        like = rng.choice(by_kind.get(kind) or rows)
    else:
        like = rng.choice(rows)
        kind = like.get("kind") if like.get("kind") in QUESTIONS else "product"
    flow_version = FLOW_VARIANT if variant else FLOW_BASE
    trace_id = _hex(rng, 32)
    roll = rng.random()
    status, error_code = 200, None
    if roll < 0.03:
        status, error_code = 429, "rate_limited"
    elif roll < 0.04:
        status, error_code = 422, "invalid_request"
    elif roll < (0.052 if variant else 0.047):
        status, error_code = 503, "downstream_error"
    elif roll < (0.056 if variant else 0.049):
        status, error_code = 504, "timeout"
    blocked = status == 200 and rng.random() < 0.02
    streamed = rng.random() < 0.5
    line: dict[str, Any] = {
        "time": _iso(when),
        "customer": hashes[customer],
        "status": status,
        "streamed": streamed,
        "flow_version": flow_version,
    }
    if status in (429, 422):  # refused before the flow: a log line, no spans
        line.update(latency_s=round(_lognormal(rng, 0.004), 4), error_code=error_code)
        traffic.requests.append(line)
        return

    queue_wait = round(abs(rng.gauss(0.05, 0.05)), 4)
    root, t = writer.span(trace_id, None, "labkit.request", when, 0)  # its end is rewritten below
    root_index = len(writer.rows) - 1
    flow_start = when + dt.timedelta(seconds=queue_wait)
    flow_id, _ = writer.span(
        trace_id,
        root,
        "contoso_chat",
        flow_start,
        0,
        {
            "labkit.flow_version": flow_version,
            "labkit.flow.name": "service",
            "labkit.streamed": streamed,
            "labkit.purpose": "service",
        },
    )
    flow_index = len(writer.rows) - 1
    t = flow_start
    tokens_in = tokens_out = 0
    safety: list[str] = []
    _, t = writer.span(
        trace_id,
        flow_id,
        "guard input",
        t,
        _lognormal(rng, _STEP_MS["guard input"]),
        {"labkit.safety.blocked": blocked},
    )
    failed = status in (503, 504)
    if blocked:
        safety.append(
            f"input:{rng.choice(['attack', 'other_customer', 'harm'])}:block:{rng.uniform(0.7, 1):.2f}"
        )
    else:
        _, t = writer.span(
            trace_id, flow_id, "customer_lookup", t, _lognormal(rng, _STEP_MS["customer_lookup"])
        )
        queries_id, _ = writer.span(trace_id, flow_id, "generate_queries", t, 0)
        queries_index = len(writer.rows) - 1
        q_in, q_out = rng.randint(180, 320), rng.randint(15, 45)
        t = _chat(writer, rng, trace_id, queries_id, t, q_in, q_out, _lognormal(rng, 450 + 8 * q_out))
        _rewrite_end(writer, queries_index, t)
        tokens_in, tokens_out = tokens_in + q_in, tokens_out + q_out
        _, t = writer.span(
            trace_id,
            flow_id,
            f"embeddings {EMBED_MODEL}",
            t,
            _lognormal(rng, _STEP_MS["embeddings"]),
            {
                "gen_ai.operation.name": "embeddings",
                "gen_ai.request.model": EMBED_MODEL,
                "gen_ai.usage.input_tokens": rng.randint(20, 60),
                "labkit.purpose": "service",
            },
        )
        for _ in range(3):
            _, t = writer.span(
                trace_id,
                flow_id,
                f"retrieval {INDEX}",
                t,
                _lognormal(rng, _STEP_MS["retrieval"]),
                {
                    "gen_ai.operation.name": "retrieval",
                    "gen_ai.data_source.id": INDEX,
                    "labkit.retrieval.documents": 5,
                },
            )
        _, t = writer.span(
            trace_id, flow_id, "guard documents", t, _lognormal(rng, _STEP_MS["guard documents"])
        )
        a_in = rng.randint(900, 1500)
        a_out = rng.randint(60, 160) + (rng.randint(60, 140) if variant else 0)
        if failed:
            ms = _lognormal(rng, 30000 if status == 504 else 800)
            writer.span(
                trace_id,
                flow_id,
                f"chat {CHAT_MODEL}",
                t,
                ms,
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": CHAT_MODEL,
                    "labkit.purpose": "service",
                    "error.type": "APITimeoutError" if status == 504 else "APIConnectionError",
                },
                status="ERROR",
            )
            t += dt.timedelta(milliseconds=ms)
        else:
            t = _chat(writer, rng, trace_id, flow_id, t, a_in, a_out, _lognormal(rng, 700 + 18 * a_out))
            tokens_in, tokens_out = tokens_in + a_in, tokens_out + a_out
            _, t = writer.span(
                trace_id, flow_id, "guard output", t, _lognormal(rng, _STEP_MS["guard output"])
            )
    _rewrite_end(writer, flow_index, t, "ERROR" if failed else "UNSET")
    _rewrite_end(writer, root_index, t, "ERROR" if failed else "UNSET")
    latency = (t - when).total_seconds()
    line.update(
        request_id=trace_id,
        latency_s=round(latency, 4),
        queue_wait_s=queue_wait,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        tokens_estimated=False,
        model=CHAT_RESPONSE_MODEL,
        blocked=blocked,
        safety=safety,
        error_code=error_code,
    )
    traffic.requests.append(line)
    if failed or blocked:
        return
    if rng.random() < feedback_rate:
        down = rng.random() < (0.45 if variant else 0.12)
        traffic.feedback.append(
            {
                "time": (t + dt.timedelta(seconds=rng.uniform(5, 120))).timestamp(),
                "request_id": trace_id,
                "customer": hashes[customer],
                "rating": "down" if down else "up",
                "comment": None,
            }
        )
    if rng.random() < sample_rate:
        _sample(writer, rng, traffic, trace_id, t, kind, like, variant, flow_version, hashes[customer])


def _rewrite_end(writer: _Writer, index: int, end: dt.datetime, status: str = "UNSET") -> None:
    row = list(writer.rows[index])
    row[6] = _ns(end)
    row[7] = status
    writer.rows[index] = tuple(row)


def _sample(
    writer: _Writer,
    rng: random.Random,
    traffic: Traffic,
    trace_id: str,
    when: dt.datetime,
    kind: str,
    like: dict[str, Any],
    variant: bool,
    flow_version: str,
    customer: str,
) -> None:
    """A sampled answer and its online scores, copied with noise from an offline baseline row (`like`);
    the worse prompt variant answers longer, less grounded and with more invented citations."""
    question = rng.choice(QUESTIONS[kind])
    words = max(1, round(float(like.get("length_words") or 40) * (rng.uniform(1.4, 2.0) if variant else 1.0)))
    grounded = like.get("groundedness")
    if grounded is not None and variant:
        grounded = max(1.0, float(grounded) - rng.choice([1, 1, 2, 2, 3]))
    citations_valid = like.get("citations_valid")
    if citations_valid is not None and variant and rng.random() < 0.5:
        citations_valid = 0.0
    top = like.get("top_score")  # retrieval is the same for both prompt variants
    sample = {
        "time": _iso(when),
        "request_id": trace_id,
        "flow_version": flow_version,
        "model": CHAT_RESPONSE_MODEL,
        "customer": customer,
        "index": INDEX,
        "question": question,
        "answer": f"(synthetic answer, {words} words)",
        "documents": [],
        "orders": 0,
        "citations": [],
        "dropped_citations": [],
        "blocked": False,
        "synthetic": True,
    }
    scores = {
        "request_id": trace_id,
        "time": _iso(when),
        "flow_version": flow_version,
        "declined": like.get("declined"),
        "citations_valid": citations_valid,
        "length_words": words,
        "top_score": top,
        "mean_score": like.get("mean_score"),
        "documents": like.get("documents"),
        "top_category": like.get("top_category"),
        "kind": kind,
        "groundedness": grounded,
        "synthetic": True,
    }
    if grounded is None:
        scores["groundedness_unmeasured"] = "unmeasured in the baseline row it was drawn from"
    traffic.samples.append(sample)
    traffic.scores.append(scores)
    judge_ms = _lognormal(rng, 1200)  # the online judge call that scored it
    _chat(
        writer,
        rng,
        _hex(rng, 32),
        None,
        when + dt.timedelta(minutes=10),
        rng.randint(1200, 2200),
        rng.randint(5, 20),
        judge_ms,
        purpose="judge",
        model=JUDGE_MODEL,
        response_model="gpt-4o-2024-08-06",
    )
