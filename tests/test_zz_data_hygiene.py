"""Personal-data hygiene of a whole run (issue: governance). Named to run last in `make test`, after the
notebooks have executed in the repository's state folder: every file there and in build/, and every
committed file under registry/, eval/ and data/finetune/, is scanned for the e-mail addresses, phone
numbers and names of data/customers.json; a hit is allowed only in a store listed as one that may hold
them (labkit/registry/hygiene.py STORES, docs/data-hygiene.md). After `make workshop`, run it alone:
`.venv/bin/python -m pytest tests/test_zz_data_hygiene.py`."""

from __future__ import annotations

from labkit.registry import hygiene


def test_no_customer_data_where_the_kit_promises_none() -> None:
    findings = hygiene.scan()
    assert not findings, "\n".join(f"{f.path}: {f.kind} {f.value!r} ({f.store})" for f in findings[:20])


def test_every_store_says_what_it_may_hold() -> None:
    assert all(store.holds and store.root in ("home", "build", "repo") for store in hygiene.STORES)
    private = [s.pattern for s in hygiene.STORES if not s.personal]
    for promised in ("traces.sqlite", "logs/requests.jsonl", "monitor/**", "registry.sqlite", "registry/**"):
        assert promised in private
