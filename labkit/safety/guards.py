"""Input, document and output guards (introduced in notebooks/06_content_safety.ipynb).

Each guard is callable on its own and returns `Decision`s, one per thing it measured, allowed ones
included (so a notebook can see the scores):

- `check_input(question, history=None, customer_id=None)`: the attack classifier (jailbreak and
  prompt injection, system-prompt extraction, harmful requests), the other-customer rule and the
  off-topic rule (a flag: the model declines off-topic questions itself).
- `check_documents(documents)`: instructions planted in retrieved text (indirect injection); the
  flow drops a flagged document before it reaches the prompt.
- `check_output(answer, context, ...)`: the canary marker of the system prompt, personal data of
  anyone but the signed-in customer, harmful content, and citations no retrieved document supports
  (a flag).

The offline backend is the default everywhere; `LABKIT_SAFETY_BACKEND=azure` uses Azure AI Content
Safety (`labkit.safety.azure`) instead of the classifier. Thresholds are configuration
(`LABKIT_SAFETY_THRESHOLDS`, a JSON object of category -> score, merged over `THRESHOLDS`).
"""

from __future__ import annotations

import re
from typing import Any

from labkit.config import Settings, get_settings
from labkit.safety import azure, rules
from labkit.safety.decision import Decision, decide

# block at or above (categories absent here are flagged, never blocked; see FLAG_ONLY)
THRESHOLDS: dict[str, float] = {
    # 1 - P(benign) of the classifier on the input, chosen on the red-team curve (notebook 06, which
    # shows it): on the held-out benign questions 0.5 blocked 6.3%, 0.65 2.1%, 0.7 1.1%
    "attack": 0.7,
    "other_customer_data": 0.8,
    "harm_intent": 1.0,
    # the document model's score of a document's most prompt-like sentence; the catalog's own
    # sentences score at most 0.17 (they are its benign training text), planted instructions 0.1-1.0
    "indirect_injection": 0.3,
    "canary_leak": 1.0,
    "personal_data": 1.0,
    "harmful_output": 0.8,
    "off_topic": 1.0,  # flag
    "unsupported_citation": 0.01,  # flag
    "azure_severity": 4,  # Azure AI Content Safety severity (0-7) that blocks; 4 = medium
}
FLAG_ONLY = frozenset({"off_topic", "unsupported_citation", "indirect_injection"})
REFUSAL = ("Sorry, I can't help with that. I can answer questions about Contoso Outdoors products and "
           "your own orders.")
SELF_HARM_REFUSAL = ("I'm sorry you're feeling this way. I can't help with that, but you don't have to "
                     "face it alone: please contact your local emergency number or a crisis line now. I'm "
                     "here for questions about Contoso Outdoors gear and your orders.")


def refusal(decisions: list[Decision]) -> str:
    """What the customer reads when a guard blocked: a supportive message for self-harm, else REFUSAL."""
    if any(d.action == "block" and (d.detail == "self_harm" or d.category == "SelfHarm") for d in decisions):
        return SELF_HARM_REFUSAL
    return REFUSAL


def thresholds(settings: Settings | None = None) -> dict[str, float]:
    settings = settings or get_settings()
    return {**THRESHOLDS, **(settings.labkit_safety_thresholds or {})}


def _rule(guard: Any, category: str, found: tuple[float, str], limits: dict[str, float]) -> Decision:
    score, detail = found
    if category in FLAG_ONLY:
        return decide(guard, category, score, block_at=None, flag_at=limits[category], detail=detail)
    return decide(guard, category, score, block_at=limits[category], detail=detail)


def attack_scores(texts: list[str], settings: Settings | None = None,
                  kind: str = "input") -> list[tuple[str, float]]:
    """(most likely attack category, 1 - P(benign)) per text, from the offline classifier."""
    from labkit.safety import classifier

    clf = classifier.load(settings, kind)
    out = []
    for probs in clf.scores([rules.canonical(t) for t in texts]):
        category = max(classifier.ATTACKS, key=lambda c: probs.get(c, 0.0))
        out.append((category, 1.0 - probs.get("benign", 0.0)))
    return out


