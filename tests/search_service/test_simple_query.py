"""Unit tests of the simple query syntax parser."""

from __future__ import annotations

import pytest

from labkit.services.search_service.errors import SearchError
from labkit.services.search_service.simple_query import (
    AndQ,
    MatchAll,
    NotQ,
    OrQ,
    Term,
    analyze,
    parse_simple_query,
)


def words(node: object) -> object:
    """A compact rendering of a query tree for assertions."""
    if isinstance(node, Term):
        text = " ".join(node.tokens)
        return f'"{text}"' if node.phrase else text + ("*" if node.prefix else "")
    if isinstance(node, NotQ):
        return ("not", words(node.child))
    if isinstance(node, AndQ):
        return ("and", *[words(c) for c in node.children])
    if isinstance(node, OrQ):
        return ("or", *[words(c) for c in node.children])
    if isinstance(node, MatchAll):
        return "*"
    return node


def test_analyze_lowercases_and_splits_on_punctuation() -> None:
    assert analyze("Hello, World! It's 2024_x") == ["hello", "world", "it", "s", "2024", "x"]


@pytest.mark.parametrize("text", [None, "", "   ", "*"])
def test_everything(text: str | None) -> None:
    assert isinstance(parse_simple_query(text), MatchAll)


def test_nothing_to_search_for() -> None:
    assert parse_simple_query("?! ...") is None


def test_search_mode_joins_adjacent_terms() -> None:
    assert words(parse_simple_query("Wifi pool")) == ("or", "wifi", "pool")
    assert words(parse_simple_query("wifi pool", "all")) == ("and", "wifi", "pool")


def test_phrase_prefix_and_exclusion() -> None:
    assert words(parse_simple_query('"ocean view" spa*')) == ("or", '"ocean view"', "spa*")
    assert words(parse_simple_query("wifi -luxury")) == ("or", "wifi", ("not", "luxury"))
    assert words(parse_simple_query("wifi -luxury", "all")) == ("and", "wifi", ("not", "luxury"))
    assert words(parse_simple_query("-luxury")) == ("not", "luxury")


def test_explicit_operators_fold_left_to_right() -> None:
    assert words(parse_simple_query("a | b + c")) == ("and", ("or", "a", "b"), "c")
    assert words(parse_simple_query("a + b | c", "all")) == ("or", ("and", "a", "b"), "c")
    assert words(parse_simple_query("a +b")) == ("and", "a", "b")


def test_parentheses_group() -> None:
    assert words(parse_simple_query("(a | b) + c")) == ("and", ("or", "a", "b"), "c")
    assert words(parse_simple_query("x + (y -z)")) == ("and", "x", ("or", "y", ("not", "z")))
    assert words(parse_simple_query("(a")) == "a"
    assert words(parse_simple_query("a)")) == "a"


def test_hyphenated_words_become_phrases_and_escapes_are_literal() -> None:
    assert words(parse_simple_query("e-mail")) == '"e mail"'
    assert words(parse_simple_query(r"\-luxury")) == "luxury"
    assert words(parse_simple_query(r"c\*")) == "c"


def test_natural_language_question() -> None:
    assert words(parse_simple_query("What tents are waterproof?")) == (
        "or",
        "what",
        "tents",
        "are",
        "waterproof",
    )


@pytest.mark.parametrize("text", ["tent~", "tent~2", '"ocean view"~3'])
def test_fuzzy_and_proximity_are_refused(text: str) -> None:
    with pytest.raises(SearchError) as info:
        parse_simple_query(text)
    assert info.value.status == 400 and "not supported" in info.value.message
