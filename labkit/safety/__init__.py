"""Content safety: input, document and output guards, and the red-team report.

Introduced in notebooks/06_content_safety.ipynb. `check_input`, `check_documents` and
`check_output` each return a list of `Decision`s; the flow runs them when `FlowConfig.guards` is on
(the default) and lists the decisions in `ChatResult.safety`.
"""

from labkit.safety.decision import Decision, GuardUnavailable, blocked, decide
from labkit.safety.guards import (
                                  REFUSAL,
                                  THRESHOLDS,
                                  check_documents,
                                  check_input,
                                  check_output,
                                  refusal,
                                  thresholds,
)

__all__ = ["REFUSAL", "THRESHOLDS", "Decision", "GuardUnavailable", "blocked", "check_documents",
           "check_input", "check_output", "decide", "refusal", "thresholds"]
