"""One index: its SQLite file (definition, documents, vectors) plus the in-memory search structures.

Introduced in notebooks/02_index_data.ipynb.

Tables: `meta` (definition, etag, column map), `docs` (id, key, JSON body, one typed column
`c<n>` per simple field for filters, sorting and facets), `coll` (string-collection values) and
`vec` (raw float32 vectors). At start the text index and the vector matrices are rebuilt in
memory from these tables. One connection per index, guarded by a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .schema import KEY_VALUE, Field, IndexSchema, parse_index
from .textindex import TextIndex
from .values import Action, convert_value
from .vectors import VectorColumn

VectorOp = tuple[str, int, "np.ndarray | None"]


class IndexStore:
    def __init__(
        self, path: Path, conn: sqlite3.Connection, schema: IndexSchema, etag: str, colmap: dict[str, int]
    ) -> None:
        self.path = path
        self.conn = conn
        self.schema = schema
        self.etag = etag
        self.colmap = colmap
        self.lock = threading.RLock()
        self.vectors: dict[str, VectorColumn] = {}
        self.text = TextIndex([])
        self.doc_count = conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        self._load_memory()

    # ------------------------------------------------------------------ lifecycle
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "temp_store=MEMORY", "cache_size=-65536"):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    @classmethod
    def create(cls, path: Path, schema: IndexSchema, etag: str) -> IndexStore:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        conn = cls._connect(path)
        colmap = {f.name: i for i, f in enumerate(schema.fields)}
        cols = "".join(f", c{colmap[f.name]}" for f in schema.fields if f.is_simple)
        with conn:
            conn.execute("BEGIN")
            conn.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
            conn.execute(
                f"CREATE TABLE docs (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, "
                f"body TEXT NOT NULL{cols})"
            )
            conn.execute("CREATE TABLE coll (id INTEGER NOT NULL, f INTEGER NOT NULL, v TEXT NOT NULL)")
            conn.execute("CREATE INDEX coll_fv ON coll (f, v)")
            conn.execute("CREATE INDEX coll_id ON coll (id)")
            conn.execute(
                "CREATE TABLE vec (id INTEGER NOT NULL, f INTEGER NOT NULL, v BLOB NOT NULL, "
                "PRIMARY KEY (id, f)) WITHOUT ROWID"
            )
            cls._save_meta(conn, schema, etag, colmap)
        return cls(path, conn, schema, etag, colmap)

    @classmethod
    def open(cls, path: Path) -> IndexStore:
        conn = cls._connect(path)
        meta = dict(conn.execute("SELECT k, v FROM meta").fetchall())
        schema = parse_index(json.loads(meta["definition"]))
        return cls(path, conn, schema, meta["etag"], json.loads(meta["colmap"]))

    @staticmethod
    def _save_meta(conn: sqlite3.Connection, schema: IndexSchema, etag: str, colmap: dict[str, int]) -> None:
        rows = {"definition": json.dumps(schema.definition), "etag": etag, "colmap": json.dumps(colmap)}
        conn.executemany("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", list(rows.items()))

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def delete_files(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    def _load_memory(self) -> None:
        """(Re)build the text index and the vector matrices from the database."""
        self.text = TextIndex(self.text_fields)
        for doc_id, body in self.conn.execute("SELECT id, body FROM docs ORDER BY id"):
            self.text.set(doc_id, json.loads(body))
        self.vectors = {
            f.name: VectorColumn(f.dimensions or 0, self.schema.metrics.get(f.name, "cosine"))
            for f in self.schema.vector_fields
        }
        by_no = {self.colmap[f.name]: f.name for f in self.schema.vector_fields}
        for doc_id, fno, blob in self.conn.execute("SELECT id, f, v FROM vec ORDER BY id"):
            name = by_no.get(fno)
            if name is not None:
                self.vectors[name].set(doc_id, np.frombuffer(blob, dtype=np.float32))

    @property
    def text_fields(self) -> list[str]:
        return [f.name for f in self.schema.searchable_text]

    def update_schema(self, schema: IndexSchema, etag: str) -> None:
        """Apply an (already checked) update: new fields get new columns; memory is rebuilt."""
        with self.lock:
            colmap = dict(self.colmap)
            with self.conn:
                self.conn.execute("BEGIN")
                for fld in schema.fields:
                    if fld.name not in colmap:
                        colmap[fld.name] = max(colmap.values(), default=-1) + 1
                        if fld.is_simple:
                            self.conn.execute(f"ALTER TABLE docs ADD COLUMN c{colmap[fld.name]}")
                self._save_meta(self.conn, schema, etag, colmap)
            self.schema, self.etag, self.colmap = schema, etag, colmap
            self._load_memory()

    # ------------------------------------------------------------------ writes
    def apply_batch(self, prepared: list[Action]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        vector_ops: list[VectorOp] = []
        text_ops: list[tuple[int, dict[str, Any] | None]] = []
        with self.lock:
            with self.conn:
                self.conn.execute("BEGIN")
                for action, key, body, vectors in prepared:
                    if not KEY_VALUE.match(key):
                        results.append(
                            _result(
                                key,
                                400,
                                f"Invalid document key: '{key}'. Keys can only contain "
                                "letters, digits, underscore (_), dash (-), or equal "
                                "sign (=).",
                            )
                        )
                        continue
                    row = self.conn.execute("SELECT id, body FROM docs WHERE key = ?", (key,)).fetchone()
                    if action == "delete":
                        if row is not None:
                            self._delete(row[0], vector_ops)
                            text_ops.append((row[0], None))
                        results.append(_result(key, 200))
                    elif action == "merge" and row is None:
                        results.append(_result(key, 404, "Document not found."))
                    elif row is None or action == "upload":
                        doc_id = self._write(row[0] if row else None, key, body, vectors, True, vector_ops)
                        text_ops.append((doc_id, body))
                        results.append(_result(key, 200 if row else 201))
                    else:
                        merged = json.loads(row[1])
                        merged.update(body)
                        self._write(row[0], key, merged, vectors, False, vector_ops)
                        text_ops.append((row[0], merged))
                        results.append(_result(key, 200))
            for doc_id, doc in text_ops:
                if doc is None:
                    self.text.remove(doc_id)
                else:
                    self.text.set(doc_id, doc)
            for name, doc_id, vec in vector_ops:
                if vec is None:
                    self.vectors[name].remove(doc_id)
                else:
                    self.vectors[name].set(doc_id, vec)
            self.doc_count = self.conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        return results

    def _write(
        self,
        doc_id: int | None,
        key: str,
        body: dict[str, Any],
        vectors: dict[str, Any],
        replace: bool,
        vector_ops: list[VectorOp],
    ) -> int:
        schema = self.schema
        body[schema.key.name] = key
        simple = [f for f in schema.fields if f.is_simple]
        col_values = [convert_value(f, body.get(f.name))[1] for f in simple]
        text = json.dumps(body, separators=(",", ":"))
        if doc_id is None:
            names = "".join(f", c{self.colmap[f.name]}" for f in simple)
            marks = ", ?" * len(simple)
            cur = self.conn.execute(
                f"INSERT INTO docs (key, body{names}) VALUES (?, ?{marks})", [key, text, *col_values]
            )
            doc_id = int(cur.lastrowid or 0)
        else:
            sets = "".join(f", c{self.colmap[f.name]} = ?" for f in simple)
            self.conn.execute(f"UPDATE docs SET body = ?{sets} WHERE id = ?", [text, *col_values, doc_id])
            self.conn.execute("DELETE FROM coll WHERE id = ?", (doc_id,))
        coll_rows = [
            (doc_id, self.colmap[f.name], v)
            for f in schema.fields
            if f.is_collection
            for v in (body.get(f.name) or [])
        ]
        if coll_rows:
            self.conn.executemany("INSERT INTO coll (id, f, v) VALUES (?, ?, ?)", coll_rows)
        for fld in schema.vector_fields:
            if fld.name in vectors or replace:
                vec = vectors.get(fld.name)
                fno = self.colmap[fld.name]
                if vec is None:
                    self.conn.execute("DELETE FROM vec WHERE id = ? AND f = ?", (doc_id, fno))
                else:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO vec (id, f, v) VALUES (?, ?, ?)", (doc_id, fno, vec.tobytes())
                    )
                vector_ops.append((fld.name, doc_id, vec))
        return doc_id

    def _delete(self, doc_id: int, vector_ops: list[VectorOp]) -> None:
        for table in ("docs", "coll", "vec"):
            self.conn.execute(f"DELETE FROM {table} WHERE id = ?", (doc_id,))
        vector_ops.extend((f.name, doc_id, None) for f in self.schema.vector_fields)

    # ------------------------------------------------------------------ reads
    def all_ids(self) -> np.ndarray:
        with self.lock:
            mask, _ = self.text.match_all()
            return np.flatnonzero(mask)

    def filter_ids(self, sql: str, params: list[Any]) -> np.ndarray:
        with self.lock:
            rows = self.conn.execute(f"SELECT id FROM docs d WHERE {sql} ORDER BY id", params)
            return np.fromiter((r[0] for r in rows), np.int64)

    def column_values(self, ids: list[int], fields: list[Field]) -> dict[int, tuple[Any, ...]]:
        cols = ", ".join(f"c{self.colmap[f.name]}" for f in fields)
        with self.lock:
            rows = self.conn.execute(
                f"SELECT id, {cols} FROM docs WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            ).fetchall()
        return {r[0]: r[1:] for r in rows}

    def facet_counts(self, ids: list[int] | None, fld: Field) -> list[tuple[Any, int]]:
        """(value, count) of a field over the given documents (None = every document)."""
        fno = self.colmap[fld.name]
        where = "" if ids is None else " AND id IN (SELECT value FROM json_each(?))"
        params: list[Any] = [] if ids is None else [json.dumps(ids)]
        if fld.is_collection:
            sql = f"SELECT v, COUNT(DISTINCT id) FROM coll WHERE f = {fno}{where} GROUP BY v"
        else:
            sql = f"SELECT c{fno}, COUNT(*) FROM docs WHERE c{fno} IS NOT NULL{where} GROUP BY c{fno}"
        with self.lock:
            return [(v, n) for v, n in self.conn.execute(sql, params).fetchall()]

    def bodies(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT id, body FROM docs WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)
            ).fetchall()
        return {doc_id: json.loads(body) for doc_id, body in rows}

    def stored_vectors(self, ids: list[int], fields: list[Field]) -> dict[tuple[int, str], list[float]]:
        by_no = {self.colmap[f.name]: f.name for f in fields}
        numbers = ", ".join(str(n) for n in by_no)
        with self.lock:
            rows = self.conn.execute(
                f"SELECT id, f, v FROM vec WHERE f IN ({numbers}) AND id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            ).fetchall()
        return {
            (doc_id, by_no[fno]): [float(str(x)) for x in np.frombuffer(blob, dtype=np.float32)]
            for doc_id, fno, blob in rows
        }

    def lookup(self, key: str) -> int | None:
        with self.lock:
            row = self.conn.execute("SELECT id FROM docs WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def storage_size(self) -> int:
        paths = [Path(str(self.path) + s) for s in ("", "-wal")]
        return sum(p.stat().st_size for p in paths if p.exists())


def _result(key: str, status: int, message: str | None = None) -> dict[str, Any]:
    return {"key": key, "status": status < 300, "errorMessage": message, "statusCode": status}
