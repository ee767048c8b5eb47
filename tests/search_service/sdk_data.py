"""Shared data and helpers of the SDK conformance tests: documents, an index definition, HTTP helpers."""

from __future__ import annotations

from typing import Any

import httpx
from azure.search.documents.indexes.models import (
    HnswAlgorithmConfiguration,
    SearchableField,
    SearchField,
    SearchFieldDataType,
    SearchIndex,
    SimpleField,
    VectorSearch,
    VectorSearchProfile,
)
from azure.search.documents.models import VectorizedQuery

from .conftest import SearchServiceProcess

API = "?api-version=2026-04-01"
DOCS: list[dict[str, Any]] = [
    {
        "id": "1",
        "title": "Alpine tent",
        "content": "A waterproof tent for two hikers",
        "category": "tents",
        "tags": ["camping", "waterproof"],
        "price": 250.0,
        "rating": 5,
        "in_stock": True,
        "released": "2023-03-01T00:00:00Z",
        "embedding": [1.0, 0.0, 0.0],
    },
    {
        "id": "2",
        "title": "Trail boots",
        "content": "Leather boots for rocky trails, not waterproof",
        "category": "footwear",
        "tags": ["hiking"],
        "price": 120.0,
        "rating": 4,
        "in_stock": True,
        "released": "2022-05-10T00:00:00Z",
        "embedding": [0.0, 1.0, 0.0],
    },
    {
        "id": "3",
        "title": "Family tent",
        "content": "A large tent with a porch for camping families",
        "category": "tents",
        "tags": ["camping"],
        "price": 480.0,
        "rating": 4,
        "in_stock": False,
        "released": "2024-01-15T00:00:00Z",
        "embedding": [0.8, 0.6, 0.0],
    },
    {
        "id": "4",
        "title": "Rain jacket",
        "content": "A light waterproof jacket",
        "category": "clothing",
        "tags": ["waterproof", "hiking"],
        "price": 90.0,
        "rating": None,
        "in_stock": True,
        "released": "2021-09-01T00:00:00Z",
        "embedding": [0.0, 0.6, 0.8],
    },
    {
        "id": "5",
        "title": "Camp stove",
        "content": "Compact stove for camping trips",
        "category": "cooking",
        "tags": [],
        "price": 60.0,
        "rating": 3,
        "in_stock": True,
        "embedding": [0.0, 0.0, 1.0],
    },
]


def index_definition(name: str) -> SearchIndex:
    return SearchIndex(
        name=name,
        fields=[
            SimpleField(name="id", type=SearchFieldDataType.String, key=True),
            SearchableField(name="title", type=SearchFieldDataType.String, sortable=True),
            SearchableField(name="content", type=SearchFieldDataType.String),
            SimpleField(
                name="category",
                type=SearchFieldDataType.String,
                filterable=True,
                facetable=True,
                sortable=True,
            ),
            SearchableField(name="tags", collection=True, filterable=True, facetable=True),
            SimpleField(
                name="price", type=SearchFieldDataType.Double, filterable=True, sortable=True, facetable=True
            ),
            SimpleField(
                name="rating", type=SearchFieldDataType.Int32, filterable=True, sortable=True, facetable=True
            ),
            SimpleField(name="in_stock", type=SearchFieldDataType.Boolean, filterable=True, facetable=True),
            SimpleField(
                name="released", type=SearchFieldDataType.DateTimeOffset, filterable=True, sortable=True
            ),
            SearchField(
                name="embedding",
                type=SearchFieldDataType.Collection(SearchFieldDataType.Single),
                searchable=True,
                vector_search_dimensions=3,
                vector_search_profile_name="vp",
            ),
        ],
        vector_search=VectorSearch(
            algorithms=[HnswAlgorithmConfiguration(name="hnsw")],
            profiles=[VectorSearchProfile(name="vp", algorithm_configuration_name="hnsw")],
        ),
    )


def http(service: SearchServiceProcess, key: str | None = "admin") -> httpx.Client:
    headers = {}
    if key is not None:
        headers["api-key"] = {"admin": service.admin_key, "query": service.query_key}.get(key, key)
    return httpx.Client(base_url=service.endpoint, headers=headers, timeout=60)


def ids(results: Any) -> list[str]:
    return [doc["id"] for doc in results]


def vq(vector: list[float], k: int = 3) -> VectorizedQuery:
    return VectorizedQuery(vector=vector, k_nearest_neighbors=k, fields="embedding")
