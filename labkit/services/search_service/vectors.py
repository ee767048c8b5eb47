"""Exact nearest-neighbour search over one vector field, held in memory as a float32 matrix.

Introduced in notebooks/02_index_data.ipynb.

The matrix is contiguous float32, normalised once per row for the cosine metric, so a query is
one matrix-vector product plus `argpartition`. Rows are reused after deletes. Scores follow
Azure: cosine -> 1 / (1 + (1 - cos)), euclidean -> 1 / (1 + distance), dotProduct -> 1 + dot
for dot >= 0 and 1 / (1 - dot) below (monotonic and positive).
"""

from __future__ import annotations

import numpy as np


class VectorColumn:
    def __init__(self, dimensions: int, metric: str = "cosine", capacity: int = 1024) -> None:
        self.dimensions = dimensions
        self.metric = metric
        self.data = np.zeros((capacity, dimensions), dtype=np.float32)
        self.sq_norms = np.zeros(capacity, dtype=np.float32)  # for euclidean
        self.ids = np.full(capacity, -1, dtype=np.int64)  # doc row id per matrix row, -1 = free
        self.size = 0  # rows in use or freed (high-water mark)
        self.row_of: dict[int, int] = {}
        self.free: list[int] = []

    def __len__(self) -> int:
        return len(self.row_of)

    def _prepare(self, vector: np.ndarray) -> np.ndarray:
        vec = np.asarray(vector, dtype=np.float32)
        if self.metric == "cosine":
            norm = float(np.linalg.norm(vec))
            if norm > 0:
                vec = vec / norm
        return vec

    def _grow(self) -> None:
        capacity = max(1024, self.data.shape[0] * 2)
        data = np.zeros((capacity, self.dimensions), dtype=np.float32)
        data[: self.size] = self.data[: self.size]
        sq = np.zeros(capacity, dtype=np.float32)
        sq[: self.size] = self.sq_norms[: self.size]
        ids = np.full(capacity, -1, dtype=np.int64)
        ids[: self.size] = self.ids[: self.size]
        self.data, self.sq_norms, self.ids = data, sq, ids

    def set(self, doc_id: int, vector: np.ndarray) -> None:
        row = self.row_of.get(doc_id)
        if row is None:
            if self.free:
                row = self.free.pop()
            else:
                if self.size == self.data.shape[0]:
                    self._grow()
                row = self.size
                self.size += 1
            self.row_of[doc_id] = row
            self.ids[row] = doc_id
        vec = self._prepare(vector)
        self.data[row] = vec
        self.sq_norms[row] = float(np.dot(vec, vec))

    def remove(self, doc_id: int) -> None:
        row = self.row_of.pop(doc_id, None)
        if row is None:
            return
        self.ids[row] = -1
        self.data[row] = 0.0
        self.free.append(row)

    def similarities(self, query: np.ndarray) -> np.ndarray:
        """Raw similarity (higher is better) of every row: cosine, dot product, or -distance."""
        rows = self.data[: self.size]
        if self.metric == "euclidean":
            q = np.asarray(query, dtype=np.float32)
            sq = self.sq_norms[: self.size] - 2.0 * (rows @ q) + float(np.dot(q, q))
            return -np.sqrt(np.maximum(sq, 0.0))
        return rows @ self._prepare(query)

    def to_score(self, similarity: np.ndarray) -> np.ndarray:
        sim = similarity.astype(np.float64)
        if self.metric == "cosine":
            return 1.0 / (2.0 - sim)  # 1 / (1 + cosine distance)
        if self.metric == "euclidean":
            return 1.0 / (1.0 - sim)  # sim is -distance
        return np.where(sim >= 0, 1.0 + sim, 1.0 / (1.0 - np.minimum(sim, 0.0)))

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(doc ids, scores) of the k best rows, best first (ties by doc id). `allowed` is the
        pre-filter: a boolean mask indexed by doc id, None for every document."""
        if self.size == 0 or k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0)
        ids = self.ids[: self.size]
        valid = ids >= 0
        if allowed is not None:
            safe = np.clip(ids, 0, len(allowed) - 1)
            valid &= allowed[safe] & (ids < len(allowed))
        n_valid = int(valid.sum())
        if n_valid == 0:
            return np.empty(0, dtype=np.int64), np.empty(0)
        sims = self.similarities(query)
        if n_valid < self.size:
            sims = np.where(valid, sims, -np.inf)
        k = min(k, n_valid)
        if k < len(sims):
            kth = np.partition(sims, len(sims) - k)[len(sims) - k]
            top = np.flatnonzero(sims >= kth)
        else:
            top = np.flatnonzero(valid)
        order = top[np.lexsort((ids[top], -sims[top]))][:k]
        return ids[order], self.to_score(sims[order])
