"""Benchmark: what the HTTP service costs beyond the flow, and how it behaves with 20 users.

Runs in a temporary LABKIT_HOME with the local model and search services and the app started by
the service manager (service `app`), all with one FlowConfig (`--max-tokens`, default 32).

(a) Overhead: the same questions through `POST /api/chat` and through `flow.answer` in this
    process, interleaved in ABBA order (the model server's prompt cache favours whichever runs
    second, so each order is used equally). Prints p50/p95 of each and the median paired difference
    (goal: at most 10 ms beyond the flow).
(b) Load: `--users` clients (default 20, each with its own token) ask for `--seconds` (default 60);
    a client that gets 429 or 503 waits what `Retry-After` says, as a polite client does. Then the
    same number of seconds of sequential `flow.answer`. Prints answers per minute of each and their
    ratio (goal: within 10%), the queue wait p50/p95 from the request log, and every status seen
    (goal: only 200, 429 and 503; the last two are counted and explained).

    .venv/bin/python benchmarks/service.py [--pairs 12] [--users 20] [--seconds 60] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = [
    "Which tent is the lightest?", "Do you sell a compass?", "What is the warmest sleeping bag?",
    "How much does the TrailMaster tent cost?", "Which backpack holds the most?",
    "Is there a waterproof jacket?", "What stove would you recommend for two people?",
    "Which hiking boots are best for wet trails?", "Do you have a headlamp with a red light?",
    "What camping chair is the lightest?", "Which sleeping bag is rated below zero?",
    "What did I order last?",
]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="labkit-bench-service-")
    for name in list(os.environ):
        if name.startswith(("LABKIT_", "AZURE_", "OPENAI_")):
            del os.environ[name]
    from tests.conftest import free_port

    config_data = {"index": "products-product", "max_tokens": args.max_tokens, "top_k": 2,
                   "max_documents": 3, "max_context_words": 200}
    config_path = Path(home) / "flow.json"
    config_path.write_text(json.dumps(config_data))
    os.environ.update({"LABKIT_HOME": home, "LABKIT_ENV_FILE": "none", "LABKIT_CI": "1",
                       "LABKIT_MODEL_PORT": str(free_port()), "LABKIT_SEARCH_PORT": str(free_port()),
                       "LABKIT_APP_PORT": str(free_port()), "LABKIT_APP_CONFIG": str(config_path),
                       "LABKIT_APP_TIMEOUT_S": "600"})

    import httpx

    from labkit import flow, requestlog
    from labkit.app.tokens import TokenStore
    from labkit.config import get_settings
    from labkit.services import ensure_running, stop

    settings = get_settings()
    config = flow.FlowConfig(**config_data)
    try:
        app = ensure_running(["app"], settings=settings)["app"]
        client = httpx.Client(base_url=app.base_url, timeout=900)
        tokens = [TokenStore(settings).issue(f"C-{1 + i % 14:03d}")[0] for i in range(max(args.users, 1))]

        def via_service(question: str, token: str = tokens[0]) -> httpx.Response:
            return client.post("/api/chat", json={"question": question},
                               headers={"authorization": f"Bearer {token}"})

        # warm both paths (index build, embedding model in each process, prompt cache)
        assert via_service(QUESTIONS[0]).status_code == 200
        flow.answer(QUESTIONS[0], "C-001", config=config)

        # (a) overhead, ABBA-interleaved
        service_s: list[float] = []
        direct_s: list[float] = []
        diffs: list[float] = []
        for i in range(args.pairs):
            question = QUESTIONS[i % len(QUESTIONS)]
            order = ("service", "direct") if i % 2 == 0 else ("direct", "service")
            took: dict[str, float] = {}
            for how in order:
                start = time.perf_counter()
                if how == "service":
                    response = via_service(question)
                    assert response.status_code == 200, response.text
                else:
                    flow.answer(question, "C-001", config=config)
                took[how] = time.perf_counter() - start
            service_s.append(took["service"])
            direct_s.append(took["direct"])
            diffs.append(took["service"] - took["direct"])
        print(f"service benchmark: model {settings.labkit_local_chat_model}, max_tokens {args.max_tokens}, "
              f"home {home}")
        print(f"(a) overhead, {args.pairs} questions each way, ABBA-interleaved")
        print(f"  flow.answer in process  p50 {statistics.median(direct_s) * 1000:7.0f} ms   "
              f"p95 {pct(direct_s, 0.95) * 1000:7.0f} ms")
        print(f"  POST /api/chat          p50 {statistics.median(service_s) * 1000:7.0f} ms   "
              f"p95 {pct(service_s, 0.95) * 1000:7.0f} ms")
        overhead_ms = statistics.median(diffs) * 1000
        print(f"  median paired difference {overhead_ms:+.1f} ms (goal <= 10 ms: "
              f"{'PASS' if overhead_ms <= 10 else 'MISS'}); ratio of p50s "
              f"{statistics.median(service_s) / statistics.median(direct_s):.3f}")

        # (b) load: users for a fixed time, then the same time sequentially in process
        log_start = len(list(requestlog.read_requests(settings)))
        statuses: collections.Counter[int] = collections.Counter()
        ok_latency: list[float] = []
        lock = threading.Lock()
        start = time.monotonic()
        stop_at = start + args.seconds
        last_done = [start]

        def user(n: int) -> None:
            own = httpx.Client(base_url=app.base_url, timeout=900)
            i = n
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                response = own.post("/api/chat", json={"question": QUESTIONS[i % len(QUESTIONS)]},
                                    headers={"authorization": f"Bearer {tokens[n]}"})
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        ok_latency.append(time.perf_counter() - t)
                        last_done[0] = max(last_done[0], time.monotonic())
                i += 1
                if response.status_code in (429, 503):
                    wait = float(response.headers.get("retry-after", "1"))
                    time.sleep(max(0.0, min(wait, stop_at - time.monotonic())))

        threads = [threading.Thread(target=user, args=(n,)) for n in range(args.users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        service_window = max(last_done[0], stop_at) - start
        service_per_min = statuses[200] * 60 / service_window
        rows = list(requestlog.read_requests(settings))[log_start:]
        waits = [r["queue_wait_s"] for r in rows if r.get("status") == 200 and "queue_wait_s" in r]

        done = 0
        seq_start = time.monotonic()
        while time.monotonic() - seq_start < args.seconds:
            flow.answer(QUESTIONS[done % len(QUESTIONS)], "C-001", config=config)
            done += 1
        sequential_per_min = done * 60 / (time.monotonic() - seq_start)

        print(f"(b) {args.users} users with their own tokens for {args.seconds:.0f} s (the last answers "
              f"finished at {service_window:.0f} s)")
        print(f"  statuses: {dict(sorted(statuses.items()))}")
        print(f"  answers per minute: service {service_per_min:.1f}, sequential flow.answer "
              f"{sequential_per_min:.1f}, ratio {service_per_min / sequential_per_min:.3f} "
              f"(goal >= 0.9: {'PASS' if service_per_min / sequential_per_min >= 0.9 else 'MISS'})")
        print(f"  latency of answered requests p50 {statistics.median(ok_latency):.1f} s, "
              f"p95 {pct(ok_latency, 0.95):.1f} s" if ok_latency else "  no answered request")
        print(f"  queue wait (request log) p50 {pct(waits, 0.5):.1f} s, p95 {pct(waits, 0.95):.1f} s "
              f"over {len(waits)} answers")
        unexpected = {s: n for s, n in statuses.items() if s not in (200, 429, 503)}
        print(f"  other statuses: {unexpected or 'none'} (goal: none). 503 = the model queue was full "
              f"(LABKIT_APP_QUEUE_MAX={settings.labkit_app_queue_max}); 429 = a token's rate limit")
        return 0 if not unexpected else 1
    finally:
        stop(settings=settings)


if __name__ == "__main__":
    raise SystemExit(main())
