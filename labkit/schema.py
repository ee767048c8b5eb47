"""Data models, loaders and a validator for the Contoso Outdoors data in ``data/``.

The catalog (``products.json``), the customers (``customers.json``), their orders (``orders.json``) and one
Markdown owner's manual per product (``manuals/P-001.md`` ...) are what the retrieval notebooks index.
Every loader takes an optional ``data_dir`` so that tests can point it at a modified copy.

Introduced in notebooks/02_index_data.ipynb.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

CATEGORIES: tuple[str, ...] = (
    "Tents",
    "Backpacks",
    "Sleeping Bags",
    "Footwear",
    "Clothing",
    "Camp Stoves",
    "Camp Furniture",
    "Navigation",
)
MEMBERSHIPS: tuple[str, ...] = ("Base", "Gold", "Platinum")
MANUAL_SECTIONS: tuple[str, ...] = (
    "Features",
    "Technical Specifications",
    "User Guide",
    "Care and Maintenance",
    "Cautions",
    "Warranty",
    "Returns",
    "FAQ",
)
MIN_MANUAL_WORDS = 500
MIN_MANUAL_FACTS = 3
MIN_FAQ_PAIRS = 3
FIRST_ORDER_DATE = dt.date(2025, 1, 1)
LAST_ORDER_DATE = dt.date(2026, 11, 1)

PRODUCT_ID_RE = re.compile(r"^P-\d{3}$")
# a product id anywhere in a text, in any bracket or bare: [P-004], (P-004), {P-004}, P-004
# (not inside a longer token such as AP-0041); citation checks and metrics use this one pattern
PRODUCT_ID_IN_TEXT_RE = re.compile(r"(?<![A-Za-z0-9_-])(P-\d{3})(?![0-9A-Za-z_])")
CUSTOMER_ID_RE = re.compile(r"^C-\d{3}$")
ORDER_ID_RE = re.compile(r"^O-\d{4}$")
PHONE_RE = re.compile(r"^555-01\d{2}$")
EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@example\.com$")

# A string that is exactly one of these (case-insensitive, stripped) is a placeholder...
_PLACEHOLDER_VALUES = frozenset(
    {"", "-", "?", "n/a", "na", "nan", "none", "null", "tbd", "todo", "xxx", "placeholder", "unknown"}
)
# ...and so is any text containing one of these words.
_PLACEHOLDER_WORDS = re.compile(r"\b(todo|tbd|fixme|lorem|ipsum|x{3,})\b", re.IGNORECASE)
_FACTS_RE = re.compile(r"<!--\s*facts:\s*\n(.*?)-->", re.DOTALL)
_COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
_FAQ_QUESTION_RE = re.compile(r"^\s*(\*\*)?Q:", re.MULTILINE)
_FAQ_ANSWER_RE = re.compile(r"^\s*(\*\*)?A:", re.MULTILINE)


class Product(BaseModel):
    """One catalog row; ``weight_g``, ``temp_rating_c`` and ``capacity`` are normalised for filtering."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    category: str
    brand: str
    price: float = Field(gt=0, description="USD")
    description: str
    features: list[str] = Field(min_length=1)
    specs: dict[str, str]
    warranty: str
    return_policy: str
    rating: float = Field(ge=1, le=5)
    weight_g: int | None = Field(default=None, gt=0)
    temp_rating_c: float | None = Field(default=None, description="limit temperature in degrees Celsius")
    capacity: float | None = Field(default=None, gt=0, description="persons, litres or seats")


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")

    street: str
    city: str
    state: str
    postal_code: str
    country: str


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    first_name: str
    last_name: str
    age: int = Field(ge=0, le=130)
    email: str
    phone: str
    address: Address
    membership: str

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    customer_id: str
    product_id: str
    quantity: int = Field(ge=1)
    unit_price: float = Field(gt=0)
    total: float = Field(gt=0)
    date: dt.date


# --------------------------------------------------------------------------------------------- loaders


