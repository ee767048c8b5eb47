"""Limits in front of the model: a per-token rate limit and a bounded, first-come queue.

Introduced with the HTTP service (notebooks/07_deploy.ipynb).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time


class TokenBucket:
    """Per-key token buckets: `rate_per_s` refill, at most `burst` held. `take()` returns 0 when a
    request may go now, otherwise the seconds until one may (for Retry-After)."""

    def __init__(self, rate_per_s: float, burst: int, clock=time.monotonic):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("the rate must be positive and the burst at least 1")
        self.rate, self.burst, self.clock = rate_per_s, burst, clock
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        with self._lock:
            now = self.clock()
            tokens, last = self._state.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._state[key] = (tokens - 1, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1 - tokens) / self.rate


class QueueFull(Exception):
    """More requests are waiting for the model than the queue holds (the service answers 503)."""


class ModelQueue:
    """At most `slots` requests use the model at once (1 for the local llama.cpp server); at most
    `max_waiting` wait, served in arrival order; one more is QueueFull."""

    def __init__(self, slots: int, max_waiting: int):
        self.slots, self.max_waiting = slots, max_waiting
        self._semaphore = asyncio.Semaphore(slots)  # asyncio wakes waiters first come, first served
        self.waiting = 0
        self.active = 0

    def full(self) -> bool:
        """True when one more request would have to wait beyond `max_waiting`."""
        return self.waiting >= self.max_waiting and self._semaphore.locked()

    async def acquire(self) -> None:
        """Wait for the model (QueueFull when too many already wait); pair with `release()`."""
        if self.full():
            raise QueueFull()
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        self._semaphore.release()

    def retry_after(self, typical_s: float = 10.0) -> int:
        """A hint for clients: roughly how long the waiting requests ahead will take."""
        return max(1, math.ceil(typical_s * (self.waiting + 1) / self.slots))
