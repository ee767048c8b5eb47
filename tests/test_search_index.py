"""Chunking and index building through the real SDK against the local search service."""

from __future__ import annotations

import pytest

from labkit import search
from labkit.config import Settings
from labkit.schema import load_products


def test_word_windows_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(500))
    windows = search.word_windows(text, size=100, overlap=20)
    assert all(len(w.split()) <= 100 for w in windows)
    assert windows[0].split()[-20:] == windows[1].split()[:20]
    assert windows[-1].split()[-1] == "w499"
    assert search.word_windows("", 10, 2) == []
    with pytest.raises(ValueError):
        search.word_windows(text, 10, 10)


@pytest.mark.parametrize("strategy", search.STRATEGIES)
def test_chunks_are_deterministic_and_keyed(strategy: str) -> None:
    a, b = search.build_chunks(strategy), search.build_chunks(strategy)
    assert [c.id for c in a] == [c.id for c in b]
    assert len({c.id for c in a}) == len(a)
    assert {c.product_id for c in a} == {p.id for p in load_products()}
    assert all(c.id.startswith(f"{c.product_id}-{strategy}-") for c in a)


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown chunking strategy"):
        search.index_name("paragraph")


def test_build_twice_same_counts_and_queries_work(isolated_home: Settings) -> None:
    first = search.build_index("product")
    second = search.build_index("product")
    assert first.documents == second.documents == len(load_products())
    assert second.deleted == 0
    assert search.ensure_index("product") == "products-product"
    cheap_tents = search.search("tent", "products-product", mode="hybrid", top=5,
                                filter="category eq 'Tents' and price lt 200")
    assert cheap_tents and all(r["category"] == "Tents" and r["price"] < 200 for r in cheap_tents)
    scores = [r["score"] for r in cheap_tents]
    assert scores == sorted(scores, reverse=True)
    cold = search.search("sleeping bag for minus ten degrees", "products-product", mode="keyword", top=3,
                         filter="temp_rating_c le -10")
    assert cold and all(r["temp_rating_c"] <= -10 for r in cold)
    bags = [p for p in load_products() if p.category == "Sleeping Bags"]
    lightest = search.search("*", "products-product", mode="keyword", top=1, order_by="weight_g asc",
                             filter="category eq 'Sleeping Bags'", select=["id", "product_id", "weight_g"])
    assert lightest[0]["product_id"] == min(bags, key=lambda p: p.weight_g or 0).id


def test_retrieval_hits_ranks(isolated_home: Settings) -> None:
    search.build_index("product")
    rows = [{"id": "q1", "query": "two person tent with carbon fibre poles",
             "relevant_product_ids": ["P-002"]},
            {"id": "q2", "query": "zzzz qqqq", "relevant_product_ids": ["P-999"]}]
    hits = search.retrieval_hits(rows, "products-product", mode="keyword", k=3)
    assert hits[0]["hit"] and hits[0]["rank"] >= 1
    assert hits[1] == {**hits[1], "hit": False, "rank": None}
