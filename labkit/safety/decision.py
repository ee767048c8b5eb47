"""The one record every guard returns (introduced in notebooks/06_content_safety.ipynb).

`Decision(guard, category, score, threshold, action, backend)`: which guard (`input`, `documents`,
`output`), what it looked for (`jailbreak`, `prompt_extraction`, `harmful`, `other_customer_data`,
`off_topic`, `indirect_injection`, `canary_leak`, `personal_data`, `unsupported_citation`, or an Azure
AI Content Safety category such as `Hate`), the score it measured, the threshold it compared it with,
and the action: `allow`, `flag` (recorded, the answer goes on) or `block` (the customer gets a
refusal). `ChatResult.safety` lists them as dicts and `ChatResult.blocked` is true when one blocked.
Decisions hold no text: logs and traces may record them as they are.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Action = Literal["allow", "flag", "block"]
ACTIONS: tuple[Action, ...] = ("allow", "flag", "block")


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    guard: Literal["input", "documents", "output"]
    category: str
    score: float
    threshold: float
    action: Action
    backend: str = "offline"
    detail: str = ""  # ids or counts only (a document id, "2 of 3 citations"), never customer text

    @property
    def blocked(self) -> bool:
        return self.action == "block"


def decide(guard: Literal["input", "documents", "output"], category: str, score: float, *,
           block_at: float | None, flag_at: float | None = None, backend: str = "offline",
           detail: str = "") -> Decision:
    """`block` at or above `block_at`, `flag` at or above `flag_at`, else `allow`."""
    if block_at is not None and score >= block_at:
        return Decision(guard=guard, category=category, score=round(score, 4), threshold=block_at,
                        action="block", backend=backend, detail=detail)
    if flag_at is not None and score >= flag_at:
        return Decision(guard=guard, category=category, score=round(score, 4), threshold=flag_at,
                        action="flag", backend=backend, detail=detail)
    threshold = block_at if block_at is not None else (flag_at if flag_at is not None else 1.0)
    return Decision(guard=guard, category=category, score=round(score, 4), threshold=threshold,
                    action="allow", backend=backend, detail=detail)


def blocked(decisions: list[Decision]) -> bool:
    return any(d.action == "block" for d in decisions)


class GuardUnavailable(RuntimeError):
    """A guard could not decide (its classifier's data is missing or broken, Azure did not answer).
    The flow fails closed: the request is not answered unguarded (the service says 503)."""
