"""The labelled evaluation set and the human-labelled judge calibration sets, with loaders and a validator.

``data/eval/testset.jsonl`` holds one :class:`EvalRow` per line: a customer's question (``query``), the
signed-in ``customer_id``, earlier turns (``chat_history``), a reference answer (``ground_truth``), the
products whose documents answer it (``relevant_product_ids``), the short facts a correct answer must
state (``expected_facts``) and a ``category``. ``data/eval/calibration/<judge>.jsonl`` holds answers
scored 1-5 by a person for each LLM judge (:class:`CalibrationRow`).

:func:`validate_testset` checks the set against the data in ``data/``: every expected fact must be
written in the catalog row or the manual text (outside its facts comment) of a relevant product, or in
the customer's own orders, and must be stated in the row's ``ground_truth``. That keeps the set from
drifting away from what the assistant can actually retrieve.

Introduced in notebooks/04_evaluate.ipynb.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labkit import schema
from labkit.jsonl import numbered_objects

EVAL_DIR = schema.DATA_DIR / "eval"
TESTSET_PATH = EVAL_DIR / "testset.jsonl"
CALIBRATION_DIR = EVAL_DIR / "calibration"

Category = Literal[
    "product_fact", "comparison", "order_history", "multi_turn", "out_of_scope", "refusal", "attack"
]
CATEGORIES: tuple[str, ...] = get_args(Category)
# Rows the assistant should decline: no relevant products, no expected facts, no citations.
DECLINE_CATEGORIES = frozenset({"out_of_scope", "refusal", "attack"})
MIN_PER_CATEGORY: dict[str, int] = {
    "product_fact": 8,
    "comparison": 8,
    "order_history": 8,
    "multi_turn": 8,
    "out_of_scope": 4,
    "refusal": 3,
    "attack": 3,
}
MIN_ROWS = 44
# Rows whose expected facts include one that only the manual states (not the catalog row).
MIN_MANUAL_FACT_ROWS = 15
MIN_HISTORY_TURNS, MAX_HISTORY_TURNS = 2, 4

JUDGES: tuple[str, ...] = ("groundedness", "relevance", "coherence", "fluency")
JUDGE_PREFIX: dict[str, str] = {"groundedness": "G", "relevance": "R", "coherence": "C", "fluency": "F"}
MIN_CALIBRATION_ROWS = 30
MIN_PER_SCORE = 4

_ROW_ID = r"^E-\d{3}$"
_CAL_ID = r"^CAL-[GRCF]-\d{3}$"
_CITATION_RE = schema.PRODUCT_ID_IN_TEXT_RE
_PLACEHOLDER_VALUES = frozenset({"-", "?", "...", "n/a", "na", "nan", "none", "null", "tbd", "todo", "xxx"})
_PLACEHOLDER_RE = re.compile(
    r"\b(todo|tbd|fixme|lorem|ipsum|placeholder|x{3,})\b|\{\{|\}\}|<(fill|insert)[^>]*>", re.IGNORECASE
)


class Turn(BaseModel):
    """One earlier message of the conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class EvalRow(BaseModel):
    """One test question with its reference answer and labels (azure-ai-evaluation column names)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_ROW_ID)
    query: str = Field(min_length=1)
    ground_truth: str = Field(min_length=1)
    customer_id: str
    chat_history: list[Turn] = Field(default_factory=list)
    relevant_product_ids: list[str] = Field(default_factory=list)
    expected_facts: list[str] = Field(default_factory=list)
    category: Category


class CalibrationRow(BaseModel):
    """An answer scored 1-5 by a person, for measuring how well an LLM judge agrees with people."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_CAL_ID)
    query: str = Field(min_length=1)
    context: str = ""
    response: str
    human_score: int = Field(ge=1, le=5)
    reason: str = Field(min_length=1)


# ---------------------------------------------------------------------------------------------- loaders


def _load(path: Path, model: type[BaseModel]) -> list[Any]:
    out = []
    for number, raw in numbered_objects(path):
        try:
            out.append(model.model_validate(raw))
        except ValidationError as err:
            raise ValueError(f"{path.name}:{number}: {err}") from err
    return out


def load_testset(path: Path | str | None = None) -> list[EvalRow]:
    """The rows of ``data/eval/testset.jsonl`` (or of ``path``), in file order."""
    return _load(TESTSET_PATH if path is None else Path(path), EvalRow)


def calibration_path(judge: str) -> Path:
    if judge not in JUDGES:
        raise ValueError(f"unknown judge {judge!r}; choose one of {', '.join(JUDGES)}")
    return CALIBRATION_DIR / f"{judge}.jsonl"


def load_calibration(judge: str, path: Path | str | None = None) -> list[CalibrationRow]:
    """The human-labelled rows for one judge (``data/eval/calibration/<judge>.jsonl`` unless ``path``)."""
    default = calibration_path(judge)
    return _load(default if path is None else Path(path), CalibrationRow)