def _dir(data_dir: Path | str | None) -> Path:
    return DATA_DIR if data_dir is None else Path(data_dir)


def _read_json(path: Path) -> list[dict[str, Any]]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ValueError(f"{path.name}: expected a JSON list, got {type(raw).__name__}")
    return raw


def short_name(name: str) -> str:
    """What customers call a product: 'Skyfall 2 UL Backpacking Tent' -> 'Skyfall 2 UL',
    'Spark Pro Regulated Canister Stove' -> 'Spark Pro', 'Spark Canister Stove' -> 'Spark stove'."""
    words = name.split()
    for i, w in enumerate(words):
        if i > 0 and any(ch.isdigit() for ch in w):
            return " ".join(words[: i + 1 + (words[i + 1 : i + 2] == ["UL"])])
    if len(words) > 2 and words[1] in {"Mid", "Pro", "Lite", "Plus"}:
        return " ".join(words[:2])
    return f"{words[0]} {words[-1].lower()}" if len(words) > 1 else name


def load_products(data_dir: Path | str | None = None) -> list[Product]:
    return [Product.model_validate(row) for row in _read_json(_dir(data_dir) / "products.json")]


def load_customers(data_dir: Path | str | None = None) -> list[Customer]:
    return [Customer.model_validate(row) for row in _read_json(_dir(data_dir) / "customers.json")]


def load_orders(data_dir: Path | str | None = None) -> list[Order]:
    return [Order.model_validate(row) for row in _read_json(_dir(data_dir) / "orders.json")]


def manual_path(product_id: str, data_dir: Path | str | None = None) -> Path:
    if not PRODUCT_ID_RE.match(product_id):
        raise ValueError(f"not a product id: {product_id!r}")
    return _dir(data_dir) / "manuals" / f"{product_id}.md"


def load_manual(product_id: str, data_dir: Path | str | None = None) -> str:
    """The full Markdown text of a product's manual, including the trailing facts comment."""
    return manual_path(product_id, data_dir).read_text(encoding="utf-8")


def strip_comments(text: str) -> str:
    """Manual text without HTML comments (the facts block is metadata, not content)."""
    return _COMMENT_RE.sub("", text).strip()


def parse_facts(text: str) -> list[str]:
    """The ``- fact`` lines of a ``<!-- facts: ... -->`` block, or [] when there is none."""
    match = _FACTS_RE.search(text)
    if not match:
        return []
    facts = []
    for line in match.group(1).splitlines():
        line = line.strip()
        if line.startswith("- ") and line[2:].strip():
            facts.append(line[2:].strip())
    return facts


def parse_sections(text: str) -> dict[str, str]:
    """``## Title`` -> the text under it (up to the next ``##`` heading), in document order."""
    sections: dict[str, str] = {}
    title: str | None = None
    lines: list[str] = []
    for line in strip_comments(text).splitlines():
        if line.startswith("## "):
            if title is not None:
                sections[title] = "\n".join(lines).strip()
            title, lines = line[3:].strip(), []
        elif title is not None:
            lines.append(line)
    if title is not None:
        sections[title] = "\n".join(lines).strip()
    return sections


def word_count(text: str) -> int:
    """Whitespace-separated words, not counting HTML comments."""
    return len(strip_comments(text).split())


def manual_facts(product_id: str, data_dir: Path | str | None = None) -> list[str]:
    """Facts stated in the manual but not in the catalog row (expected answers for the evaluation set)."""
    return parse_facts(load_manual(product_id, data_dir))


def manual_sections(product_id: str, data_dir: Path | str | None = None) -> dict[str, str]:
    return parse_sections(load_manual(product_id, data_dir))


# ------------------------------------------------------------------------------------------- validator


