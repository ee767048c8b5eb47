"""The HTTP target's input checks and failure handling, without a service (a closed port), and the
budget setting's parsing. The target against the real service is tested in test_app.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labkit.config import ConfigError, get_settings
from labkit.evaluation import targets
from labkit.evaluation.ratecontrol import classify
from tests.conftest import free_port

TOKEN = "lk_" + "a" * 40


def test_a_tokens_file_with_a_broken_token_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"C-001": TOKEN, "C-002": TOKEN + "\n"}))
    with pytest.raises(ValueError, match="C-002") as caught:
        targets.load_tokens(path)
    assert TOKEN not in str(caught.value)
    path.write_text(json.dumps(["C-001"]))
    with pytest.raises(ValueError, match="must map customer ids"):
        targets.load_tokens(path)
    with pytest.raises(FileNotFoundError):
        targets.load_tokens(tmp_path / "missing.json")


def test_an_unreachable_service_is_retryable_and_its_error_holds_no_token() -> None:
    run = targets.http_target(f"http://127.0.0.1:{free_port()}", {"C-001": TOKEN})
    with pytest.raises(targets.TargetUnreachable) as caught:
        run({"id": "r", "query": "q", "customer_id": "C-001"})
    assert classify(caught.value) == "unreachable" and TOKEN not in str(caught.value)
    with pytest.raises(ValueError, match="no token for C-002"):
        run({"id": "r", "query": "q", "customer_id": "C-002"})


def test_statuses_are_classified_for_retries() -> None:
    class Response:
        def __init__(self, headers: dict[str, str]):
            self.headers = headers

    def error(status: int, headers: dict[str, str] | None = None) -> targets.TargetHTTPError:
        return targets.TargetHTTPError(status, "x", Response(headers or {}))

    assert classify(error(429, {"retry-after": "2"})) == "rate_limited"
    assert classify(error(503, {"retry-after": "5"})) == "rate_limited"  # a full queue: slow down
    assert classify(error(503)) == "unreachable"
    assert classify(error(504)) == "timeout"
    assert classify(error(422)) == "error" and classify(error(401)) == "error"


def test_the_recorded_url_has_no_credentials_or_query() -> None:
    assert targets.public_url("https://user:pw@chat.example.com:8443/app/?code=secret") == \
        "https://chat.example.com:8443/app/"


def test_the_budget_setting(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LABKIT_BUDGET_USD", "")
    assert get_settings().labkit_budget_usd is None  # empty means no budget
    clean_env.setenv("LABKIT_BUDGET_USD", "2.5")
    assert get_settings().labkit_budget_usd == 2.5
    for bad, why in (("abc", "number"), ("-1", "finite"), ("inf", "finite")):
        clean_env.setenv("LABKIT_BUDGET_USD", bad)
        with pytest.raises(ConfigError, match=why):
            get_settings()
