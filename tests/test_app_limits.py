"""Limits of the chat service, without a server: token bucket (fake clock), model queue, tokens."""

from __future__ import annotations

import asyncio

import pytest

from labkit.app.limits import ModelQueue, QueueFull, TokenBucket
from labkit.app.tokens import AuthError, TokenStore, parse_duration


def test_token_bucket_allows_a_burst_then_says_when_to_retry() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=0.5, burst=2, clock=lambda: now[0])
    assert bucket.take("a") == 0 and bucket.take("a") == 0
    assert bucket.take("a") == pytest.approx(2.0)  # one request per 2 s
    assert bucket.take("b") == 0  # buckets are per token
    now[0] = 2.0
    assert bucket.take("a") == 0


def test_model_queue_serves_in_order_and_refuses_beyond_its_size() -> None:
    async def main() -> tuple[list[int], bool]:
        queue = ModelQueue(slots=1, max_waiting=2)
        order: list[int] = []
        gate = asyncio.Event()

        async def user(i: int) -> None:
            await queue.acquire()
            try:
                order.append(i)
                await gate.wait()
            finally:
                queue.release()

        first = asyncio.create_task(user(0))
        await asyncio.sleep(0)  # user 0 holds the model
        waiting = [asyncio.create_task(user(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        refused = False
        try:
            await queue.acquire()
        except QueueFull:
            refused = True
        gate.set()
        await asyncio.gather(first, *waiting)
        return order, refused

    order, refused = asyncio.run(main())
    assert refused and order == [0, 1, 2]


def test_tokens_are_stored_hashed_and_map_to_their_customer(clean_env) -> None:
    store = TokenStore()
    token, record = store.issue("C-001", parse_duration("7d"))
    assert len(token) >= 3 + 43 and token not in store.path.read_text()  # 256 bits, never stored
    assert store.customer_for(token) == "C-001"
    for bad in (None, "", "lk_wrong"):
        with pytest.raises(AuthError):
            store.customer_for(bad)
    assert store.revoke(record.token_id[:8]) == 1
    with pytest.raises(AuthError, match="revoked"):
        store.customer_for(token)
    expired, _ = store.issue("C-002", -1)
    with pytest.raises(AuthError, match="expired"):
        store.customer_for(expired)


@pytest.mark.parametrize("text,seconds", [("7d", 604800), ("12h", 43200), ("30m", 1800), ("never", None)])
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "-1d", "0h", "1y", "soon"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
