"""OpenTelemetry tracing with GenAI semantic-convention names, stored locally in SQLite.

Introduced in notebooks/03_build_rag.ipynb.

Every flow step emits a span; spans go to `LABKIT_HOME/traces.sqlite` (schema in
docs/architecture.md), keyed by trace id, which is also the flow's `request_id`. Message contents
(prompts, answers, queries) are recorded only when `LABKIT_TRACE_CONTENT=1`. Attribute values
never include keys or secrets: only names, counts, timings and (optionally) contents.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Status, StatusCode

from labkit.config import get_settings

TRACER_NAME = "labkit"
SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id   TEXT NOT NULL,          -- 32 hex chars; equals ChatResult.request_id
    span_id    TEXT PRIMARY KEY,       -- 16 hex chars
    parent_id  TEXT,                   -- NULL for the root span
    name       TEXT NOT NULL,          -- e.g. "chat smollm2-135m-instruct", "retrieval products-section"
    operation  TEXT,                   -- gen_ai.operation.name (chat, embeddings, retrieval) or NULL
    start_ns   INTEGER NOT NULL,       -- epoch nanoseconds
    end_ns     INTEGER NOT NULL,
    status     TEXT NOT NULL,          -- UNSET | OK | ERROR
    attributes TEXT NOT NULL,          -- JSON object of span attributes
    events     TEXT NOT NULL           -- JSON list of {name, time_ns, attributes}
);
CREATE INDEX IF NOT EXISTS spans_by_trace ON spans(trace_id);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans(start_ns);
"""


