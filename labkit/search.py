"""Indexing and queries through azure-search-documents: one code path for the local search service
and Azure AI Search.

Introduced in notebooks/02_index_data.ipynb.

Chunking strategies (index `products-<strategy>`):
- `product`: one document per product (catalog row plus the whole manual);
- `window`: fixed-size windows of word tokens with overlap over the same text;
- `section`: one chunk per manual section, plus an overview chunk from the catalog row.
Keys are deterministic (`P-004-section-003`), so a re-run is an upsert with identical counts;
chunks that no longer exist are deleted.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient
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

from labkit import models
from labkit.config import Settings, get_settings
from labkit.schema import Product, load_manual, load_products, parse_sections, strip_comments

STRATEGIES = ("product", "window", "section")
WINDOW_TOKENS = 160
WINDOW_OVERLAP = 40
RETRIEVAL_MODES = ("keyword", "vector", "hybrid")
NUMERIC_FIELDS = {"price": SearchFieldDataType.Double, "rating": SearchFieldDataType.Double,
                  "weight_g": SearchFieldDataType.Int32, "temp_rating_c": SearchFieldDataType.Double,
                  "capacity": SearchFieldDataType.Double}


def index_name(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown chunking strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return f"products-{strategy}"


# ---------------------------------------------------------------------------------------------
# clients: the only place here that knows whether search is local or Azure
# ---------------------------------------------------------------------------------------------
def _endpoint_and_credential(settings: Settings, write: bool) -> tuple[str, Any]:
    settings.check(["search"])
    if settings.backend_for("search") == "local":
        from labkit.services import ensure_running, local_search_keys

        endpoint = ensure_running(["search"], settings=settings)["search"].base_url
        keys = local_search_keys(settings)
        return endpoint, AzureKeyCredential(keys["admin_key" if write else "query_key"])
    assert settings.azure_search_endpoint
    if settings.azure_search_api_key:
        key = settings.azure_search_api_key.get_secret_value()
        return settings.azure_search_endpoint, AzureKeyCredential(key)
    from azure.identity import DefaultAzureCredential

    return settings.azure_search_endpoint, DefaultAzureCredential()


def index_client(settings: Settings | None = None) -> SearchIndexClient:
    endpoint, credential = _endpoint_and_credential(settings or get_settings(), write=True)
    return SearchIndexClient(endpoint, credential)


def search_client(index: str, settings: Settings | None = None, write: bool = False,
                  **kwargs: Any) -> SearchClient:
    """A SearchClient for one index (query key locally unless `write`); kwargs go to the SDK."""
    endpoint, credential = _endpoint_and_credential(settings or get_settings(), write=write)
    return SearchClient(endpoint, index, credential, **kwargs)


# ---------------------------------------------------------------------------------------------
# chunking
# ---------------------------------------------------------------------------------------------
@dataclass
class Chunk:
    id: str
    product_id: str
    chunk_strategy: str
    title: str
    content: str
    category: str
    brand: str
    price: float
    rating: float
    weight_g: int | None
    temp_rating_c: float | None
    capacity: float | None

    def document(self, vector: list[float] | None = None) -> dict[str, Any]:
        doc = asdict(self)
        if vector is not None:
            doc["contentVector"] = vector
        return doc


def catalog_text(p: Product) -> str:
    """The catalog row as readable text (what a product overview chunk says)."""
    specs = "; ".join(f"{k}: {v}" for k, v in p.specs.items())
    return (f"{p.name} ({p.category}, {p.brand}). Price ${p.price:.2f}. Rating {p.rating}/5.\n"
            f"{p.description}\nFeatures: {'; '.join(p.features)}.\nSpecifications: {specs}.\n"
            f"Warranty: {p.warranty}\nReturns: {p.return_policy}")


def _chunk(p: Product, strategy: str, n: int, title: str, content: str) -> Chunk:
    return Chunk(id=f"{p.id}-{strategy}-{n:03d}", product_id=p.id, chunk_strategy=strategy, title=title,
                 content=content, category=p.category, brand=p.brand, price=p.price, rating=p.rating,
                 weight_g=p.weight_g, temp_rating_c=p.temp_rating_c, capacity=p.capacity)


def word_windows(text: str, size: int = WINDOW_TOKENS, overlap: int = WINDOW_OVERLAP) -> list[str]:
    """Fixed-size windows of whitespace tokens; consecutive windows share `overlap` tokens."""
    if overlap >= size:
        raise ValueError("overlap must be smaller than the window size")
    words = text.split()
    if len(words) <= size:
        return [" ".join(words)] if words else []
    step = size - overlap
    starts = range(0, max(len(words) - overlap, 1), step)
    return [" ".join(words[s:s + size]) for s in starts]


def build_chunks(strategy: str, products: list[Product] | None = None) -> list[Chunk]:
    """All chunks of one strategy, in a deterministic order."""
    index_name(strategy)
    products = products or load_products()
    chunks: list[Chunk] = []
    for p in products:
        manual = strip_comments(load_manual(p.id))
        if strategy == "product":
            chunks.append(_chunk(p, strategy, 0, p.name, catalog_text(p) + "\n\n" + manual))
        elif strategy == "window":
            for n, window in enumerate(word_windows(catalog_text(p) + "\n\n" + manual)):
                chunks.append(_chunk(p, strategy, n, f"{p.name} (part {n + 1})", window))
        else:
            chunks.append(_chunk(p, strategy, 0, f"{p.name}: Overview", catalog_text(p)))
            for n, (section, text) in enumerate(parse_sections(manual).items(), start=1):
                chunks.append(_chunk(p, strategy, n, f"{p.name}: {section}", f"{p.name}. {section}.\n{text}"))
    return chunks


# ---------------------------------------------------------------------------------------------
# the index
# ---------------------------------------------------------------------------------------------
def index_definition(name: str, dimensions: int) -> SearchIndex:
    """Fields of the interfaces guide: text fields searchable, catalog numbers filterable/sortable."""
    fields = [
        SimpleField(name="id", type=SearchFieldDataType.String, key=True, filterable=True),
        SimpleField(name="product_id", type=SearchFieldDataType.String, filterable=True, facetable=True),
        SimpleField(name="chunk_strategy", type=SearchFieldDataType.String, filterable=True),
        SearchableField(name="title", type=SearchFieldDataType.String),
        SearchableField(name="content", type=SearchFieldDataType.String),
        SearchableField(name="category", type=SearchFieldDataType.String, filterable=True, sortable=True,
                        facetable=True),
        SearchableField(name="brand", type=SearchFieldDataType.String, filterable=True, sortable=True,
                        facetable=True),
        *[SimpleField(name=n, type=t, filterable=True, sortable=True, facetable=True)
          for n, t in NUMERIC_FIELDS.items()],
        SearchField(name="contentVector", type=SearchFieldDataType.Collection(SearchFieldDataType.Single),
                    searchable=True, vector_search_dimensions=dimensions,
                    vector_search_profile_name="default"),
    ]
    vector_search = VectorSearch(
        algorithms=[HnswAlgorithmConfiguration(name="hnsw")],
        profiles=[VectorSearchProfile(name="default", algorithm_configuration_name="hnsw")])
    return SearchIndex(name=name, fields=fields, vector_search=vector_search)


@dataclass
class IndexReport:
    index: str
    strategy: str
    documents: int
    chunks: int
    deleted: int
    embed_seconds: float
    upload_seconds: float
    avg_words: float


def build_index(strategy: str, settings: Settings | None = None, batch_size: int = 100,
                progress: bool = False, *, name: str | None = None,
                chunks: list[Chunk] | None = None) -> IndexReport:
    """Create or update `products-<strategy>`, embed its chunks and upload them (idempotent).

    `name` and `chunks` build another index from changed chunks of a strategy (notebook 05's
    counterfactual copy of the catalog)."""
    settings = settings or get_settings()
    name = name or index_name(strategy)
    chunks = chunks if chunks is not None else build_chunks(strategy)
    t0 = time.perf_counter()
    vectors = models.embed_cached([f"{c.title}\n{c.content}" for c in chunks], settings=settings)
    embed_s = time.perf_counter() - t0
    indexes = index_client(settings)
    indexes.create_or_update_index(index_definition(name, int(vectors.shape[1])))
    client = search_client(name, settings, write=True)
    t1 = time.perf_counter()
    batches = range(0, len(chunks), batch_size)
    if progress:
        from labkit.progress import bar

        batches = bar(batches, desc=f"upload {name}", unit="batch")
    for start in batches:
        docs = [c.document(v.tolist()) for c, v in zip(chunks[start:start + batch_size],
                                                        vectors[start:start + batch_size], strict=True)]
        failed = [r for r in client.merge_or_upload_documents(docs) if not r.succeeded]
        if failed:
            raise RuntimeError(f"{len(failed)} documents failed to upload to {name}: "
                               f"{failed[0].error_message}")
    wanted = {c.id for c in chunks}
    stale = [{"id": d["id"]} for d in client.search("*", select=["id"], top=100000) if d["id"] not in wanted]
    if stale:
        client.delete_documents(stale)
    upload_s = time.perf_counter() - t1
    return IndexReport(index=name, strategy=strategy, documents=client.get_document_count(),
                       chunks=len(chunks),
                       deleted=len(stale), embed_seconds=embed_s, upload_seconds=upload_s,
                       avg_words=sum(len(c.content.split()) for c in chunks) / max(len(chunks), 1))


def ensure_index(strategy: str = "section", settings: Settings | None = None) -> str:
    """Make sure `products-<strategy>` exists and is complete (builds it if not); returns its name.

    Lets any notebook start from a fresh kernel and get the index it needs.
    """
    settings = settings or get_settings()
    name = index_name(strategy)
    try:
        index_client(settings).get_index(name)
        count = search_client(name, settings).get_document_count()
        if count == len(build_chunks(strategy)):
            return name
    except ResourceNotFoundError:
        pass
    build_index(strategy, settings)
    return name


def corpus_hash(strategy: str) -> str:
    """A hash of the chunk texts and keys (lineage: which data an index was built from)."""
    h = hashlib.sha256()
    for c in build_chunks(strategy):
        h.update(f"{c.id}\n{c.title}\n{c.content}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# queries
# ---------------------------------------------------------------------------------------------
def search(query: str, index: str, mode: str = "hybrid", top: int = 5, filter: str | None = None,
           select: list[str] | None = None, order_by: str | None = None, vector: list[float] | None = None,
           client: SearchClient | None = None, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Keyword, vector or hybrid search; returns documents with `score` (the @search.score).

    `vector` is the query's embedding when the caller already has it (batch evaluation).
    """
    if mode not in RETRIEVAL_MODES:
        raise ValueError(f"unknown retrieval mode {mode!r}; choose one of {', '.join(RETRIEVAL_MODES)}")
    settings = settings or get_settings()
    client = client or search_client(index, settings)
    vector_queries = None
    if mode in ("vector", "hybrid"):
        if vector is None:
            vector = models.embed([query], settings=settings)[0].tolist()
        vector_queries = [VectorizedQuery(vector=vector, k_nearest_neighbors=top, fields="contentVector")]
    select = select or ["id", "product_id", "title", "content", "category", "brand", "price", "rating",
                        "weight_g", "temp_rating_c", "capacity"]
    results = client.search(search_text=query if mode != "vector" else None, vector_queries=vector_queries,
                            filter=filter, top=top, select=select,
                            order_by=[order_by] if order_by else None)
    return [{**{k: r.get(k) for k in select}, "score": r["@search.score"]} for r in results]


def retrieval_hits(rows: list[dict[str, Any]], index: str, mode: str = "hybrid", k: int = 5,
                   settings: Settings | None = None) -> list[dict[str, Any]]:
    """For each labelled query, the rank (1-based) of the first chunk of a relevant product, or None.

    Rows carry `query` and `relevant_product_ids`. Chunk strategies are compared fairly by the
    first k *chunks*, as a RAG prompt with k chunks would see them.
    """
    out = []
    queries = [row["query"] for row in rows]
    vectors = models.embed_cached(queries, settings=settings) if mode != "keyword" else None
    client = search_client(index, settings)
    for i, row in enumerate(rows):
        results = search(row["query"], index, mode=mode, top=k, select=["id", "product_id"], client=client,
                         vector=vectors[i].tolist() if vectors is not None else None, settings=settings)
        ranks = [i for i, r in enumerate(results, start=1) if r["product_id"] in row["relevant_product_ids"]]
        out.append({"id": row.get("id"), "query": row["query"], "index": index, "mode": mode,
                    "rank": ranks[0] if ranks else None, "hit": bool(ranks),
                    "retrieved": [r["product_id"] for r in results]})
    return out
