"""Where monitoring reads from, and the time window it reads.

Introduced in notebooks/08_monitor.ipynb.

A `Source` is one state folder (a LABKIT_HOME): its trace store (`traces.sqlite`), the service's
request log (`logs/requests.jsonl`), feedback (`feedback.jsonl`) and the online-evaluation store
(`monitor/samples.jsonl`, `monitor/scores.jsonl`). `Source.current()` is the running kit's;
`labkit.monitor.simulate` writes a synthetic one in the same shapes, marked by a `SYNTHETIC` file,
so every dashboard built from it says "synthetic".

Loading reads only the window asked for; the trace store is filtered in SQLite (an index on the
start time) and only the attributes dashboards use are extracted, so 100,000 spans load in seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.config import Settings, get_settings

SYNTHETIC_MARKER = "SYNTHETIC"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.I)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# span attributes the dashboards read (JSON paths into the `attributes` column)
ATTRIBUTES = {
    "model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "estimated": "labkit.usage.estimated",
    "purpose": "labkit.purpose",
    "flow_version": "labkit.flow_version",
    "error_type": "error.type",
    "synthetic": "labkit.synthetic",
}


@dataclass(frozen=True)
class Source:
    """The files of one state folder that monitoring reads."""

    home: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home))

    @classmethod
    def current(cls, settings: Settings | None = None) -> Source:
        return cls((settings or get_settings()).home)

    @property
    def traces(self) -> Path:
        return self.home / "traces.sqlite"

    @property
    def request_log(self) -> Path:
        return self.home / "logs" / "requests.jsonl"

    @property
    def feedback(self) -> Path:
        return self.home / "feedback.jsonl"

    @property
    def samples(self) -> Path:
        return self.home / "monitor" / "samples.jsonl"

    @property
    def scores(self) -> Path:
        return self.home / "monitor" / "scores.jsonl"

    @property
    def synthetic(self) -> bool:
        """True for a folder written by `labkit.monitor.simulate` (shown as synthetic everywhere)."""
        return (self.home / SYNTHETIC_MARKER).exists()


@dataclass(frozen=True)
class Window:
    """A half-open time interval [start, end) in UTC."""

    start: dt.datetime
    end: dt.datetime

    @property
    def hours(self) -> float:
        return max((self.end - self.start).total_seconds() / 3600, 1e-9)

    def label(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"


def parse_duration(text: str) -> dt.timedelta:
    """'90s', '30m', '1h', '2d', '1w' as a timedelta (ValueError with the accepted forms otherwise)."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(
            f"cannot read the duration {text!r}: use a number and s, m, h, d or w, e.g. 1h or 7d"
        )
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])


def _instant(value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"cannot read {value!r} as a duration (30m, 1h, 7d) or an ISO instant (2026-12-01T09:00)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def window(
    since: str | dt.datetime | dt.timedelta = "24h",
    until: str | dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Window:
    """The window ending at `until` (default now): `since` is a duration ('1h', '7d') or an instant."""
    end = _instant(until) if until is not None else (now or dt.datetime.now(dt.UTC))
    if isinstance(since, dt.timedelta):
        start = end - since
    elif isinstance(since, dt.datetime) or (isinstance(since, str) and not _DURATION.match(since)):
        start = _instant(since)
    else:
        start = end - parse_duration(since)
    if start >= end:
        raise ValueError(
            f"the window is empty: it starts at {start:%Y-%m-%d %H:%M} and ends at {end:%Y-%m-%d %H:%M}"
        )
    return Window(start, end)


def _ns(when: dt.datetime) -> int:
    return int(when.timestamp() * 1_000_000) * 1000


def load_spans(source: Source, win: Window) -> pd.DataFrame:
    """Spans that started inside the window: ids, name, operation, times (ms), status, and the
    attributes in `ATTRIBUTES` as columns. Empty (with the columns) when there is no trace store."""
    columns = [
        "trace_id",
        "span_id",
        "parent_id",
        "name",
        "operation",
        "start_ns",
        "end_ns",
        "status",
        *ATTRIBUTES,
    ]
    if not source.traces.exists():
        return pd.DataFrame(columns=[*columns, "duration_ms", "time"])
    extracted = ", ".join(
        f"json_extract(attributes, '$.\"{path}\"') AS {name}" for name, path in ATTRIBUTES.items()
    )
    query = (
        f"SELECT trace_id, span_id, parent_id, name, operation, start_ns, end_ns, status, {extracted} "
        "FROM spans WHERE start_ns >= ? AND start_ns < ?"
    )
    with sqlite3.connect(f"file:{source.traces}?mode=ro", uri=True) as conn:
        frame = pd.read_sql_query(query, conn, params=(_ns(win.start), _ns(win.end)))
    frame["duration_ms"] = (frame["end_ns"] - frame["start_ns"]) / 1e6
    frame["time"] = pd.to_datetime(frame["start_ns"], unit="ns", utc=True)
    for name in ("input_tokens", "output_tokens"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Each JSON object of a JSONL file (a torn last line is skipped)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        for raw in f:
            try:
                item = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(item, dict):
                yield item


def _times(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return pd.to_datetime(values, unit="s", utc=True)
    return pd.to_datetime(values, utc=True, format="ISO8601")


def _in_window(frame: pd.DataFrame, win: Window) -> pd.DataFrame:
    if frame.empty:
        return frame
    frame["time"] = _times(frame["time"])
    keep = (frame["time"] >= pd.Timestamp(win.start)) & (frame["time"] < pd.Timestamp(win.end))
    return frame[keep].reset_index(drop=True)


REQUEST_COLUMNS = [
    "time",
    "request_id",
    "customer",
    "status",
    "latency_s",
    "queue_wait_s",
    "input_tokens",
    "output_tokens",
    "tokens_estimated",
    "flow_version",
    "model",
    "streamed",
    "blocked",
    "safety",
    "error_code",
]


def load_requests(source: Source, win: Window) -> pd.DataFrame:
    """The service's request log lines inside the window (one row per HTTP request to /api/chat)."""
    frame = pd.DataFrame.from_records(list(read_jsonl(source.request_log)))
    for column in REQUEST_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame = _in_window(frame, win)
    frame["status"] = pd.to_numeric(frame["status"], errors="coerce")
    frame["latency_s"] = pd.to_numeric(frame["latency_s"], errors="coerce")
    return frame


def load_feedback(source: Source, win: Window) -> pd.DataFrame:
    """Thumbs up/down given inside the window (request id, customer hash, rating)."""
    frame = pd.DataFrame.from_records(list(read_jsonl(source.feedback)))
    for column in ("time", "request_id", "customer", "rating"):
        if column not in frame:
            frame[column] = None
    return _in_window(frame, win)


def load_samples(source: Source, win: Window | None = None) -> pd.DataFrame:
    """The online-evaluation samples (personal data already removed), optionally inside a window."""
    frame = pd.DataFrame.from_records(list(read_jsonl(source.samples)))
    if frame.empty:
        return pd.DataFrame(columns=["time", "request_id"])
    return _in_window(frame, win) if win is not None else frame.assign(time=_times(frame["time"]))


def load_scores(source: Source) -> pd.DataFrame:
    """Online-evaluation scores, one row per evaluated sample (the last one if evaluated twice)."""
    frame = pd.DataFrame.from_records(list(read_jsonl(source.scores)))
    if frame.empty:
        return pd.DataFrame(columns=["request_id"])
    return frame.drop_duplicates("request_id", keep="last").reset_index(drop=True)
