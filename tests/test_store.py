"""The customer store (SQLite) loads idempotently and returns customers with all their orders."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labkit import store
from labkit.config import Settings
from labkit.schema import load_orders


def test_load_is_idempotent_and_counts_match_data(isolated_home: Settings) -> None:
    first = store.load_data()
    second = store.load_data()
    assert first == second == {"customers": 14, "orders": len(load_orders())}


def test_customer_has_every_order_newest_first(isolated_home: Settings) -> None:
    orders = [o for o in load_orders() if o.customer_id == "C-001"]
    customer = store.get_customer("C-001")  # loads on first use
    assert customer["email"].endswith("@example.com")
    newest_first = sorted(orders, key=lambda o: (o.date, o.id), reverse=True)
    assert [o["id"] for o in customer["orders"]] == [o.id for o in newest_first]
    assert all(o["product_name"] for o in customer["orders"])


@pytest.mark.parametrize("bad", ["C-999", "c-001", "", "C-001; DROP TABLE customers", "../C-001"])
def test_unknown_or_malformed_customer_is_a_clear_error(isolated_home: Settings, bad: str) -> None:
    with pytest.raises(store.CustomerNotFound):
        store.get_customer(bad)


def test_cli_data_load(isolated_home: Settings) -> None:
    out = subprocess.run([sys.executable, "-m", "labkit.cli", "data", "load"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "14 customers" in out
