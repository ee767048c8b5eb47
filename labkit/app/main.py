"""The Contoso Chat HTTP service: the flow behind sign-in, limits, streaming and feedback.

Introduced in notebooks/07_deploy.ipynb; `labkit serve` runs it (docs/service.md).

A request: security checks (body size, no client-supplied customer id) -> bearer token -> the
customer id (from the token only) -> per-token rate limit -> a place in the model queue -> the flow
in a worker thread (inside the request's span, so one trace holds both) -> JSON or server-sent
events -> one line in the request log. Every error is `{"error": {"code", "message"}}`; no stack
trace reaches a client. The app never starts local services itself: `labkit serve` does that before
it starts, and `/ready` says what is missing.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from labkit import flow, requestlog, store
from labkit.app.limits import ModelQueue, QueueFull, TokenBucket
from labkit.app.tokens import AuthError, TokenStore
from labkit.config import Settings, get_settings
from labkit.monitor import online
from labkit.tracing import get_tracer, tracer_provider

STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {"chat.js": "text/javascript; charset=utf-8", "chat.css": "text/css; charset=utf-8"}
_CUSTOMER_FIELD = re.compile(r"customer|user[_-]?id", re.I)
_SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
    "cache-control": "no-store",
}


class ApiError(Exception):
    """An error answer. `before_handler`: raised before the chat handler started its own request-log
    line (sign-in, the rate limit, too much history), so the error handler writes one."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 before_handler: bool = False):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.before_handler = before_handler


_UNUSABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def _usable_text(value: str) -> str:
    """Text the model can read: no NUL or other control characters, no lone surrogates."""
    if _UNUSABLE.search(value):
        raise ValueError("contains control characters or invalid unicode")
    return value


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str = Field(max_length=8000)

    _check = field_validator("content")(_usable_text)


class ChatRequest(BaseModel):
    """The customer comes from the token: a customer id in the body is refused."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, description="the customer's question")
    history: list[Turn] = Field(default_factory=list, description="earlier turns, oldest first")
    stream: bool = Field(default=False, description="answer as server-sent events")

    _check = field_validator("question")(_usable_text)


class Retrieved(BaseModel):
    product_id: str
    id: str
    score: float


class ChatAnswer(BaseModel):
    answer: str
    citations: list[str]
    retrieved: list[Retrieved]
    blocked: bool
    usage: dict[str, Any]
    timings: dict[str, float]
    request_id: str
    flow_version: str
    model: str


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]
    flow_version: str = Field(description="the flow version this service answers with")
    promoted: str | None = Field(description="the registry's production flow version (None: none promoted)")


class Product(BaseModel):
    """Public catalog fields (the product pages' citation links)."""

    id: str
    name: str
    category: str
    brand: str
    price: float
    description: str
    features: list[str]
    weight_g: float | None
    rating: float | None


class Stored(BaseModel):
    stored: bool
    request_id: str


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers={**_SECURITY_HEADERS, **(headers or {})})


def _public(result: flow.ChatResult) -> dict[str, Any]:
    """The answer fields a client may see: ids and scores of the documents, never their text, and
    nothing of the customer's record."""
    return {"answer": result.answer, "citations": result.citations,
            "retrieved": [{"product_id": d["product_id"], "id": d["id"], "score": round(float(d["score"]), 4)}
                          for d in result.context.get("documents", [])],
            "blocked": result.blocked, "usage": result.usage, "timings": result.timings,
            "request_id": result.request_id, "flow_version": result.flow_version, "model": result.model}


ERRORS = {status: {"model": ErrorResponse} for status in (401, 404, 413, 422, 429, 503, 504)}


