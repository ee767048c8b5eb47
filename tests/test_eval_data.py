"""The evaluation test set and the judge calibration sets are consistent with the data in data/."""

from __future__ import annotations

from collections import Counter

import pytest

from labkit.evaluation import testset
from labkit.evaluation.testset import EvalRow


@pytest.fixture(scope="module")
def rows() -> list[EvalRow]:
    return testset.load_testset()


def test_testset_is_valid() -> None:
    assert testset.validate_testset() == []


def test_testset_category_minimums(rows: list[EvalRow]) -> None:
    counts = Counter(r.category for r in rows)
    assert len(rows) >= testset.MIN_ROWS
    for category, minimum in testset.MIN_PER_CATEGORY.items():
        assert counts[category] >= minimum, category


@pytest.mark.parametrize("judge", testset.JUDGES)
def test_calibration_loads_with_spread_scores(judge: str) -> None:
    cal = testset.load_calibration(judge)
    assert len(cal) >= 30
    scores = Counter(r.human_score for r in cal)
    for score in range(1, 6):
        assert scores[score] >= 4, f"{judge}: score {score} appears {scores[score]} times"
    assert testset.validate_calibration(judge, cal) == []


def test_validator_catches_an_invented_fact(rows: list[EvalRow]) -> None:
    row = next(r for r in rows if "RL-PS-14" in r.expected_facts)
    bad = row.model_copy(
        update={
            "expected_facts": ["RL-PS-99"],
            "ground_truth": row.ground_truth.replace("RL-PS-14", "RL-PS-99"),
        }
    )
    problems = testset.validate_testset([bad if r.id == row.id else r for r in rows])
    assert any("RL-PS-99" in p and "not in the catalog" in p for p in problems), problems


def test_validator_catches_an_unknown_customer(rows: list[EvalRow]) -> None:
    bad = rows[0].model_copy(update={"customer_id": "C-999"})
    problems = testset.validate_testset([bad, *rows[1:]])
    assert any("unknown customer 'C-999'" in p for p in problems), problems


def test_validator_catches_another_customers_order(rows: list[EvalRow]) -> None:
    row = next(r for r in rows if r.category == "order_history")
    other = "C-012" if row.customer_id != "C-012" else "C-003"
    problems = testset.validate_testset(
        [row.model_copy(update={"customer_id": other}) if r is row else r for r in rows]
    )
    assert any(f"{other} never ordered" in p for p in problems), problems


def test_fact_matching_respects_number_boundaries() -> None:
    assert testset.contains_fact("Stakes: 8 aluminium V-stakes, 15 cm", "15 cm")
    assert not testset.contains_fact("Floor dimensions: 215 x 135 cm, peak 215 cm", "15 cm")
    assert not testset.contains_fact("Limit temperature: -7 °C", "7 °C")
    assert testset.contains_fact("Limit   temperature:\n-7 °C", "limit temperature: -7 °C")


def test_validator_catches_a_ground_truth_citing_an_irrelevant_product_in_any_bracket(rows: list[EvalRow]) -> None:
    row = next(r for r in rows if r.relevant_product_ids and "P-099" not in r.relevant_product_ids)
    bad = row.model_copy(update={"ground_truth": row.ground_truth + " See also (P-099)."})
    problems = testset.validate_testset([bad if r.id == row.id else r for r in rows])
    assert any("cites [P-099]" in p for p in problems), problems
