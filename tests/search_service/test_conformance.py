"""Conformance with Azure AI Search for keys, indexes, documents, bad input and persistence, driven
through the real azure-search-documents SDK over HTTP against a real subprocess (no mocks)."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.core import MatchConditions
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.indexes.models import SearchFieldDataType, SimpleField

from .conftest import SearchServiceProcess
from .sdk_data import API, DOCS, http, ids, index_definition, vq

# ------------------------------------------------------------------------ auth and health


def test_health_needs_no_key(service: SearchServiceProcess) -> None:
    response = httpx.get(service.endpoint + "/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_keys_file_is_private(service: SearchServiceProcess) -> None:
    mode = stat.S_IMODE((service.data_dir / "keys.json").stat().st_mode)
    assert mode == 0o600
    keys = json.loads((service.data_dir / "keys.json").read_text())
    assert (
        len(keys["admin_key"]) >= 32
        and len(keys["query_key"]) >= 32
        and keys["admin_key"] != keys["query_key"]
    )


def test_missing_key_is_401_and_wrong_key_is_403(
    service: SearchServiceProcess, products: SearchClient
) -> None:
    with http(service, key=None) as client:
        response = client.get("/indexes" + API)
    assert response.status_code == 401 and response.json()["error"]["message"]
    with pytest.raises(ClientAuthenticationError):
        SearchClient(service.endpoint, "products", AzureKeyCredential("")).get_document_count()
    with pytest.raises(HttpResponseError) as info:
        SearchClient(service.endpoint, "products", AzureKeyCredential("not-the-key")).get_document_count()
    assert info.value.status_code == 403


def test_query_key_reads_but_cannot_write(service: SearchServiceProcess, products: SearchClient) -> None:
    reader = SearchClient(service.endpoint, "products", AzureKeyCredential(service.query_key))
    assert reader.get_document_count() == len(DOCS)
    assert reader.get_document("1")["title"] == "Alpine tent"
    assert ids(reader.search("tent", top=1)) == ["1"] or ids(reader.search("tent", top=1)) == ["3"]
    with pytest.raises(HttpResponseError) as info:
        reader.upload_documents([{"id": "x"}])
    assert info.value.status_code == 403
    admin_with_query_key = SearchIndexClient(service.endpoint, AzureKeyCredential(service.query_key))
    for call in (
        lambda: list(admin_with_query_key.list_indexes()),
        lambda: admin_with_query_key.get_index("products"),
        lambda: admin_with_query_key.create_index(index_definition("nope")),
    ):
        with pytest.raises(HttpResponseError) as info:
            call()
        assert info.value.status_code == 403


# ------------------------------------------------------------------------ indexes


def test_index_lifecycle(index_client: SearchIndexClient) -> None:
    created = index_client.create_index(index_definition("lifecycle"))
    assert created.name == "lifecycle" and created.e_tag
    fields = {f.name: f for f in created.fields}
    assert fields["id"].key and fields["embedding"].vector_search_dimensions == 3
    assert fields["embedding"].hidden is True and fields["title"].hidden is False
    with pytest.raises(ResourceExistsError):
        index_client.create_index(index_definition("lifecycle"))

    assert "lifecycle" in list(index_client.list_index_names())
    assert "lifecycle" in [i.name for i in index_client.list_indexes()]
    assert "lifecycle" in [i.name for i in index_client.list_indexes(select=["name"])]
    fetched = index_client.get_index("lifecycle")
    assert fetched.e_tag == created.e_tag

    updated_def = index_definition("lifecycle")
    updated_def.fields.append(SimpleField(name="extra", type=SearchFieldDataType.Int64, filterable=True))
    updated = index_client.create_or_update_index(updated_def)
    assert updated.e_tag != created.e_tag and "extra" in [f.name for f in updated.fields]

    stale = index_client.get_index("lifecycle")
    stale.e_tag = created.e_tag
    with pytest.raises(ResourceModifiedError):
        index_client.create_or_update_index(stale, match_condition=MatchConditions.IfNotModified)

    changed = index_definition("lifecycle")
    changed.fields[2] = SimpleField(name="content", type=SearchFieldDataType.Int32)
    with pytest.raises(HttpResponseError) as info:
        index_client.create_or_update_index(changed)
    assert info.value.status_code == 400 and "cannot be changed" in str(info.value.message)

    stats = index_client.get_index_statistics("lifecycle")
    assert stats.document_count == 0

    index_client.delete_index("lifecycle")
    with pytest.raises(ResourceNotFoundError):
        index_client.get_index("lifecycle")
    index_client.delete_index("lifecycle")  # the SDK accepts Azure's 404 for a missing index


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (
            {
                "name": "bad",
                "fields": [
                    {"name": "a", "type": "Edm.String", "key": True},
                    {"name": "b", "type": "Edm.String", "key": True},
                ],
            },
            "exactly one key",
        ),
        ({"name": "bad", "fields": [{"name": "a", "type": "Edm.Int32", "key": True}]}, "Edm.String"),
        (
            {
                "name": "bad",
                "fields": [
                    {"name": "a", "type": "Edm.String", "key": True},
                    {"name": "b", "type": "Edm.Whatever"},
                ],
            },
            "invalid type",
        ),
        (
            {
                "name": "bad",
                "fields": [
                    {"name": "a", "type": "Edm.String", "key": True},
                    {
                        "name": "v",
                        "type": "Collection(Edm.Single)",
                        "dimensions": 3,
                        "vectorSearchProfile": "missing",
                    },
                ],
            },
            "vectorSearch.profiles",
        ),
        (
            {
                "name": "bad",
                "fields": [
                    {"name": "a", "type": "Edm.String", "key": True},
                    {"name": "n", "type": "Edm.Int32", "searchable": True},
                ],
            },
            "cannot be searchable",
        ),
        (
            {
                "name": "bad",
                "fields": [
                    {"name": "a", "type": "Edm.String", "key": True},
                    {"name": "t", "type": "Edm.String", "analyzer": "en.microsoft"},
                ],
            },
            "not supported",
        ),
        (
            {
                "name": "bad",
                "fields": [
                    {"name": "a", "type": "Edm.String", "key": True},
                    {"name": "g", "type": "Edm.GeographyPoint"},
                ],
            },
            "not supported",
        ),
        (
            {"name": "Bad_Name", "fields": [{"name": "a", "type": "Edm.String", "key": True}]},
            "Invalid index name",
        ),
    ],
)
def test_invalid_index_definitions(
    index_client: SearchIndexClient, definition: dict[str, Any], message: str
) -> None:
    with pytest.raises(HttpResponseError) as info:
        index_client.create_index(definition)  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert message in str(info.value.message)


def test_unknown_index_is_404(service: SearchServiceProcess, index_client: SearchIndexClient) -> None:
    with pytest.raises(ResourceNotFoundError):
        index_client.get_index("does-not-exist")
    client = SearchClient(service.endpoint, "does-not-exist", AzureKeyCredential(service.admin_key))
    with pytest.raises(ResourceNotFoundError):
        list(client.search("*"))
    with pytest.raises(ResourceNotFoundError):
        client.upload_documents([{"id": "1"}])


# ------------------------------------------------------------------------ documents


@pytest.fixture
def scratch(
    service: SearchServiceProcess, index_client: SearchIndexClient, request: pytest.FixtureRequest
) -> Iterator[SearchClient]:
    name = ("scratch-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()))[:60].strip("-")
    index_client.create_or_update_index(index_definition(name))
    yield SearchClient(service.endpoint, name, AzureKeyCredential(service.admin_key))
    index_client.delete_index(name)


def test_document_actions(scratch: SearchClient) -> None:
    first = scratch.upload_documents(DOCS[:2])
    assert [(r.key, r.succeeded, r.status_code) for r in first] == [("1", True, 201), ("2", True, 201)]
    again = scratch.upload_documents([{"id": "1", "title": "Replaced"}])
    assert again[0].status_code == 200
    assert scratch.get_document("1") == {
        "id": "1",
        "title": "Replaced",
        "content": None,
        "category": None,
        "tags": [],
        "price": None,
        "rating": None,
        "in_stock": None,
        "released": None,
    }

    merged = scratch.merge_documents([{"id": "2", "price": 99.5}])
    assert merged[0].status_code == 200
    doc = scratch.get_document("2")
    assert doc["price"] == 99.5 and doc["title"] == "Trail boots"

    missing = scratch.merge_documents([{"id": "404", "price": 1.0}, {"id": "2", "rating": 1}])
    assert [(r.succeeded, r.status_code) for r in missing] == [(False, 404), (True, 200)]
    assert missing[0].error_message

    upserted = scratch.merge_or_upload_documents([{"id": "2", "rating": 2}, {"id": "9", "title": "New"}])
    assert [r.status_code for r in upserted] == [200, 201]

    deleted = scratch.delete_documents([{"id": "9"}, {"id": "never-there"}])
    assert [(r.succeeded, r.status_code) for r in deleted] == [(True, 200), (True, 200)]
    with pytest.raises(ResourceNotFoundError):
        scratch.get_document("9")
    assert scratch.get_document_count() == 2

    bad_key = scratch.upload_documents([{"id": "has space"}, {"id": "ok-key"}])
    assert [(r.succeeded, r.status_code) for r in bad_key] == [(False, 400), (True, 201)]


def test_get_document_select_and_404(products: SearchClient) -> None:
    assert products.get_document("3", selected_fields=["title", "price"]) == {
        "title": "Family tent",
        "price": 480.0,
    }
    with pytest.raises(ResourceNotFoundError):
        products.get_document("nope")
    assert products.get_document_count() == len(DOCS)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"id": "x", "unknown": 1}, "does not exist"),
        ({"id": "x", "price": "cheap"}, "Edm.Double"),
        ({"id": "x", "rating": 1.5}, "Edm.Int32"),
        ({"id": "x", "in_stock": "yes"}, "Edm.Boolean"),
        ({"id": "x", "released": "last tuesday"}, "Edm.DateTimeOffset"),
        ({"id": "x", "tags": "camping"}, "array of strings"),
        ({"id": "x", "embedding": [1.0, 2.0]}, "expects a length of '3'"),
        ({"id": "x", "embedding": ["a", "b", "c"]}, "array of numbers"),
        ({"title": "no key"}, "key field"),
    ],
)
def test_invalid_documents_are_400(scratch: SearchClient, document: dict[str, Any], message: str) -> None:
    with pytest.raises(HttpResponseError) as info:
        scratch.upload_documents([document])
    assert info.value.status_code == 400
    assert message in str(info.value.message)
    assert scratch.get_document_count() == 0  # nothing of a rejected batch is written


BAD_REQUESTS: list[tuple[str, str, Any]] = [
    ("POST", "/indexes('products')/docs/search.post.search", b"{not json"),
    ("POST", "/indexes('products')/docs/search.post.search", []),
    ("POST", "/indexes('products')/docs/search.post.search", {"search": 5}),
    ("POST", "/indexes('products')/docs/search.post.search", {"top": -1}),
    ("POST", "/indexes('products')/docs/search.post.search", {"top": "ten"}),
    ("POST", "/indexes('products')/docs/search.post.search", {"skip": 10**9}),
    ("POST", "/indexes('products')/docs/search.post.search", {"count": "yes"}),
    ("POST", "/indexes('products')/docs/search.post.search", {"searchMode": "most"}),
    ("POST", "/indexes('products')/docs/search.post.search", {"filter": 5}),
    ("POST", "/indexes('products')/docs/search.post.search", {"filter": "price gt 'x' and"}),
    ("POST", "/indexes('products')/docs/search.post.search", {"filter": "tags/any(t: t gt 'a')"}),
    ("POST", "/indexes('products')/docs/search.post.search", {"orderby": "search.score() desc desc"}),
    ("POST", "/indexes('products')/docs/search.post.search", {"orderby": "geo.distance(x, y)"}),
    ("POST", "/indexes('products')/docs/search.post.search", {"facets": [5]}),
    ("POST", "/indexes('products')/docs/search.post.search", {"facets": ["category,count:x"]}),
    ("POST", "/indexes('products')/docs/search.post.search", {"searchFields": "nope"}),
    ("POST", "/indexes('products')/docs/search.post.search", {"vectorQueries": [{}]}),
    ("POST", "/indexes('products')/docs/search.post.search", {"vectorQueries": "x"}),
    (
        "POST",
        "/indexes('products')/docs/search.post.search",
        {"vectorQueries": [{"kind": "vector", "vector": "abc", "fields": "embedding"}]},
    ),
    (
        "POST",
        "/indexes('products')/docs/search.post.search",
        {"vectorQueries": [{"kind": "vector", "vector": [1, 2, 3], "fields": "title"}]},
    ),
    (
        "POST",
        "/indexes('products')/docs/search.post.search",
        {"vectorQueries": [{"kind": "vector", "vector": [1, 2, 3], "fields": "embedding", "k": 0}]},
    ),
    (
        "POST",
        "/indexes('products')/docs/search.post.search",
        {"vectorQueries": [{"kind": "vector", "vector": [[1], [2], [3]], "fields": "embedding"}]},
    ),
    ("POST", "/indexes('products')/docs/search.post.search", {"unknownParameter": 1}),
    ("POST", "/indexes('products')/docs/search.index", {"value": "x"}),
    ("POST", "/indexes('products')/docs/search.index", {"value": [5]}),
    ("POST", "/indexes('products')/docs/search.index", {"value": [{"@search.action": "explode", "id": "1"}]}),
    ("POST", "/indexes('products')/docs/search.index", {"value": [{"id": 5}]}),
    ("POST", "/indexes('products')/docs/search.index", {"nothing": []}),
    ("POST", "/indexes", {"name": 5, "fields": []}),
    ("POST", "/indexes", {"name": "x", "fields": "x"}),
    ("POST", "/indexes", {"name": "x", "fields": [{"name": "id"}]}),
    ("POST", "/indexes", {"name": "x", "fields": [5]}),
    ("POST", "/indexes", {"name": "x", "fields": [{"name": "id", "type": "Edm.String", "key": "yes"}]}),
    (
        "POST",
        "/indexes",
        {
            "name": "x",
            "fields": [{"name": "id", "type": "Edm.String", "key": True}],
            "vectorSearch": {"algorithms": [{"name": "a", "kind": "magic"}]},
        },
    ),
    (
        "PUT",
        "/indexes('other')",
        {"name": "x", "fields": [{"name": "id", "type": "Edm.String", "key": True}]},
    ),
    ("GET", "/indexes('products')/docs?$top=abc", None),
    ("GET", "/indexes('products')/docs?bogus=1", None),
    ("DELETE", "/indexes('products')/docs/$count", None),
    ("GET", "/indexes('no-such-index')/docs/$count", None),
    ("GET", "/indexes('products')/docs('missing')", None),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_REQUESTS)
def test_bad_input_never_gives_500(
    service: SearchServiceProcess, products: SearchClient, method: str, path: str, body: Any
) -> None:
    separator = "&" if "?" in path else "?"
    url = path + separator + API[1:]
    with http(service) as client:
        if isinstance(body, bytes):
            response = client.request(method, url, content=body, headers={"content-type": "application/json"})
        else:
            response = client.request(method, url, json=body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["message"] and "Traceback" not in error["message"]


def test_missing_api_version_is_400(service: SearchServiceProcess) -> None:
    with http(service) as client:
        response = client.get("/indexes")
    assert response.status_code == 400 and "api-version" in response.json()["error"]["message"]


# ------------------------------------------------------------------------ persistence


def test_everything_survives_a_restart(search_service: SearchServiceProcess) -> None:
    credential = AzureKeyCredential(search_service.admin_key)
    SearchIndexClient(search_service.endpoint, credential).create_index(index_definition("durable"))
    client = SearchClient(search_service.endpoint, "durable", credential)
    client.upload_documents(DOCS)
    client.merge_documents([{"id": "2", "price": 111.0}])
    before_text = [(d["id"], d["@search.score"]) for d in client.search("waterproof tent")]
    before_vector = ids(client.search(None, vector_queries=[vq([0.0, 0.6, 0.8])]))
    keys = (search_service.admin_key, search_service.query_key)

    search_service.restart()

    assert (search_service.admin_key, search_service.query_key) == keys
    client = SearchClient(search_service.endpoint, "durable", AzureKeyCredential(search_service.admin_key))
    index = SearchIndexClient(
        search_service.endpoint, AzureKeyCredential(search_service.admin_key)
    ).get_index("durable")
    assert [f.name for f in index.fields] == [f.name for f in index_definition("durable").fields]
    assert client.get_document_count() == len(DOCS)
    assert client.get_document("2")["price"] == 111.0
    after_text = [(d["id"], d["@search.score"]) for d in client.search("waterproof tent")]
    assert [i for i, _ in after_text] == [i for i, _ in before_text]
    assert [sc for _, sc in after_text] == pytest.approx([sc for _, sc in before_text])
    assert ids(client.search(None, vector_queries=[vq([0.0, 0.6, 0.8])])) == before_vector
    assert (search_service.data_dir / "indexes" / "durable.sqlite").exists()