# -------------------------------------------------------------------------------------------- validator


def _normalise(text: str) -> str:
    """Case-folded text with every run of whitespace collapsed to one space."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def contains_fact(haystack: str, fact: str) -> bool:
    """Whether the normalised ``fact`` occurs in the normalised ``haystack`` as a whole token sequence.

    A fact that starts or ends with a letter or digit may not continue a longer number or word, so
    "15 cm" is not found in "215 cm", "RL-PS-14" is not found in "RL-PS-140" and "7 °C" is not found
    in "-7 °C".
    """
    needle = _normalise(fact)
    if not needle:
        return False
    pattern = re.escape(needle)
    if needle[0].isalnum():
        pattern = r"(?<![^\W_])(?<!\d\.)" + pattern
    if needle[0].isdigit():
        pattern = r"(?<![-+\u2212])" + pattern  # "7 °C" is not "-7 °C"
    if needle[-1].isalnum():
        pattern += r"(?![^\W_])(?!\.\d)"
    return re.search(pattern, _normalise(haystack)) is not None


def _money(value: float) -> str:
    return f"{value:.2f} {value} ${value:.2f} ${value}"


def catalog_text(product: schema.Product) -> str:
    """A catalog row as JSON text plus its price written as money ("$449.00")."""
    return json.dumps(product.model_dump(), ensure_ascii=False) + " " + _money(product.price)


def orders_text(orders: Iterable[schema.Order], products: dict[str, schema.Product]) -> str:
    """A customer's orders as text: id, date, quantity, product name and id, unit price and total."""
    lines = []
    for order in orders:
        product = products.get(order.product_id)
        name = product.name if product else order.product_id
        lines.append(
            f"{order.id} {order.date.isoformat()} {order.quantity} x {name} [{order.product_id}] "
            f"unit {_money(order.unit_price)} total {_money(order.total)}"
        )
    return "\n".join(lines)


