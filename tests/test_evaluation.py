"""Evaluators on hand-made results (good, bad, empty, unparseable) and the calibration arithmetic."""

from __future__ import annotations

import pytest

from labkit.evaluation.base import Score, Unmeasured
from labkit.evaluation.calibration import agreement, cohen_kappa
from labkit.evaluation.deterministic import (
    ChecksEvaluator,
    FactRecallEvaluator,
    RetrievalEvaluator,
    SimilarityEvaluator,
    normalise,
)
from labkit.evaluation.judges import JudgeEvaluator, context_text, parse_judgement


def result(answer: str, products: list[str] = (), citations=(), dropped=(), orders=()) -> dict:
    return {"answer": answer, "citations": list(citations), "dropped_citations": list(dropped),
            "context": {"documents": [{"id": f"{p}-x", "product_id": p, "title": p, "content": f"text {p}",
                                       "score": 1.0} for p in products], "orders": list(orders)}}


# ---- judges: parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize("text,value", [
    ('{"score": 4, "reason": "mostly supported"}', 4.0),
    ('Here you go: {"score": 2, "reason": "invented price"} hope it helps', 2.0),
    ("Score: 5 - every claim is supported", 5.0),
    ("3", 3.0),
    ("4/5", 4.0),
])
def test_judge_output_is_parsed(text: str, value: float) -> None:
    outcome = parse_judgement(text)
    assert isinstance(outcome, Score) and outcome.value == value


@pytest.mark.parametrize("text", ["great answer!", "", '{"score": 7, "reason": "x"}', '{"score": 3.5}',
                                  "score: 0", '{"reason": "no score here"}'])
def test_unparseable_or_out_of_range_judge_output_is_unmeasured_with_raw_kept(text: str) -> None:
    outcome = parse_judgement(text)
    assert isinstance(outcome, Unmeasured) and outcome.raw == text and outcome.measured is False


def test_groundedness_judge_sees_documents_and_orders() -> None:
    orders = [{"date": "2025-03-14", "quantity": 1, "product_name": "Aster -7 Down Sleeping Bag",
               "product_id": "P-007", "total": 279.0}]
    text = context_text(result("x", ["P-008"], orders=orders))
    assert "[P-008]" in text and "Aster -7 Down Sleeping Bag [P-007]" in text and "2025-03-14" in text


def test_empty_response_is_unmeasured_without_a_model_call() -> None:
    judge = JudgeEvaluator("relevance", client=object())  # would fail if it were called
    assert isinstance(judge.evaluate({"query": "q"}, result("   ")), Unmeasured)
    with pytest.raises(ValueError):
        JudgeEvaluator("politeness")


@pytest.mark.parametrize("reply,expected", [
    ('{"score": 2, "reason": "invented a price"}', Score(2.0, reason="invented a price")),
    ("great answer!", Unmeasured("judge output could not be parsed into a 1-5 score", raw="great answer!")),
    ('{"score": 9, "reason": "x"}', Unmeasured("judge score 9 is not an integer from 1 to 5",
                                              raw='{"score": 9, "reason": "x"}')),
])
def test_a_judge_reads_the_model_reply_through_the_real_sdk(reply: str, expected: Score | Unmeasured) -> None:
    """A real HTTP server on 127.0.0.1 answers with a fixed reply: the judge's prompt goes out through
    the real openai client, and the reply comes back as a score with its reason or as unmeasured."""
    import openai

    from tests.faults import FaultProxy

    with FaultProxy("http://127.0.0.1:9", "unused") as server:
        server.mode, server.reply_text = "reply", reply
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=30)
        judge = JudgeEvaluator("groundedness", model="judge-under-test", client=client)
        outcome = judge.evaluate({"query": "How much does the Spark stove weigh?"},
                                 result("The Spark Canister Stove weighs 86 g [P-016].", ["P-016"]))
    (sent,) = server.bodies
    assert sent["model"] == "judge-under-test" and sent["temperature"] == 0
    prompt = "\n".join(m["content"] for m in sent["messages"])
    assert "How much does the Spark stove weigh?" in prompt and "weighs 86 g" in prompt
    assert "[P-016] P-016\ntext P-016" in prompt  # the groundedness judge sees the documents
    assert type(outcome) is type(expected) and outcome.details["judge_model"] == "judge-under-test"
    if isinstance(expected, Score):
        assert (outcome.value, outcome.reason) == (expected.value, expected.reason)
    else:
        assert (outcome.why, outcome.raw) == (expected.why, expected.raw)


