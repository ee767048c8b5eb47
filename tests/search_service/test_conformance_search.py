"""Conformance with Azure AI Search for searching: text, filters, result shaping, vectors, hybrid and
unsupported features, driven through the real SDK over HTTP against a real subprocess (no mocks)."""

from __future__ import annotations

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.models import VectorizableTextQuery

from .conftest import SearchServiceProcess
from .sdk_data import API, DOCS, http, ids, index_definition, vq

# ------------------------------------------------------------------------ text search


def test_text_search_scores_by_bm25(products: SearchClient) -> None:
    results = list(products.search("waterproof"))
    assert set(ids(results)) == {"1", "2", "4"}
    scores = [r["@search.score"] for r in results]
    assert all(s > 0 for s in scores) and scores == sorted(scores, reverse=True)


def test_phrase_exclusion_prefix_and_modes(products: SearchClient) -> None:
    assert set(ids(products.search('"waterproof tent"'))) == {"1"}
    assert set(ids(products.search("tent -porch", search_mode="all"))) == {"1"}
    assert set(ids(products.search("waterproof -porch"))) == {"1", "2", "4", "5"}  # any: OR NOT porch
    assert set(ids(products.search("camp*"))) == {"1", "3", "5"}
    assert set(ids(products.search("waterproof hiking", search_mode="all"))) == {"2", "4"}
    assert set(ids(products.search("waterproof hiking", search_mode="any"))) == {"1", "2", "4"}


def test_search_fields(products: SearchClient) -> None:
    assert set(ids(products.search("tent", search_fields=["title"]))) == {"1", "3"}
    assert set(ids(products.search("camping", search_fields=["content"]))) == {"3", "5"}
    with pytest.raises(HttpResponseError) as info:
        list(products.search("tent", search_fields=["price"]))
    assert info.value.status_code == 400


# ------------------------------------------------------------------------ filters


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("category eq 'tents'", {"1", "3"}),
        ("price lt 100 or rating eq 5", {"1", "4", "5"}),
        ("not (price gt 100) and in_stock", {"4", "5"}),
        ("rating eq null", {"4"}),
        ("rating ne 4", {"1", "4", "5"}),
        ("search.in(category, 'tents,cooking')", {"1", "3", "5"}),
        ("search.in(category, 'tents|footwear', '|')", {"1", "2", "3"}),
        ("tags/any(t: t eq 'hiking')", {"2", "4"}),
        ("tags/all(t: t ne 'camping')", {"2", "4", "5"}),
        ("released ge 2023-01-01T00:00:00Z", {"1", "3"}),
    ],
)
def test_filters(products: SearchClient, expression: str, expected: set[str]) -> None:
    assert set(ids(products.search("*", filter=expression))) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("title eq 'Alpine tent'", "not a filterable field"),
        ("nope eq 1", "Could not find a property named 'nope'"),
        ("price gt", "position 8"),
        ("price gt 10 and (rating eq 4", "position 28"),
        ("category eq 'tents", "position 12"),
        ("embedding eq 1", "not a filterable field"),
        ("search.ismatch('tent')", "not supported"),
    ],
)
def test_bad_filters_are_400(products: SearchClient, expression: str, message: str) -> None:
    with pytest.raises(HttpResponseError) as info:
        list(products.search("*", filter=expression))
    assert info.value.status_code == 400
    assert message in str(info.value.message)


# ------------------------------------------------------------------------ shaping results


def test_select_top_skip_orderby_count(products: SearchClient) -> None:
    results = products.search(
        "*",
        select=["id", "price"],
        order_by=["category asc", "price desc"],
        include_total_count=True,
        top=3,
        skip=1,
    )
    docs = list(results)
    assert results.get_count() == len(DOCS)
    assert [d["id"] for d in docs] == ["5", "2", "3"]  # clothing(4), cooking(5), footwear(2), tents(3, 1)
    assert set(docs[0]) == {
        "id",
        "price",
        "@search.score",
        "@search.reranker_score",
        "@search.highlights",
        "@search.captions",
        "@search.document_debug_info",
        "@search.reranker_boosted_score",
    }
    by_rating = ids(products.search("*", order_by=["rating desc", "price asc"]))
    assert by_rating == ["1", "2", "3", "5", "4"]
    by_score = ids(products.search("tent", order_by=["search.score() desc"]))
    assert set(by_score) == {"1", "3"}
    with pytest.raises(HttpResponseError) as info:
        list(products.search("*", order_by=["content"]))
    assert "not a sortable field" in str(info.value.message)
    with pytest.raises(HttpResponseError) as info:
        list(products.search("*", select=["nope"]))
    assert info.value.status_code == 400


