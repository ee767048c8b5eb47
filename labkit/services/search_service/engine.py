"""The search engine behind the HTTP API: a registry of indexes, one SQLite file each.

Introduced in notebooks/02_index_data.ipynb.

Usable in-process (the benchmark does): `SearchEngine(data_dir)` then `create_or_update_index`,
`index_documents`, `search`, ... with the same JSON shapes as Azure AI Search's REST API.
"""

from __future__ import annotations

import logging
import secrets
import threading
from pathlib import Path
from typing import Any

from .errors import SearchError, bad_request, index_not_found
from .query import execute, shape_document
from .request import parse_search, parse_select
from .schema import INDEX_NAME, check_update, parse_index
from .store import IndexStore
from .values import prepare_actions

log = logging.getLogger("labkit.search_service")


def _new_etag() -> str:
    return f'"0x8D{secrets.token_hex(7).upper()}"'


class SearchEngine:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "indexes"
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.stores: dict[str, IndexStore] = {}
        for path in sorted(self.root.glob("*.sqlite")):
            try:
                store = IndexStore.open(path)
            except Exception as exc:  # a damaged file must not stop the service
                log.error("could not open index file %s: %s", path.name, exc)
                continue
            self.stores[store.schema.name] = store
            log.info("loaded index '%s' (%d documents)", store.schema.name, store.doc_count)

    def close(self) -> None:
        with self.lock:
            for store in self.stores.values():
                store.close()
            self.stores.clear()

    def store(self, name: str) -> IndexStore:
        store = self.stores.get(name)
        if store is None:
            raise index_not_found(name)
        return store

    @staticmethod
    def _definition(store: IndexStore) -> dict[str, Any]:
        return {"@odata.etag": store.etag, **store.schema.definition}

    # --------------------------------------------------------------- indexes
    def create_index(self, raw: Any) -> dict[str, Any]:
        name = raw.get("name") if isinstance(raw, dict) else None
        with self.lock:
            if isinstance(name, str) and name in self.stores:
                raise SearchError(409, f"Cannot create index '{name}' because it already exists.")
            definition, _ = self.create_or_update_index(name if isinstance(name, str) else "", raw)
            return definition

    def create_or_update_index(
        self, name: str, raw: Any, if_match: str | None = None, if_none_match: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """(definition with @odata.etag, created?)"""
        with self.lock:
            existing = self.stores.get(name)
            self._check_conditions(existing, if_match, if_none_match)
            schema = parse_index(raw, name or None)
            etag = _new_etag()
            if existing is None:
                store = IndexStore.create(self.root / f"{schema.name}.sqlite", schema, etag)
                self.stores[schema.name] = store
                log.info("created index '%s'", schema.name)
                return self._definition(store), True
            check_update(existing.schema, schema)
            existing.update_schema(schema, etag)
            log.info("updated index '%s'", schema.name)
            return self._definition(existing), False

    @staticmethod
    def _check_conditions(store: IndexStore | None, if_match: str | None, if_none_match: str | None) -> None:
        if if_match is not None and (store is None or (if_match != "*" and if_match != store.etag)):
            raise SearchError(412, "The precondition given in the If-Match header was not met.")
        if (
            if_none_match is not None
            and store is not None
            and (if_none_match == "*" or if_none_match == store.etag)
        ):
            raise SearchError(412, "The precondition given in the If-None-Match header was not met.")

    def get_index(self, name: str) -> dict[str, Any]:
        return self._definition(self.store(name))

    def list_indexes(self, select: list[str] | None = None) -> list[dict[str, Any]]:
        with self.lock:
            out = [self._definition(s) for _, s in sorted(self.stores.items())]
        if select and select != ["*"]:
            out = [
                {k: v for k, v in d.items() if k in select or k == "@odata.etag" and "@odata.etag" in select}
                for d in out
            ]
        return out

    def delete_index(self, name: str, if_match: str | None = None) -> None:
        with self.lock:
            store = self.store(name)
            self._check_conditions(store, if_match, None)
            del self.stores[name]
            store.delete_files()
            log.info("deleted index '%s'", name)

    def index_stats(self, name: str) -> dict[str, Any]:
        store = self.store(name)
        vector_bytes = sum(len(c) * c.dimensions * 4 for c in store.vectors.values())
        return {
            "documentCount": store.doc_count,
            "storageSize": store.storage_size(),
            "vectorIndexSize": vector_bytes,
        }

    # --------------------------------------------------------------- documents
    def index_documents(self, name: str, body: Any) -> tuple[list[dict[str, Any]], int]:
        """(per-document results, HTTP status: 200, or 207 when any document failed)."""
        store = self.store(name)
        if not isinstance(body, dict) or "value" not in body:
            raise bad_request(
                "The request is invalid. Details: the body must be a JSON object with a 'value' "
                "array of index actions."
            )
        results = store.apply_batch(prepare_actions(store.schema, body["value"]))
        return results, 207 if any(not r["status"] for r in results) else 200

    def get_document(self, name: str, key: str, select: str | None = None) -> dict[str, Any]:
        store = self.store(name)
        fields = parse_select(select, store.schema)
        doc_id = store.lookup(key)
        if doc_id is None:
            raise SearchError(404, f"Document with key '{key}' was not found.", "DocumentNotFound")
        bodies = store.bodies([doc_id])
        vector_fields = [f for f in fields if f.is_vector]
        vectors = store.stored_vectors([doc_id], vector_fields) if vector_fields else {}
        return shape_document(bodies[doc_id], fields, vectors, doc_id)

    def count(self, name: str) -> int:
        return self.store(name).doc_count

    def search(self, name: str, body: Any) -> dict[str, Any]:
        store = self.store(name)
        request = parse_search(body, store.schema, store.colmap, store.text_fields)
        return execute(store, request)

    @staticmethod
    def valid_index_name(name: str) -> bool:
        return bool(INDEX_NAME.match(name))
