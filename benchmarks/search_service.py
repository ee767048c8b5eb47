"""Benchmark of the local Azure AI Search service (labkit.services.search_service).

Introduced in notebooks/02_index_data.ipynb.

Indexes 10,000 synthetic chunks (random text from a Zipf-distributed vocabulary, 384-dim float32
vectors) through the real azure-search-documents SDK, then measures text, vector and hybrid
query latency through the SDK over HTTP and against the engine in-process, prints the overhead,
and checks that vector results equal an exact numpy brute force. Prints PASS/MISS against the
goals (hybrid p50 <= 20 ms through the SDK, overhead p50 <= 8 ms) and exits 0.

    .venv/bin/python benchmarks/search_service.py [--docs 10000] [--queries 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the service does, for a like-for-like comparison

import httpx  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from azure.core.credentials import AzureKeyCredential  # noqa: E402
from azure.search.documents import SearchClient  # noqa: E402
from azure.search.documents.indexes import SearchIndexClient  # noqa: E402
from azure.search.documents.models import VectorizedQuery  # noqa: E402

from labkit.services.search_service import launch_argv  # noqa: E402
from labkit.services.search_service.engine import SearchEngine  # noqa: E402

INDEX = "bench-chunks"
DIMS = 384
GOAL_HYBRID_P50_MS = 20.0
GOAL_OVERHEAD_P50_MS = 8.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_corpus(n_docs: int, rng: np.random.Generator) -> tuple[list[str], list[dict[str, Any]], np.ndarray]:
    syllables = [
        "ka",
        "lo",
        "mi",
        "ne",
        "tu",
        "ra",
        "shi",
        "po",
        "ve",
        "da",
        "qua",
        "zen",
        "tor",
        "bel",
        "fi",
    ]
    vocab = sorted({"".join(rng.choice(syllables, size=rng.integers(2, 4))) for _ in range(6000)})[:3000]
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    weights /= weights.sum()
    vectors = rng.standard_normal((n_docs, DIMS)).astype(np.float32)
    docs = []
    for i in range(n_docs):
        words = rng.choice(len(vocab), size=int(rng.integers(60, 140)), p=weights)
        docs.append(
            {
                "id": f"chunk-{i}",
                "title": " ".join(vocab[w] for w in words[:6]),
                "content": " ".join(vocab[w] for w in words),
                "category": f"cat-{i % 12}",
                "chunk": i % 40,
                "embedding": vectors[i].tolist(),
            }
        )
    return vocab, docs, vectors


def index_definition() -> dict[str, Any]:
    return {
        "name": INDEX,
        "fields": [
            {"name": "id", "type": "Edm.String", "key": True},
            {"name": "title", "type": "Edm.String", "searchable": True},
            {"name": "content", "type": "Edm.String", "searchable": True},
            {"name": "category", "type": "Edm.String", "filterable": True, "facetable": True},
            {"name": "chunk", "type": "Edm.Int32", "filterable": True, "sortable": True},
            {
                "name": "embedding",
                "type": "Collection(Edm.Single)",
                "searchable": True,
                "dimensions": DIMS,
                "vectorSearchProfile": "default",
            },
        ],
        "vectorSearch": {
            "algorithms": [{"name": "hnsw", "kind": "hnsw", "hnswParameters": {"metric": "cosine"}}],
            "profiles": [{"name": "default", "algorithm": "hnsw"}],
        },
    }


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95


def latencies(fn: Callable[[int], Any], n: int) -> tuple[list[float], list[Any]]:
    """Milliseconds per call of fn(i) for i in range(n), after two warm-up calls."""
    fn(0)
    fn(1 % n)
    times, results = [], []
    for i in range(n):
        start = time.perf_counter()
        results.append(fn(i))
        times.append((time.perf_counter() - start) * 1000)
    return times, results


def start_service(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = launch_argv(port, data_dir / "data")
    with (data_dir / "service.log").open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            if httpx.get(endpoint + "/health", timeout=1).status_code == 200:
                return proc, endpoint
        except httpx.HTTPError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"the search service did not start; see {data_dir / 'service.log'}")
        time.sleep(0.1)


def request_body(text: str | None, vector: np.ndarray | None, k: int) -> dict[str, Any]:
    body: dict[str, Any] = {"top": 10, "select": "id,title"}
    if text is not None:
        body["search"] = text
    if vector is not None:
        body["vectorQueries"] = [{"kind": "vector", "vector": vector.tolist(), "k": k, "fields": "embedding"}]
    return body


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    print(f"generating {args.docs} chunks ({DIMS}-dim vectors) ...", flush=True)
    vocab, docs, vectors = make_corpus(args.docs, rng)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    weights /= weights.sum()
    texts = [
        " ".join(vocab[w] for w in rng.choice(len(vocab), size=int(rng.integers(2, 6)), p=weights))
        for _ in range(args.queries)
    ]
    qvecs = rng.standard_normal((args.queries, DIMS)).astype(np.float32)
    k = 10

    data_dir = Path(tempfile.mkdtemp(prefix="labkit-search-bench-"))
    proc, endpoint = start_service(data_dir)
    try:
        keys = json.loads((data_dir / "data" / "keys.json").read_text())
        credential = AzureKeyCredential(keys["admin_key"])
        SearchIndexClient(endpoint, credential).create_or_update_index(index_definition())
        client = SearchClient(endpoint, INDEX, credential)
        print(f"indexing through the SDK in batches of {args.batch} ...", flush=True)
        start = time.perf_counter()
        for i in range(0, len(docs), args.batch):
            assert all(r.succeeded for r in client.upload_documents(docs[i : i + args.batch]))
        sdk_index_s = time.perf_counter() - start
        assert client.get_document_count() == len(docs)

        engine = SearchEngine(data_dir / "engine")  # in-process indexing of the same documents
        engine.create_or_update_index(INDEX, index_definition())
        start = time.perf_counter()
        for i in range(0, len(docs), args.batch):
            engine.index_documents(INDEX, {"value": docs[i : i + args.batch]})
        engine_index_s = time.perf_counter() - start

        http = httpx.Client(base_url=endpoint, headers={"api-key": keys["admin_key"]})
        url = f"/indexes('{INDEX}')/docs/search.post.search?api-version=2026-04-01"
        cases = {
            "text": (lambda i: texts[i], lambda i: None),
            "vector": (lambda i: None, lambda i: qvecs[i]),
            "hybrid": (lambda i: texts[i], lambda i: qvecs[i]),
        }
        print(f"running {args.queries} queries of each kind three ways ...", flush=True)
        rows, vector_results = [], []
        for kind, (text_of, vector_of) in cases.items():

            def sdk(i: int, text_of: Any = text_of, vector_of: Any = vector_of) -> list[str]:
                vec = vector_of(i)
                vqs = (
                    None
                    if vec is None
                    else [VectorizedQuery(vector=vec.tolist(), k_nearest_neighbors=k, fields="embedding")]
                )
                return [
                    d["id"]
                    for d in client.search(text_of(i), vector_queries=vqs, top=10, select=["id", "title"])
                ]

            def raw(i: int, text_of: Any = text_of, vector_of: Any = vector_of) -> Any:
                return http.post(url, json=request_body(text_of(i), vector_of(i), k)).json()

            def local(i: int, text_of: Any = text_of, vector_of: Any = vector_of) -> Any:
                return engine.search(INDEX, request_body(text_of(i), vector_of(i), k))

            sdk_times, results = latencies(sdk, args.queries)
            raw_times, _ = latencies(raw, args.queries)
            eng_times, _ = latencies(local, args.queries)
            rows.append((kind, percentiles(sdk_times), percentiles(raw_times), percentiles(eng_times)))
            if kind == "vector":
                vector_results = results
        engine.close()
        http.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data_dir, ignore_errors=True)

    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    mismatches = 0
    for i, got in enumerate(vector_results):
        sims = normed @ (qvecs[i] / np.linalg.norm(qvecs[i]))
        mismatches += got != [f"chunk-{j}" for j in np.argsort(-sims)[:k]]

    print()
    print(
        f"indexing {len(docs)} docs: {len(docs) / sdk_index_s:,.0f} docs/s through the SDK over HTTP, "
        f"{len(docs) / engine_index_s:,.0f} docs/s in-process (the SDK's own JSON serialisation of the "
        "vectors dominates)"
    )
    print()
    header = (
        f"{'query':<8}{'SDK p50':>9}{'SDK p95':>9}{'HTTP p50':>10}{'engine p50':>12}{'engine p95':>12}"
        f"{'overhead p50':>14}{'ratio':>7}{'HTTP-only':>11}"
    )
    print(header)
    print("-" * len(header))
    overheads = {}
    for kind, (sdk50, sdk95), (raw50, _), (eng50, eng95) in rows:
        overheads[kind] = sdk50 - eng50
        print(
            f"{kind:<8}{sdk50:>7.2f}ms{sdk95:>7.2f}ms{raw50:>8.2f}ms{eng50:>10.2f}ms{eng95:>10.2f}ms"
            f"{sdk50 - eng50:>12.2f}ms{sdk50 / max(eng50, 1e-9):>6.1f}x{raw50 - eng50:>9.2f}ms"
        )
    print(
        "(overhead = SDK p50 - engine p50; HTTP-only = the same request with httpx and no SDK - engine p50)"
    )
    print()
    assert mismatches == 0, "vector search results differ from exact numpy brute force"
    hybrid50 = rows[2][1][0]
    worst = max(overheads.values())
    print(f"vector results identical to exact numpy brute force: {args.queries - mismatches}/{args.queries}")

    print(
        f"goal hybrid p50 <= {GOAL_HYBRID_P50_MS:.0f} ms through the SDK: {hybrid50:.2f} ms "
        f"-> {'PASS' if hybrid50 <= GOAL_HYBRID_P50_MS else 'MISS'}"
    )
    print(
        f"goal overhead p50 <= {GOAL_OVERHEAD_P50_MS:.0f} ms (worst query kind): {worst:.2f} ms "
        f"-> {'PASS' if worst <= GOAL_OVERHEAD_P50_MS else 'MISS'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