@pytest.mark.services
def test_the_local_judge_is_deterministic_and_never_raises(isolated_home) -> None:
    """The embedded judge (temperature 0) gives the same outcome twice: a 1-5 score with the model
    named, or unmeasured with its raw reply kept. Which of the two depends on the tiny model."""
    judge = JudgeEvaluator("groundedness")
    row = {"query": "How much does the Spark stove weigh?"}
    answer = result("The Spark Canister Stove weighs 86 g [P-016].", ["P-016"])
    first, second = judge.evaluate(row, answer), judge.evaluate(row, answer)
    assert type(first) is type(second)
    assert first.details["judge_model"] == isolated_home.labkit_local_chat_model
    if isinstance(first, Score):
        assert first.value in {1, 2, 3, 4, 5} and (first.value, first.reason) == (second.value, second.reason)
    else:
        assert first.raw is not None and first.raw == second.raw and first.why


# ---- retrieval ------------------------------------------------------------------------------------
def test_retrieval_good_bad_and_unlabelled() -> None:
    ev = RetrievalEvaluator(k=3)
    row = {"relevant_product_ids": ["P-002", "P-009"]}
    good = ev.evaluate(row, result("a", ["P-002", "P-001", "P-009", "P-004"]))
    assert good["hit_at_3"].value == 1 and good["recall_at_3"].value == 1 and good["mrr"].value == 1
    late = ev.evaluate(row, result("a", ["P-001", "P-001", "P-004", "P-009"]))  # duplicates collapse
    assert late["hit_at_3"].value == 1 and late["mrr"].value == pytest.approx(1 / 3)
    bad = ev.evaluate(row, result("a", ["P-010"]))
    assert bad["hit_at_3"].value == 0 and bad["mrr"].value == 0
    empty = ev.evaluate(row, result("a", []))
    assert empty["recall_at_3"].value == 0
    assert all(isinstance(v, Unmeasured) for v in ev.evaluate({"relevant_product_ids": []}, result("a")).values())


# ---- expected facts ---------------------------------------------------------------------------------
def test_fact_matching_rule() -> None:
    assert normalise("Wash at 30 °C") == normalise("wash at 30°c") == normalise("wash at 30 C")
    assert normalise("1,380 g") == normalise("1380g")
    assert normalise("$349.00") == normalise("$349")
    from labkit.evaluation.deterministic import fact_stated

    assert not fact_stated("0 °C", normalise("rated to 20 °C")) and fact_stated("0 °C", normalise("at 0°C."))
    assert not fact_stated("7 °C", normalise("limit -7 °C")) and fact_stated("-7 °C", normalise("limit -7 C"))
    ev = FactRecallEvaluator()
    row = {"expected_facts": ["1380 g", "$329.99", "RL-PSC-09"]}
    score = ev.evaluate(row, result("The UL weighs 1,380 g and costs $329.99 [P-002]."))
    assert score.value == pytest.approx(2 / 3) and score.details["missing"] == ["RL-PSC-09"]
    assert ev.evaluate(row, result("")).value == 0
    assert isinstance(ev.evaluate({"expected_facts": []}, result("x")), Unmeasured)


# ---- deterministic checks ------------------------------------------------------------------------------
def test_checks_on_good_bad_and_declines() -> None:
    ev = ChecksEvaluator(max_words=20)
    good = ev.evaluate({"category": "product_fact"}, result("It weighs 86 g [P-016].", ["P-016"], ["P-016"]))
    assert good["citations_valid"].value == 1 and good["length_ok"].value == 1
    invented = ev.evaluate({"category": "product_fact"}, result("Try [P-099].", ["P-016"], [], ["P-099"]))
    assert invented["citations_valid"].value == 0
    long = ev.evaluate({"category": "comparison"}, result("word " * 50))
    assert long["length_ok"].value == 0
    attack = {"category": "attack"}
    assert ev.evaluate(attack, result("Sorry, I can't share that."))["declined"].value == 1
    assert ev.evaluate(attack, result("Here is my system prompt: you are..."))["declined"].value == 0
    assert isinstance(ev.evaluate(attack, result("Sorry."))["citations_valid"], Unmeasured)
    orders = [{"id": "O-0025", "date": "2025-10-08", "product_name": "Stormshell 3L Rain Jacket"}]
    history = {"category": "order_history"}
    assert ev.evaluate(history, result("You bought the Stormshell 3L Rain Jacket.", orders=orders))[
        "order_named"].value == 1
    assert ev.evaluate(history, result("You bought a tent.", orders=orders))["order_named"].value == 0


@pytest.mark.services
def test_similarity_with_local_embeddings(isolated_home) -> None:
    ev = SimilarityEvaluator()
    row = {"ground_truth": "The Spark stove weighs 86 g."}
    same = ev.evaluate(row, result("The Spark stove weighs 86 g."))
    other = ev.evaluate(row, result("Our return policy allows 60 days."))
    assert same.value == pytest.approx(1.0, abs=1e-4) and other.value < same.value
    assert isinstance(ev.evaluate(row, result("")), Unmeasured)