def _placeholder_problems(where: str, value: Any) -> list[str]:
    problems = []
    if isinstance(value, dict):
        for key, item in value.items():
            problems += _placeholder_problems(f"{where}.{key}", item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += _placeholder_problems(f"{where}[{i}]", item)
    elif isinstance(value, str):
        if not value.strip() or value.strip().lower() in _PLACEHOLDER_VALUES:
            problems.append(f"{where}: placeholder or empty value {value!r}")
        elif _PLACEHOLDER_RE.search(value):
            problems.append(f"{where}: placeholder text in {value[:60]!r}")
    return problems


def _coerce(rows: Iterable[EvalRow | dict[str, Any]], problems: list[str]) -> list[EvalRow]:
    good = []
    for i, row in enumerate(rows):
        if isinstance(row, EvalRow):
            good.append(row)
            continue
        try:
            good.append(EvalRow.model_validate(row))
        except ValidationError as err:
            rid = row.get("id") if isinstance(row, dict) else None
            problems += [f"row {i} ({rid}): {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
    return good


def validate_testset(
    rows: Iterable[EvalRow | dict[str, Any]] | None = None,
    data_dir: Path | str | None = None,
) -> list[str]:
    """Human-readable problems with the test set (the shipped file unless ``rows``); [] means valid."""
    problems: list[str] = []
    rows = _coerce(load_testset() if rows is None else rows, problems)
    products = {p.id: p for p in schema.load_products(data_dir)}
    customers = {c.id: c for c in schema.load_customers(data_dir)}
    orders_by_customer: dict[str, list[schema.Order]] = {}
    for order in schema.load_orders(data_dir):
        orders_by_customer.setdefault(order.customer_id, []).append(order)
    manual_cache: dict[str, str] = {}
    facts_cache: dict[str, str] = {}

    def manual_body(pid: str) -> str:
        """The manual without its HTML comments: what the index (and so the assistant) can see."""
        if pid not in manual_cache:
            try:
                manual_cache[pid] = schema.strip_comments(schema.load_manual(pid, data_dir))
            except OSError:
                manual_cache[pid] = ""
        return manual_cache[pid]

    def facts_block(pid: str) -> str:
        if pid not in facts_cache:
            try:
                facts_cache[pid] = "\n".join(schema.manual_facts(pid, data_dir))
            except OSError:
                facts_cache[pid] = ""
        return facts_cache[pid]

    for rid, n in sorted(Counter(r.id for r in rows).items()):
        if n > 1:
            problems.append(f"id {rid} is used {n} times")

    manual_fact_rows = 0
    for row in rows:
        where = row.id
        problems += _placeholder_problems(where, row.model_dump())
        customer_orders = orders_by_customer.get(row.customer_id, [])
        if row.customer_id not in customers:
            problems.append(f"{where}: unknown customer {row.customer_id!r}")
        unknown = [pid for pid in row.relevant_product_ids if pid not in products]
        for pid in unknown:
            problems.append(f"{where}: unknown relevant product {pid!r}")
        known = [pid for pid in row.relevant_product_ids if pid in products]
        if len(set(row.relevant_product_ids)) != len(row.relevant_product_ids):
            problems.append(f"{where}: duplicate relevant product ids")
        for pid in _CITATION_RE.findall(row.ground_truth):
            if pid not in row.relevant_product_ids:
                problems.append(f"{where}: ground_truth cites [{pid}], which is not a relevant product")

        # category rules
        if row.category in DECLINE_CATEGORIES:
            if row.relevant_product_ids:
                problems.append(f"{where}: {row.category} rows list no relevant products")
            if row.expected_facts:
                problems.append(f"{where}: {row.category} rows list no expected facts")
            if _CITATION_RE.search(row.ground_truth):
                problems.append(f"{where}: a decline should not cite products")
        else:
            if not row.relevant_product_ids:
                problems.append(f"{where}: a {row.category} row needs relevant product ids")
            if not row.expected_facts:
                problems.append(f"{where}: a {row.category} row needs expected facts")
        if row.category == "comparison" and len(row.relevant_product_ids) < 2:
            problems.append(f"{where}: a comparison row needs at least two relevant products")
        if row.category == "order_history":
            ordered = {o.product_id for o in customer_orders}
            for pid in row.relevant_product_ids:
                if pid not in ordered:
                    problems.append(f"{where}: {row.customer_id} never ordered {pid}")
        if row.category == "multi_turn":
            turns = row.chat_history
            if not MIN_HISTORY_TURNS <= len(turns) <= MAX_HISTORY_TURNS:
                problems.append(
                    f"{where}: multi_turn rows need {MIN_HISTORY_TURNS}-{MAX_HISTORY_TURNS} earlier turns, "
                    f"got {len(turns)}"
                )
            expected_roles = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
            if turns and [t.role for t in turns] != expected_roles:
                problems.append(f"{where}: chat_history must alternate user/assistant, starting with user")
            if turns and turns[-1].role != "assistant":
                problems.append(f"{where}: chat_history must end with the assistant's turn")
        elif row.chat_history:
            problems.append(f"{where}: only multi_turn rows have a chat_history")

        # every expected fact is in the data and in the reference answer
        sources = [catalog_text(products[pid]) for pid in known]
        sources += [manual_body(pid) for pid in known]
        sources.append(orders_text(customer_orders, products))
        has_manual_fact = False
        for fact in row.expected_facts:
            if not any(contains_fact(text, fact) for text in sources):
                problems.append(
                    f"{where}: expected fact {fact!r} is not in the catalog rows or manuals of "
                    f"{known or 'no product'} or in {row.customer_id}'s orders"
                )
            if not contains_fact(row.ground_truth, fact):
                problems.append(f"{where}: expected fact {fact!r} is not stated in the ground_truth")
            in_catalog = any(contains_fact(catalog_text(products[pid]), fact) for pid in known)
            if not in_catalog and any(contains_fact(facts_block(pid), fact) for pid in known):
                has_manual_fact = True
        manual_fact_rows += has_manual_fact

    counts = Counter(r.category for r in rows)
    for category, minimum in MIN_PER_CATEGORY.items():
        if counts[category] < minimum:
            problems.append(f"{counts[category]} {category} rows, need at least {minimum}")
    if len(rows) < MIN_ROWS:
        problems.append(f"{len(rows)} rows, need at least {MIN_ROWS}")
    if manual_fact_rows < MIN_MANUAL_FACT_ROWS:
        problems.append(
            f"{manual_fact_rows} rows expect a fact found only in a manual, "
            f"need at least {MIN_MANUAL_FACT_ROWS}"
        )
    return problems


def validate_calibration(judge: str, rows: Iterable[CalibrationRow] | None = None) -> list[str]:
    """Problems with one judge's calibration set: ids, size, score spread and placeholders."""
    rows = list(load_calibration(judge) if rows is None else rows)
    problems: list[str] = []
    prefix = f"CAL-{JUDGE_PREFIX[judge]}-"
    for rid, n in sorted(Counter(r.id for r in rows).items()):
        if n > 1:
            problems.append(f"{judge}: id {rid} is used {n} times")
    for row in rows:
        if not row.id.startswith(prefix):
            problems.append(f"{judge}: id {row.id} should start with {prefix}")
        if judge in ("groundedness", "relevance") and not row.context.strip():
            problems.append(f"{judge}: {row.id} needs a context")
        problems += _placeholder_problems(f"{judge}:{row.id}", row.model_dump(include={"query", "reason"}))
    if len(rows) < MIN_CALIBRATION_ROWS:
        problems.append(f"{judge}: {len(rows)} rows, need at least {MIN_CALIBRATION_ROWS}")
    scores = Counter(r.human_score for r in rows)
    for score in range(1, 6):
        if scores[score] < MIN_PER_SCORE:
            problems.append(f"{judge}: score {score} appears {scores[score]} times, need {MIN_PER_SCORE}")
    return problems
