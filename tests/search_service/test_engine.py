"""The search engine in-process: scoring formulas, filter semantics, ordering, paging, persistence."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labkit.services.search_service.engine import SearchEngine
from labkit.services.search_service.errors import SearchError

INDEX = {
    "name": "hotels",
    "fields": [
        {"name": "id", "type": "Edm.String", "key": True, "searchable": False},
        {"name": "title", "type": "Edm.String"},
        {"name": "body", "type": "Edm.String"},
        {"name": "tags", "type": "Collection(Edm.String)"},
        {"name": "rating", "type": "Edm.Int32"},
        {"name": "price", "type": "Edm.Double"},
        {"name": "open", "type": "Edm.Boolean"},
        {"name": "when", "type": "Edm.DateTimeOffset"},
        {"name": "vec", "type": "Collection(Edm.Single)", "dimensions": 3, "vectorSearchProfile": "cos"},
        {"name": "evec", "type": "Collection(Edm.Single)", "dimensions": 2, "vectorSearchProfile": "l2"},
        {"name": "dvec", "type": "Collection(Edm.Single)", "dimensions": 2, "vectorSearchProfile": "dot"},
    ],
    "vectorSearch": {
        "algorithms": [
            {"name": "h", "kind": "hnsw"},
            {"name": "e", "kind": "exhaustiveKnn", "exhaustiveKnnParameters": {"metric": "euclidean"}},
            {"name": "d", "kind": "hnsw", "hnswParameters": {"metric": "dotProduct"}},
        ],
        "profiles": [
            {"name": "cos", "algorithm": "h"},
            {"name": "l2", "algorithm": "e"},
            {"name": "dot", "algorithm": "d"},
        ],
    },
}
DOCS = [
    {
        "id": "1",
        "title": "Luxury hotel",
        "body": "wifi and pool",
        "tags": ["pool", "wifi"],
        "rating": 5,
        "price": 300.5,
        "open": True,
        "when": "2020-01-01T00:00:00Z",
        "vec": [1, 0, 0],
        "evec": [0, 0],
        "dvec": [1, 0],
    },
    {
        "id": "2",
        "title": "Budget inn",
        "body": "cheap rooms and no wifi at all",
        "tags": ["cheap"],
        "rating": 2,
        "price": 50,
        "open": False,
        "when": "2021-06-01T12:00:00+02:00",
        "vec": [0, 1, 0],
        "evec": [3, 4],
        "dvec": [-1, 0],
    },
    {
        "id": "3",
        "title": "Beach resort",
        "body": "ocean views and a luxury spa",
        "tags": ["spa", "pool"],
        "rating": 4,
        "price": 200,
        "open": True,
        "vec": [0.6, 0.8, 0],
        "evec": [1, 0],
        "dvec": [2, 0],
    },
    {"id": "4", "title": "Mountain lodge", "body": "quiet rooms", "rating": None, "price": 120},
]


@pytest.fixture
def engine(tmp_path: Path) -> SearchEngine:
    eng = SearchEngine(tmp_path)
    eng.create_or_update_index("hotels", INDEX)
    results, status = eng.index_documents("hotels", {"value": DOCS})
    assert status == 200 and [r["statusCode"] for r in results] == [201] * 4
    return eng


def search(engine: SearchEngine, **body: Any) -> list[tuple[str, float]]:
    return [(d["id"], d["@search.score"]) for d in engine.search("hotels", body)["value"]]


def ids(engine: SearchEngine, **body: Any) -> list[str]:
    return [i for i, _ in search(engine, **body)]


def lucene_bm25(tf: float, dl: float, avgdl: float, n_docs: int, df: int) -> float:
    idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    return idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl))


def test_bm25_is_lucene_style_per_field(engine: SearchEngine) -> None:
    got = dict(search(engine, search="wifi"))
    # body lengths: 3, 7, 6, 2 (avg 4.5); tags lengths: 2, 1, 2 over three documents (avg 5/3)
    doc1 = lucene_bm25(1, 3, 4.5, 4, 2) + lucene_bm25(1, 2, 5 / 3, 3, 1)
    doc2 = lucene_bm25(1, 7, 4.5, 4, 2)
    assert got["1"] == pytest.approx(doc1)
    assert got["2"] == pytest.approx(doc2)
    assert ids(engine, search="wifi") == ["1", "2"]


def test_search_fields_restrict_scoring(engine: SearchEngine) -> None:
    got = dict(search(engine, search="wifi", searchFields="body"))
    assert got["1"] == pytest.approx(lucene_bm25(1, 3, 4.5, 4, 2))
    assert ids(engine, search="luxury", searchFields="title") == ["1"]


def test_any_all_exclusion_and_phrases(engine: SearchEngine) -> None:
    assert set(ids(engine, search="wifi -luxury")) == {"1", "2", "4"}  # wifi OR NOT luxury
    assert ids(engine, search="wifi -luxury", searchMode="all") == ["2"]
    assert ids(engine, search="rooms quiet", searchMode="all") == ["4"]
    assert ids(engine, search='"luxury spa"') == ["3"]
    assert ids(engine, search='"spa luxury"') == []
    assert set(ids(engine, search="lux*")) == {"1", "3"}
    assert all(score == 1.0 for _, score in search(engine, search="lux*"))
    assert ids(engine, search="?") == []


def test_match_all_scores_one_in_key_order(engine: SearchEngine) -> None:
    assert search(engine, search="*") == [("1", 1.0), ("2", 1.0), ("3", 1.0), ("4", 1.0)]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("rating eq 5", ["1"]),
        ("rating ne 5", ["2", "3", "4"]),  # null ne 5 is true in OData
        ("rating gt 1", ["1", "2", "3"]),
        ("not (rating gt 3)", ["2", "4"]),  # null gt 3 is false, so its negation is true
        ("rating eq null", ["4"]),
        ("rating ne null and price le 200", ["2", "3"]),
        ("open", ["1", "3"]),
        ("not open", ["2", "4"]),
        ("open eq false", ["2"]),
        ("price gt 100.5 and price lt 250", ["3", "4"]),
        ("search.in(title, 'Budget inn|Beach resort', '|')", ["2", "3"]),
        ("search.in(id, '1, 4')", ["1", "4"]),
        ("tags/any(t: t eq 'pool')", ["1", "3"]),
        ("tags/any()", ["1", "2", "3"]),
        ("tags/all(t: t ne 'cheap')", ["1", "3", "4"]),
        ("tags/any(t: search.in(t, 'spa,cheap'))", ["2", "3"]),
        ("when gt 2020-06-01T00:00:00Z", ["2"]),
        ("when eq 2021-06-01T10:00:00Z", ["2"]),
        ("5 eq rating or 2 ge rating", ["1", "2"]),
        ("true", ["1", "2", "3", "4"]),
    ],
)
def test_filters(engine: SearchEngine, expression: str, expected: list[str]) -> None:
    assert ids(engine, search="*", filter=expression) == expected


def test_dates_are_normalised_to_utc(engine: SearchEngine) -> None:
    assert engine.get_document("hotels", "2")["when"] == "2021-06-01T10:00:00Z"


def test_orderby_several_keys_and_nulls(engine: SearchEngine) -> None:
    assert ids(engine, search="*", orderby="open desc, price asc") == ["3", "1", "2", "4"]
    assert ids(engine, search="*", orderby="rating asc") == ["4", "2", "3", "1"]  # null sorts first
    assert ids(engine, search="*", orderby="rating desc") == ["1", "3", "2", "4"]
    assert ids(engine, search="wifi", orderby="search.score() asc") == ["2", "1"]


def test_facets_count_and_sort(engine: SearchEngine) -> None:
    result = engine.search(
        "hotels", {"search": "*", "facets": ["tags,count:2", "open", "rating,sort:value"], "count": True}
    )
    facets = result["@search.facets"]
    assert facets["tags"] == [{"value": "pool", "count": 2}, {"value": "cheap", "count": 1}]
    assert facets["open"] == [{"value": True, "count": 2}, {"value": False, "count": 1}]
    assert [f["value"] for f in facets["rating"]] == [2, 4, 5]
    assert result["@odata.count"] == 4


def test_vector_scores_follow_azure_formulas(engine: SearchEngine) -> None:
    q = [1.0, 1.0, 0.0]
    got = search(engine, vectorQueries=[{"kind": "vector", "vector": q, "k": 3, "fields": "vec"}])
    cos = {"1": 1 / math.sqrt(2), "2": 1 / math.sqrt(2), "3": 1.4 / math.sqrt(2)}
    assert [i for i, _ in got] == ["3", "1", "2"]
    for doc, score in got:
        assert score == pytest.approx(1 / (1 + (1 - cos[doc])), rel=1e-6)
    got = search(engine, vectorQueries=[{"kind": "vector", "vector": [0, 0], "k": 2, "fields": "evec"}])
    assert got == [("1", pytest.approx(1.0)), ("3", pytest.approx(0.5))]
    got = search(engine, vectorQueries=[{"kind": "vector", "vector": [1, 0], "k": 3, "fields": "dvec"}])
    assert got == [("3", pytest.approx(3.0)), ("1", pytest.approx(2.0)), ("2", pytest.approx(0.5))]


def test_vector_prefilter_and_postfilter(engine: SearchEngine) -> None:
    query = {"kind": "vector", "vector": [1.0, 0.0, 0.0], "k": 1, "fields": "vec"}
    assert ids(engine, vectorQueries=[query], filter="rating lt 5") == ["3"]  # pre-filter keeps k results
    assert ids(engine, vectorQueries=[query], filter="rating lt 5", vectorFilterMode="postFilter") == []


def test_hybrid_is_reciprocal_rank_fusion(engine: SearchEngine) -> None:
    vq = {"kind": "vector", "vector": [0.0, 1.0, 0.0], "k": 3, "fields": "vec"}
    text_rank = ids(engine, search="pool")  # ["1", "3"]
    vector_rank = ids(engine, vectorQueries=[vq])  # ["2", "3", "1"]
    expected: dict[str, float] = {}
    for ranking in (text_rank, vector_rank):
        for rank, doc in enumerate(ranking, start=1):
            expected[doc] = expected.get(doc, 0.0) + 1 / (60 + rank)
    got = search(engine, search="pool", vectorQueries=[vq])
    assert [i for i, _ in got] == sorted(expected, key=lambda d: (-expected[d], d))
    assert dict(got) == pytest.approx(expected)
    weighted = search(engine, search="pool", vectorQueries=[{**vq, "weight": 2.0}])
    assert dict(weighted)["2"] == pytest.approx(2 / 61)


def test_paging_gives_next_page_parameters(tmp_path: Path) -> None:
    eng = SearchEngine(tmp_path)
    eng.create_or_update_index(
        "many", {"name": "many", "fields": [{"name": "id", "type": "Edm.String", "key": True}]}
    )
    eng.index_documents("many", {"value": [{"id": f"d{i:03d}"} for i in range(120)]})
    first = eng.search("many", {"search": "*", "count": True})
    assert len(first["value"]) == 50 and first["@odata.count"] == 120
    assert first["@search.nextPageParameters"]["skip"] == 50
    last = eng.search("many", first["@search.nextPageParameters"] | {"skip": 100})
    assert len(last["value"]) == 20 and "@search.nextPageParameters" not in last
    page = eng.search("many", {"search": "*", "top": 5, "skip": 10})
    assert [d["id"] for d in page["value"]] == [f"d{i:03d}" for i in range(10, 15)]
    assert "@search.nextPageParameters" not in page


def test_merge_delete_and_persistence(engine: SearchEngine, tmp_path: Path) -> None:
    results, status = engine.index_documents(
        "hotels",
        {
            "value": [
                {"@search.action": "merge", "id": "1", "rating": 3, "vec": [0, 0, 1]},
                {"@search.action": "delete", "id": "2"},
                {"@search.action": "mergeOrUpload", "id": "5", "title": "New place"},
            ]
        },
    )
    assert status == 200 and [r["statusCode"] for r in results] == [200, 200, 201]
    engine.close()
    reopened = SearchEngine(tmp_path)
    doc = reopened.get_document("hotels", "1", "title,rating,tags")
    assert doc == {"title": "Luxury hotel", "rating": 3, "tags": ["pool", "wifi"]}
    assert reopened.count("hotels") == 4
    assert ids(reopened, search="budget") == []
    assert ids(reopened, search="place") == ["5"]
    top = search(reopened, vectorQueries=[{"kind": "vector", "vector": [0, 0, 1], "k": 1, "fields": "vec"}])
    assert top == [("1", pytest.approx(1.0))]


def test_retrieving_vectors_returns_float32_values(tmp_path: Path) -> None:
    eng = SearchEngine(tmp_path)
    eng.create_or_update_index(
        "v",
        {
            "name": "v",
            "fields": [
                {"name": "id", "type": "Edm.String", "key": True},
                {
                    "name": "vec",
                    "type": "Collection(Edm.Single)",
                    "dimensions": 2,
                    "retrievable": True,
                    "vectorSearchProfile": "p",
                },
            ],
            "vectorSearch": {
                "algorithms": [{"name": "a", "kind": "hnsw"}],
                "profiles": [{"name": "p", "algorithm": "a"}],
            },
        },
    )
    eng.index_documents("v", {"value": [{"id": "a", "vec": [0.1, -2.5]}]})
    assert eng.get_document("v", "a") == {"id": "a", "vec": [0.1, -2.5]}
    assert np.float32(eng.search("v", {"search": "*"})["value"][0]["vec"][0]) == np.float32(0.1)


def test_errors_are_search_errors(engine: SearchEngine) -> None:
    with pytest.raises(SearchError) as info:
        engine.search("missing", {})
    assert info.value.status == 404
    with pytest.raises(SearchError) as info:
        engine.search("hotels", {"vectorQueries": [{"kind": "vector", "vector": [1, 2], "fields": "vec"}]})
    assert info.value.status == 400 and "expects a length of '3'" in info.value.message
