"""The request log: one JSON line per HTTP request to the chat service, for monitoring.

Introduced with the HTTP service (notebooks/07_deploy.ipynb); read back by monitoring (notebook 08).

Each line holds the request id (the trace id), a keyed hash of the customer id, the status, the
latency, the time spent waiting for the model, tokens and the flow version. The customer id is
hashed with HMAC-SHA256 under a random key kept in `LABKIT_HOME/keys/request-log.key` (created on
first use, readable by the owner only): a plain hash of C-001..C-014 could be reversed by trying all
ids. The question text is logged only with `LABKIT_TRACE_CONTENT=1`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from labkit.config import Settings, get_settings

_lock = threading.Lock()
FIELDS = ("time", "request_id", "customer", "status", "latency_s", "queue_wait_s", "input_tokens",
          "output_tokens", "tokens_estimated", "flow_version", "model", "streamed", "blocked", "safety",
          "error_code")  # safety: "guard:category:action:score" of each flag or block, never the text


def log_path(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).logs_dir / "requests.jsonl"


def _key(settings: Settings) -> bytes:
    path = settings.home / "keys" / "request-log.key"
    with _lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
            os.replace(tmp, path)
        return path.read_bytes()


def customer_hash(customer_id: str, settings: Settings | None = None) -> str:
    """A stable pseudonym for a customer id: HMAC-SHA256 under the local key, 16 hex characters."""
    settings = settings or get_settings()
    return hmac.new(_key(settings), customer_id.encode(), hashlib.sha256).hexdigest()[:16]


def log_request(record: Mapping[str, Any], *, customer_id: str | None = None, question: str | None = None,
                settings: Settings | None = None) -> dict[str, Any]:
    """Append one request's line. Unknown keys are dropped, so nothing else slips into the log;
    the customer id is stored only as its keyed hash, the question only when contents are traced."""
    settings = settings or get_settings()
    line: dict[str, Any] = {k: record[k] for k in FIELDS if k in record}
    line.setdefault("time", dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"))
    if customer_id is not None:
        line["customer"] = customer_hash(customer_id, settings)
    if question is not None and settings.labkit_trace_content:
        line["question"] = question
    path = log_path(settings)
    data = json.dumps(line, ensure_ascii=False, default=str) + "\n"
    with _lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
    return line


def read_requests(settings: Settings | None = None) -> Iterator[dict[str, Any]]:
    """Every logged request, oldest first (a torn last line is skipped)."""
    path = log_path(settings)
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        for raw in f:
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                continue
