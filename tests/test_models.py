"""The clients against the real local model server and the real local embedding model."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from labkit import models
from labkit.config import Settings
from tests.conftest import module_home


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with module_home(tmp_path_factory, "models-home") as settings:
        yield settings


def test_chat_returns_text_usage_and_latency(local: Settings) -> None:
    reply = models.chat("Name one thing to pack for a hike.", max_tokens=12, seed=7)
    assert reply.text.strip()
    assert reply.usage["input_tokens"] > 0 and 0 < reply.usage["output_tokens"] <= 12
    assert reply.usage["estimated"] is False
    assert reply.latency_s > 0
    assert reply.model  # the server names the model that answered


def test_same_seed_same_answer(local: Settings) -> None:
    a = models.chat("Describe a tent in one sentence.", temperature=0.0, seed=42, max_tokens=16)
    b = models.chat("Describe a tent in one sentence.", temperature=0.0, seed=42, max_tokens=16)
    assert a.text == b.text


def test_list_models_names_the_default(local: Settings) -> None:
    assert local.labkit_local_chat_model in models.list_models()
    assert models.chat_model_name() == local.labkit_local_chat_model


def test_embed_shapes_and_similarity(local: Settings) -> None:
    vectors = models.embed(["a warm sleeping bag", "a cosy sleeping bag for cold nights", "camp stove fuel"])
    assert vectors.shape == (3, models.embedding_dimensions()) == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]
    assert models.embed([]).shape == (0, 384)


def test_a_stream_is_not_cut_short_by_a_second_request(local: Settings) -> None:
    """The stock llama-cpp-python server ends a stream early when another request arrives."""
    import threading

    client = models.chat_client()
    kwargs = {"model": models.chat_model_name(), "temperature": 0.0, "seed": 3, "max_tokens": 40,
              "messages": [{"role": "user", "content": "Describe a good tent for a rainy week."}]}
    other = threading.Thread(target=lambda: models.chat("Name a stove.", max_tokens=8))
    pieces, finish = [], None
    for i, chunk in enumerate(client.chat.completions.create(stream=True, **kwargs)):
        if i == 1:
            other.start()  # queued behind the stream
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    other.join()
    whole = client.chat.completions.create(**kwargs).choices[0]
    assert finish == whole.finish_reason and finish in {"stop", "length"}
    assert "".join(pieces) == whole.message.content


def test_model_calls_share_one_compute_thread() -> None:
    """Every llama.cpp call runs on one thread, so OpenMP keeps one team (see model_server)."""
    import asyncio
    import threading

    from labkit.services.model_server import iterate_on_compute_thread, run_on_compute_thread

    async def main() -> tuple[set[str], list[int]]:
        names = await asyncio.gather(*(run_on_compute_thread(lambda: threading.current_thread().name)
                                       for _ in range(4)))
        items = [x async for x in iterate_on_compute_thread(iter([1, 2, 3]))]
        return set(names), items

    names, items = asyncio.run(main())
    assert len(names) == 1 and items == [1, 2, 3]


def test_a_client_leaving_mid_stream_does_not_disturb_the_next_request(local: Settings) -> None:
    client = models.chat_client()
    for _ in range(2):
        stream = client.chat.completions.create(
            model=models.chat_model_name(), stream=True, max_tokens=64, temperature=0.0,
            messages=[{"role": "user", "content": "Write a long story about a tent."}])
        for i, _chunk in enumerate(stream):
            if i == 2:
                break
        stream.close()  # the server sees the client gone while the model is generating
    reply = models.chat("Name one thing to pack for a hike.", max_tokens=8, seed=7)
    assert reply.text.strip()


def test_streaming_on_the_compute_thread_stops_the_producer_and_passes_errors() -> None:
    import asyncio

    from labkit.services.model_server import iterate_on_compute_thread

    closed: list[bool] = []

    def tokens():
        try:
            yield from range(1000)
        finally:
            closed.append(True)

    def failing():
        yield 1
        raise RuntimeError("model failed")

    async def main() -> tuple[list[int], str]:
        got = []
        stream = iterate_on_compute_thread(tokens())
        async for item in stream:
            got.append(item)
            if len(got) == 3:
                break
        await stream.aclose()  # the consumer leaves: the producer stops and is awaited
        try:
            async for _ in iterate_on_compute_thread(failing()):
                pass
        except RuntimeError as exc:
            return got, str(exc)
        return got, ""

    got, error = asyncio.run(main())
    assert got == [0, 1, 2] and closed == [True] and error == "model failed"


def test_the_model_lock_is_held_until_a_dropped_stream_has_left_the_model() -> None:
    """A client leaves mid-stream: the stock publisher raises out of its loop with the stream paused
    at `yield`. The lock must not be let go while the compute thread is still decoding."""
    import asyncio
    import contextlib
    import time as _time

    from labkit.services.model_server import hold_model_until_idle, iterate_on_compute_thread

    events: list[str] = []

    async def main() -> None:
        lock = asyncio.Lock()

        async def stock_get_llama_proxy():  # the shape of llama-cpp-python's lock holder
            await lock.acquire()
            try:
                yield "proxy"
            finally:
                lock.release()
                events.append("lock released")

        def decode():
            try:
                for i in range(50):
                    _time.sleep(0.02)
                    yield i
            finally:
                events.append("model done")

        async def publisher() -> None:
            async with contextlib.asynccontextmanager(hold_model_until_idle(stock_get_llama_proxy))():
                async for _chunk in iterate_on_compute_thread(decode()):
                    raise asyncio.CancelledError()  # as the stock publisher does on a disconnect

        with contextlib.suppress(asyncio.CancelledError):
            await publisher()

    asyncio.run(main())
    assert events == ["model done", "lock released"]
