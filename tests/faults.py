"""A real HTTP server on 127.0.0.1 that injects faults in front of the real local model server.

Modes (changeable while running): `forward` (pass requests to the upstream OpenAI-compatible
server, rewriting the model name both ways so a priced name can be tested against the local
model, and a `json_schema` response format into llama.cpp's `json_object` with that schema), `rate_limit` (answer 429 with `Retry-After` for the next `n` requests, then forward),
`stall` (accept the request and never answer until closed), `hold` (forward the next `pass_left`
requests, then hold every later one until `release()`, so a test knows rows are in flight whatever
the machine's speed; `wait_held(n)` returns once `n` requests are held), `reply` (answer every chat
request with `reply_text`, without the model; streamed word by word when asked to stream), `content_filter` (Azure OpenAI's 400 for a filtered
prompt). No SDK internals are patched: the real `openai`
client talks HTTP to this server. Every request body is kept in `bodies`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class FaultProxy:
    def __init__(self, upstream: str, upstream_model: str):
        self.upstream = upstream.rstrip("/")
        self.upstream_model = upstream_model
        self.mode = "forward"
        self.rate_limit_left = 0
        self.retry_after = "2"
        self.requests: list[tuple[float, str, int]] = []  # (time, path, status)
        self.bodies: list[dict[str, Any]] = []
        self.pass_left = 0
        self.reply_text = ""
        self.held = 0
        self.closing = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {"object": "list", "data": [{"id": "proxied", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                payload = json.loads(body or b"{}")
                with proxy._lock:
                    proxy.bodies.append(payload)
                    mode = proxy.mode
                    if mode == "rate_limit" and proxy.rate_limit_left <= 0:
                        mode = "forward"
                    if mode == "rate_limit":
                        proxy.rate_limit_left -= 1
                    if mode == "hold" and proxy.pass_left > 0:
                        proxy.pass_left -= 1
                        mode = "forward"
                    if mode == "hold":
                        proxy.held += 1
                        proxy._changed.notify_all()
                if mode == "hold":
                    # released (then forwarded) or the proxy closes; the bound only ends a forgotten test
                    while not proxy.released.wait(0.5):
                        if proxy.closing.is_set():
                            self.close_connection = True
                            return
                    mode = "forward"
                if mode == "reply" and payload.get("stream"):
                    proxy._record(self.path, 200)
                    self._stream_reply(proxy.reply_text, payload.get("model") or "test")
                    return
                if mode == "reply":
                    proxy._record(self.path, 200)
                    self._send(200, {"id": "chatcmpl-test", "object": "chat.completion", "created": 0,
                                     "model": payload.get("model") or "test",
                                     "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                         "role": "assistant", "content": proxy.reply_text}}],
                                     "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
                    return
                if mode == "content_filter":  # Azure OpenAI's prompt filter refusing a request
                    proxy._record(self.path, 400)
                    self._send(400, {"error": {"message": "The response was filtered due to the prompt "
                                               "triggering content management policy (test).",
                                               "type": None, "param": "prompt", "code": "content_filter",
                                               "status": 400}})
                    return
                if mode == "stall":
                    proxy._record(self.path, 0)
                    proxy.closing.wait(120)
                    self.close_connection = True
                    return
                if mode == "rate_limit":
                    proxy._record(self.path, 429)
                    self._send(429, {"error": {"message": "rate limited (test)", "type": "rate_limit",
                                               "code": "429"}}, {"Retry-After": proxy.retry_after})
                    return
                asked = payload.get("model")
                payload["model"] = proxy.upstream_model
                wanted = payload.get("response_format") or {}
                if wanted.get("type") == "json_schema":  # a cloud feature; llama.cpp takes the schema so
                    payload["response_format"] = {"type": "json_object",
                                                  "schema": wanted.get("json_schema", {}).get("schema", {})}
                upstream = httpx.post(f"{proxy.upstream}{self.path}", json=payload, timeout=120)
                proxy._record(self.path, upstream.status_code)
                try:
                    answer = upstream.json()
                    if isinstance(answer, dict) and "model" in answer and asked:
                        answer["model"] = asked
                except ValueError:
                    answer = {"error": {"message": upstream.text[:200]}}
                self._send(upstream.status_code, answer)

            def _stream_reply(self, text: str, model: str) -> None:
                """The reply as server-sent chunks, one word each (what a streaming endpoint sends)."""
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                words = text.split(" ")
                for i, word in enumerate(words):
                    piece = word if i == len(words) - 1 else word + " "
                    chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": model,
                             "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                done = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": model,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
                self.close_connection = True

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _record(self, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((time.monotonic(), path, status))

    def hold_after(self, n: int) -> None:
        """Forward the next `n` requests, then hold the rest until `release()`."""
        with self._lock:
            self.released.clear()
            self.pass_left, self.held, self.mode = n, 0, "hold"

    def wait_held(self, n: int, timeout: float = 600) -> None:
        """Block until `n` requests are being held (the timeout only ends a test that would hang)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.held >= n, timeout=timeout):
                raise TimeoutError(f"only {self.held} of {n} requests reached the proxy")

    def release(self) -> None:
        """Forward the held requests, and every later one."""
        with self._lock:
            self.mode = "forward"
        self.released.set()

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