def test_facets(products: SearchClient) -> None:
    results = products.search("*", facets=["category,count:2", "tags", "in_stock"])
    facets = results.get_facets()
    assert facets["category"] == [{"value": "tents", "count": 2}, {"value": "clothing", "count": 1}]
    assert {f["value"]: f["count"] for f in facets["tags"]} == {"camping": 2, "waterproof": 2, "hiking": 2}
    assert {f["value"]: f["count"] for f in facets["in_stock"]} == {True: 4, False: 1}
    with pytest.raises(HttpResponseError) as info:
        list(products.search("*", facets=["title"]))
    assert "not a facetable field" in str(info.value.message)


def test_paging_beyond_fifty_results(service: SearchServiceProcess, index_client: SearchIndexClient) -> None:
    index_client.create_or_update_index(index_definition("paging"))
    client = SearchClient(service.endpoint, "paging", AzureKeyCredential(service.admin_key))
    client.upload_documents([{"id": f"p{i:03d}", "title": "page"} for i in range(75)])
    results = client.search("page", include_total_count=True)
    assert len(list(results)) == 75 and results.get_count() == 75  # the SDK follows nextPageParameters
    assert len(list(client.search("page", top=10))) == 10
    index_client.delete_index("paging")


# ------------------------------------------------------------------------ vectors and hybrid


def test_vector_search_with_prefilter(products: SearchClient) -> None:
    results = list(products.search(None, vector_queries=[vq([1.0, 0.0, 0.0], k=2)]))
    assert ids(results) == ["1", "3"]
    assert results[0]["@search.score"] == pytest.approx(1.0)
    assert results[1]["@search.score"] == pytest.approx(1 / (1 + (1 - 0.8)))
    filtered = list(
        products.search(None, vector_queries=[vq([1.0, 0.0, 0.0], k=2)], filter="category ne 'tents'")
    )
    assert ids(filtered) == ["2", "4"]  # the filter runs before the k nearest neighbours are chosen


def test_hybrid_uses_reciprocal_rank_fusion(products: SearchClient) -> None:
    text_rank = ids(products.search("waterproof"))
    vector_rank = ids(products.search(None, vector_queries=[vq([0.0, 1.0, 0.0], k=3)]))
    expected: dict[str, float] = {}
    for ranking in (text_rank, vector_rank):
        for rank, doc in enumerate(ranking, start=1):
            expected[doc] = expected.get(doc, 0.0) + 1 / (60 + rank)
    hybrid = list(products.search("waterproof", vector_queries=[vq([0.0, 1.0, 0.0], k=3)]))
    assert ids(hybrid) == sorted(expected, key=lambda d: (-expected[d], d))
    assert {d["id"]: d["@search.score"] for d in hybrid} == pytest.approx(expected)
    two_queries = list(
        products.search(None, vector_queries=[vq([1.0, 0.0, 0.0], k=2), vq([0.0, 0.0, 1.0], k=2)])
    )
    assert {d["id"] for d in two_queries} == {"1", "3", "5", "4"}


def test_unsupported_features_are_400(products: SearchClient) -> None:
    attempts = [
        dict(query_type="full"),
        dict(query_type="semantic", semantic_configuration_name="default"),
        dict(scoring_profile="boost"),
        dict(highlight_fields="content"),
        dict(vector_queries=[VectorizableTextQuery(text="tent", k_nearest_neighbors=3, fields="embedding")]),
        dict(facets=["price,interval:100"]),
    ]
    for kwargs in attempts:
        with pytest.raises(HttpResponseError) as info:
            list(products.search("tent", **kwargs))  # type: ignore[arg-type]
        assert info.value.status_code == 400, kwargs
        assert "not supported" in str(info.value.message), kwargs
    with pytest.raises(HttpResponseError) as info:
        list(products.search("tent~1"))
    assert info.value.status_code == 400


def test_unsupported_endpoints_are_400(service: SearchServiceProcess, products: SearchClient) -> None:
    with http(service) as client:
        for path in (
            "/indexes('products')/docs/search.post.suggest",
            "/indexes('products')/docs/search.post.autocomplete",
        ):
            response = client.post(path + API, json={"search": "te", "suggesterName": "sg"})
            assert response.status_code == 400 and "not supported" in response.json()["error"]["message"]
        response = client.get("/indexers" + API)
        assert response.status_code == 400 and "not supported" in response.json()["error"]["message"]
        assert client.get("/nothing-here" + API).status_code == 404


def test_get_form_of_search(service: SearchServiceProcess, products: SearchClient) -> None:
    with http(service, key="query") as client:
        response = client.get(
            "/indexes('products')/docs",
            params={
                "api-version": "2026-04-01",
                "search": "tent",
                "$filter": "price lt 300",
                "$count": "true",
                "$select": "id,title",
                "$orderby": "price desc",
                "facet": "category",
            },
        )
        body = response.json()
        assert response.status_code == 200, body
        assert body["@odata.count"] == 1 and [d["id"] for d in body["value"]] == ["1"]
        assert body["@search.facets"]["category"] == [{"value": "tents", "count": 1}]
        assert client.get("/indexes('products')/docs/$count" + API).text == str(len(DOCS))
        assert client.get("/indexes('products')/docs('4')" + API).json()["title"] == "Rain jacket"
