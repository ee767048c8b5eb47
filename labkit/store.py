"""The customer store: customers with all their orders. SQLite locally, Azure Cosmos DB when configured.

Introduced in notebooks/02_index_data.ipynb. `get_customer(id)` returns the customer with every
order (newest first, with product names); an unknown id raises `CustomerNotFound`. `load_data()`
(`labkit data load`) is idempotent: loading twice leaves identical counts.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Protocol

from labkit.config import Settings, get_settings
from labkit.schema import CUSTOMER_ID_RE, load_customers, load_orders, load_products


class CustomerNotFound(LookupError):
    """No customer with this id in the active store."""

    def _render_traceback_(self) -> list[str]:
        return [f"CustomerNotFound: {self}"]


class Store(Protocol):
    def load(self) -> dict[str, int]: ...
    def get_customer(self, customer_id: str) -> dict[str, Any]: ...
    def counts(self) -> dict[str, int]: ...


def _check_id(customer_id: str) -> str:
    if not isinstance(customer_id, str) or not CUSTOMER_ID_RE.match(customer_id):
        raise CustomerNotFound(f"{customer_id!r} is not a customer id (expected the form C-001)")
    return customer_id


def _documents() -> list[dict[str, Any]]:
    """One document per customer with its orders embedded (the Cosmos DB shape; SQLite rebuilds it)."""
    names = {p.id: p.name for p in load_products()}
    orders: dict[str, list[dict[str, Any]]] = {}
    for order in load_orders():
        row = order.model_dump(mode="json")
        row["product_name"] = names[order.product_id]
        orders.setdefault(order.customer_id, []).append(row)
    docs = []
    for customer in load_customers():
        doc = customer.model_dump(mode="json")
        doc["orders"] = sorted(orders.get(customer.id, []), key=lambda o: (o["date"], o["id"]), reverse=True)
        docs.append(doc)
    return docs


class SqliteStore:
    """Customers and orders in one SQLite file under LABKIT_HOME (loaded from data/ on first use)."""

    def __init__(self, path: Path):
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path)
        conn.row_factory = sqlite3.Row
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS orders (
                id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id),
                product_id TEXT NOT NULL, product_name TEXT NOT NULL, quantity INTEGER NOT NULL,
                unit_price REAL NOT NULL, total REAL NOT NULL, date TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS orders_by_customer ON orders(customer_id, date);
            """
        )
        return conn

    def load(self) -> dict[str, int]:
        docs = _documents()
        with self._connect() as conn:
            conn.execute("DELETE FROM orders")
            conn.execute("DELETE FROM customers")
            for doc in docs:
                orders = doc.pop("orders")
                conn.execute("INSERT INTO customers VALUES (?, ?)", (doc["id"], json.dumps(doc)))
                conn.executemany(
                    "INSERT INTO orders VALUES (:id, :customer_id, :product_id, :product_name, :quantity, "
                    ":unit_price, :total, :date)", orders)
        return self.counts()

    def counts(self) -> dict[str, int]:
        with self._connect() as conn:
            return {"customers": conn.execute("SELECT count(*) FROM customers").fetchone()[0],
                    "orders": conn.execute("SELECT count(*) FROM orders").fetchone()[0]}

    def get_customer(self, customer_id: str) -> dict[str, Any]:
        _check_id(customer_id)
        if not self.path.exists() or self.counts()["customers"] == 0:
            self.load()
        with self._connect() as conn:
            row = conn.execute("SELECT doc FROM customers WHERE id = ?", (customer_id,)).fetchone()
            if row is None:
                raise CustomerNotFound(f"no customer {customer_id} in the local store")
            doc = json.loads(row["doc"])
            orders = conn.execute(
                "SELECT id, customer_id, product_id, product_name, quantity, unit_price, total, date "
                "FROM orders WHERE customer_id = ? ORDER BY date DESC, id DESC", (customer_id,)).fetchall()
        doc["orders"] = [dict(o) for o in orders]
        return doc


class CosmosStore:
    """Customers (orders embedded) in an Azure Cosmos DB container partitioned by /id."""

    CONTAINER = "customers"

    def __init__(self, settings: Settings):
        from azure.cosmos import CosmosClient, PartitionKey

        assert settings.azure_cosmos_endpoint
        credential: Any
        if settings.azure_cosmos_key:
            credential = settings.azure_cosmos_key.get_secret_value()
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        client = CosmosClient(settings.azure_cosmos_endpoint, credential=credential)
        database = client.create_database_if_not_exists(settings.azure_cosmos_database)
        self.container = database.create_container_if_not_exists(
            id=self.CONTAINER, partition_key=PartitionKey(path="/id"))

    def load(self) -> dict[str, int]:
        for doc in _documents():
            self.container.upsert_item(doc)
        return self.counts()

    def counts(self) -> dict[str, int]:
        docs = list(self.container.query_items(
            "SELECT VALUE ARRAY_LENGTH(c.orders) FROM c", enable_cross_partition_query=True))
        return {"customers": len(docs), "orders": int(sum(docs))}

    def get_customer(self, customer_id: str) -> dict[str, Any]:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        _check_id(customer_id)
        try:
            doc = self.container.read_item(item=customer_id, partition_key=customer_id)
        except CosmosResourceNotFoundError:
            raise CustomerNotFound(f"no customer {customer_id} in Cosmos DB") from None
        return {k: v for k, v in doc.items() if not re.match(r"^_", k)}


def customer_store(settings: Settings | None = None) -> Store:
    """The store of the active backend (`LABKIT_STORE_BACKEND`, default local SQLite)."""
    settings = settings or get_settings()
    settings.check(["store"])
    if settings.backend_for("store") == "azure":
        return CosmosStore(settings)
    return SqliteStore(settings.home / "store" / "customers.sqlite")


def load_data(settings: Settings | None = None) -> dict[str, int]:
    """Load customers and orders from data/ into the active store (idempotent). Returns counts."""
    return customer_store(settings).load()


def get_customer(customer_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """The customer with all orders, newest first. Raises CustomerNotFound for an unknown id."""
    return customer_store(settings).get_customer(customer_id)
