"""The embedded local model server: llama.cpp's OpenAI-compatible server with a model guard.

Introduced in notebooks/00_setup.ipynb. Started by `labkit.services.ensure_running()` as
`python -m labkit.services.model_server --config FILE`; the config file is written by the
process manager and lists every registered model.

llama-cpp-python answers a request for an unknown model with its default model. This wrapper
rejects such a request with an OpenAI-style 404 `model_not_found` instead, so a typo in a model
name never silently measures another model.

Further fixes to the stock server (measured by benchmarks/eval_throughput.py and model_service.py):

- every model call runs on one dedicated compute thread. The stock server hands each call to
  whichever worker of the shared thread pool is free; llama.cpp's OpenMP build keeps a team of
  worker threads per calling thread, so two overlapping requests leave two teams alive, more
  threads than cores, and libgomp then stops spin-waiting: every later request ran about 3x
  slower (1.1 instead of 1.9-3 requests/s on 2 cores) until the idle pool thread expired. The
  server already answers one request at a time, so one thread costs nothing. A stream is produced
  ahead on that thread into a queue, so decoding the next token overlaps sending this one (decode
  through the API went from 0.87 to 0.92-0.94 of in-process speed, benchmarks/model_service.py);
- `interrupt_requests` is off: the stock server ends a streaming answer early, as if complete,
  when another request arrives, which would cut a learner's streamed answer short under load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import functools
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]

GUARDED_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
T = TypeVar("T")

# One thread for every llama.cpp call (see the module docstring): created on first use.
_COMPUTE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-compute")
_END = object()


async def _uncancelled(future: asyncio.Future[T]) -> T:
    """Wait for `future` even if the request is cancelled meanwhile (a client gone): like starlette's
    pool, so the server's model lock is never released while the model is in use."""
    with anyio.CancelScope(shield=True):
        return await asyncio.shield(future)


async def run_on_compute_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `func(*args, **kwargs)` on the single compute thread (replaces starlette's pool)."""
    loop = asyncio.get_running_loop()
    return await _uncancelled(loop.run_in_executor(_COMPUTE, functools.partial(func, *args, **kwargs)))


# The stop events of the streams started under the current request's hold on the model lock.
_STREAMS: contextvars.ContextVar[list[threading.Event] | None] = contextvars.ContextVar(
    "labkit_model_streams", default=None)


def _idle() -> None:
    """A no-op run on the compute thread: once it has run, every earlier model call has ended."""


def hold_model_until_idle(
        get_llama_proxy: Callable[[], AsyncGenerator[Any, None]]) -> Callable[[], AsyncGenerator[Any, None]]:
    """Wrap the stock app's lock-holding `get_llama_proxy` so that, before the model lock is let go,
    the request's streams are told to stop and the compute thread has finished with the model.

    Without it a stream whose client left is closed only later by the garbage collector, after the
    next request holds the lock - and may already be switching models under the running decode."""

    async def guarded() -> AsyncGenerator[Any, None]:
        streams: list[threading.Event] = []
        token = _STREAMS.set(streams)
        inner = get_llama_proxy()
        try:
            proxy = await inner.__anext__()
            try:
                yield proxy
            finally:
                for stop in streams:
                    stop.set()
                await run_on_compute_thread(_idle)
        finally:
            with contextlib.suppress(ValueError):
                _STREAMS.reset(token)
            await inner.aclose()  # releases the stock server's lock

    return guarded


async def iterate_on_compute_thread(iterable: Iterable[T]) -> AsyncIterator[T]:
    """Run a (streaming) iterator on the single compute thread, which produces ahead into a queue
    while the event loop sends, so decoding the next token overlaps sending this one. When the
    consumer stops early (a client gone), the producer is told to stop and awaited, so the model
    lock is released only after the model call has ended."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()
    streams = _STREAMS.get()
    if streams is not None:
        streams.append(stop)  # the request's model-lock holder stops us before it lets go

    def produce() -> None:
        iterator = iter(iterable)
        try:
            for item in iterator:
                loop.call_soon_threadsafe(queue.put_nowait, (True, item))
                if stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            loop.call_soon_threadsafe(queue.put_nowait, (False, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            loop.call_soon_threadsafe(queue.put_nowait, (False, _END))

    producer = loop.run_in_executor(_COMPUTE, produce)
    try:
        while True:
            ok, item = await queue.get()
            if ok:
                yield item
            elif item is _END:
                return
            else:
                raise item
    finally:
        stop.set()
        await _uncancelled(producer)


class ModelGuard:
    """ASGI middleware: a request naming a model the server does not host gets a 404."""

    def __init__(self, app: ASGIApp, models: list[str]):
        self.app = app
        self.models = set(models)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in GUARDED_PATHS:
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        model = None
        try:
            payload = json.loads(body or b"{}")
            model = payload.get("model") if isinstance(payload, dict) else None
        except ValueError:
            pass  # malformed JSON: the inner app answers with its own 4xx
        if model is not None and (not isinstance(model, str) or model not in self.models):
            error = {
                "error": {
                    "message": f"The model '{str(model)[:100]}' does not exist on this server. "
                               f"Available: {', '.join(sorted(self.models))}",
                    "type": "invalid_request_error", "param": "model", "code": "model_not_found",
                }
            }
            data = json.dumps(error).encode()
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def build_app(config: dict[str, Any]) -> ASGIApp:
    from llama_cpp.server import app as llama_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    # The stock app looks these names up in its module at call time.
    llama_app.run_in_threadpool = run_on_compute_thread  # type: ignore[assignment]
    llama_app.get_llama_proxy = hold_model_until_idle(llama_app.get_llama_proxy)  # type: ignore[assignment]
    llama_app.iterate_in_threadpool = iterate_on_compute_thread  # type: ignore[assignment]
    create_app = llama_app.create_app
    server = ServerSettings(host=config["host"], port=config["port"], interrupt_requests=False)
    models = [ModelSettings(**{k: v for k, v in m.items() if v is not None}) for m in config["models"]]
    app = create_app(server_settings=server, model_settings=models)
    return ModelGuard(app, [m["model_alias"] for m in config["models"]])


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="labkit's local OpenAI-compatible model server")
    parser.add_argument("--config", required=True, help="JSON file written by labkit.services")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        config = json.load(f)
    if config.get("host") != "127.0.0.1":
        raise SystemExit("the local model server binds 127.0.0.1 only")
    uvicorn.run(build_app(config), host="127.0.0.1", port=int(config["port"]), log_level="warning")


if __name__ == "__main__":
    main()