def _walk_strings(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Yield (location, leaf) for every leaf value of a JSON structure; dict keys count as leaves too."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{where}.{key}", key
            yield from _walk_strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk_strings(item, f"{where}[{i}]")
    else:
        yield where, value


def _placeholder_problems(record: Any, where: str) -> list[str]:
    problems = []
    for loc, leaf in _walk_strings(record, where):
        if isinstance(leaf, float) and not math.isfinite(leaf):
            problems.append(f"{loc}: not a finite number ({leaf})")
        elif isinstance(leaf, str):
            if leaf.strip().lower() in _PLACEHOLDER_VALUES:
                problems.append(f"{loc}: placeholder or empty value {leaf!r}")
            elif _PLACEHOLDER_WORDS.search(leaf):
                problems.append(f"{loc}: placeholder text in {leaf[:60]!r}")
    return problems


def _validation_problems(where: str, err: ValidationError) -> list[str]:
    return [f"{where}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]


def _load_raw(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    try:
        rows = _read_json(path)
    except FileNotFoundError:
        problems.append(f"{path.name}: file is missing")
        return []
    except (ValueError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name}: cannot be read ({exc})")
        return []
    good = []
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            good.append(row)
        else:
            problems.append(f"{path.name}[{i}]: expected an object")
    return good


def _check_ids(name: str, rows: list[dict[str, Any]], pattern: re.Pattern[str], problems: list[str]) -> None:
    counts = Counter(str(row.get("id")) for row in rows)
    for i, row in enumerate(rows):
        rid = row.get("id")
        if not isinstance(rid, str) or not pattern.match(rid):
            problems.append(f"{name}[{i}]: malformed id {rid!r} (expected {pattern.pattern})")
    for rid, n in sorted(counts.items()):
        if n > 1:
            problems.append(f"{name}: id {rid} is used {n} times")


def _check_products(rows: list[dict[str, Any]], problems: list[str]) -> dict[str, Product]:
    _check_ids("products.json", rows, PRODUCT_ID_RE, problems)
    products: dict[str, Product] = {}
    for i, row in enumerate(rows):
        where = f"products.json[{i}] ({row.get('id')})"
        problems += _placeholder_problems(row, where)
        try:
            product = Product.model_validate(row)
        except ValidationError as err:
            problems += _validation_problems(where, err)
            continue
        products.setdefault(product.id, product)
        if product.category not in CATEGORIES:
            problems.append(f"{where}: unknown category {product.category!r}")
        if round(product.rating, 1) != product.rating:
            problems.append(f"{where}: rating {product.rating} has more than one decimal")
        if round(product.price, 2) != product.price:
            problems.append(f"{where}: price {product.price} has more than two decimals")
        if product.category == "Sleeping Bags" and product.temp_rating_c is None:
            problems.append(f"{where}: sleeping bag without temp_rating_c")
        if len(set(product.features)) != len(product.features):
            problems.append(f"{where}: duplicate features")
    return products


def _check_customers(rows: list[dict[str, Any]], problems: list[str]) -> dict[str, Customer]:
    _check_ids("customers.json", rows, CUSTOMER_ID_RE, problems)
    customers: dict[str, Customer] = {}
    for i, row in enumerate(rows):
        where = f"customers.json[{i}] ({row.get('id')})"
        problems += _placeholder_problems(row, where)
        try:
            customer = Customer.model_validate(row)
        except ValidationError as err:
            problems += _validation_problems(where, err)
            continue
        customers.setdefault(customer.id, customer)
        if not EMAIL_RE.match(customer.email):
            problems.append(f"{where}: e-mail {customer.email!r} is not an @example.com address")
        if not PHONE_RE.match(customer.phone):
            problems.append(f"{where}: phone {customer.phone!r} is not in the 555-01xx range")
        if customer.membership not in MEMBERSHIPS:
            problems.append(f"{where}: unknown membership {customer.membership!r}")
    for field in ("phone", "email"):
        for value, n in Counter(str(row.get(field)) for row in rows).items():
            if n > 1:
                problems.append(f"customers.json: {field} {value} is used {n} times")
    return customers


def _check_orders(
    rows: list[dict[str, Any]],
    products: dict[str, Product],
    customers: dict[str, Customer],
    problems: list[str],
) -> None:
    _check_ids("orders.json", rows, ORDER_ID_RE, problems)
    for i, row in enumerate(rows):
        where = f"orders.json[{i}] ({row.get('id')})"
        problems += _placeholder_problems(row, where)
        try:
            order = Order.model_validate(row)
        except ValidationError as err:
            problems += _validation_problems(where, err)
            continue
        if order.customer_id not in customers:
            problems.append(f"{where}: unknown customer id {order.customer_id!r}")
        product = products.get(order.product_id)
        if product is None:
            problems.append(f"{where}: unknown product id {order.product_id!r}")
        elif abs(order.unit_price - product.price) > 0.005:
            problems.append(
                f"{where}: unit_price {order.unit_price} differs from the catalog price {product.price}"
            )
        expected = round(order.quantity * order.unit_price, 2)
        if abs(order.total - expected) > 0.005:
            problems.append(f"{where}: total {order.total} != quantity x unit_price = {expected}")
        if not FIRST_ORDER_DATE <= order.date <= LAST_ORDER_DATE:
            problems.append(f"{where}: date {order.date} outside {FIRST_ORDER_DATE}..{LAST_ORDER_DATE}")


def manual_problems(product_id: str, text: str) -> list[str]:
    """Problems with one manual's text (structure, length, facts, placeholders)."""
    where = f"manuals/{product_id}.md"
    problems = []
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first.startswith("# "):
        problems.append(f"{where}: does not start with a '# ' title")
    sections = parse_sections(text)
    missing = [s for s in MANUAL_SECTIONS if s not in sections]
    if missing:
        problems.append(f"{where}: missing sections {missing}")
    order = [s for s in sections if s in MANUAL_SECTIONS]
    if not missing and order != list(MANUAL_SECTIONS):
        problems.append(f"{where}: sections out of order {order}")
    for title in MANUAL_SECTIONS:
        if title in sections and not sections[title].strip():
            problems.append(f"{where}: section {title!r} is empty")
    faq = sections.get("FAQ", "")
    pairs = min(len(_FAQ_QUESTION_RE.findall(faq)), len(_FAQ_ANSWER_RE.findall(faq)))
    if "FAQ" in sections and pairs < MIN_FAQ_PAIRS:
        problems.append(f"{where}: FAQ has {pairs} Q/A pairs, need {MIN_FAQ_PAIRS}")
    words = word_count(text)
    if words < MIN_MANUAL_WORDS:
        problems.append(f"{where}: {words} words, need {MIN_MANUAL_WORDS}")
    facts = parse_facts(text)
    if len(facts) < MIN_MANUAL_FACTS:
        problems.append(f"{where}: {len(facts)} facts in the facts comment, need {MIN_MANUAL_FACTS}")
    body = strip_comments(text)
    match = _PLACEHOLDER_WORDS.search(body)
    if match:
        problems.append(f"{where}: placeholder text {match.group(0)!r}")
    return problems


def validate_data(data_dir: Path | str | None = None) -> list[str]:
    """Human-readable problems with the data set; an empty list means it is valid."""
    root = _dir(data_dir)
    problems: list[str] = []
    products = _check_products(_load_raw(root / "products.json", problems), problems)
    customers = _check_customers(_load_raw(root / "customers.json", problems), problems)
    _check_orders(_load_raw(root / "orders.json", problems), products, customers, problems)
    for product_id in sorted(products):
        path = manual_path(product_id, root)
        if not path.is_file():
            problems.append(f"manuals/{product_id}.md: missing manual for {product_id}")
            continue
        problems += manual_problems(product_id, path.read_text(encoding="utf-8"))
    manuals_dir = root / "manuals"
    if manuals_dir.is_dir():
        for path in sorted(manuals_dir.glob("*.md")):
            if path.stem not in products:
                problems.append(f"manuals/{path.name}: no product with id {path.stem}")
    return problems