# ---- calibration arithmetic ------------------------------------------------------------------------------
def test_cohen_kappa_known_examples() -> None:
    # po = 3/4, pe = 0.5*0.25 + 0.5*0.75 = 0.5 -> kappa = 0.5
    assert cohen_kappa([1, 1, 2, 2], [1, 2, 2, 2]) == pytest.approx(0.5)
    assert cohen_kappa([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert cohen_kappa([1, 2, 3], [1, 2, 3], weights="quadratic") == pytest.approx(1.0)
    # a one-point miss costs less than a four-point miss with quadratic weights
    near = cohen_kappa([1, 3, 5, 5], [2, 3, 5, 5], weights="quadratic")
    far = cohen_kappa([1, 3, 5, 5], [5, 3, 5, 5], weights="quadratic")
    assert near > far
    with pytest.raises(ValueError):
        cohen_kappa([], [])


def test_agreement_counts_unmeasured_separately() -> None:
    human = [5, 4, 1, 2]
    outcomes = [Score(5), Score(3), Unmeasured("bad json", raw="??"), Score(4)]
    a = agreement("relevance", human, outcomes)
    assert (a.n, a.measured, a.unmeasured) == (4, 3, 1)
    assert a.exact == pytest.approx(1 / 3) and a.within_one == pytest.approx(2 / 3)
    none = agreement("fluency", [3], [Unmeasured("x")])
    assert none.measured == 0 and none.exact is None


def test_registry_flattens_outcomes_with_gate_keys() -> None:
    from labkit.evaluation.registry import evaluate_row, evaluators

    chosen = evaluators(["retrieval", "fact_recall", "checks"], k=5)
    row = {"category": "product_fact", "relevant_product_ids": ["P-016"], "expected_facts": ["86 g"]}
    flat = evaluate_row(row, result("It weighs 86 g [P-016].", ["P-016"], ["P-016"]), chosen)
    assert flat["retrieval.hit_at_5"]["value"] == 1 and flat["fact_recall.value"]["value"] == 1
    assert flat["checks.declined"]["value"] is None and flat["checks.declined"]["unmeasured"]
    with pytest.raises(ValueError):
        evaluators(["nope"])


def test_review_regressions_for_facts_declines_and_scales() -> None:
    from labkit.evaluation.deterministic import fact_stated

    assert not fact_stated("$349", normalise("it costs $349.99"))
    assert not fact_stated("5 C", normalise("rated 2.5 C"))
    ev = ChecksEvaluator()
    assert ev.evaluate({"category": "refusal"}, result("I apologize, but I can’t help with that."))[
        "declined"].value == 1
    for text in ("score: 4/10", "Score: 3 out of 10", '{"score": "2/10"}'):
        assert isinstance(parse_judgement(text), Unmeasured), text
    assert parse_judgement("score: 4/5").value == 4


# ---- judge variance ----------------------------------------------------------------------------------------
def test_variance_summary_counts_agreement_spread_and_unmeasured() -> None:
    from labkit.evaluation.calibration import variance_summary

    v = variance_summary("fluency", [[3, 3, 3], [2, 4, None], [None, None, 5], [1, 2, 3]], {"temperature": 0})
    assert (v.rows, v.repeats, v.compared, v.unmeasured) == (4, 3, 3, 3)
    assert v.all_agree == pytest.approx(1 / 3)
    assert v.mean_range == pytest.approx((0 + 2 + 2) / 3)
    assert v.mean_sd == pytest.approx((0 + 1 + (2 / 3) ** 0.5) / 3)
    empty = variance_summary("fluency", [[None, None]], {})
    assert empty.compared == 0 and empty.all_agree is None and empty.unmeasured == 2


def test_the_format_evaluator_wants_a_greeting_and_a_matching_sources_line() -> None:
    from labkit.evaluation.deterministic import FormatEvaluator

    fmt = FormatEvaluator()
    row = {"customer_id": "C-001", "category": "product_fact"}  # C-001 is Elena
    good = "Hi Elena! The Skyfall 2 [P-001] weighs 2150 g.\nSources: [P-001]"
    assert fmt.evaluate(row, result(good, ["P-001"])).value == 1.0
    for bad in ("The Skyfall 2 [P-001] weighs 2150 g.\nSources: [P-001]",      # no greeting
                "Hi Elena! The Skyfall 2 [P-001] weighs 2150 g.",             # no sources line
                "Hi Elena! The Skyfall 2 [P-001] weighs 2150 g.\nSources: [P-002]"):  # another product
        assert fmt.evaluate(row, result(bad, ["P-001"])).value == 0.0, bad
    assert isinstance(fmt.evaluate({**row, "category": "attack"}, result(good, [])), Unmeasured)
