"""In-memory inverted index of the searchable text fields, with BM25 scored as Lucene/Azure do.

Introduced in notebooks/02_index_data.ipynb.

Each document keeps one token-id sequence per searchable field (positions for phrases). Postings
are rebuilt lazily, after writes, as one CSR array per field, so a query is a few numpy
operations over dense arrays indexed by document id. BM25 is computed per field and summed:
idf = ln(1 + (N - n + 0.5) / (n + 0.5)) with N the documents that have the field, and
tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)) with k1 = 1.2, b = 0.75 (Azure's defaults).
A phrase uses the sum of its terms' idf and its own frequency. Prefix terms and `*` are not
scored (1.0), as Azure does for wildcard queries.
"""

from __future__ import annotations

import bisect
import math
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

from .simple_query import analyze

K1, B = 1.2, 0.75
Dense = tuple[np.ndarray, np.ndarray]  # (bool mask, float64 scores), both indexed by document id


@dataclass
class _FieldPostings:
    indptr: np.ndarray  # term id -> slice of docs/tfs
    docs: np.ndarray
    tfs: np.ndarray
    lengths: np.ndarray  # document id -> number of tokens in this field
    n_docs: int  # documents with at least one token in this field
    avgdl: float


class TextIndex:
    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        self.vocab: dict[str, int] = {}
        self.docs: dict[int, list[np.ndarray]] = {}
        self._postings: list[_FieldPostings] | None = None
        self._sorted_terms: list[str] = []
        self._sorted_ids: list[int] = []
        self.size = 1  # length of dense arrays (max document id + 1)
        self.live = np.zeros(1, dtype=bool)

    # ------------------------------------------------------------------ maintenance
    def _sequence(self, value: Any) -> np.ndarray:
        if value is None:
            return np.empty(0, dtype=np.int32)
        text = "\n".join(value) if isinstance(value, list) else str(value)
        vocab = self.vocab
        ids = [vocab.setdefault(tok, len(vocab)) for tok in analyze(unicodedata.normalize("NFC", text))]
        return np.asarray(ids, dtype=np.int32)

    def set(self, doc_id: int, body: dict[str, Any]) -> None:
        self.docs[doc_id] = [self._sequence(body.get(name)) for name in self.fields]
        self._postings = None

    def remove(self, doc_id: int) -> None:
        if self.docs.pop(doc_id, None) is not None:
            self._postings = None

    def _build(self) -> list[_FieldPostings]:
        if self._postings is not None:
            return self._postings
        self.size = max(self.docs, default=0) + 1
        self.live = np.zeros(self.size, dtype=bool)
        doc_ids = np.fromiter(self.docs, dtype=np.int64, count=len(self.docs))
        self.live[doc_ids] = True
        n_terms = len(self.vocab)
        postings = []
        for f in range(len(self.fields)):
            seqs = [seq[f] for seq in self.docs.values()]
            lengths = np.zeros(self.size, dtype=np.float64)
            counts = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
            lengths[doc_ids] = counts
            tokens = np.concatenate(seqs).astype(np.int64) if seqs else np.empty(0, dtype=np.int64)
            owners = np.repeat(doc_ids, counts)
            keys, tfs = np.unique(tokens * self.size + owners, return_counts=True)
            terms = keys // self.size
            indptr = np.searchsorted(terms, np.arange(n_terms + 1))
            with_field = int((counts > 0).sum())
            avgdl = float(counts.sum()) / with_field if with_field else 1.0
            postings.append(
                _FieldPostings(indptr, keys % self.size, tfs.astype(np.float64), lengths, with_field, avgdl)
            )
        pairs = sorted(self.vocab.items())
        self._sorted_terms = [t for t, _ in pairs]
        self._sorted_ids = [i for _, i in pairs]
        self._postings = postings
        return postings

    # ------------------------------------------------------------------ queries
    def empty(self) -> Dense:
        self._build()
        return np.zeros(self.size, dtype=bool), np.zeros(self.size)

    def match_all(self) -> Dense:
        self._build()
        return self.live.copy(), self.live.astype(np.float64)

    def _prefix_ids(self, prefix: str) -> np.ndarray:
        lo = bisect.bisect_left(self._sorted_terms, prefix)
        hi = bisect.bisect_left(self._sorted_terms, prefix + "\U0010ffff")
        return np.asarray(self._sorted_ids[lo:hi], dtype=np.int64)

    def term(self, tokens: list[str], prefix: bool, fields: list[int] | None) -> Dense:
        """Documents matching a term or phrase (last token a prefix if `prefix`) in any of `fields`."""
        postings = self._build()
        mask, scores = np.zeros(self.size, dtype=bool), np.zeros(self.size)
        choices: list[np.ndarray] = []
        for i, tok in enumerate(tokens):
            if prefix and i == len(tokens) - 1:
                ids = self._prefix_ids(tok)
            else:
                ids = np.asarray([self.vocab[tok]] if tok in self.vocab else [], dtype=np.int64)
            if not len(ids):
                return mask, scores
            choices.append(ids)
        for f in fields if fields is not None else range(len(self.fields)):
            post = postings[f]
            if len(tokens) == 1:
                self._single(post, choices[0], prefix, mask, scores)
            else:
                self._phrase(f, post, choices, prefix, mask, scores)
        return mask, scores

    @staticmethod
    def _idf(post: _FieldPostings, n: int) -> float:
        return math.log(1.0 + (post.n_docs - n + 0.5) / (n + 0.5))

    def _bm25(self, post: _FieldPostings, docs: np.ndarray, tf: np.ndarray, idf: float) -> np.ndarray:
        norm = K1 * (1.0 - B + B * post.lengths[docs] / post.avgdl)
        return idf * tf * (K1 + 1.0) / (tf + norm)

    def _single(
        self, post: _FieldPostings, ids: np.ndarray, prefix: bool, mask: np.ndarray, scores: np.ndarray
    ) -> None:
        if prefix:
            parts = [post.docs[post.indptr[t] : post.indptr[t + 1]] for t in ids.tolist()]
            if parts:
                docs = np.unique(np.concatenate(parts))
                mask[docs] = True
                scores[docs] = 1.0
            return
        t = int(ids[0])
        start, end = post.indptr[t], post.indptr[t + 1]
        if start == end:
            return
        docs = post.docs[start:end]
        scores[docs] += self._bm25(post, docs, post.tfs[start:end], self._idf(post, end - start))
        mask[docs] = True

    def _phrase(
        self,
        f: int,
        post: _FieldPostings,
        choices: list[np.ndarray],
        prefix: bool,
        mask: np.ndarray,
        scores: np.ndarray,
    ) -> None:
        candidates: np.ndarray | None = None
        idf = 0.0
        for ids in choices:
            parts = [post.docs[post.indptr[t] : post.indptr[t + 1]] for t in ids.tolist()]
            docs = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
            idf += self._idf(post, len(docs))
            candidates = docs if candidates is None else np.intersect1d(candidates, docs, assume_unique=True)
            if not len(candidates):
                return
        assert candidates is not None
        n = len(choices)
        found, freqs = [], []
        for doc in candidates.tolist():
            seq = self.docs[doc][f]
            span = len(seq) - n + 1
            if span <= 0:
                continue
            ok = np.ones(span, dtype=bool)
            for j, ids in enumerate(choices):
                window = seq[j : j + span]
                ok &= np.isin(window, ids) if len(ids) > 1 else window == ids[0]
            freq = int(ok.sum())
            if freq:
                found.append(doc)
                freqs.append(freq)
        if not found:
            return
        docs = np.asarray(found, dtype=np.int64)
        mask[docs] = True
        if prefix:
            scores[docs] = np.maximum(scores[docs], 1.0)
        else:
            scores[docs] += self._bm25(post, docs, np.asarray(freqs, dtype=np.float64), idf)
