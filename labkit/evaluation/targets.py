"""Targets: what answers a row - the flow in this process, a bare model call, or a deployed service.

Part of the evaluation runner (labkit.evaluation.runner; notebooks/04_evaluate.ipynb). A target is a
callable `row -> result`; the result is a `ChatResult` or a dict with the same fields.

`http_target(url, tokens)` evaluates what is actually deployed (`labkit eval --target URL --tokens
FILE`): each row is asked as `POST /api/chat` signed in with its customer's token, and the answer's
fields become the result - `retrieved` feeds the retrieval metrics, citations in the answer that the
service did not keep are the dropped ones (the flow's own rule), and the customer's orders, which the
service does not return, leave `checks.order_named` unmeasured rather than 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from labkit import models
from labkit.jsonl import read_json_file

Target = Callable[[dict[str, Any]], Any]
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{16,512}$")


def flow_target(config: Any) -> Target:
    """The Contoso Chat flow with one `FlowConfig` as a target."""
    from labkit import flow

    def run(row: dict[str, Any]) -> Any:
        if not row.get("customer_id"):
            raise ValueError("row has no customer_id (the flow answers for a signed-in customer)")
        return flow.answer(row["query"], row["customer_id"], history=row.get("chat_history") or None,
                           config=config)

    run.__name__ = f"flow:{config.name}"
    return run


def bare_model_target(max_tokens: int = 16, model: str | None = None) -> Target:
    """One chat call with the question only (no retrieval): the light target of the throughput benchmark
    and of the fault tests, and the 'bare model' baseline of notebook 03."""

    def run(row: dict[str, Any]) -> dict[str, Any]:
        reply = models.chat(row["query"], model=model, max_tokens=max_tokens, seed=42)
        return {"answer": reply.text, "usage": reply.usage, "model": reply.model}

    run.__name__ = "bare_model"
    return run


class TargetUnreachable(ConnectionError):
    """The service could not be reached or the connection failed (the type only: never the text, which
    can quote a request header)."""


class TargetTimeout(TimeoutError):
    """The service took longer than the row's time limit to answer."""


class TargetHTTPError(Exception):
    """The deployed service answered with an error status (its `error.code`, never the body text)."""

    def __init__(self, status_code: int, code: str, response: Any):
        super().__init__(f"the service answered {status_code} ({code})")
        self.status_code, self.code, self.response = status_code, code, response  # retry_after reads headers


def load_tokens(path: str | Path) -> dict[str, str]:
    """A JSON file mapping customer id to a sign-in token (`labkit tokens issue --customer ID`)."""
    path = Path(path)
    data = read_json_file(path, "tokens file")
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in data.items()):
        raise ValueError(f"{path} must map customer ids to tokens, e.g. {{\"C-001\": \"lk_...\"}}")
    bad = sorted(k for k, v in data.items() if not _TOKEN.fullmatch(v))
    if bad:  # a stray newline would reach an HTTP error message, and from there the results
        raise ValueError(f"{path}: the token of {', '.join(bad)} has spaces or control characters")
    return data


def result_from_answer(body: Mapping[str, Any]) -> dict[str, Any]:
    """The service's answer fields as a result the evaluators read."""
    from labkit.flow import CITATION_RE

    answer = str(body.get("answer") or "")
    kept = list(body.get("citations") or [])
    dropped = [pid for pid in dict.fromkeys(CITATION_RE.findall(answer)) if pid not in kept]
    documents = [{"id": d.get("id"), "product_id": d.get("product_id"), "score": d.get("score")}
                 for d in body.get("retrieved") or []]
    return {"answer": answer, "citations": kept, "dropped_citations": dropped,
            "context": {"documents": documents},  # no "orders": the service does not return them
            "orders_unknown": True,
            "usage": dict(body.get("usage") or {}), "timings": dict(body.get("timings") or {}),
            "request_id": body.get("request_id"), "model": body.get("model"),
            "blocked": bool(body.get("blocked")), "flow_version": body.get("flow_version")}


def http_target(base_url: str, tokens: Mapping[str, str], *, name: str = "service") -> Target:
    """A deployed chat service as a target (see the module docstring)."""
    import httpx

    base = base_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError("--target must be an http(s) URL")

    def run(row: dict[str, Any]) -> dict[str, Any]:
        customer = row.get("customer_id")
        if not customer:
            raise ValueError("row has no customer_id (the service answers for a signed-in customer)")
        if customer not in tokens:
            raise ValueError(f"the tokens file has no token for {customer}")
        body = {"question": row["query"], "history": row.get("chat_history") or []}
        try:
            response = httpx.post(f"{base}/api/chat", json=body, timeout=models.current_timeout(180.0),
                                  headers={"authorization": f"Bearer {tokens[customer]}"})
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
            raise TargetTimeout("no answer within the row's time limit") from None
        except httpx.HTTPError as exc:  # refused, reset, a connect timeout: worth a retry
            raise TargetUnreachable(f"{type(exc).__name__} calling the service") from None
        if response.status_code != 200:
            try:
                code = str(response.json()["error"]["code"])
            except (ValueError, KeyError, TypeError):
                code = "unknown"
            raise TargetHTTPError(response.status_code, code, response)
        return result_from_answer(response.json())

    run.__name__ = f"http:{name}"
    return run


def public_url(url: str) -> str:
    """The URL as it may be recorded: without user:password@ and without a query string."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