def default_config(settings: Settings) -> flow.FlowConfig:
    """The variant the service answers with unless given one: the registry's production version
    (`labkit promote`, notebook 09) when one was promoted; else, on the embedded model, the fine-tuned
    adapter in the short prompt shape (`eval/small.json`, notebook 05) when it is present; otherwise
    (a cloud model, or no adapter) the default flow."""
    from labkit.config import REPO_ROOT
    from labkit.registry import production_config

    promoted = production_config(settings)  # `labkit promote` (notebook 09) decides what is served
    if promoted is not None:
        return promoted
    preset = REPO_ROOT / "eval" / "small.json"
    adapter = REPO_ROOT / "data" / "models" / "contoso-chat-small-ft.lora.gguf"
    if settings.backend_for("chat") == "local" and preset.is_file() and adapter.is_file():
        return flow.FlowConfig.model_validate_json(preset.read_text(encoding="utf-8"))
    return flow.FlowConfig()


def create_app(settings: Settings | None = None, config: flow.FlowConfig | None = None) -> FastAPI:
    settings = settings or get_settings()
    config = config or default_config(settings)
    tracer_provider()  # installed as the global provider before the first request: FastAPI's spans join
    serving = _serving(config, settings)
    served_version = serving["flow_version"]  # computed once: it hashes the prompt files and any adapter
    tokens = TokenStore(settings)
    bucket = TokenBucket(settings.labkit_app_rate_per_minute / 60.0, settings.labkit_app_rate_burst)
    slots = settings.labkit_app_model_slots or (1 if settings.backend_for("chat") == "local" else 4)
    if slots < 1:  # llama.cpp answers one request at a time; a cloud deployment's quota allows more
        raise ValueError("LABKIT_APP_MODEL_SLOTS must be at least 1")
    queue_holder: dict[str, ModelQueue] = {}
    feedback_lock = threading.Lock()

    app = FastAPI(title="Contoso Chat", version="1", description=__doc__,
                  responses={500: {"model": ErrorResponse}})
    origins = [o.strip() for o in settings.labkit_app_cors_origins.split(",") if o.strip()]
    if "*" in origins:
        raise ValueError("LABKIT_APP_CORS_ORIGINS must list origins, not '*'")
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"])

    def model_queue() -> ModelQueue:  # made inside the running loop
        if "q" not in queue_holder:
            queue_holder["q"] = ModelQueue(slots, settings.labkit_app_queue_max)
        return queue_holder["q"]

    max_body = settings.labkit_app_max_body_bytes

    class Guard:
        """Pure ASGI (streams pass straight through): oversized bodies (413), a client-supplied
        customer id in the query string or a header (422), security headers on every response."""

        def __init__(self, inner: Any):
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            request = Request(scope)
            length = request.headers.get("content-length")
            refusal = None
            if length is not None and (not length.isdigit() or int(length) > max_body):
                refusal = _error(413, "body_too_large", f"the request body is larger than {max_body} bytes")
            elif scope["path"].startswith("/api/"):
                named = [k for k in request.query_params if _CUSTOMER_FIELD.search(k)]
                named += [k for k in request.headers if _CUSTOMER_FIELD.search(k)]
                if named:
                    refusal = _error(422, "customer_from_token", "the customer comes from the sign-in token; "
                                     f"remove {', '.join(sorted(set(named)))} from the request")
            if refusal is not None:
                return await refusal(scope, receive, send)

            async def with_headers(message: Any) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", []))
                    present = {k.lower() for k, _ in headers}
                    headers += [(k.encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()
                                if k.encode() not in present]
                    message["headers"] = headers
                await send(message)

            await self.inner(scope, receive, with_headers)

    app.add_middleware(Guard)

    def _log_refused(request: Request, status: int, code: str) -> None:
        """A chat request refused before its handler ran (sign-in 401, rate limit 429, invalid body 422)
        still gets its request-log line, so dashboards count it (the handler logs everything after)."""
        if request.url.path != "/api/chat" or request.method != "POST":
            return
        record = {"status": status, "error_code": code, "latency_s": 0.0,
                  "flow_version": served_version}
        try:
            requestlog.log_request(record, customer_id=getattr(request.state, "customer", None),
                                   settings=settings)
        except OSError:
            pass

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.before_handler:
            _log_refused(request, exc.status, exc.code)
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            if e.get("type") == "extra_forbidden" and _CUSTOMER_FIELD.search(where):
                _log_refused(request, 422, "customer_from_token")
                return _error(422, "customer_from_token",
                              f"the customer comes from the sign-in token; remove '{where}' from the body")
            problems.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
        _log_refused(request, 422, "invalid_request")
        return _error(422, "invalid_request", "; ".join(problems)[:500] or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return _error(exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:  # never a traceback to a client
        return _error(500, "internal_error", "the service failed to answer; the request id is in the log")

    def signed_in(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            if header and scheme.lower() != "bearer":
                raise AuthError("use Authorization: Bearer <token>")
            customer = tokens.customer_for(token if header else None)
        except AuthError as exc:
            raise ApiError(401, "unauthorized", str(exc), {"WWW-Authenticate": "Bearer"},
                           before_handler=True) from None
        request.state.customer = customer
        wait = bucket.take(token.strip())
        if wait > 0:
            raise ApiError(429, "rate_limited", "too many requests for this sign-in; retry later",
                           {"Retry-After": str(max(1, round(wait + 0.5)))}, before_handler=True)
        return customer

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        """The web chat page (plain HTML, JS and CSS served from labkit/app/static; no CDN)."""
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC_TYPES:
            raise ApiError(404, "not_found", "no such file")
        return Response((STATIC / name).read_bytes(), media_type=STATIC_TYPES[name])

    @app.get("/health", summary="the process is up")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="model, search and store are reachable", response_model=Readiness,
             responses={503: {"model": ErrorResponse}})
    async def ready() -> JSONResponse:
        checks = await asyncio.to_thread(_readiness, settings)
        missing = [name for name, ok in checks.items() if not ok]
        if missing:
            return _error(503, "not_ready", f"not reachable: {', '.join(missing)}", {"Retry-After": "5"})
        return JSONResponse({"ready": True, "checks": checks, **serving}, headers=_SECURITY_HEADERS)

    @app.get("/api/products/{product_id}", summary="public catalog fields, for citation links",
             response_model=Product, responses=ERRORS)
    async def product(product_id: str) -> dict[str, Any]:
        from labkit.schema import load_products

        for p in load_products():
            if p.id == product_id:
                return p.model_dump(include={"id", "name", "category", "brand", "price", "description",
                                             "features", "weight_g", "rating"})
        raise ApiError(404, "not_found", "no such product")

    @app.post("/api/chat", summary="ask Contoso Chat", response_model=ChatAnswer, responses={
        **ERRORS, 200: {"content": {"text/event-stream": {}}}})
    async def chat(body: ChatRequest, request: Request, customer: str = Depends(signed_in)) -> Any:
        if len(body.history) > settings.labkit_app_max_history_turns:
            raise ApiError(422, "invalid_request",
                           f"history has {len(body.history)} turns; the maximum is "
                           f"{settings.labkit_app_max_history_turns}", before_handler=True)
        history = [t.model_dump() for t in body.history]
        streaming = body.stream or "text/event-stream" in request.headers.get("accept", "")
        log: dict[str, Any] = {"streamed": streaming}
        started = time.monotonic()
        queue = model_queue()
        if queue.full():
            log.update(status=503, error_code="queue_full")
            _log(log, customer, body.question, started)
            raise ApiError(503, "queue_full", "the assistant is busy; retry shortly",
                           {"Retry-After": str(queue.retry_after())})
        if streaming:  # it queues when the stream starts: nothing is held if it never does
            return StreamingResponse(_sse(body.question, customer, history, queue, log, started),
                                     media_type="text/event-stream", headers=_SECURITY_HEADERS)
        await queue.acquire()
        log["queue_wait_s"] = round(time.monotonic() - started, 4)
        span = get_tracer().start_span("labkit.request")
        worker = asyncio.create_task(_in_context(trace.set_span_in_context(span), flow.answer, body.question,
                                                 customer, history, config))
        # the model's place is given back when the call returns, even if this request times out or the
        # client goes away (the call cannot be interrupted; the next request must not run beside it)
        worker.add_done_callback(lambda _t: (queue.release(), span.end()))
        try:
            done, _ = await asyncio.wait({worker}, timeout=settings.labkit_app_timeout_s)
            if not done:
                log.update(status=504, error_code="timeout")
                raise ApiError(504, "timeout", f"no answer within {settings.labkit_app_timeout_s:g} s")
            try:
                result = worker.result()
            except store.CustomerNotFound:
                log.update(status=401, error_code="unauthorized")
                raise ApiError(401, "unauthorized", "the customer of this sign-in no longer exists",
                               {"WWW-Authenticate": "Bearer"}) from None
            except (flow.FlowInputError, ValueError) as exc:
                log.update(status=422, error_code="invalid_request")
                raise ApiError(422, "invalid_request", str(exc)) from None
            except Exception as exc:  # a downstream failure: say which kind, never the message
                log.update(status=503, error_code="downstream_error")
                raise ApiError(503, "downstream_error",
                               f"a backend failed ({type(exc).__name__}); retry later",
                               {"Retry-After": "10"}) from None
            log.update(status=200, request_id=result.request_id, **_usage_fields(result))
            await asyncio.to_thread(_sample, result, body.question, customer)
            return JSONResponse(_public(result), headers=_SECURITY_HEADERS)
        finally:
            _log(log, customer, body.question, started)

    async def _sse(question: str, customer: str, history: list[dict[str, str]], queue: ModelQueue,
                   log: dict[str, Any], started: float) -> AsyncIterator[bytes]:
        try:
            await queue.acquire()
        except QueueFull:
            log.update(status=503, error_code="queue_full")
            _log(log, customer, question, started)
            yield _event("error", {"error": {"code": "queue_full", "message": "busy; retry shortly"}})
            return
        log["queue_wait_s"] = round(time.monotonic() - started, 4)
        span = get_tracer().start_span("labkit.request")
        ctx = trace.set_span_in_context(span)
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        finished = asyncio.Event()

        def produce() -> None:
            pieces = flow.stream(question, customer, history, config)
            try:
                for item in pieces:
                    loop.call_soon_threadsafe(items.put_nowait, item)
                    if stop.is_set():
                        break
            except Exception as exc:  # noqa: BLE001 - reported to the client as an event
                loop.call_soon_threadsafe(items.put_nowait, exc)
            finally:
                pieces.close()  # a client that left: the model stream is closed, the model freed
                loop.call_soon_threadsafe(finished.set)

        threading.Thread(target=lambda: _run_attached(ctx, produce), name="labkit-sse", daemon=True).start()
        try:
            while True:
                item = await items.get()
                if isinstance(item, flow.ChatResult):
                    if item.blocked:
                        yield _event("blocked", {"request_id": item.request_id})
                    log.update(status=200, request_id=item.request_id, **_usage_fields(item))
                    await asyncio.to_thread(_sample, item, question, customer)
                    yield _event("done", _public(item))
                    break
                if isinstance(item, Exception):
                    code = "invalid_request" if isinstance(item, flow.FlowInputError | ValueError) else \
                        "downstream_error"
                    log.update(status=200, error_code=code)
                    yield _event("error", {"error": {"code": code, "message": str(item) if code ==
                                                     "invalid_request" else "a backend failed; retry later"}})
                    break
                yield _event("delta", {"text": item})
        finally:
            stop.set()
            log.setdefault("status", 499)  # the client left before the end
            _log(log, customer, question, started)

            async def release() -> None:
                await finished.wait()  # the model is free only when the producer has left it
                span.end()
                queue.release()

            asyncio.ensure_future(release())

    def _sample(result: flow.ChatResult, question: str, customer: str) -> None:
        """Keep the answer for online evaluation when it falls in the sampled share (notebook 08)."""
        try:
            online.maybe_sample(result, question, customer, index=config.index, settings=settings)
        except Exception:  # noqa: BLE001 - monitoring must never fail an answer
            pass

    def _log(log: dict[str, Any], customer: str, question: str, started: float) -> None:
        log["latency_s"] = round(time.monotonic() - started, 4)
        log.setdefault("flow_version", served_version)
        try:
            requestlog.log_request(log, customer_id=customer, question=question, settings=settings)
        except OSError:
            pass  # a full disk must not fail the answer

    @app.post("/api/feedback", summary="thumbs up or down on one of your answers", status_code=201,
              response_model=Stored, responses=ERRORS)
    async def feedback(body: Feedback, customer: str = Depends(signed_in)) -> dict[str, Any]:
        mine = requestlog.customer_hash(customer, settings)
        if not any(r.get("request_id") == body.request_id and r.get("customer") == mine
                   for r in requestlog.read_requests(settings)):
            raise ApiError(404, "not_found", "no answer with this request id for this sign-in")
        record = {"time": time.time(), "request_id": body.request_id, "customer": mine, "rating": body.rating,
                  "comment": body.comment}
        path = settings.home / "feedback.jsonl"
        with feedback_lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        return {"stored": True, "request_id": body.request_id}

    return app


def _usage_fields(result: flow.ChatResult) -> dict[str, Any]:
    return {"input_tokens": result.usage.get("input_tokens"),
            "output_tokens": result.usage.get("output_tokens"),
            "tokens_estimated": bool(result.usage.get("estimated")), "flow_version": result.flow_version,
            "model": result.model, "blocked": result.blocked,
            "safety": [f"{d['guard']}:{d['category']}:{d['action']}:{d['score']:.2f}" for d in result.safety
                       if d["action"] != "allow"]}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _run_attached(ctx: Any, fn: Any, *args: Any) -> Any:
    from opentelemetry import context as otel_context

    from labkit.tracing import purpose

    token = otel_context.attach(ctx)
    try:
        with purpose("service"):
            return fn(*args)
    finally:
        otel_context.detach(token)


async def _in_context(ctx: Any, fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(_run_attached, ctx, fn, *args)


def _serving(config: flow.FlowConfig, settings: Settings) -> dict[str, Any]:
    """Which version this service serves, recorded as a deployment in the registry (notebook 09)."""
    from labkit.registry import RegistryError, production_record, record_deployment

    promoted = None
    try:
        record = production_record(settings)
        promoted = record["flow_version"] if record else None
        record_deployment(config, settings, where=f"labkit serve (port {settings.labkit_app_port})")
    except (RegistryError, OSError, ValueError):
        pass  # the registry is bookkeeping: the service answers without it
    return {"flow_version": config.flow_version(), "promoted": promoted}


def _readiness(settings: Settings) -> dict[str, bool]:
    """Model, search and store: reachable now (local: the service answers; cloud: configured)."""
    checks: dict[str, bool] = {}
    try:
        from labkit.services import status

        local = {row["name"]: row["state"] == "running" for row in status(settings=settings)}
    except Exception:  # noqa: BLE001
        local = {}
    for name, service in (("model", "chat"), ("search", "search")):
        if settings.backend_for(service) == "local":  # type: ignore[arg-type]
            checks[name] = bool(local.get(name))
        else:
            checks[name] = not settings.missing_for(service)  # type: ignore[arg-type]
    try:
        store.get_customer("C-001", settings=settings)
        checks["store"] = True
    except Exception:  # noqa: BLE001
        checks["store"] = False
    return checks
