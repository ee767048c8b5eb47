"""Benchmark: how long a monitoring summary takes over a large trace store (issue 16: 100,000 spans
"in seconds").

It writes a week of synthetic traffic (labkit.monitor.simulate) with at least `--spans` spans, then
times, each `--repeat` times, over the whole week:
- the baseline: reading the trace store's rows with one plain `SELECT` into pandas (the least any
  summary must do);
- `labkit.monitor.dashboard.build` (spans, request log and feedback loaded, every table computed);
- `alerts.evaluate` with the kit's rules (one dashboard per window the rules use).
Prints the median of each and its ratio to the baseline of the same run, because machines are noisy.

    .venv/bin/python benchmarks/monitor.py [--spans 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import pandas as pd

    from labkit.monitor import alerts, dashboard
    from labkit.monitor.simulate import simulate

    end = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    with tempfile.TemporaryDirectory() as folder:
        rate = 40.0
        while True:  # about 14 spans per request over a week: scale the rate until the store is big enough
            started = time.perf_counter()
            traffic = simulate(folder, days=7, requests_per_hour=rate, seed=1, end=end)
            written = time.perf_counter() - started
            if traffic.spans >= args.spans:
                break
            rate *= args.spans / traffic.spans * 1.05
        print(f"trace store: {traffic.spans:,} spans, {len(traffic.requests):,} requests "
              f"(written in {written:.1f} s)")

        def plain() -> None:
            with sqlite3.connect(traffic.source.traces) as conn:
                pd.read_sql_query("SELECT * FROM spans", conn)

        def summary() -> None:
            dashboard.build(traffic.source, since="7d", now=end)

        def rules() -> None:
            alerts.evaluate(source=traffic.source, now=end)

        timings = {}
        for name, fn in (("baseline: SELECT * into pandas", plain), ("dashboard.build over 7 days", summary),
                         ("alerts.evaluate (kit rules)", rules)):
            runs = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - started)
            timings[name] = statistics.median(runs)
        base = timings["baseline: SELECT * into pandas"]
        for name, seconds in timings.items():
            print(f"{name:34} {seconds:6.2f} s  ratio to baseline {seconds / base:5.2f}")


if __name__ == "__main__":
    main()
