"""Rate control: rows in flight (AIMD on 429s), time limits, retries with backoff.

Part of the evaluation runner (labkit.evaluation.runner; notebooks/04_evaluate.ipynb).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

INTERRUPT_GRACE_S = 5.0  # on Ctrl-C, how long rows already running get to finish and be saved


class Limiter:
    """Additive-increase/multiplicative-decrease cap on rows in flight."""

    def __init__(self, maximum: int):
        self.maximum = max(1, int(maximum))
        self.limit = self.maximum
        self._successes = 0
        self._lock = threading.Lock()
        self.history: list[tuple[float, int]] = [(time.monotonic(), self.limit)]
        self.rate_limited = 0

    def on_rate_limit(self) -> None:
        with self._lock:
            self.rate_limited += 1
            self.limit = max(1, self.limit // 2)
            self._successes = 0
            self.history.append((time.monotonic(), self.limit))

    def on_success(self) -> None:
        with self._lock:
            self._successes += 1
            if self.limit < self.maximum and self._successes >= self.limit:
                self.limit += 1
                self._successes = 0
                self.history.append((time.monotonic(), self.limit))


@dataclass
class RunOptions:
    concurrency: int = 2
    row_timeout_s: float = 180.0
    max_attempts: int = 5
    backoff_s: float = 1.0  # first retry wait when the server gives no Retry-After; doubles, capped
    backoff_cap_s: float = 30.0
    abort_after: int | None = None  # consecutive unreachable rows before stopping; default 2*concurrency+2
    budget_usd: float | None = None
    progress: bool = True
    sample: str = "first"  # how `limit` picked the rows (recorded in the manifest)


def retry_wait(exc: BaseException, attempts: int, options: RunOptions) -> float:
    """Seconds before the next attempt: the server's Retry-After, else exponential backoff (capped)."""
    from labkit import models

    wait = models.retry_after(exc)
    if wait is None:
        wait = min(options.backoff_cap_s, options.backoff_s * 2 ** (attempts - 1))
    return wait


def classify(exc: BaseException) -> str:
    """What a failed attempt was: `rate_limited` (slow down, retry), `timeout`, `unreachable` (retry
    with backoff; many in a row stop the run) or `error` (a bad row or a bug: not retried)."""
    import httpx
    import openai

    from labkit import models
    from labkit.evaluation.targets import TargetHTTPError, TargetTimeout, TargetUnreachable

    status = exc.status_code if isinstance(exc, TargetHTTPError) else None
    busy = status == 503 and "retry-after" in getattr(getattr(exc, "response", None), "headers", {})
    if isinstance(exc, openai.RateLimitError) or status == 429 or busy:  # a full queue asks us to slow down
        return "rate_limited"
    if isinstance(exc, openai.APITimeoutError | TargetTimeout) or status == 504:
        return "timeout"
    if models.is_transient(exc) or isinstance(exc, TargetUnreachable | httpx.TransportError) or \
            (status is not None and (status >= 500 or status == 408)):
        return "unreachable"
    return "error"
