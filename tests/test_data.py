"""The shipped Contoso Outdoors data is valid, and the validator catches the mistakes it is meant to catch."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from labkit import schema


@pytest.fixture(scope="module")
def products() -> list[schema.Product]:
    return schema.load_products()


@pytest.fixture(scope="module")
def orders() -> list[schema.Order]:
    return schema.load_orders()


@pytest.fixture()
def data_copy(tmp_path: Path) -> Path:
    """A writable copy of data/ for tests that break something on purpose."""
    target = tmp_path / "data"
    shutil.copytree(schema.DATA_DIR, target)
    return target


def _edit_json(path: Path, edit) -> None:
    rows = json.loads(path.read_text(encoding="utf-8"))
    edit(rows)
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")


def _problems_matching(data_dir: Path, pattern: str) -> list[str]:
    problems = schema.validate_data(data_dir)
    assert problems, "the validator found nothing wrong"
    return [p for p in problems if re.search(pattern, p)]


# ------------------------------------------------------------------------------------ shipped data


def test_shipped_data_is_valid() -> None:
    assert schema.validate_data() == []


def test_catalog_shape(products: list[schema.Product]) -> None:
    assert len(products) >= 24
    per_category = Counter(p.category for p in products)
    assert set(per_category) == set(schema.CATEGORIES)
    assert all(n >= 3 for n in per_category.values()), per_category
    assert 4 <= len({p.brand for p in products}) <= 6
    tents = [p.price for p in products if p.category == "Tents"]
    assert min(tents) < 200 < max(tents)
    assert min(p.price for p in products) < 30 and max(p.price for p in products) > 500


def test_sleeping_bags_answer_lightest_and_coldest(products: list[schema.Product]) -> None:
    bags = sorted((p for p in products if p.category == "Sleeping Bags"), key=lambda p: p.weight_g or 0)
    assert all(b.temp_rating_c is not None for b in bags)
    assert bags[0].weight_g < bags[1].weight_g, "the lightest sleeping bag must be unambiguous"
    assert any(b.temp_rating_c <= -10 for b in bags)


def test_customers_and_orders_coverage(orders: list[schema.Order]) -> None:
    customers = schema.load_customers()
    assert len(customers) >= 12 and len(orders) >= 40
    per_customer = Counter(o.customer_id for o in orders)
    assert all(per_customer[c.id] >= 2 for c in customers)
    assert max(per_customer.values()) >= 5
    assert len({o.product_id for o in orders}) >= 20


def test_manuals_are_long_with_sections_and_facts(products: list[schema.Product]) -> None:
    for product in products:
        text = schema.load_manual(product.id)
        assert schema.word_count(text) >= 550, product.id
        assert list(schema.manual_sections(product.id)) == list(schema.MANUAL_SECTIONS), product.id
        assert len(schema.manual_facts(product.id)) >= 3, product.id


def test_manual_facts_are_stated_in_the_body(products: list[schema.Product]) -> None:
    for product in products:
        body = " ".join(schema.strip_comments(schema.load_manual(product.id)).split()).lower()
        for fact in schema.manual_facts(product.id):
            assert " ".join(fact.split()).lower() in body, (product.id, fact)


def test_manual_specs_match_catalog(products: list[schema.Product]) -> None:
    for product in products:
        specs = schema.manual_sections(product.id)["Technical Specifications"]
        for key, value in product.specs.items():
            assert f"| {key} | {value} |" in specs, (product.id, key)


# ----------------------------------------------------------------------------- validator catches


def test_validator_catches_bad_total(data_copy: Path) -> None:
    _edit_json(data_copy / "orders.json", lambda rows: rows[0].update(total=rows[0]["total"] + 10))
    assert _problems_matching(data_copy, r"orders\.json\[0\].*total")


def test_validator_catches_wrong_unit_price(data_copy: Path) -> None:
    def edit(rows: list[dict]) -> None:
        rows[1]["unit_price"] = round(rows[1]["unit_price"] + 1, 2)
        rows[1]["total"] = round(rows[1]["quantity"] * rows[1]["unit_price"], 2)

    _edit_json(data_copy / "orders.json", edit)
    assert _problems_matching(data_copy, r"orders\.json\[1\].*catalog price")


def test_validator_catches_unknown_product_id(data_copy: Path) -> None:
    _edit_json(data_copy / "orders.json", lambda rows: rows[2].update(product_id="P-999"))
    assert _problems_matching(data_copy, r"unknown product id 'P-999'")


def test_validator_catches_unknown_customer_and_bad_ids(data_copy: Path) -> None:
    _edit_json(data_copy / "orders.json", lambda rows: rows[3].update(customer_id="C-999", id="O-1"))
    assert _problems_matching(data_copy, r"unknown customer id 'C-999'")
    assert _problems_matching(data_copy, r"malformed id 'O-1'")


def test_validator_catches_placeholders(data_copy: Path) -> None:
    def edit(rows: list[dict]) -> None:
        rows[0]["description"] = "Lorem ipsum dolor sit amet."
        rows[1]["brand"] = "N/A"
        rows[2]["specs"]["Weight"] = "TODO"

    _edit_json(data_copy / "products.json", edit)
    assert _problems_matching(data_copy, r"products\.json\[0\].*description.*placeholder")
    assert _problems_matching(data_copy, r"products\.json\[1\].*brand.*placeholder")
    assert _problems_matching(data_copy, r"products\.json\[2\].*specs\.Weight.*placeholder")


def test_validator_catches_bad_category_email_and_phone(data_copy: Path) -> None:
    _edit_json(data_copy / "products.json", lambda rows: rows[0].update(category="Kayaks"))
    _edit_json(
        data_copy / "customers.json", lambda rows: rows[0].update(email="a@real-mail.test", phone="555-1234")
    )
    assert _problems_matching(data_copy, r"unknown category 'Kayaks'")
    assert _problems_matching(data_copy, r"example\.com")
    assert _problems_matching(data_copy, r"555-01xx")


def test_validator_catches_short_manual(data_copy: Path) -> None:
    path = data_copy / "manuals" / "P-005.md"
    text = path.read_text(encoding="utf-8")
    sections = text.split("\n## ")
    short = "\n## ".join(s.split("\n\n")[0] + "\n\nShort." for s in sections)
    short += "\n<!-- facts:\n- one\n- two\n- three\n-->\n"
    path.write_text(short, encoding="utf-8")
    problems = _problems_matching(data_copy, r"manuals/P-005\.md")
    assert any(re.search(r"\d+ words, need 500", p) for p in problems), problems
    assert not any("missing sections" in p for p in problems), problems


def test_validator_catches_missing_section_facts_and_manual(data_copy: Path) -> None:
    manuals = data_copy / "manuals"
    text = (manuals / "P-002.md").read_text(encoding="utf-8")
    text = text.replace("## Cautions", "## Warnings")
    text = re.sub(r"<!-- facts:.*?-->", "", text, flags=re.DOTALL)
    (manuals / "P-002.md").write_text(text, encoding="utf-8")
    (manuals / "P-003.md").unlink()
    assert _problems_matching(data_copy, r"P-002\.md: missing sections \['Cautions'\]")
    assert _problems_matching(data_copy, r"P-002\.md: 0 facts")
    assert _problems_matching(data_copy, r"P-003\.md: missing manual")


def test_validator_reports_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "products.json").write_text("{not json", encoding="utf-8")
    problems = schema.validate_data(tmp_path)
    assert any(p.startswith("products.json: cannot be read") for p in problems)
    assert any(p.startswith("customers.json: file is missing") for p in problems)


def test_parsers_on_inline_text() -> None:
    text = "# T\n\nIntro\n\n## A\n\none\n\n## B\n\ntwo\n<!-- facts:\n- first fact\n- second\n-->\n"
    assert schema.parse_sections(text) == {"A": "one", "B": "two"}
    assert schema.parse_facts(text) == ["first fact", "second"]
    assert schema.word_count(text) == 9
    with pytest.raises(ValueError):
        schema.load_manual("../secrets")
