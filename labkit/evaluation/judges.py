"""LLM judges for groundedness, relevance, coherence and fluency: a 1-5 score with a reason.

Introduced in notebooks/04_evaluate.ipynb. Prompts are `prompts/judge_<name>.prompty` (JSON output).
The judge model is configured separately from the chat model (`LABKIT_JUDGE_MODEL`; default: the
chat model). Output that cannot be parsed into a score 1-5 is `Unmeasured` with the raw text kept,
never a number. The groundedness judge sees the retrieved documents and the customer's orders.
"""

from __future__ import annotations

import json
import re
from typing import Any

from labkit import models, tracing
from labkit.config import get_settings
from labkit.evaluation.base import Outcome, Score, Unmeasured, answer_of, field_of
from labkit.prompts import load_prompt

JUDGES = ("groundedness", "relevance", "coherence", "fluency")
_SCORE_KEY = re.compile(r'"?score"?\s*[:=]\s*"?([0-9]+(?:\.[0-9]+)?)', re.I)
_BARE = re.compile(r"^\s*([1-5])(?:\s*/\s*5)?\s*$")
_OTHER_SCALE = re.compile(r"^\s*(?:/|out of)\s*(\d+)", re.I)  # "4/10", "3 out of 10"


def parse_judgement(text: str) -> Outcome:
    """Score 1-5 and reason from a judge's reply: JSON first, then `score: N`, then a bare digit."""
    raw = text or ""
    value: float | None = None
    reason = ""
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and "score" in data:
            value = float(data["score"])  # "2/10" as a string raises ValueError: handled below
            reason = str(data.get("reason") or "")
    except (ValueError, TypeError):
        match = re.search(r"\{.*\}", raw, re.S)
        if match:
            try:
                data = json.loads(match.group(0))
                if isinstance(data, dict) and "score" in data:
                    value, reason = float(data["score"]), str(data.get("reason") or "")
            except (ValueError, TypeError):
                pass
    if value is None and (m := _SCORE_KEY.search(raw)):
        scale = _OTHER_SCALE.match(raw[m.end():])
        if scale and scale.group(1) != "5":
            return Unmeasured(f"judge answered on a 1-{scale.group(1)} scale, not 1-5", raw=raw)
        value = float(m.group(1))
        reason = raw[m.end():].strip(" ,.;:\n\"}") or ""
    if value is None and (m := _BARE.match(raw)):
        value = float(m.group(1))
    if value is None:
        return Unmeasured("judge output could not be parsed into a 1-5 score", raw=raw)
    if not 1 <= value <= 5 or value != int(value):
        return Unmeasured(f"judge score {value:g} is not an integer from 1 to 5", raw=raw)
    return Score(value, reason=reason)


def context_text(result: Any, max_chars: int = 6000) -> str:
    """What the groundedness judge sees: the documents with ids, then the customer's orders."""
    context = field_of(result, "context") or {}
    parts = [f"[{d['product_id']}] {d.get('title', '')}\n{d.get('content', '')}"
             for d in context.get("documents", [])]
    orders = context.get("orders", [])
    if orders:
        parts.append("Customer's orders:\n" + "\n".join(
            f"- {o['date']}: {o['quantity']} x {o['product_name']} [{o['product_id']}], total ${o['total']}"
            for o in orders))
    return "\n\n".join(parts)[:max_chars]


class JudgeEvaluator:
    """One LLM judge. `evaluate()` never raises on bad judge output: it returns Unmeasured."""

    def __init__(self, name: str, model: str | None = None, client: Any = None):
        if name not in JUDGES:
            raise ValueError(f"unknown judge {name!r}; choose one of {', '.join(JUDGES)}")
        self.name = name
        self.prompt = load_prompt(f"judge_{name}")
        self.version = f"{self.prompt.version}-{self.prompt.sha256[:8]}"
        self.model = model or get_settings().labkit_judge_model
        self.client = client
        self.raise_transient = False  # the runner sets True: a 429 is retried, not recorded as unmeasured

    def judge(self, query: str, response: str, context: str = "",
              params: dict[str, Any] | None = None) -> Outcome:
        """Score one answer; `params` overrides the judge prompt's call parameters (seed, temperature)."""
        if not response.strip():
            return Unmeasured("empty response: nothing to judge")
        try:
            with tracing.purpose("judge"):
                reply = self.prompt.run(self.client, model=self.model, params=params, query=query,
                                        response=response, context=context)
        except Exception as exc:  # a failed judge call is unmeasured, not a zero
            if self.raise_transient and models.is_transient(exc):
                raise  # the evaluation runner waits and retries the row
            return Unmeasured(f"judge call failed: {type(exc).__name__}: {exc}")
        details = {"judge_model": reply.model, "usage": reply.usage}
        outcome = parse_judgement(reply.text)
        if isinstance(outcome, Score):
            return Score(outcome.value, reason=outcome.reason, details=details)
        return Unmeasured(outcome.why, raw=outcome.raw, details=details)

    def evaluate(self, row: dict[str, Any], result: Any) -> Outcome:
        context = context_text(result) if self.name == "groundedness" else ""
        documents = (field_of(result, "context") or {}).get("documents") or []
        if self.name == "groundedness" and documents and not any(d.get("content") for d in documents):
            return Unmeasured("the documents' text is not in the result (a service answer carries ids only)")
        return self.judge(row.get("query", ""), answer_of(result), context)
