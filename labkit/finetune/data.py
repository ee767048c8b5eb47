"""Fine-tuning data built from the catalog, the manuals, customers and orders.

Introduced in notebooks/05_fine_tune.ipynb.

Every example is what the flow itself would give the model: `flow.prepare()` with the short prompt
shape for small models (`SMALL_SHAPE`: the `contoso_chat_small` prompt, two focused passages found
by the real search service, the customer's name and newest orders) and, as the assistant turn, an
answer written from a template that greets the customer by name, copies the asked-for value from
the document exactly, cites `[P-xxx]` and ends with the sources line; questions the documents
cannot answer get "the documents do not say", questions off the shop's topic a polite refusal.

Kinds: one spec value (`fact`), two values of one product (`facts`), one value of two products
(`compare`), a manual sentence (`manual`), a price (`price`), the customer's last order (`order`),
a value the documents lack (`unknown`), off topic (`decline`).

Kept apart from the evaluation set: an example is dropped when its answer states an expected fact
of an evaluation row about the same product (or the same customer, for order rows), or when its
question equals an evaluation question. `leaks()` checks a finished file the same way; the tests
run it on the committed data. Train and validation are split by (product, spec) group, so the
validation loss is measured on values the training never asked for.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit.config import REPO_ROOT
from labkit.flow import FlowConfig
from labkit.schema import load_customers, load_orders, load_products, manual_facts, short_name

# The short prompt shape for small models (measured in notebook 05): static instructions first,
# two passages cut to the lines that match the question, no query-writing call.
SMALL_SHAPE = FlowConfig(
    name="small-base",
    prompt="contoso_chat_small",
    index="products-section",
    top_k=5,
    max_documents=2,
    max_context_words=240,
    passages="focused",
    write_queries=False,
    max_tokens=160,
    guards=False,  # the model is measured here, not the guards (notebook 06 measures those)
)
EVAL_SET = REPO_ROOT / "data" / "eval" / "testset.jsonl"

OFF_TOPIC = [
    "What is the capital of France?",
    "Write me a poem about cats.",
    "Can you help with my maths homework?",
    "Who will win the football match tonight?",
    "What's a good recipe for lasagne?",
    "Tell me a joke about lawyers.",
    "How do I fix a leaking kitchen tap?",
    "What is the price of bitcoin?",
    "Translate 'good morning' into Japanese.",
    "Which laptop should I buy for gaming?",
    "What is the meaning of life?",
    "Can you write my cover letter?",
    "How tall is the Eiffel Tower?",
    "Recommend a good TV series.",
    "What's the best car insurance?",
    "How do I bake sourdough bread?",
    "Explain quantum computing in simple terms.",
    "Who is the president of Brazil?",
    "Book me a table at an Italian restaurant.",
    "Can you do my taxes?",
]
DECLINE = [
    "Sorry {first}, I can only help with Contoso Outdoors products and your orders.",
    "Hi {first}! I'm the Contoso Outdoors assistant: I can only help with our gear and your orders.",
]
FACT_Q = [
    "What is the {key} of the {name}?",
    "What's the {key} on the {short}?",
    "Tell me the {key} of the {short}.",
    "Can you tell me the {key} for the {name}?",
    "I'm looking at the {short}. What is its {key}?",
    "{short}: what {key} does it have?",
    "Quick question about the {short} - {key}?",
    "How about the {key} of the {short}?",
]
FACT_A = [
    "Hi {first}! The {name} [{pid}] lists {key}: {value}.",
    "Hi {first}! The {key} of the {name} [{pid}] is {value}.",
]
FACTS_Q = [
    "What are the {key} and the {key2} of the {name}?",
    "Tell me the {key} and {key2} of the {short}.",
    "{short}: {key} and {key2}?",
]
FACTS_A = ["Hi {first}! The {name} [{pid}] lists {key}: {value}, and {key2}: {value2}."]
COMPARE_Q = [
    "Compare the {key} of the {short} and the {short2}.",
    "{short} or {short2}: what is the {key} of each?",
    "What's the difference in {key} between the {short} and the {short2}?",
]
COMPARE_A = [
    "Hi {first}! The {name} [{pid}] lists {key}: {value}; the {name2} [{pid2}] lists {key}: {value2}."
]
# what customers ask when they choose between two products: answered from the catalog line
# (price, weight, temperature rating) that every passage of the short shape carries
DIFF_Q = [
    "{short} or {short2} - which should I get?",
    "Should I buy the {short} or the {short2}?",
    "How do the {short} and the {short2} compare?",
    "Is the {short2} worth the difference over the {short}?",
    "I can't decide between the {short} and the {short2}. Help?",
    "{short} vs {short2}: what's different?",
]
DIFF_A = ["Hi {first}! The {name} [{pid}] {facts}; the {name2} [{pid2}] {facts2}."]
PRICE_Q = ["How much is the {name}?", "What does the {short} cost?", "What's the price of the {short}?"]
PRICE_A = ["Hi {first}! The {name} [{pid}] costs {value}."]
MANUAL_Q = [
    "What does the manual say about the {topic} of the {short}?",
    "Tell me about the {topic} on the {short}.",
    "I have the {short}. What about the {topic}?",
]
MANUAL_A = ["Hi {first}! The manual of the {name} [{pid}] says: {value}."]
ORDER_Q = ["What did I order last?", "What was my most recent order?", "Remind me what I bought last time."]
ORDER_A = ["Hi {first}! Your last order, on {date}, was the {name} [{pid}] for ${total}."]
UNKNOWN_Q = ["What is the {key} of the {name}?", "Does the {short} say anything about its {key}?"]
UNKNOWN_A = [
    "Hi {first}! The documents do not say the {key} of the {name} [{pid}]. Please ask Contoso "
    "Outdoors support."
]


@dataclass
class Example:
    kind: str
    question: str
    answer: str
    customer_id: str
    product_ids: list[str]
    values: list[str]  # what the answer copies from the documents (must be in the context)
    group: str  # (product, spec) group for the train/validation split
    messages: list[dict[str, str]] = field(default_factory=list)


@dataclass
class BuildReport:
    train: int = 0
    valid: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    sha256: str = ""
    shape: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"{self.train} training and {self.valid} validation examples; kinds {self.kinds}",
            f"dropped: {self.dropped or 'none'}",
            f"data sha256 {self.sha256[:12]}",
        ]


def _table_rows(pid: str) -> dict[str, str]:
    """The manual's specification table rows (more than the catalog's specs, e.g. part numbers)."""
    from labkit.schema import manual_sections

    rows: dict[str, str] = {}
    for title, text in manual_sections(pid).items():
        if "specification" not in title.lower():
            continue
        for line in text.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if (
                len(cells) == 2
                and cells[0]
                and not set(cells[0]) <= set("- ")
                and cells[0] != "Specification"
            ):
                rows[cells[0]] = cells[1]
    return rows


def _topic(fact: str) -> str | None:
    """'Replacement pole sections are part number RL-PS-14' -> 'replacement pole sections'."""
    m = re.match(
        r"(?:The |the )?(.{4,40}?) (?:is|are|has|have|comes with|come with|uses|use|takes|fits|lasts) ", fact
    )
    return m.group(1).lower() if m else None


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def evaluation_facts(path: Path = EVAL_SET) -> tuple[set[tuple[str, str]], set[str]]:
    """(product or customer id, expected fact) pairs of the evaluation set, and its questions."""
    pairs: set[tuple[str, str]] = set()
    questions: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        questions.add(_norm(row["query"]))
        # an order question's facts (a product name, a date, a total) belong to that customer's orders,
        # not to the product: naming the product elsewhere is not the evaluated fact
        owners = ([row["customer_id"]] if row.get("category") == "order_history"
                  else list(row.get("relevant_product_ids") or []))
        for fact in row.get("expected_facts") or []:
            for owner in owners:
                pairs.add((owner, _norm(fact)))
    return pairs, questions


def _leak(example: Example, pairs: set[tuple[str, str]], questions: set[str]) -> str | None:
    if _norm(example.question) in questions:
        return "an evaluation question"
    answer = _norm(example.answer)
    owners = [*example.product_ids, *([example.customer_id] if example.kind == "order" else [])]
    for owner, fact in pairs:
        if owner in owners and fact in answer:
            return f"evaluation fact {fact!r} of {owner}"
    return None


def _catalog_facts(p: Any, evaluated: set[tuple[str, str]]) -> tuple[str, list[str]]:
    """'costs $89.95 and weighs 980 g' and the values, as `flow.catalog_line` shows them, leaving out
    values the evaluation set asks about for this product (so the pair still teaches the pattern)."""
    found = [("costs", f"${p.price:.2f}")]
    if p.weight_g:
        found.append(("weighs", f"{int(p.weight_g)} g"))
    if p.temp_rating_c is not None:
        found.append(("is rated to", f"{p.temp_rating_c:g} °C"))
    kept = [(verb, v) for verb, v in found if (p.id, _norm(v)) not in evaluated]
    parts = [f"{verb} {v}" for verb, v in kept]
    text = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)
    return text, [v for _, v in kept]


def candidates(seed: int = 42) -> list[Example]:
    """Every templated example (before retrieval), in a seeded order."""
    rng = random.Random(seed)
    products = load_products()
    customers = load_customers()
    orders = load_orders()
    by_id = {p.id: p for p in products}
    evaluated = evaluation_facts()[0]
    out: list[Example] = []

    def customer() -> Any:
        return rng.choice(customers)

    def fill(templates: list[str], **kw: Any) -> str:
        return rng.choice(templates).format(**kw)

    specs: dict[str, dict[str, str]] = {}
    for p in products:
        merged = {k: str(v) for k, v in p.specs.items()}
        for k, v in _table_rows(p.id).items():
            merged.setdefault(k, v)
        specs[p.id] = merged

    for p in products:
        short = short_name(p.name)
        keys = list(specs[p.id])
        for key in keys:
            for _ in range(2):  # two phrasings of each question, different customers
                c = customer()
                kw = {
                    "name": p.name,
                    "short": short,
                    "key": key.lower(),
                    "value": specs[p.id][key],
                    "first": c.first_name,
                    "pid": p.id,
                }
                out.append(
                    Example(
                        "fact",
                        fill(FACT_Q, **kw),
                        fill(FACT_A, **kw),
                        c.id,
                        [p.id],
                        [specs[p.id][key]],
                        f"{p.id}/{key}",
                    )
                )
        for key, key2 in zip(keys[::2], keys[1::2], strict=False):
            c = customer()
            kw = {
                "name": p.name,
                "short": short,
                "key": key.lower(),
                "key2": key2.lower(),
                "value": specs[p.id][key],
                "value2": specs[p.id][key2],
                "first": c.first_name,
                "pid": p.id,
            }
            out.append(
                Example(
                    "facts",
                    fill(FACTS_Q, **kw),
                    fill(FACTS_A, **kw),
                    c.id,
                    [p.id],
                    [specs[p.id][key], specs[p.id][key2]],
                    f"{p.id}/{key}",
                )
            )
        c = customer()
        price = f"${p.price:.2f}"
        kw = {"name": p.name, "short": short, "value": price, "first": c.first_name, "pid": p.id}
        out.append(
            Example("price", fill(PRICE_Q, **kw), fill(PRICE_A, **kw), c.id, [p.id], [price], f"{p.id}/price")
        )
        for fact in manual_facts(p.id):
            topic = _topic(fact)
            if topic is None:
                continue
            c = customer()
            kw = {
                "name": p.name,
                "short": short,
                "topic": topic,
                "value": fact,
                "first": c.first_name,
                "pid": p.id,
            }
            out.append(
                Example(
                    "manual",
                    fill(MANUAL_Q, **kw),
                    fill(MANUAL_A, **kw),
                    c.id,
                    [p.id],
                    [fact],
                    f"{p.id}/manual/{topic}",
                )
            )
        missing = [
            k
            for k in ("Burn time", "Waterproof rating", "Limit temperature", "Volume", "Battery")
            if k not in specs[p.id]
        ]
        for key in missing[:2]:
            c = customer()
            kw = {"name": p.name, "short": short, "key": key.lower(), "first": c.first_name, "pid": p.id}
            out.append(
                Example(
                    "unknown",
                    fill(UNKNOWN_Q, **kw),
                    fill(UNKNOWN_A, **kw),
                    c.id,
                    [p.id],
                    [],
                    f"{p.id}/unknown/{key}",
                )
            )

    # two products of one category, one spec both have
    for a in products:
        for b in products:
            if a.id >= b.id or a.category != b.category:
                continue
            for key in [k for k in specs[a.id] if k in specs[b.id]][:3]:
                c = customer()
                kw = {
                    "name": a.name,
                    "short": short_name(a.name),
                    "name2": b.name,
                    "short2": short_name(b.name),
                    "key": key.lower(),
                    "value": specs[a.id][key],
                    "value2": specs[b.id][key],
                    "first": c.first_name,
                    "pid": a.id,
                    "pid2": b.id,
                }
                out.append(
                    Example(
                        "compare",
                        fill(COMPARE_Q, **kw),
                        fill(COMPARE_A, **kw),
                        c.id,
                        [a.id, b.id],
                        [specs[a.id][key], specs[b.id][key]],
                        f"{a.id}+{b.id}/{key}",
                    )
                )

    # two products of one category: price, weight and temperature rating of each (the catalog line)
    for a in products:
        for b in products:
            if a.id >= b.id or a.category != b.category:
                continue
            for _ in range(2):
                c = customer()
                first, second = (a, b) if rng.random() < 0.5 else (b, a)
                (facts, values), (facts2, values2) = (_catalog_facts(first, evaluated),
                                                      _catalog_facts(second, evaluated))
                if not values or not values2:
                    continue
                kw = {"name": first.name, "short": short_name(first.name), "name2": second.name,
                      "short2": short_name(second.name), "facts": facts, "facts2": facts2,
                      "first": c.first_name, "pid": first.id, "pid2": second.id}
                out.append(Example("difference", fill(DIFF_Q, **kw), fill(DIFF_A, **kw), c.id,
                                   [first.id, second.id], [*values, *values2], f"{a.id}+{b.id}/catalog"))

    newest: dict[str, Any] = {}
    for o in orders:
        if o.customer_id not in newest or (str(o.date), o.id) > (
            str(newest[o.customer_id].date),
            newest[o.customer_id].id,
        ):
            newest[o.customer_id] = o
    for c in customers:
        if c.id not in newest:
            continue
        o = newest[c.id]
        for _ in range(2):
            kw = {
                "first": c.first_name,
                "date": str(o.date),
                "name": by_id[o.product_id].name,
                "pid": o.product_id,
                "total": f"{o.total:.2f}",
            }
            out.append(
                Example(
                    "order",
                    fill(ORDER_Q, **kw),
                    fill(ORDER_A, **kw),
                    c.id,
                    [o.product_id],
                    [by_id[o.product_id].name],
                    f"{c.id}/order",
                )
            )
    for q in OFF_TOPIC:
        c = customer()
        out.append(Example("decline", q, fill(DECLINE, first=c.first_name), c.id, [], [], f"decline/{q}"))
    rng.shuffle(out)
    return out


def balanced(pool: list[Example]) -> list[Example]:
    """Round-robin over the kinds (each kind keeps its seeded order), so a file cut at any size holds
    every kind about equally until the rarer ones run out: single spec values far outnumber
    comparisons and manual sentences, which the evaluation set asks most about."""
    by_kind: dict[str, list[Example]] = {}
    for e in pool:
        by_kind.setdefault(e.kind, []).append(e)
    out: list[Example] = []
    queues = [list(reversed(v)) for _, v in sorted(by_kind.items())]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop())
    return out


def _with_sources(answer: str, pids: list[str]) -> str:
    return f"{answer}\nSources: {' '.join(f'[{p}]' for p in pids)}" if pids else answer


def build(
    out_dir: str | Path,
    *,
    n_train: int = 360,
    n_valid: int = 60,
    seed: int = 42,
    shape: FlowConfig = SMALL_SHAPE,
    progress: bool = True,
) -> BuildReport:
    """Write `train.jsonl`, `valid.jsonl` (OpenAI chat format), `examples.jsonl` (with the kind,
    products and copied values of each line) and `manifest.json` into `out_dir`.

    Needs the local search service (or Azure AI Search): the passages come from real retrieval."""
    from labkit import flow
    from labkit.progress import bar

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs, questions = evaluation_facts()
    report = BuildReport(shape=shape.model_dump())
    dropped: Counter[str] = Counter()
    pool = balanced(candidates(seed))
    # validation groups: a seeded eighth of the (product, spec) groups
    groups = sorted({e.group for e in pool})
    valid_groups = set(random.Random(seed + 1).sample(groups, max(1, len(groups) // 8)))
    train: list[Example] = []
    valid: list[Example] = []
    seen: set[str] = set()
    with bar(total=n_train + n_valid, desc="examples", enabled=progress) as pbar:
        for ex in pool:
            target = valid if ex.group in valid_groups else train
            limit = n_valid if target is valid else n_train
            if len(target) >= limit:
                if len(train) >= n_train and len(valid) >= n_valid:
                    break
                continue
            why = _leak(ex, pairs, questions)
            if why:
                dropped["overlaps the evaluation set"] += 1
                continue
            result, messages = flow.prepare(ex.question, ex.customer_id, None, shape)
            given = "\n".join(m["content"] for m in messages)
            found = {d["product_id"] for d in result.context["documents"]}
            needed = set() if ex.kind == "order" else set(ex.product_ids)  # orders come from the store
            if not messages or not needed <= found:
                dropped["product not retrieved"] += 1
                continue
            if any(v not in given for v in ex.values):
                dropped["value not in the passages"] += 1
                continue
            ex.answer = _with_sources(
                ex.answer, ex.product_ids if ex.kind != "order" else [ex.product_ids[0]]
            )
            ex.messages = [*messages, {"role": "assistant", "content": ex.answer}]
            key = json.dumps(ex.messages)
            if key in seen:  # the same question drawn twice for the same customer
                dropped["duplicate"] += 1
                continue
            seen.add(key)
            target.append(ex)
            pbar.update(1)
    for name, rows in (("train", train), ("valid", valid)):
        (out / f"{name}.jsonl").write_text(
            "".join(json.dumps({"messages": e.messages}, ensure_ascii=False) + "\n" for e in rows),
            encoding="utf-8",
        )
    (out / "examples.jsonl").write_text(
        "".join(
            json.dumps(
                {"split": s, **{k: v for k, v in asdict(e).items() if k != "messages"}}, ensure_ascii=False
            )
            + "\n"
            for s, rows in (("train", train), ("valid", valid))
            for e in rows
        ),
        encoding="utf-8",
    )
    digest = hashlib.sha256()
    for name in ("train.jsonl", "valid.jsonl"):
        digest.update((out / name).read_bytes())
    report.train, report.valid = len(train), len(valid)
    report.kinds = dict(Counter(e.kind for e in train + valid))
    report.dropped = dict(dropped)
    report.sha256 = digest.hexdigest()
    report.paths = {"train": str(out / "train.jsonl"), "valid": str(out / "valid.jsonl")}
    (out / "manifest.json").write_text(
        json.dumps({**asdict(report), "seed": seed}, indent=2), encoding="utf-8"
    )
    return report


def leaks(examples_path: str | Path) -> list[str]:
    """Lines of an `examples.jsonl` that state an evaluation fact or ask an evaluation question."""
    pairs, questions = evaluation_facts()
    found = []
    for i, line in enumerate(Path(examples_path).read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        ex = Example(
            **{
                k: row[k]
                for k in ("kind", "question", "answer", "customer_id", "product_ids", "values", "group")
            }
        )
        why = _leak(ex, pairs, questions)
        if why:
            found.append(f"line {i}: {why}")
    return found


def iter_messages(path: str | Path) -> Iterable[list[dict[str, str]]]:
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)["messages"]
