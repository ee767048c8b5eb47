"""Benchmark: what the offline guards add to a request (goal: at most 50 ms p50; issue 17).

For each benign question (the held-out half of data/redteam/benign.jsonl) it times, in this process:
the input guard, the document guard on the documents the short shape retrieves for it, and the output
guard on a typical answer; and, as the baseline of the same run, `flow.prepare` without guards
(customer, retrieval, prompt: the steps around the model call). Prints p50/p95 of each, the guards'
total p50, and its ratio to the baseline's p50. The first call trains or loads the classifiers and
is not timed. Runs on the embedded default (starts the local search service).

    .venv/bin/python benchmarks/guards.py [--questions 60]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=60)
    args = parser.parse_args()

    from labkit import flow, safety
    from labkit.safety import redteam
    from labkit.services import ensure_running

    ensure_running(["search"])
    config = redteam.service_config().model_copy(update={"guards": False, "write_queries": False})
    questions = [t for s, t in redteam.benign_questions() if s.startswith("benign")][: args.questions]
    answer = "Hi Elena! The Rover Camp Chair [P-019] weighs 2100 g and costs $89.00.\nSources: [P-019]"
    safety.check_input("warm up")  # loads (or trains) both classifiers: not timed
    safety.check_documents([{"id": "x", "title": "t", "content": "warm up"}])
    times: dict[str, list[float]] = {"prepare (baseline)": [], "input": [], "documents": [], "output": []}
    for q in questions:
        t = time.perf_counter()
        result, _ = flow.prepare(q, "C-001", None, config)
        times["prepare (baseline)"].append(time.perf_counter() - t)
        docs = result.context["documents"]
        t = time.perf_counter()
        safety.check_input(q, customer_id="C-001")
        times["input"].append(time.perf_counter() - t)
        t = time.perf_counter()
        safety.check_documents(docs)
        times["documents"].append(time.perf_counter() - t)
        t = time.perf_counter()
        safety.check_output(answer, result.context, customer_id="C-001", citations=["P-019"], dropped=[])
        times["output"].append(time.perf_counter() - t)
    total = [a + b + c for a, b, c in zip(times["input"], times["documents"], times["output"], strict=True)]
    print(f"{len(questions)} questions")
    for name, values in times.items():
        p50, p95 = statistics.median(values) * 1000, _p(values, 0.95) * 1000
        print(f"  {name:<20} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")
    base = statistics.median(times["prepare (baseline)"])
    p50, p95 = statistics.median(total) * 1000, _p(total, 0.95) * 1000
    print(f"  guards total        p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   ratio to prepare p50: "
          f"{statistics.median(total) / base:.2f}")
    print(f"goal (at most 50 ms p50 offline): {'met' if statistics.median(total) <= 0.05 else 'NOT met'}")


if __name__ == "__main__":
    main()
