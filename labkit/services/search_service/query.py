"""Run a validated search against one index: text (BM25), vector (exact kNN) and hybrid (RRF).

Introduced in notebooks/02_index_data.ipynb.

- Text: the simple query tree is evaluated over dense numpy arrays (see textindex.py); negated
  clauses under OR mean "or does not contain", as in Azure; `*` scores 1.0.
- Vectors: the filter is applied before the nearest-neighbour search (Azure's default
  preFilter); postFilter / strictPostFilter filter the k results afterwards.
- Several legs (text + vectors, or several vector fields/queries) are fused with Reciprocal Rank
  Fusion: score = sum(weight / (60 + rank)), ranks from 1; the text leg contributes its top 50.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import SearchError
from .request import FacetSpec, ParsedSearch
from .schema import BOOLEAN, DATETIME, Field
from .simple_query import AndQ, MatchAll, NotQ, OrQ, Query, Term, parse_simple_query
from .store import IndexStore
from .textindex import Dense, TextIndex
from .values import display_from_sort_key

RRF_K = 60
TEXT_LEG_SIZE = 50
PAGE_SIZE = 50
MAX_PAGE = 1000
Scored = tuple[np.ndarray, np.ndarray]  # (document ids, scores), unordered


class _TextEvaluator:
    def __init__(self, text: TextIndex, fields: list[int] | None) -> None:
        self.text = text
        self.fields = fields
        self.cache: dict[tuple[tuple[str, ...], bool], Dense] = {}

    def evaluate(self, node: Query) -> Dense:
        if isinstance(node, MatchAll):
            return self.text.match_all()
        if isinstance(node, Term):
            key = (tuple(node.tokens), node.prefix)
            if key not in self.cache:
                self.cache[key] = self.text.term(node.tokens, node.prefix, self.fields)
            mask, scores = self.cache[key]
            return mask.copy(), scores.copy()
        if isinstance(node, NotQ):
            excluded, _ = self.evaluate(node.child)
            mask = self.text.live & ~excluded
            return mask, mask.astype(np.float64)
        if isinstance(node, AndQ):
            positives = [c for c in node.children if not isinstance(c, NotQ)]
            negatives = [c.child for c in node.children if isinstance(c, NotQ)]
            if not positives:
                return self.evaluate(NotQ(OrQ(negatives)))
            mask, scores = self.evaluate(positives[0])
            for child in positives[1:]:
                other_mask, other_scores = self.evaluate(child)
                mask &= other_mask
                scores += other_scores
            for child in negatives:
                mask &= ~self.evaluate(child)[0]
            return mask, np.where(mask, scores, 0.0)
        assert isinstance(node, OrQ)
        mask, scores = self.text.empty()
        for child in node.children:
            child_mask, child_scores = self.evaluate(child)
            mask |= child_mask
            scores += child_scores
        return mask, scores


def top_order(ids: np.ndarray, scores: np.ndarray, needed: int) -> np.ndarray:
    """Positions of the `needed` best entries: score descending, then document id ascending."""
    n = len(ids)
    if needed <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    if needed < n:
        kth = np.partition(scores, n - needed)[n - needed]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(n)
    order = candidates[np.lexsort((ids[candidates], -scores[candidates]))]
    return order[:needed]


def _text_leg(store: IndexStore, req: ParsedSearch, allowed: np.ndarray | None) -> Scored:
    tree = parse_simple_query(req.search, req.search_mode)
    text = store.text
    if tree is None:
        mask, scores = text.empty()
    elif isinstance(tree, MatchAll):
        mask, scores = text.match_all()
    elif not text.fields:
        raise SearchError(
            400,
            f"The index '{store.schema.name}' has no searchable text fields to run the search text against.",
        )
    else:
        mask, scores = _TextEvaluator(text, req.search_columns).evaluate(tree)
    if allowed is not None:
        mask &= allowed
    ids = np.flatnonzero(mask)
    return ids, scores[ids]


def _vector_legs(store: IndexStore, req: ParsedSearch, allowed: np.ndarray | None) -> list[Scored]:
    legs = []
    for leg in req.vectors:
        ids, scores = store.vectors[leg.field.name].search(
            leg.vector, leg.k, None if req.post_filter else allowed
        )
        if req.post_filter and allowed is not None:
            keep = allowed[ids]
            ids, scores = ids[keep], scores[keep]
        legs.append((ids, scores))
    return legs


def collect(store: IndexStore, req: ParsedSearch) -> Scored:
    """Every matching document id with its final @search.score."""
    with store.lock:
        store.text.match_all()  # brings the text index up to date, so dense arrays share one size
        allowed = None
        if req.filter:
            allowed = np.zeros(store.text.size, dtype=bool)
            allowed[store.filter_ids(*req.filter)] = True
        text = _text_leg(store, req, allowed) if req.search is not None or not req.vectors else None
        vector_legs = _vector_legs(store, req, allowed)
    if text is not None and not vector_legs:
        return text
    if text is None and len(vector_legs) == 1:
        return vector_legs[0]
    ranked: list[tuple[np.ndarray, float]] = []
    if text is not None:
        ranked.append((text[0][top_order(text[0], text[1], TEXT_LEG_SIZE)], 1.0))
    ranked += [(ids, leg.weight) for (ids, _), leg in zip(vector_legs, req.vectors, strict=True)]
    fused: dict[int, float] = {}
    for ids, weight in ranked:
        for rank, doc_id in enumerate(ids.tolist(), start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + weight / (RRF_K + rank)
    return (
        np.fromiter(fused.keys(), dtype=np.int64, count=len(fused)),
        np.fromiter(fused.values(), dtype=np.float64, count=len(fused)),
    )


def _order(
    store: IndexStore, req: ParsedSearch, ids: np.ndarray, scores: np.ndarray, needed: int
) -> list[tuple[int, float]]:
    only_score = len(req.orderby) == 1 and req.orderby[0].field is None and req.orderby[0].descending
    if not req.orderby or only_score:
        order = top_order(ids, scores, needed)
        return list(zip(ids[order].tolist(), scores[order].tolist(), strict=True))
    order = top_order(ids, scores, len(ids))
    ranked = list(zip(ids[order].tolist(), scores[order].tolist(), strict=True))
    fields = [store.schema.by_name[k.field] for k in req.orderby if k.field is not None]
    values = store.column_values([i for i, _ in ranked], fields) if fields else {}
    position = {f.name: n for n, f in enumerate(fields)}
    for key in reversed(req.orderby):
        if key.field is None:
            ranked.sort(key=lambda kv: kv[1], reverse=key.descending)
            continue
        slot = position[key.field]

        def sort_key(kv: tuple[int, float], slot: int = slot) -> tuple[bool, Any]:
            value = values[kv[0]][slot]
            return (value is not None, value if value is not None else 0)

        ranked.sort(key=sort_key, reverse=key.descending)
    return ranked[:needed]


def _facets(
    store: IndexStore, specs: list[FacetSpec], ids: list[int] | None
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        counts = store.facet_counts(ids, spec.field)
        if spec.sort in ("count", "-count"):
            counts.sort(key=lambda vc: vc[0])
            counts.sort(key=lambda vc: vc[1], reverse=spec.sort == "-count")
        else:
            counts.sort(key=lambda vc: vc[0], reverse=spec.sort == "-value")
        if spec.count > 0:
            counts = counts[: spec.count]
        if spec.field.type == DATETIME:
            counts = [(display_from_sort_key(v), n) for v, n in counts]
        elif spec.field.type == BOOLEAN:
            counts = [(bool(v), n) for v, n in counts]
        out[spec.field.name] = [{"value": v, "count": n} for v, n in counts]
    return out


def shape_document(
    body: dict[str, Any], select: list[Field], vectors: dict[tuple[int, str], list[float]], doc_id: int
) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for fld in select:
        if fld.is_vector:
            doc[fld.name] = vectors.get((doc_id, fld.name))
        elif fld.is_collection:
            doc[fld.name] = body.get(fld.name) or []
        else:
            doc[fld.name] = body.get(fld.name)
    return doc


def execute(store: IndexStore, req: ParsedSearch) -> dict[str, Any]:
    """The JSON body of Azure's search response (without @odata.nextLink, added by the app)."""
    ids, scores = collect(store, req)
    total = len(ids)
    page = min(req.top if req.top is not None else PAGE_SIZE, MAX_PAGE)
    ranked = _order(store, req, ids, scores, req.skip + page)[req.skip :]
    page_ids = [i for i, _ in ranked]
    bodies = store.bodies(page_ids)
    vector_fields = [f for f in req.select if f.is_vector]
    vectors = store.stored_vectors(page_ids, vector_fields) if vector_fields and page_ids else {}
    response: dict[str, Any] = {}
    if req.count:
        response["@odata.count"] = total
    if req.coverage:
        response["@search.coverage"] = 100.0
    if req.facets:
        everything = req.filter is None and not req.vectors and total == store.doc_count
        response["@search.facets"] = _facets(store, req.facets, None if everything else ids.tolist())
    following = req.skip + page
    if total > following and (req.top is None or req.top > page):
        nxt = dict(req.raw)
        nxt["skip"] = following
        if req.top is not None:
            nxt["top"] = req.top - page
        response["@search.nextPageParameters"] = nxt
    response["value"] = [
        {"@search.score": score, **shape_document(bodies.get(i, {}), req.select, vectors, i)}
        for i, score in ranked
    ]
    return response
