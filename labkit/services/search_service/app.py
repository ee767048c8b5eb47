"""The HTTP face of the local search service: Azure AI Search's REST API as an ASGI app.

Introduced in notebooks/02_index_data.ipynb.

Routes follow the paths the azure-search-documents SDK sends (`/indexes('name')`,
`/indexes('name')/docs/search.post.search`, ...) and the older `/indexes/name/docs/search`
spellings. Every route but `/health` needs the `api-key` header: the admin key for everything,
the query key for reading documents and searching. Errors use Azure's JSON error body.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from .engine import SearchEngine
from .errors import SearchError, bad_request, unsupported
from .keys import ApiKeys
from .odata import parse_field_list

log = logging.getLogger("labkit.search_service")
MAX_BODY = 16 * 1024 * 1024
JSON_TYPE = "application/json; odata.metadata=none; charset=utf-8"

_INDEX = r"/indexes(?:\('(?P<name>[^'/]*)'\)|/(?P<name2>[^/()']+))"
_DOC_KEY = (
    r"/docs(?:\('(?P<key>(?:[^']|'')*)'\)|/(?P<key2>(?!search\b|index\b|suggest\b|autocomplete\b|\$count\b|"
    r"search\.)[^/]+))"
)
_ROUTES: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(pattern + "$"))
    for name, pattern in [
        ("indexes", r"/indexes"),
        ("count", _INDEX + r"/docs/\$count"),
        ("search_post", _INDEX + r"/docs/(?:search\.post\.search|search)"),
        ("index_docs", _INDEX + r"/docs/(?:search\.index|index)"),
        ("suggest", _INDEX + r"/docs/(?:search\.(?:post\.)?suggest|suggest)"),
        ("autocomplete", _INDEX + r"/docs/(?:search\.(?:post\.)?autocomplete|autocomplete)"),
        ("document", _INDEX + _DOC_KEY),
        ("search_get", _INDEX + r"/docs"),
        ("stats", _INDEX + r"/(?:search\.stats|stats)"),
        ("analyze", _INDEX + r"/(?:search\.analyze|analyze)"),
        ("index", _INDEX),
    ]
]
_QUERY_ROUTES = {"count", "search_post", "search_get", "document"}
_OTHER_RESOURCES = {
    "indexers": "Indexers",
    "datasources": "Data sources",
    "skillsets": "Skillsets",
    "synonymmaps": "Synonym maps",
    "aliases": "Index aliases",
    "knowledgebases": "Knowledge bases",
    "knowledgesources": "Knowledge sources",
    "servicestats": "Service statistics",
}
_GET_PARAMS = {
    "search": "search",
    "searchMode": "searchMode",
    "searchFields": "searchFields",
    "queryType": "queryType",
    "$filter": "filter",
    "$select": "select",
    "$orderby": "orderby",
    "scoringProfile": "scoringProfile",
    "sessionId": "sessionId",
    "scoringStatistics": "scoringStatistics",
    "highlight": "highlight",
    "highlightPreTag": "highlightPreTag",
    "highlightPostTag": "highlightPostTag",
    "semanticConfiguration": "semanticConfiguration",
    "answers": "answers",
    "captions": "captions",
    "debug": "debug",
    "semanticQuery": "semanticQuery",
}


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=headers)


def _error(exc: SearchError) -> Response:
    return _json(exc.status, exc.body())


def _get_search_body(request: Request) -> dict[str, Any]:
    """Translate the GET form of Search Documents into the POST body."""
    body: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key == "api-version":
            continue
        if key in _GET_PARAMS:
            body[_GET_PARAMS[key]] = value
        elif key in ("$top", "$skip"):
            if not re.fullmatch(r"\d+", value):
                raise bad_request(f"The request is invalid. Details: '{key}' must be a non-negative integer.")
            body[key[1:]] = int(value)
        elif key == "$count":
            if value not in ("true", "false"):
                raise bad_request("The request is invalid. Details: '$count' must be true or false.")
            body["count"] = value == "true"
        elif key == "facet":
            body.setdefault("facets", []).append(value)
        elif key == "scoringParameter":
            body.setdefault("scoringParameters", []).append(value)
        elif key == "minimumCoverage":
            try:
                body["minimumCoverage"] = float(value)
            except ValueError:
                raise bad_request(
                    "The request is invalid. Details: 'minimumCoverage' must be a number."
                ) from None
        else:
            raise bad_request(
                f"The request is invalid. Details: The query parameter '{key}' is not a valid "
                "parameter for the operation 'search'."
            )
    return body


class SearchServiceApp:
    """ASGI application. `engine` does the work; `keys` authorise requests."""

    def __init__(self, engine: SearchEngine, keys: ApiKeys) -> None:
        self.engine = engine
        self.keys = keys

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.engine.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        started = time.perf_counter()
        try:
            response = await self.handle(request)
        except SearchError as exc:
            response = _error(exc)
        except Exception:
            log.exception("unexpected error for %s %s", request.method, scope.get("path", ""))
            response = _error(
                SearchError(
                    500, "An unexpected error occurred in the local search service; its log has the details."
                )
            )
        await response(scope, receive, send)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %d in %.1f ms",
                request.method,
                scope.get("path", ""),
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )

    async def handle(self, request: Request) -> Response:
        path = request.scope.get("path", "/").rstrip("/") or "/"
        method = request.method
        if path == "/health":
            return _json(200, {"status": "ok"})
        route, match = self._route(path)
        presented = request.headers.get("api-key")
        if not presented:
            raise SearchError(401, "Access denied: the 'api-key' header is missing.")
        role = self.keys.role(presented)
        if role is None:
            raise SearchError(403, "Access denied: the 'api-key' is not valid for this service.")
        if route is None:
            resource = path.strip("/").split("/")[0].split("(")[0]
            if resource in _OTHER_RESOURCES:
                raise unsupported(f"{_OTHER_RESOURCES[resource]} ('/{resource}')")
            raise SearchError(404, f"The resource '{path}' was not found.")
        reading = route in _QUERY_ROUTES and (method == "GET" or route == "search_post")
        if role != "admin" and not reading:
            raise SearchError(
                403,
                "Access denied: this operation requires an admin key; a query key can only "
                "search and read documents.",
            )
        if "api-version" not in request.query_params:
            raise bad_request("The api-version query parameter (?api-version=) is required for all requests.")
        assert match is not None
        name = match.groupdict().get("name") or match.groupdict().get("name2") or ""
        handler = getattr(self, f"_{route}")
        return await handler(request, method, name, match)

    @staticmethod
    def _route(path: str) -> tuple[str | None, re.Match[str] | None]:
        for name, pattern in _ROUTES:
            match = pattern.match(path)
            if match:
                return name, match
        return None, None

    @staticmethod
    def _method(method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            raise SearchError(405, f"The HTTP method '{method}' is not supported for this resource.")

    @staticmethod
    async def _body(request: Request) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            raise SearchError(413, "The request is too large: the limit is 16 MB per request.")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise SearchError(413, "The request is too large: the limit is 16 MB per request.")
        if not raw.strip():
            raise bad_request("The request is invalid. Details: the request body is empty.")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(
                f"The request is invalid. Details: the body is not valid JSON ({exc})."
            ) from None

    # ------------------------------------------------------------------ handlers
    async def _indexes(self, request: Request, method: str, _name: str, _m: re.Match[str]) -> Response:
        self._method(method, ("GET", "POST"))
        if method == "POST":
            return _json(201, self.engine.create_index(await self._body(request)))
        select = request.query_params.get("$select")
        return _json(200, {"value": self.engine.list_indexes(parse_field_list(select) if select else None)})

    async def _index(self, request: Request, method: str, name: str, _m: re.Match[str]) -> Response:
        self._method(method, ("GET", "PUT", "DELETE"))
        if method == "GET":
            return _json(200, self.engine.get_index(name))
        if method == "DELETE":
            self.engine.delete_index(name, request.headers.get("if-match"))
            return Response(status_code=204)
        definition, created = self.engine.create_or_update_index(
            name,
            await self._body(request),
            request.headers.get("if-match"),
            request.headers.get("if-none-match"),
        )
        if created:
            return _json(201, definition)
        if "return=representation" in request.headers.get("prefer", ""):
            return _json(200, definition)
        return Response(status_code=204)

    async def _stats(self, _request: Request, method: str, name: str, _m: re.Match[str]) -> Response:
        self._method(method, ("GET",))
        return _json(200, self.engine.index_stats(name))

    async def _analyze(self, _request: Request, _method: str, name: str, _m: re.Match[str]) -> Response:
        self.engine.store(name)
        raise unsupported("The Analyze Text API")

    async def _suggest(self, _request: Request, _method: str, name: str, _m: re.Match[str]) -> Response:
        self.engine.store(name)
        raise unsupported("Suggestions ('search.suggest')")

    async def _autocomplete(self, _request: Request, _method: str, name: str, _m: re.Match[str]) -> Response:
        self.engine.store(name)
        raise unsupported("Autocomplete ('search.autocomplete')")

    async def _count(self, _request: Request, method: str, name: str, _m: re.Match[str]) -> Response:
        self._method(method, ("GET",))
        return Response(str(self.engine.count(name)), media_type="text/plain; charset=utf-8")

    async def _document(self, request: Request, method: str, name: str, match: re.Match[str]) -> Response:
        self._method(method, ("GET",))
        key = match.group("key")
        key = key.replace("''", "'") if key is not None else match.group("key2")
        return _json(200, self.engine.get_document(name, key, request.query_params.get("$select")))

    async def _index_docs(self, request: Request, method: str, name: str, _m: re.Match[str]) -> Response:
        self._method(method, ("POST",))
        self.engine.store(name)
        results, status = self.engine.index_documents(name, await self._body(request))
        return _json(status, {"value": results})

    async def _search_post(self, request: Request, method: str, name: str, _m: re.Match[str]) -> Response:
        self._method(method, ("POST",))
        self.engine.store(name)
        return self._search_response(request, name, await self._body(request))

    async def _search_get(self, request: Request, method: str, name: str, _m: re.Match[str]) -> Response:
        self._method(method, ("GET",))
        self.engine.store(name)
        return self._search_response(request, name, _get_search_body(request))

    def _search_response(self, request: Request, name: str, body: Any) -> Response:
        result = self.engine.search(name, body)
        if "@search.nextPageParameters" in result:
            base = str(request.base_url).rstrip("/")
            version = quote(request.query_params.get("api-version", ""))
            result["@odata.nextLink"] = (
                f"{base}/indexes('{name}')/docs/search.post.search?api-version={version}"
            )
        return _json(200, result)


def create_app(engine: SearchEngine, keys: ApiKeys) -> SearchServiceApp:
    return SearchServiceApp(engine, keys)
