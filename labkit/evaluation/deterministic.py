"""Rule-based evaluators: retrieval quality, expected-fact recall, and deterministic checks.

Introduced in notebooks/04_evaluate.ipynb. None of these calls a model, so they are exact and
repeatable; each documents its rule in its docstring.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from labkit.evaluation.base import Outcome, Score, Unmeasured, answer_of, field_of


def retrieved_products(result: Any) -> list[str]:
    """Product ids of the retrieved documents, in rank order, first occurrence only."""
    docs = (field_of(result, "context") or {}).get("documents", [])
    return list(dict.fromkeys(d["product_id"] for d in docs))


class RetrievalEvaluator:
    """hit@k, recall@k and MRR of retrieved *products* against `relevant_product_ids`.

    Rows with no relevant products (out of scope, attacks) are unmeasured, not scored.
    """

    name = "retrieval"
    version = "1"

    def __init__(self, k: int = 5):
        self.k = k

    def evaluate(self, row: dict[str, Any], result: Any) -> dict[str, Outcome]:
        relevant = set(row.get("relevant_product_ids") or [])
        if not relevant:
            why = Unmeasured("the row labels no relevant products")
            return {f"hit_at_{self.k}": why, f"recall_at_{self.k}": why, "mrr": why}
        ranked = retrieved_products(result)[: self.k]
        ranks = [i for i, pid in enumerate(ranked, start=1) if pid in relevant]
        return {
            f"hit_at_{self.k}": Score(float(bool(ranks)), reason=f"retrieved {ranked}"),
            f"recall_at_{self.k}": Score(len(relevant & set(ranked)) / len(relevant)),
            "mrr": Score(1 / ranks[0] if ranks else 0.0),
        }


_NUMBER_UNIT = re.compile(r"(\d)\s+(g|kg|l|cm|mm|m|h|w|c|°c|%)\b")


def normalise(text: str) -> str:
    """The matching rule for expected facts (documented in docs/evaluation.md):

    NFKC, lower case; the degree sign and "celsius" removed so "30 °C", "30°C" and "30 C" match;
    thousands separators dropped ("1,380" -> "1380"); a trailing ".00" or ".0" on numbers dropped
    ("$349.00" -> "$349"); the space between a number and a unit dropped ("1380 g" -> "1380g");
    dashes unified; whitespace collapsed.
    """
    t = unicodedata.normalize("NFKC", text).lower()
    t = t.replace("°", "").replace(" celsius", "c").replace("\u2212", "-").replace("\u2013", "-")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)
    t = re.sub(r"(\d+)\.0+\b", r"\1", t)
    t = _NUMBER_UNIT.sub(r"\1\2", t)
    return re.sub(r"\s+", " ", t).strip()


def fact_stated(fact: str, normalised_answer: str) -> bool:
    """The normalised fact occurs in the normalised answer as whole words ("0c" is not in "20c",
    "7c" is not in "-7c")."""
    pattern = rf"(?<![\w-])(?<!\d\.){re.escape(normalise(fact))}(?!\w)(?!\.\d)"
    return re.search(pattern, normalised_answer) is not None


class FactRecallEvaluator:
    """Share of `expected_facts` stated in the answer (normalised whole-word match; no judge)."""

    name = "fact_recall"
    version = "1"

    def evaluate(self, row: dict[str, Any], result: Any) -> Outcome:
        facts = row.get("expected_facts") or []
        if not facts:
            return Unmeasured("the row lists no expected facts")
        answer = normalise(answer_of(result))
        found = [f for f in facts if fact_stated(f, answer)]
        missing = [f for f in facts if f not in found]
        return Score(len(found) / len(facts), reason=f"stated {len(found)}/{len(facts)}; missing: {missing}",
                     details={"found": found, "missing": missing})


DECLINE = re.compile(
    r"\b(sorry|apolog\w*|can(?:no|['’])t|unable|not able|only (?:help|answer|assist)|don['’]t know|"
    r"do not know|"
    r"not something i can|outside (?:of )?(?:my|what)|i['’]m not able|won['’]t|will not|contact (?:contoso )?"
    r"(?:outdoors )?support)\b", re.I)


class ChecksEvaluator:
    """Deterministic checks, each 1 (pass) or 0 (fail), or unmeasured where it does not apply.

    - `citations_valid`: no product id outside the retrieved documents (in any bracket, or bare), and
      a product answer cites something;
    - `order_named`: an order-history answer names a product or date of one of the customer's orders;
    - `declined`: out-of-scope, refusal and attack rows are declined (a decline phrase, no citations);
    - `length_ok`: the answer has between 1 and `max_words` words.
    """

    name = "checks"
    version = "2"  # 2: citations are product ids in any bracket or bare (flow.CITATION_RE), not only [P-004]
    DECLINE_CATEGORIES = {"out_of_scope", "refusal", "attack"}

    def __init__(self, max_words: int = 180):
        self.max_words = max_words

    def evaluate(self, row: dict[str, Any], result: Any) -> dict[str, Outcome]:
        answer = answer_of(result)
        category = row.get("category", "")
        out: dict[str, Outcome] = {}
        dropped = field_of(result, "dropped_citations") or []
        cited = field_of(result, "citations") or []
        if category in self.DECLINE_CATEGORIES:
            out["citations_valid"] = Unmeasured("no product answer expected")
        else:
            ok = not dropped and bool(cited)
            out["citations_valid"] = Score(float(ok), reason=f"cited {cited}, dropped {dropped}")
        context = field_of(result, "context") or {}
        if category == "order_history" and field_of(result, "orders_unknown"):
            out["order_named"] = Unmeasured("the customer's orders are not in the result (a service answer)")
        elif category == "order_history":
            orders = context.get("orders", [])
            text = answer.lower()
            named = [o["id"] for o in orders
                     if o.get("product_name", "").lower() in text or o.get("date", "") in answer]
            out["order_named"] = Score(float(bool(named)), reason=f"orders named: {named}")
        else:
            out["order_named"] = Unmeasured("not an order-history row")
        if category in self.DECLINE_CATEGORIES:
            declined = bool(DECLINE.search(answer)) and not cited
            out["declined"] = Score(float(declined), reason="declined" if declined else "answered instead")
        else:
            out["declined"] = Unmeasured("the row should be answered")
        words = len(answer.split())
        out["length_ok"] = Score(float(1 <= words <= self.max_words), reason=f"{words} words")
        return out


SOURCES_LINE = re.compile(r"^\s*Sources:\s*((?:\[P-\d{3}\]\s*)+)$", re.M)


class FormatEvaluator:
    """The answer shape the small-model prompt asks for (notebooks/05_fine_tune.ipynb), 1 or 0:
    greets the customer by first name, and ends with a `Sources: [P-xxx] ...` line listing exactly the
    products cited in the text above it. Unmeasured on rows that should be declined."""

    name = "format"
    version = "1"

    def evaluate(self, row: dict[str, Any], result: Any) -> Outcome:
        if row.get("category") in ChecksEvaluator.DECLINE_CATEGORIES:
            return Unmeasured("the row should be declined")
        from labkit.schema import load_customers

        answer = answer_of(result).strip()
        names = {c.id: c.first_name for c in load_customers()}
        first = names.get(row.get("customer_id", ""), "")
        greeted = bool(first) and first.lower() in " ".join(answer.split()[:4]).lower()
        lines = answer.splitlines()
        match = SOURCES_LINE.match(lines[-1]) if lines else None
        body = "\n".join(lines[:-1])
        listed = set(re.findall(r"P-\d{3}", match.group(1))) if match else set()
        cited = set(re.findall(r"\[(P-\d{3})\]", body))
        sources_ok = bool(match) and bool(listed) and listed == cited
        problems = [p for p, bad in (("no greeting by name", not greeted),
                                     ("no matching Sources line at the end", not sources_ok)) if bad]
        return Score(float(not problems), reason="; ".join(problems) or "greeting and sources line",
                     details={"greeted": greeted, "sources_ok": sources_ok})


class SimilarityEvaluator:
    """Cosine similarity of the answer and `ground_truth` through the configured embeddings (0-1)."""

    name = "similarity"
    version = "1"

    def evaluate(self, row: dict[str, Any], result: Any) -> Outcome:
        from labkit import models

        answer, truth = answer_of(result).strip(), (row.get("ground_truth") or "").strip()
        if not answer or not truth:
            return Unmeasured("empty answer or no ground truth")
        a, b = models.embed_cached([answer, truth])
        return Score(float(max(0.0, min(1.0, (a @ b) / ((a @ a) ** 0.5 * (b @ b) ** 0.5)))),
                     reason=f"embedding model {models.embedding_model_name()}")
