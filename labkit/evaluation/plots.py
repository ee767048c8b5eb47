"""Plots for evaluation reports: metric means with 95% intervals, and per-category means.

Introduced in notebooks/04_evaluate.ipynb.
"""

from __future__ import annotations

from typing import Any


def plot_metrics(report: Any, metrics: list[str] | None = None, ax: Any = None) -> Any:
    """Each variant's mean per metric with its 95% interval (unmeasured metrics are left out)."""
    import matplotlib.pyplot as plt
    import numpy as np

    runs = list(report.runs.values())
    names = metrics or [m for m, iv in runs[0].summary["intervals"].items() if iv["n"] > 0]
    ax = ax or plt.subplots(figsize=(max(6, 1.2 * len(names)), 3.5))[1]
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(names))
    for i, run in enumerate(runs):
        ivs = [run.summary["intervals"].get(m) or {"mean": None} for m in names]
        means = np.array([iv["mean"] if iv["mean"] is not None else np.nan for iv in ivs])
        low = np.array([iv["mean"] - iv["low"] if iv["mean"] is not None else 0 for iv in ivs])
        high = np.array([iv["high"] - iv["mean"] if iv["mean"] is not None else 0 for iv in ivs])
        ax.bar(x + i * width, means, width, yerr=[low, high], capsize=3, label=run.name)
    ax.set_xticks(x + width * (len(runs) - 1) / 2, names, rotation=30, ha="right")
    ax.set_ylabel("mean (95% interval)")
    ax.legend()
    ax.figure.tight_layout()
    return ax


def plot_categories(report: Any, metric: str, ax: Any = None) -> Any:
    """Mean of one metric per test-set category, side by side for each variant."""
    import matplotlib.pyplot as plt
    import numpy as np

    runs = list(report.runs.values())
    cats = sorted({c for run in runs for c in run.summary["by_category"]})
    ax = ax or plt.subplots(figsize=(max(6, 1.1 * len(cats)), 3.5))[1]
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(cats))
    for i, run in enumerate(runs):
        values = [run.summary["by_category"].get(c, {}).get("metrics", {}).get(metric) for c in cats]
        ax.bar(x + i * width, [np.nan if v is None else v for v in values], width, label=run.name)
    ax.set_xticks(x + width * (len(runs) - 1) / 2, cats, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by category")
    ax.legend()
    ax.figure.tight_layout()
    return ax
