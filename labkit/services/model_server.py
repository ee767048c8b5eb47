"""The embedded local model server: llama.cpp's OpenAI-compatible server with a model guard.

Introduced in notebooks/00_setup.ipynb. Started by `labkit.services.ensure_running()` as
`python -m labkit.services.model_server --config FILE`; the config file is written by the
process manager and lists every registered model.

llama-cpp-python answers a request for an unknown model with its default model. This wrapper
rejects such a request with an OpenAI-style 404 `model_not_found` instead, so a typo in a model
name never silently measures another model.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]

GUARDED_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}


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
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    server = ServerSettings(host=config["host"], port=config["port"])
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
