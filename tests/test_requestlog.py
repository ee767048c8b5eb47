"""The request log: one line per request, customers pseudonymised with a keyed hash, no question text."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest

from labkit import requestlog
from labkit.config import get_settings


def test_a_line_per_request_with_only_the_known_fields(clean_env: pytest.MonkeyPatch) -> None:
    requestlog.log_request({"request_id": "a" * 32, "status": 200, "latency_s": 1.5, "queue_wait_s": 0.2,
                            "input_tokens": 900, "output_tokens": 40, "flow_version": "abc",
                            "api_key": "sk-canary-123", "answer": "secret text"},
                           customer_id="C-001", question="Where is my order O-0001?")
    requestlog.log_request({"request_id": "b" * 32, "status": 429}, customer_id="C-002")
    lines = requestlog.log_path().read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["status"] == 200 and first["latency_s"] == 1.5 and first["input_tokens"] == 900
    assert "sk-canary-123" not in lines[0] and "secret text" not in lines[0]
    assert "C-001" not in lines[0] and "O-0001" not in lines[0] and "question" not in first
    assert [r["request_id"] for r in requestlog.read_requests()] == ["a" * 32, "b" * 32]


def test_customer_ids_are_keyed_hashes_not_plain_ones(clean_env: pytest.MonkeyPatch) -> None:
    h = requestlog.customer_hash("C-001")
    assert h == requestlog.customer_hash("C-001") != requestlog.customer_hash("C-002")
    # a plain hash of the id would be reversible by trying C-001..C-999; the keyed one is not
    assert h not in {hashlib.sha256(f"C-{i:03d}".encode()).hexdigest()[:16] for i in range(1000)}
    key = get_settings().home / "keys" / "request-log.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32


def test_the_question_is_logged_only_when_contents_are_traced(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LABKIT_TRACE_CONTENT", "1")
    line = requestlog.log_request({"request_id": "c" * 32, "status": 200}, question="Which tent?")
    assert line["question"] == "Which tent?"


def test_a_torn_last_line_is_skipped(clean_env: pytest.MonkeyPatch) -> None:
    requestlog.log_request({"request_id": "d" * 32, "status": 200})
    with requestlog.log_path().open("a") as f:
        f.write('{"request_id": "torn')
    assert [r["request_id"] for r in requestlog.read_requests()] == ["d" * 32]