def check_input(question: str, history: list[dict[str, str]] | None = None, customer_id: str | None = None,
                *, settings: Settings | None = None) -> list[Decision]:
    """Decisions on a customer's question (and the last earlier turn of theirs, for split attacks)."""
    settings = settings or get_settings()
    limits = thresholds(settings)
    texts = [question]
    earlier = [t.get("content", "") for t in history or [] if t.get("role") == "user"]
    if earlier:
        texts.append(f"{earlier[-1]}\n{question}")
    if settings.labkit_safety_backend == "azure":
        decisions = _azure_text("input", texts[-1], limits, settings)
        attack, _ = azure.shield(texts[-1], [], settings)
        decisions.append(decide("input", "jailbreak", float(attack), block_at=1.0, backend="azure",
                                detail="prompt shields"))
    else:
        category, score = max(attack_scores(texts, settings), key=lambda s: s[1])
        decisions = [decide("input", category, score, block_at=limits["attack"], detail="classifier")]
    return [
        *decisions,
        _rule("input", "harm_intent", rules.harm_intent(question), limits),
        _rule("input", "other_customer_data", rules.other_customer_request(question, customer_id), limits),
        _rule("input", "off_topic", rules.off_topic(question), limits),
    ]


def _azure_text(guard: Any, text: str, limits: dict[str, float], settings: Settings) -> list[Decision]:
    """One decision per Azure AI Content Safety harm category (score = severity / 7)."""
    block = limits["azure_severity"]
    found = azure.analyze(text, settings)
    return [decide(guard, category, severity / 7, block_at=block / 7, backend="azure",
                   detail=f"severity {severity}") for category, severity in found.items()]


def _sentences(text: str) -> list[str]:
    parts = [p.strip() for p in re.split(r"(?<=[.!?])\s+|\n+", text) if p.strip()]
    return parts or [text]


def check_documents(documents: list[dict[str, Any]], *, settings: Settings | None = None) -> list[Decision]:
    """One decision per document: `flag` means planted instructions were found and the flow drops it.

    The score is the larger of the instruction-pattern rule and the classifier's attack score of the
    document's most attack-like sentence (the classifier learned the catalog's own sentences as
    benign, so a sentence that reads like a prompt to an assistant stands out)."""
    settings = settings or get_settings()
    limits = thresholds(settings)
    texts = [f"{d.get('title', '')}\n{d.get('content', '')}" for d in documents]
    if not texts:
        return []
    if settings.labkit_safety_backend == "azure":
        _, shielded = azure.shield("", texts, settings)
        model = [float(shielded[i]) if i < len(shielded) else 0.0 for i in range(len(texts))]
        backend = "azure"
    else:  # one classifier call for every sentence of every document (this runs on each request)
        pieces = [_sentences(t) for t in texts]
        scores = iter(s for _, s in attack_scores([x for p in pieces for x in p], settings, "documents"))
        model = [max((next(scores) for _ in p), default=0.0) for p in pieces]
        backend = "offline"
    out = []
    for doc, text, model_score in zip(documents, texts, model, strict=True):
        score = max(rules.planted_instruction(text)[0], model_score)
        out.append(decide("documents", "indirect_injection", score, block_at=None, backend=backend,
                          flag_at=limits["indirect_injection"], detail=str(doc.get("id", ""))))
    return out


def check_output(answer: str, context: dict[str, Any] | None = None, *, customer_id: str | None = None,
                 citations: list[str] | None = None, dropped: list[str] | None = None,
                 canary: str | None = None, settings: Settings | None = None) -> list[Decision]:
    """Decisions on an answer (or a streamed answer so far)."""
    settings = settings or get_settings()
    limits = thresholds(settings)
    canary = settings.labkit_prompt_canary if canary is None else canary
    from labkit.safety import classifier

    out = [
        _rule("output", "canary_leak", rules.canary_leak(answer, canary), limits),
        _rule("output", "personal_data", rules.personal_data(answer, customer_id), limits),
    ]
    if settings.labkit_safety_backend == "azure":
        out += _azure_text("output", answer, limits, settings) if answer.strip() else []
    else:
        harmful = classifier.load(settings).scores([answer])[0].get("harmful", 0.0) if answer.strip() else 0.0
        out.append(decide("output", "harmful_output", harmful, block_at=limits["harmful_output"],
                          detail="classifier"))
    if citations is not None or dropped is not None:
        out.append(_rule("output", "unsupported_citation",
                         rules.unsupported_citations(citations or [], dropped or []), limits))
    return out
