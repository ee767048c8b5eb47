"""Validation of a search request body (`search.post.search`) against an index's schema.

Introduced in notebooks/02_index_data.ipynb.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import bad_request, invalid_expression, unsupported
from .filters import compile_filter
from .odata import ODataError, OrderKey, parse_field_list, parse_orderby
from .schema import Field, IndexSchema

DEFAULT_K = 50
_IGNORED = {"sessionId", "scoringStatistics", "minimumCoverage"}
_HANDLED = {
    "count",
    "facets",
    "filter",
    "orderby",
    "search",
    "searchFields",
    "searchMode",
    "select",
    "skip",
    "top",
    "vectorQueries",
    "vectorFilterMode",
    "queryType",
    *_IGNORED,
}
_UNSUPPORTED = {
    "highlight": "hit highlighting",
    "highlightPreTag": "hit highlighting",
    "highlightPostTag": "hit highlighting",
    "scoringProfile": "scoring profiles",
    "scoringParameters": "scoring profiles",
    "semanticConfiguration": "semantic ranking",
    "semanticQuery": "semantic ranking",
    "semanticErrorHandling": "semantic ranking",
    "semanticMaxWaitInMilliseconds": "semantic ranking",
    "semanticFields": "semantic ranking",
    "answers": "semantic answers",
    "captions": "semantic captions",
    "queryLanguage": "query languages",
    "speller": "spell correction",
    "queryRewrites": "query rewrites",
    "debug": "query debugging",
    "hybridSearch": "hybrid search tuning",
}
_NEUTRAL = {
    "answers": "none",
    "captions": "none",
    "speller": "none",
    "queryRewrites": "none",
    "debug": "disabled",
}
_VECTOR_KEYS = {"kind", "vector", "k", "fields", "exhaustive", "oversampling", "weight"}


@dataclass
class VectorLeg:
    field: Field
    vector: np.ndarray
    k: int
    weight: float


@dataclass
class FacetSpec:
    field: Field
    count: int = 10
    sort: str = "-count"  # count, -count, value, -value
    expression: str = ""


@dataclass
class ParsedSearch:
    search: str | None
    search_mode: str
    search_columns: list[int] | None  # positions in the text index's fields, None = all
    filter: tuple[str, list[Any]] | None
    select: list[Field]
    top: int | None
    skip: int
    orderby: list[OrderKey]
    count: bool
    facets: list[FacetSpec]
    vectors: list[VectorLeg]
    post_filter: bool
    coverage: bool
    raw: dict[str, Any] = field(default_factory=dict)


def _int(body: dict[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        limit = f" and {high}" if high is not None else ""
        raise bad_request(
            f"The request is invalid. Details: '{name}' must be an integer between {low}{limit}."
        )
    return value


def _string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"The request is invalid. Details: '{name}' must be a string.")
    return value


def parse_select(text: str | None, schema: IndexSchema) -> list[Field]:
    names = ["*"] if text is None else parse_field_list(text)
    if not names or names == ["*"]:
        return [f for f in schema.fields if f.retrievable]
    out = []
    for name in names:
        fld = schema.field(name)
        if fld is None:
            raise invalid_expression(
                f"Could not find a property named '{name}' on type 'search.document'.", "$select"
            )
        if not fld.retrievable:
            raise invalid_expression(
                f"The field '{name}' is not retrievable. Only retrievable fields can be selected.", "$select"
            )
        out.append(fld)
    return out


def parse_facet(expression: Any, schema: IndexSchema) -> FacetSpec:
    if not isinstance(expression, str) or not expression.strip():
        raise bad_request("The request is invalid. Details: each facet must be a non-empty string.")
    name, *options = [p.strip() for p in expression.split(",")]
    fld = schema.field(name)
    if fld is None:
        raise invalid_expression(
            f"Could not find a property named '{name}' on type 'search.document'.", "facet"
        )
    if not fld.facetable:
        raise bad_request(
            f"Invalid expression: '{name}' is not a facetable field. Only facetable fields can be "
            "used in facet expressions.\r\nParameter name: facet"
        )
    spec = FacetSpec(fld, expression=expression)
    for option in options:
        key, _, value = option.partition(":")
        if key == "count" and value.lstrip("-").isdigit():
            spec.count = int(value)
        elif key == "sort" and value in ("count", "-count", "value", "-value"):
            spec.sort = value
        elif key in ("interval", "values", "timeoffset"):
            raise unsupported(f"The facet option '{key}' (range and interval facets)")
        else:
            raise bad_request(
                f"Invalid facet expression '{expression}': unknown or malformed option '{option}'."
            )
    return spec


def parse_vector_query(raw: Any, schema: IndexSchema) -> list[VectorLeg]:
    if not isinstance(raw, dict):
        raise bad_request("The request is invalid. Details: each vector query must be a JSON object.")
    kind = raw.get("kind")
    if kind in ("text", "imageUrl", "imageBinary"):
        raise unsupported(
            f"Vector queries of kind '{kind}' (they need a vectorizer; send kind 'vector' "
            "with the embedding instead)"
        )
    if kind != "vector":
        raise bad_request(f"The request is invalid. Details: unknown vector query kind '{kind}'.")
    for key, value in raw.items():
        if key not in _VECTOR_KEYS and value is not None:
            raise unsupported(f"The vector query parameter '{key}'")
    if raw.get("oversampling") is not None:
        raise bad_request(
            "The 'oversampling' parameter can only be set when the vector field uses compression."
        )
    fields_text = raw.get("fields")
    if not isinstance(fields_text, str) or not fields_text.strip():
        raise bad_request("The request is invalid. Details: a vector query must name its vector 'fields'.")
    k = _int(raw, "k", 1)
    weight = raw.get("weight", 1.0)
    weight = 1.0 if weight is None else weight
    if not isinstance(weight, int | float) or isinstance(weight, bool) or weight <= 0:
        raise bad_request(
            "The request is invalid. Details: a vector query 'weight' must be a positive number."
        )
    vector = raw.get("vector")
    try:
        arr = np.asarray(vector) if isinstance(vector, list) else None
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 1 or arr.dtype.kind not in "iuf" or not len(arr):
        raise bad_request(
            "The request is invalid. Details: a vector query needs 'vector', an array of numbers."
        )
    legs = []
    for name in parse_field_list(fields_text):
        fld = schema.field(name)
        if fld is None:
            raise bad_request(f"Unknown field '{name}' in vector field list.")
        if not fld.is_vector:
            raise bad_request(f"The field '{name}' in the vector field list is not a vector field.")
        if not fld.searchable:
            raise bad_request(f"The vector field '{name}' is not searchable.")
        if len(arr) != fld.dimensions:
            raise bad_request(
                f"The vector field '{name}', with dimension of '{fld.dimensions}', expects a length "
                f"of '{fld.dimensions}'. However, the provided length is '{len(arr)}'."
            )
        legs.append(VectorLeg(fld, arr.astype(np.float32), k or DEFAULT_K, float(weight)))
    return legs


def parse_search(
    body: Any, schema: IndexSchema, colmap: dict[str, int], text_fields: list[str]
) -> ParsedSearch:
    if not isinstance(body, dict):
        raise bad_request("The request is invalid. Details: the search request must be a JSON object.")
    query_type = body.get("queryType")
    if query_type == "full":
        raise unsupported("The full Lucene query syntax (queryType 'full')")
    if query_type == "semantic":
        raise unsupported("Semantic ranking (queryType 'semantic')")
    if query_type not in (None, "simple"):
        raise bad_request(f"The request is invalid. Details: invalid queryType '{query_type}'.")
    for key, value in body.items():
        if key in _HANDLED or value is None or (key in _NEUTRAL and value == _NEUTRAL[key]):
            continue
        if key in _UNSUPPORTED:
            if key == "scoringParameters" and value == []:
                continue
            raise unsupported(f"The search parameter '{key}' ({_UNSUPPORTED[key]})")
        raise bad_request(
            f"The request is invalid. Details: The parameter '{key}' in the request payload is not "
            "a valid parameter for the operation 'search'."
        )
    search = _string(body, "search")
    mode = body.get("searchMode") or "any"
    if mode not in ("any", "all"):
        raise bad_request(
            f"The request is invalid. Details: invalid searchMode '{mode}'; use 'any' or 'all'."
        )
    columns = None
    search_fields = _string(body, "searchFields")
    if search_fields is not None and parse_field_list(search_fields):
        columns = []
        for name in parse_field_list(search_fields):
            fld = schema.field(name)
            if fld is None:
                raise bad_request(f"Unknown field '{name}' in the search field list.")
            if fld.is_vector or not fld.searchable:
                raise bad_request(f"The field '{name}' in the search field list is not searchable.")
            columns.append(text_fields.index(name))
    filter_text = _string(body, "filter")
    compiled = (
        compile_filter(filter_text, schema, colmap)
        if filter_text is not None and filter_text.strip()
        else None
    )
    orderby: list[OrderKey] = []
    orderby_text = _string(body, "orderby")
    if orderby_text is not None and orderby_text.strip():
        try:
            orderby = parse_orderby(orderby_text)
        except ODataError as exc:
            if exc.unsupported:
                raise unsupported(exc.message) from None
            raise invalid_expression(
                f"Syntax error at position {exc.position} in '{orderby_text}': {exc.message}.", "$orderby"
            ) from None
        for key in orderby:
            if key.field is None:
                continue
            fld = schema.field(key.field)
            if fld is None:
                raise invalid_expression(
                    f"Could not find a property named '{key.field}' on type 'search.document'.", "$orderby"
                )
            if not fld.sortable:
                raise invalid_expression(
                    f"'{key.field}' is not a sortable field. Only sortable fields can be used "
                    "in sort expressions.",
                    "$orderby",
                )
    count = body.get("count")
    if count is not None and not isinstance(count, bool):
        raise bad_request("The request is invalid. Details: 'count' must be true or false.")
    facets_raw = body.get("facets") or []
    if not isinstance(facets_raw, list):
        raise bad_request("The request is invalid. Details: 'facets' must be an array of strings.")
    vectors_raw = body.get("vectorQueries") or []
    if not isinstance(vectors_raw, list):
        raise bad_request("The request is invalid. Details: 'vectorQueries' must be an array.")
    filter_mode = body.get("vectorFilterMode") or "preFilter"
    if filter_mode not in ("preFilter", "postFilter", "strictPostFilter"):
        raise bad_request(f"The request is invalid. Details: invalid vectorFilterMode '{filter_mode}'.")
    coverage = body.get("minimumCoverage")
    if coverage is not None and (not isinstance(coverage, int | float) or not 0 <= coverage <= 100):
        raise bad_request("The request is invalid. Details: 'minimumCoverage' must be between 0 and 100.")
    legs = [leg for raw in vectors_raw for leg in parse_vector_query(raw, schema)]
    return ParsedSearch(
        search=search,
        search_mode=mode,
        search_columns=columns,
        filter=compiled,
        select=parse_select(_string(body, "select"), schema),
        top=_int(body, "top", 0),
        skip=_int(body, "skip", 0, 100000) or 0,
        orderby=orderby,
        count=bool(count),
        facets=[parse_facet(f, schema) for f in facets_raw],
        vectors=legs,
        post_filter=filter_mode != "preFilter",
        coverage=coverage is not None,
        raw=dict(body),
    )