class SqliteSpanExporter(SpanExporter):
    """Writes finished spans to a SQLite file (one row per span). Without a fixed `path`, each export
    goes to the trace store of the LABKIT_HOME in force at that moment."""

    def __init__(self, path: Path | None = None):
        self.fixed_path = path
        self._lock = threading.Lock()
        self._ready: set[Path] = set()
        if path is not None:
            self._prepare(path)

    @property
    def path(self) -> Path:
        return self.fixed_path or trace_store_path()

    def _prepare(self, path: Path) -> None:
        if path not in self._ready:
            path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(path) as conn:
                conn.executescript(SCHEMA)
            self._ready.add(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = []
        for s in spans:
            ctx = s.get_span_context()
            if ctx is None:
                continue
            attrs = dict(s.attributes or {})
            parent = f"{s.parent.span_id:016x}" if s.parent else None
            rows.append((
                f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", parent,
                s.name, attrs.get("gen_ai.operation.name"), s.start_time or 0, s.end_time or 0,
                s.status.status_code.name, json.dumps(attrs, default=str),
                json.dumps([{"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
                            for e in s.events], default=str),
            ))
        path = self.path
        with self._lock:
            self._prepare(path)
            with sqlite3.connect(path) as conn:
                conn.executemany("INSERT OR REPLACE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 rows)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


_provider: TracerProvider | None = None
_provider_lock = threading.Lock()


def trace_store_path() -> Path:
    return get_settings().home / "traces.sqlite"


class _SystemRandomIds(IdGenerator):
    """Trace and span ids from the operating system's random source. OpenTelemetry's default uses
    the `random` module, which notebooks seed (labkit.setup(seed=...)) and libraries may re-seed:
    request ids would then repeat across kernels and processes and mix traces in one store."""

    _random = random.SystemRandom()

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


def tracer_provider() -> TracerProvider:
    """The one process-wide tracer provider, exporting to the current LABKIT_HOME's trace store.

    It is also OpenTelemetry's global provider, so spans from instrumentation (the HTTP service's
    request span) and the flow's spans form one trace. If another SDK provider was made global
    first, the store's exporter is added to that one instead."""
    global _provider
    with _provider_lock:
        if _provider is None:
            current = trace.get_tracer_provider()
            if isinstance(current, TracerProvider):
                provider = current
            else:
                provider = TracerProvider(id_generator=_SystemRandomIds())
                trace.set_tracer_provider(provider)
            # imported here, not at the top: labkit.monitor's modules may import this one
            from labkit.monitor.export import configure_exporters

            # OTLP / Azure Monitor when the environment asks (notebook 08). Checked first: a bad setting
            # raises its clear error on every call until it is fixed, never half a configuration
            configure_exporters(provider)
            provider.add_span_processor(SimpleSpanProcessor(SqliteSpanExporter()))
            _provider = provider
        return _provider


# What a model call is for: "service" (the HTTP service), "evaluation" (a row of `labkit eval`), "judge",
# "bulk", "playground", or "direct" (a notebook cell or the CLI). Monitoring splits tokens and cost by it.
_purpose: ContextVar[str] = ContextVar("labkit_purpose", default="direct")
PURPOSE_ATTRIBUTE = "labkit.purpose"


@contextlib.contextmanager
def purpose(name: str) -> Iterator[None]:
    """Label the model calls made inside this block (`labkit.purpose` on their spans)."""
    token = _purpose.set(name)
    try:
        yield
    finally:
        _purpose.reset(token)


def current_purpose() -> str:
    return _purpose.get()


def _inside_model_span() -> bool:
    attributes = getattr(trace.get_current_span(), "attributes", None) or {}
    return attributes.get("gen_ai.operation.name") in ("chat", "embeddings")


@contextlib.contextmanager
def model_span(operation: str, model: str, **attributes: Any) -> Iterator[Any]:
    """A span around one model call (`chat <model>` or `embeddings <model>`) with GenAI attribute names.

    Every model call is traced, not only the flow's: judges, bulk runs and the playground too, so
    monitoring (notebook 08) sees all tokens and cost. Inside a span that already describes the call
    (the flow opens its own), it yields that span, so the call's usage is recorded there."""
    if _inside_model_span():  # the caller's span describes this call: usage is recorded on it
        yield trace.get_current_span()
        return
    with get_tracer().start_as_current_span(f"{operation} {model}") as span:
        span.set_attribute("gen_ai.operation.name", operation)
        span.set_attribute("gen_ai.request.model", model)
        span.set_attribute(PURPOSE_ATTRIBUTE, current_purpose())
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)
        yield span


class _TypeOnlyTracer:
    """A tracer whose spans record an exception's type, never its message or stack trace: a message
    can quote a key or a customer's text, and spans may leave the machine (OTLP, Azure Monitor).
    A span that an exception leaves gets status ERROR with the type as description and `error.type`."""

    def __init__(self, inner: trace.Tracer):
        self._inner = inner

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.update(record_exception=False, set_status_on_exception=False)
        return self._inner.start_span(name, *args, **kwargs)

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        kwargs.update(record_exception=False, set_status_on_exception=False)
        with self._inner.start_as_current_span(name, *args, **kwargs) as span:
            try:
                yield span
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                if "error.type" not in (getattr(span, "attributes", None) or {}):
                    span.set_attribute("error.type", type(exc).__name__)
                raise


def get_tracer() -> Any:
    """The labkit tracer (spans go to LABKIT_HOME/traces.sqlite of the moment each span ends)."""
    return _TypeOnlyTracer(tracer_provider().get_tracer(TRACER_NAME))


def capture_content() -> bool:
    """Whether message contents go into spans (LABKIT_TRACE_CONTENT=1)."""
    return get_settings().labkit_trace_content


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx and ctx.is_valid else ""


def get_trace(request_id: str, path: Path | None = None) -> list[dict[str, Any]]:
    """All spans of one request, in start order, with attributes decoded and durations in ms."""
    path = path or trace_store_path()
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM spans WHERE trace_id = ? ORDER BY start_ns",
                            (request_id,)).fetchall()
    out = []
    for r in rows:
        d = dict(r)
        d["attributes"] = json.loads(d["attributes"])
        d["events"] = json.loads(d["events"])
        d["duration_ms"] = (d["end_ns"] - d["start_ns"]) / 1e6
        out.append(d)
    return out


def trace_table(request_id: str) -> Any:
    """One answer's trace as a pandas DataFrame (span, operation, start offset, duration, tokens)."""
    import pandas as pd

    spans = get_trace(request_id)
    if not spans:
        return pd.DataFrame()
    t0 = min(s["start_ns"] for s in spans)
    depth: dict[str, int] = {}
    for s in spans:
        depth[s["span_id"]] = depth.get(s["parent_id"] or "", -1) + 1 if s["parent_id"] else 0
    return pd.DataFrame([{
        "span": "  " * depth[s["span_id"]] + s["name"],
        "operation": s["operation"] or "",
        "start_ms": round((s["start_ns"] - t0) / 1e6, 1),
        "duration_ms": round(s["duration_ms"], 1),
        "input_tokens": s["attributes"].get("gen_ai.usage.input_tokens"),
        "output_tokens": s["attributes"].get("gen_ai.usage.output_tokens"),
        "status": s["status"],
    } for s in spans])


def plot_timeline(request_id: str, ax: Any = None) -> Any:
    """A horizontal bar per span: where the time of one answer went."""
    import matplotlib.pyplot as plt

    table = trace_table(request_id)
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.4 * max(len(table), 3) + 1))
    colours = {"chat": "tab:orange", "embeddings": "tab:green", "retrieval": "tab:blue"}
    for i, row in enumerate(table.itertuples()):
        ax.barh(i, row.duration_ms, left=row.start_ms, color=colours.get(row.operation, "tab:gray"))
    ax.set_yticks(range(len(table)), labels=list(table["span"]))
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds since the request started")
    ax.set_title(f"trace {request_id[:8]}...")
    return ax
