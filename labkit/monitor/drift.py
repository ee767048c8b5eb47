"""Drift: online metrics and retrieval statistics against the offline baseline, one verdict per metric.

Introduced in notebooks/08_monitor.ipynb; `labkit monitor drift` prints the table.

The offline baseline (`eval/monitor-baseline.json`) holds, per row of an offline evaluation run, the
same label-free measurements that online evaluation takes (labkit.monitor.online): top retrieval
score, answer length, citations valid, declined, groundedness, the question's kind and the category
of the top document. `build_baseline(eval_dir)` makes it from an evaluation output folder.

Each metric is compared with a test suited to its type:
- numbers (top score, length): two-sample Kolmogorov-Smirnov (scipy `ks_2samp`), shown as medians;
- the 1-5 groundedness score: Mann-Whitney U (many ties), shown as means;
- rates (citations valid, declined): Fisher's exact test on the 2x2 table;
- mixes (question kind, top category): chi-square on the contingency table, with levels seen fewer
  than 10 times in all pooled as "other".

Verdict: "too few samples" below `min_samples` on either side; "drifted" when p < `alpha`
(default 0.01: with seven metrics checked daily, 0.05 would cry wolf about once a week); else
"no drift detected". A test says whether the two samples differ, not whether it matters: read the
values beside the verdict. Baselines from the embedded 135M model are offline proxies, and scores
from one search backend do not compare with another's (the local service's hybrid scores are RRF).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labkit.config import REPO_ROOT
from labkit.monitor import online
from labkit.monitor.source import read_jsonl

BASELINE_PATH = REPO_ROOT / "eval" / "monitor-baseline.json"
NUMBERS = {
    "top_score": "top retrieval score",
    "length_words": "answer length (words)",
    "groundedness": "groundedness (judge, 1-5)",
}
RATES = {"citations_valid": "citations valid", "declined": "declined"}
MIXES = {"kind": "question mix", "top_category": "top document category"}
ORDINAL = {"groundedness"}


def _row_as_sample(row: dict[str, Any]) -> dict[str, Any]:
    """An evaluation results.jsonl row in the shape of an online sample."""
    return {
        "question": row.get("inputs.query", ""),
        "answer": row.get("outputs.response") or "",
        "citations": row.get("outputs.citations") or [],
        "dropped_citations": row.get("outputs.dropped_citations") or [],
        "documents": row.get("outputs.retrieved") or [],
        "blocked": bool(row.get("outputs.blocked")),
    }


def build_baseline(
    eval_dir: str | Path, out: str | Path | None = None, description: str = ""
) -> dict[str, Any]:
    """The drift baseline from an evaluation output folder (its results.jsonl and manifest.json)."""
    folder = Path(eval_dir)
    rows = []
    for row in read_jsonl(folder / "results.jsonl"):
        if row.get("status") not in (None, "ok"):
            continue
        measured = online.deterministic_scores(_row_as_sample(row))
        measured["groundedness"] = row.get("outputs.groundedness.score")
        rows.append({"id": row.get("id"), "category": row.get("category"), **measured})
    if not rows:
        raise ValueError(f"{folder / 'results.jsonl'} has no finished rows to build a baseline from")
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    baseline = {
        "description": description or f"drift baseline from the offline evaluation in {folder.name}",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "label": "offline evaluation: "
        + (
            "the embedded local model (an offline proxy)"
            if (manifest.get("model") or {}).get("backend") == "local"
            else str((manifest.get("model") or {}).get("chat"))
        ),
        "source": {
            k: manifest.get(k) for k in ("flow_version", "model", "data", "index", "git") if k in manifest
        },
        "notes": "groundedness comes from the embedded 135M judge, which agrees with human labels at chance "
        "level (data/eval/calibration): an offline proxy"
        if (manifest.get("model") or {}).get("backend") == "local"
        else "",
        "rows": rows,
    }
    if out is not None:
        Path(out).write_text(json.dumps(baseline, indent=1) + "\n", encoding="utf-8")
    return baseline


def load_baseline(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path or BASELINE_PATH)
    if not path.exists():
        raise FileNotFoundError(
            f"no drift baseline at {path}: make one with `labkit monitor baseline --from <evaluation folder>`"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _numbers(values: Iterable[Any]) -> np.ndarray:
    return np.asarray(
        [float(v) for v in values if isinstance(v, int | float) and not np.isnan(v)], dtype=float
    )


def _verdict(p: float | None, n_ref: int, n_cur: int, alpha: float, min_samples: int) -> str:
    if min(n_ref, n_cur) < min_samples:
        return "too few samples"
    if p is None or np.isnan(p):
        return "not testable"
    return "drifted" if p < alpha else "no drift detected"


def compare(
    reference: pd.DataFrame, current: pd.DataFrame, *, alpha: float = 0.01, min_samples: int = 20
) -> pd.DataFrame:
    """One row per metric: reference and current value, sizes, test, statistic, p-value, verdict."""
    from scipy import stats

    rows = []
    for metric, label in NUMBERS.items():
        ref = _numbers(reference.get(metric, []))
        cur = _numbers(current.get(metric, []))
        p = stat = None
        ordinal = metric in ORDINAL  # a 1-5 score: many ties, where KS is too conservative
        if len(ref) and len(cur):
            result = stats.mannwhitneyu(ref, cur) if ordinal else stats.ks_2samp(ref, cur)
            stat, p = float(result.statistic), float(result.pvalue)
        centre = np.mean if ordinal else np.median
        rows.append(
            {
                "metric": metric,
                "label": label,
                "test": "Mann-Whitney U" if ordinal else "Kolmogorov-Smirnov",
                "reference": float(centre(ref)) if len(ref) else None,
                "current": float(centre(cur)) if len(cur) else None,
                "shown_as": "mean" if ordinal else "median",
                "n_reference": len(ref),
                "n_current": len(cur),
                "statistic": stat,
                "p_value": p,
                "verdict": _verdict(p, len(ref), len(cur), alpha, min_samples),
            }
        )
    for metric, label in RATES.items():
        ref = _numbers(reference.get(metric, []))
        cur = _numbers(current.get(metric, []))
        p = stat = None
        if len(ref) and len(cur):
            table = [[int(ref.sum()), int(len(ref) - ref.sum())], [int(cur.sum()), int(len(cur) - cur.sum())]]
            result = stats.fisher_exact(table)
            stat, p = float(result.statistic), float(result.pvalue)
        rows.append(
            {
                "metric": metric,
                "label": label,
                "test": "Fisher exact",
                "reference": float(ref.mean()) if len(ref) else None,
                "current": float(cur.mean()) if len(cur) else None,
                "shown_as": "rate",
                "n_reference": len(ref),
                "n_current": len(cur),
                "statistic": stat,
                "p_value": p,
                "verdict": _verdict(p, len(ref), len(cur), alpha, min_samples),
            }
        )
    for metric, label in MIXES.items():
        ref = pd.Series(reference.get(metric, []), dtype=object).dropna()
        cur = pd.Series(current.get(metric, []), dtype=object).dropna()
        p = stat = None
        # levels seen fewer than 10 times in all are pooled, so no expected count is tiny
        counts = pd.concat([ref, cur]).value_counts()
        rare = set(counts[counts < 10].index)
        if len(rare) > 1:
            ref, cur = (v.where(~v.isin(rare), "other") for v in (ref, cur))
        levels = sorted(set(ref) | set(cur))
        if len(ref) and len(cur) and len(levels) > 1:
            table = np.array(
                [[int((ref == v).sum()) for v in levels], [int((cur == v).sum()) for v in levels]]
            )
            result = stats.chi2_contingency(table)
            stat, p = float(result.statistic), float(result.pvalue)

        def shares(values: pd.Series) -> str:
            counts = values.value_counts(normalize=True)
            return ", ".join(f"{k} {v:.0%}" for k, v in counts.head(3).items())

        rows.append(
            {
                "metric": metric,
                "label": label,
                "test": "chi-square",
                "reference": shares(ref) if len(ref) else None,
                "current": shares(cur) if len(cur) else None,
                "shown_as": "top shares",
                "n_reference": len(ref),
                "n_current": len(cur),
                "statistic": stat,
                "p_value": p,
                "verdict": _verdict(p, len(ref), len(cur), alpha, min_samples),
            }
        )
    return pd.DataFrame(rows)


def check(scores: pd.DataFrame, baseline: dict[str, Any] | None = None, **options: Any) -> pd.DataFrame:
    """Online scores (labkit.monitor.online, `monitor/scores.jsonl`) against the offline baseline."""
    baseline = baseline or load_baseline()
    return compare(pd.DataFrame(baseline["rows"]), scores, **options)


def verdict_lines(table: pd.DataFrame) -> list[str]:
    """One plain sentence per metric."""
    lines = []
    for row in table.itertuples():
        if row.shown_as in ("median", "mean") and row.reference is not None and row.current is not None:
            values = f"{row.shown_as} {row.reference:.3g} offline, {row.current:.3g} now"
        elif row.shown_as == "rate" and row.reference is not None and row.current is not None:
            values = f"{row.reference:.0%} offline, {row.current:.0%} now"
        else:
            values = f"offline: {row.reference}; now: {row.current}"
        p = f", p={row.p_value:.2g}" if row.p_value is not None and not np.isnan(row.p_value) else ""
        lines.append(f"{row.label}: {row.verdict} ({values}; n={row.n_reference}/{row.n_current}{p})")
    return lines
