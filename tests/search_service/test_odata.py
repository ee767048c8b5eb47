"""Unit tests of the OData `$filter` / `$orderby` parser and of the filter compiler."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from labkit.services.search_service.errors import SearchError
from labkit.services.search_service.filters import compile_filter
from labkit.services.search_service.odata import (
    BoolOp,
    Compare,
    FieldRef,
    Lambda,
    Literal,
    Not,
    ODataError,
    SearchIn,
    VarRef,
    parse_field_list,
    parse_filter,
    parse_orderby,
    tokenize,
)
from labkit.services.search_service.schema import parse_index

SCHEMA = parse_index(
    {
        "name": "t",
        "fields": [
            {"name": "id", "type": "Edm.String", "key": True},
            {"name": "title", "type": "Edm.String", "filterable": False},
            {"name": "category", "type": "Edm.String"},
            {"name": "rating", "type": "Edm.Int32"},
            {"name": "price", "type": "Edm.Double"},
            {"name": "open", "type": "Edm.Boolean"},
            {"name": "when", "type": "Edm.DateTimeOffset"},
            {"name": "tags", "type": "Collection(Edm.String)"},
        ],
    }
)
COLMAP = {f.name: i for i, f in enumerate(SCHEMA.fields)}


def test_tokens_literals_and_escapes() -> None:
    tokens = tokenize("name eq 'O''Neil' and n ge -1.5e3 or d lt 2024-01-02T03:04:05.5+02:00")
    kinds = [(t.kind, t.value) for t in tokens if t.kind in ("string", "number", "datetime")]
    assert kinds[0] == ("string", "O'Neil")
    assert kinds[1] == ("number", -1500.0)
    assert kinds[2][0] == "datetime"
    assert kinds[2][1] == datetime(2024, 1, 2, 1, 4, 5, 500000, tzinfo=UTC)
    assert tokens[-1].kind == "end"


def test_precedence_and_binds_tighter_than_or() -> None:
    node = parse_filter("a eq 1 or b eq 2 and c eq 3")
    assert isinstance(node, BoolOp) and node.op == "or"
    assert isinstance(node.right, BoolOp) and node.right.op == "and"
    assert isinstance(node.left, Compare) and node.left.op == "eq"


def test_parentheses_and_not() -> None:
    node = parse_filter("not (rating gt 3 or open)")
    assert isinstance(node, Not)
    assert isinstance(node.operand, BoolOp) and node.operand.op == "or"
    assert isinstance(node.operand.right, FieldRef)


def test_not_binds_to_the_operand_before_a_comparison() -> None:
    node = parse_filter("not rating gt 3")  # OData: (not rating) gt 3, which the compiler rejects
    assert isinstance(node, Compare) and isinstance(node.left, Not)
    with pytest.raises(SearchError):
        compile_filter("not rating gt 3", SCHEMA, COLMAP)


def test_literals() -> None:
    node = parse_filter("x eq null")
    assert isinstance(node, Compare) and isinstance(node.right, Literal) and node.right.kind == "null"
    assert parse_filter("true").value is True  # type: ignore[union-attr]
    node = parse_filter("5 lt rating")
    assert isinstance(node, Compare) and isinstance(node.left, Literal) and node.left.value == 5


def test_search_in_default_and_custom_delimiters() -> None:
    node = parse_filter("search.in(category, 'a, b  c')")
    assert isinstance(node, SearchIn) and node.values == ["a", "b", "c"]
    node = parse_filter("search.in(category, 'New York|Los Angeles', '|')")
    assert isinstance(node, SearchIn) and node.values == ["New York", "Los Angeles"]


def test_lambdas() -> None:
    node = parse_filter("tags/any(t: t eq 'x' or search.in(t, 'y,z'))")
    assert isinstance(node, Lambda) and node.kind == "any" and node.var == "t"
    assert isinstance(node.body, BoolOp) and isinstance(node.body.left, Compare)
    assert isinstance(node.body.left.left, VarRef)
    empty = parse_filter("tags/any()")
    assert isinstance(empty, Lambda) and empty.body is None
    assert isinstance(parse_filter("tags/all(t: t ne 'x')"), Lambda)


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("rating gt", 9),
        ("rating gt 5 5", 12),
        ("(rating gt 5", 12),
        ("rating eq 'abc", 10),
        ("rating # 5", 7),
        ("and rating eq 1", 0),
        ("tags/some(t: t eq 'a')", 5),
        ("rating eq 1 and", 15),
    ],
)
def test_syntax_errors_carry_the_position(text: str, position: int) -> None:
    with pytest.raises(ODataError) as info:
        parse_filter(text)
    assert info.value.position == position


def test_unsupported_functions_are_flagged() -> None:
    for text in ("search.ismatch('x')", "geo.distance(loc, geography'POINT(0 0)') lt 5"):
        with pytest.raises(ODataError) as info:
            parse_filter(text)
        assert info.value.unsupported


def test_orderby() -> None:
    keys = parse_orderby("rating desc, search.score() asc,price")
    assert [(k.field, k.descending) for k in keys] == [("rating", True), (None, False), ("price", False)]
    with pytest.raises(ODataError) as info:
        parse_orderby("rating desc desc")
    assert info.value.position is not None
    with pytest.raises(ODataError) as info:
        parse_orderby("geo.distance(loc, geography'POINT(0 0)')")
    assert info.value.unsupported
    with pytest.raises(ODataError):
        parse_orderby("rating,")


def test_field_list() -> None:
    assert parse_field_list(" a, b ,c ") == ["a", "b", "c"]
    assert parse_field_list("*") == ["*"]


# ------------------------------------------------------------------ compiler checks


def _message(text: str) -> str:
    with pytest.raises(SearchError) as info:
        compile_filter(text, SCHEMA, COLMAP)
    assert info.value.status == 400
    return info.value.message


def test_compile_produces_parameters() -> None:
    sql, params = compile_filter(
        "rating ge 3 and category eq 'x' and when lt 2024-01-01T00:00:00Z", SCHEMA, COLMAP
    )
    assert "?" in sql and 3 in params and "x" in params
    assert "2024-01-01T00:00:00.000000Z" in params


def test_compile_errors_read_like_azure() -> None:
    assert "not a filterable field" in _message("title eq 'x'")
    assert "Could not find a property named 'nope'" in _message("nope eq 1")
    assert "incompatible types" in _message("rating eq 'x'")
    assert "any/all" in _message("tags eq 'x'")
    assert "only be compared with 'eq' or 'ne'" in _message("rating gt null")
    assert "search.in" in _message("search.in(rating, '1,2')")
    assert "position 10" in _message("rating gt 'x")
    assert _message("rating gt").endswith("Parameter name: $filter")


def test_lambda_rules_for_string_collections() -> None:
    compile_filter("tags/any(t: t eq 'a' or t eq 'b')", SCHEMA, COLMAP)
    compile_filter("tags/all(t: t ne 'a' and not search.in(t, 'b,c'))", SCHEMA, COLMAP)
    assert "combined with 'or'" in _message("tags/any(t: t eq 'a' and t eq 'b')")
    assert "only" in _message("tags/all(t: t eq 'a')")
    assert "only" in _message("tags/any(t: rating eq 1)")
