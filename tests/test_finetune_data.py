"""Fine-tuning data (labkit.finetune.data): templates, separation from the evaluation set, and a
small real build through the flow's own preparation step against the local search service."""

from __future__ import annotations

import json
from collections import Counter

from labkit import flow
from labkit.finetune import data
from labkit.finetune.validate import validate_file


def test_candidates_cover_every_kind_and_copy_values_verbatim() -> None:
    pool = data.candidates(seed=1)
    kinds = Counter(e.kind for e in pool)
    assert set(kinds) == {"fact", "facts", "compare", "difference", "manual", "price", "order", "unknown",
                          "decline"}
    assert sum(kinds.values()) >= 600
    for e in pool:
        for value in e.values:
            assert value in e.answer, (e.kind, e.answer)
        for pid in e.product_ids:
            assert f"[{pid}]" in e.answer
    assert data.candidates(seed=1)[0] == pool[0] and data.candidates(seed=2)[0] != pool[0]  # seeded


def test_a_choice_between_two_products_copies_the_catalog_line_without_evaluated_values() -> None:
    pairs, _ = data.evaluation_facts()
    chosen = [e for e in data.candidates(seed=1) if e.kind == "difference"]
    assert len(chosen) >= 30
    for e in chosen:
        assert len(e.product_ids) == 2 and e.values
        assert not [v for pid in e.product_ids for v in e.values if (pid, data._norm(v)) in pairs]
    # what the flow shows with every passage, in the same spelling
    assert flow.catalog_line({"price": 89.95, "weight_g": 980, "temp_rating_c": -7.0}) == \
        "Price $89.95. Weight 980 g. Temperature rating -7 °C."
    assert flow.catalog_line({"price": 20, "weight_g": None, "temp_rating_c": None}) == "Price $20.00."


def test_short_names_are_what_customers_say_and_unique() -> None:
    from labkit.schema import load_products

    names = [data.short_name(p.name) for p in load_products()]
    assert len(set(names)) == len(names)
    assert data.short_name("Skyfall 2 UL Backpacking Tent") == "Skyfall 2 UL"
    assert data.short_name("Spark Canister Stove") == "Spark stove"


def test_an_evaluation_fact_or_question_is_recognised_as_a_leak() -> None:
    pairs, questions = data.evaluation_facts()
    rows = [json.loads(line) for line in data.EVAL_SET.read_text(encoding="utf-8").splitlines()]
    row = next(r for r in rows if r["category"] == "product_fact")
    pid, fact = row["relevant_product_ids"][0], row["expected_facts"][0]
    same = data.Example(
        "fact", "What part do I need?", f"Hi Ann! It is {fact} [{pid}].", "C-001", [pid], [fact], "g"
    )
    other = data.Example(
        "fact", "What part do I need?", f"Hi Ann! It is {fact} [P-999].", "C-001", ["P-999"], [fact], "g"
    )
    asked = data.Example("decline", row["query"], "Sorry.", "C-001", [], [], "g")
    assert data._leak(same, pairs, questions) and data._leak(asked, pairs, questions)
    assert data._leak(other, pairs, questions) is None  # the same value about another product is not the fact


def test_focused_passages_keep_the_lines_that_answer() -> None:
    from labkit.search import build_chunks

    (care,) = [c for c in build_chunks("section") if c.id == "P-001-section-004"]
    doc = {"product_id": "P-001", "id": care.id, "content": care.content}
    question = "What part number do I need for a replacement pole section for the Skyfall 2 tent?"
    (head,) = flow.fit_documents([doc], 60)
    (focused,) = flow.focus_documents([doc], question, 60)
    assert "RL-PS-14" not in head["content"] and "RL-PS-14" in focused["content"]
    assert focused["content"].splitlines()[0] == care.content.splitlines()[0]  # what the document is
    assert len(focused["content"].split()) <= 60


def test_a_small_build_is_valid_and_never_holds_an_evaluation_fact(isolated_home, tmp_path) -> None:
    """Real retrieval through flow.prepare (search with the question alone: no model needed)."""
    from labkit.services import ensure_running

    ensure_running(["search"], settings=isolated_home)
    report = data.build(tmp_path, n_train=24, n_valid=6, progress=False)
    assert (report.train, report.valid) == (24, 6)
    assert data.leaks(tmp_path / "examples.jsonl") == []
    for name in ("train.jsonl", "valid.jsonl"):
        checked = validate_file(tmp_path / name, count_tokens=lambda t: len(t.split()))
        assert checked.ok, checked.summary()
    examples = [json.loads(line) for line in (tmp_path / "examples.jsonl").read_text().splitlines()]
    messages = list(data.iter_messages(tmp_path / "train.jsonl"))
    for ex, convo in zip(examples, messages, strict=False):
        system, answer = convo[0]["content"], convo[-1]["content"]
        assert all(v in system for v in ex["values"])  # the copied value is in the passages
        if ex["kind"] != "decline":
            assert answer.splitlines()[-1].startswith("Sources: [")
    train_groups = {e["group"] for e in examples if e["split"] == "train"}
    assert not train_groups & {e["group"] for e in examples if e["split"] == "valid"}
