"""Benchmark: evaluation-runner throughput vs the model server's own maximum.

The same N chat requests (one short question each, `--max-tokens` tokens, temperature 0) are sent
three ways to the local model server, in a temporary LABKIT_HOME:

- server direct: raw `openai` calls with no runner, from 1 thread and from `--concurrency`
  threads; the faster of the two is the server's maximum (requests/s) - the llama.cpp server
  answers one request at a time, so extra client threads need not help;
- runner sequential: `labkit.evaluate(..., concurrency=1)` with the light target (one chat call
  per row) and the `checks` evaluator, writing results.jsonl as it goes;
- runner concurrent: the same with `--concurrency`.

Prints rows/s for each and the ratio runner concurrent / server max (goal >= 0.8), which measures
what the runner's bookkeeping (threads, fsync per row, scoring, progress) costs. Passes are
interleaved and repeated (`--repeats`), taking the median, because this machine is noisy.

    .venv/bin/python benchmarks/eval_throughput.py [--rows 40] [--concurrency 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="labkit-bench-eval-")
    for name in list(os.environ):
        if name.startswith(("LABKIT_", "AZURE_", "OPENAI_")):
            del os.environ[name]
    os.environ.update({"LABKIT_HOME": home, "LABKIT_ENV_FILE": "none", "LABKIT_CI": "1"})
    from tests.conftest import free_port

    os.environ["LABKIT_MODEL_PORT"] = str(free_port())

    from labkit import models
    from labkit.config import get_settings
    from labkit.evaluation import runner
    from labkit.services import ensure_running, stop

    settings = get_settings()
    ensure_running(["model"], settings=settings)
    topics = ["tent", "sleeping bag", "backpack", "stove", "jacket", "boots", "headlamp", "chair"]
    rows = [{"id": f"B-{i:03d}", "query": f"In one sentence, why carry a {topics[i % len(topics)]} "
             f"on hike number {i}?"} for i in range(args.rows)]
    client = models.chat_client(max_retries=0)

    def one(row: dict) -> None:
        models.chat(row["query"], client=client, max_tokens=args.max_tokens, seed=42)

    def server_direct(threads: int) -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, rows))
        return len(rows) / (time.perf_counter() - start)

    def through_runner(concurrency: int, tag: str) -> float:
        out = Path(home) / f"run-{tag}-{time.monotonic_ns()}"
        start = time.perf_counter()
        report = runner.evaluate(rows, target=runner.bare_model_target(max_tokens=args.max_tokens),
                                 target_name="bench", out=out, concurrency=concurrency, progress=False)
        elapsed = time.perf_counter() - start
        assert report.status == "complete", report.lines()
        return len(rows) / elapsed

    try:
        one(rows[0])  # warm the model
        results: dict[str, list[float]] = {"server direct x1": [], f"server direct x{args.concurrency}": [],
                                           "runner sequential": [], "runner concurrent": []}
        for rep in range(args.repeats):
            results["server direct x1"].append(server_direct(1))
            results[f"server direct x{args.concurrency}"].append(server_direct(args.concurrency))
            results["runner sequential"].append(through_runner(1, f"seq{rep}"))
            results["runner concurrent"].append(through_runner(args.concurrency, f"con{rep}"))
        medians = {k: statistics.median(v) for k, v in results.items()}
        direct = (medians["server direct x1"], medians[f"server direct x{args.concurrency}"])
        medians["server max"] = max(direct)
        print(f"eval throughput: {args.rows} rows, max_tokens {args.max_tokens}, concurrency "
              f"{args.concurrency}, {args.repeats} interleaved repeats (median), model "
              f"{settings.labkit_local_chat_model} on {settings.labkit_model_threads} threads")
        for name, values in results.items():
            shown = ", ".join(f"{v:.2f}" for v in values)
            print(f"  {name:<18} {medians[name]:6.2f} rows/s   (runs: {shown})")
        print(f"  {'server max':<18} {medians['server max']:6.2f} rows/s   (the faster direct mode)")
        ratio = medians["runner concurrent"] / medians["server max"]
        seq_ratio = medians["runner sequential"] / medians["server max"]
        print(f"  ratio runner concurrent / server max = {ratio:.3f} (goal >= 0.8: "
              f"{'PASS' if ratio >= 0.8 else 'MISS'})")
        print(f"  ratio runner sequential / server max = {seq_ratio:.3f}")
        return 0
    finally:
        stop(settings=settings)


if __name__ == "__main__":
    raise SystemExit(main())
