"""Judge calibration against human labels: exact agreement, within-one agreement, Cohen's kappa;
and judge variance: how often the same judge gives the same answer the same score again.

Introduced in notebooks/04_evaluate.ipynb. Unmeasured judge outputs are excluded from the
agreement figures and reported as a count (and a rate), never treated as a score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labkit.evaluation.base import Outcome, Score


def cohen_kappa(a: Sequence[int], b: Sequence[int], labels: Sequence[int] = (1, 2, 3, 4, 5),
                weights: str | None = None) -> float:
    """Cohen's kappa of two raters; `weights="quadratic"` for the weighted variant."""
    if len(a) != len(b) or not a:
        raise ValueError("need two equally long, non-empty rating lists")
    index = {label: i for i, label in enumerate(labels)}
    k, n = len(labels), len(a)
    observed = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b, strict=True):
        observed[index[x]][index[y]] += 1 / n
    pa, pb = Counter(a), Counter(b)
    expected = [[pa[labels[i]] / n * pb[labels[j]] / n for j in range(k)] for i in range(k)]

    def weight(i: int, j: int) -> float:
        if weights == "quadratic":
            return (i - j) ** 2 / (k - 1) ** 2
        return 0.0 if i == j else 1.0

    disagree_obs = sum(weight(i, j) * observed[i][j] for i in range(k) for j in range(k))
    disagree_exp = sum(weight(i, j) * expected[i][j] for i in range(k) for j in range(k))
    if disagree_exp == 0:
        return 1.0 if disagree_obs == 0 else 0.0
    return 1 - disagree_obs / disagree_exp


@dataclass
class Agreement:
    judge: str
    n: int            # rows with a human label
    measured: int     # rows the judge scored
    unmeasured: int   # rows the judge's output could not be parsed for
    exact: float | None
    within_one: float | None
    kappa: float | None
    kappa_quadratic: float | None
    mean_judge: float | None
    mean_human: float | None


def agreement(judge: str, human: Sequence[int], outcomes: Sequence[Outcome]) -> Agreement:
    """Compare a judge's outcomes with human scores row by row."""
    pairs = [(h, int(o.value)) for h, o in zip(human, outcomes, strict=True) if isinstance(o, Score)]
    if not pairs:
        return Agreement(judge, len(human), 0, len(human), None, None, None, None, None, None)
    hs, js = [p[0] for p in pairs], [p[1] for p in pairs]
    m = len(pairs)
    return Agreement(
        judge=judge, n=len(human), measured=m, unmeasured=len(human) - m,
        exact=sum(h == j for h, j in pairs) / m,
        within_one=sum(abs(h - j) <= 1 for h, j in pairs) / m,
        kappa=cohen_kappa(hs, js), kappa_quadratic=cohen_kappa(hs, js, weights="quadratic"),
        mean_judge=sum(js) / m, mean_human=sum(hs) / m,
    )


def run_calibration(judges: Sequence[str] | None = None, limit: int | None = None,
                    progress: bool = True) -> list[tuple[Agreement, list[Outcome]]]:
    """Run each judge over its human-labelled calibration file (data/eval/calibration/<judge>.jsonl).

    Uses the configured judge model and backend: with a stronger judge configured the same call
    measures it.
    """
    from labkit.evaluation.judges import JUDGES, JudgeEvaluator
    from labkit.evaluation.testset import load_calibration
    from labkit.progress import bar

    out = []
    for name in judges or JUDGES:
        rows = load_calibration(name)[:limit]
        judge = JudgeEvaluator(name)
        outcomes = [judge.judge(r.query, r.response, r.context)
                    for r in bar(rows, desc=f"judge {name}", enabled=progress)]
        out.append((agreement(name, [r.human_score for r in rows], outcomes), outcomes))
    return out


@dataclass
class Variance:
    judge: str
    rows: int              # rows judged `repeats` times
    repeats: int
    compared: int          # rows with at least two measured repeats
    unmeasured: int        # judge calls whose output could not be read (of rows * repeats)
    all_agree: float | None     # share of compared rows where every measured repeat gave the same score
    mean_range: float | None    # mean of (max - min) score per compared row
    mean_sd: float | None       # mean population standard deviation per compared row
    settings: dict[str, Any]


def variance_summary(judge: str, scores: Sequence[Sequence[float | None]],
                     settings: dict[str, Any]) -> Variance:
    """Per-row repeated scores (None = unmeasured) -> how stable the judge is."""
    repeats = max((len(r) for r in scores), default=0)
    unmeasured = sum(1 for r in scores for v in r if v is None)
    measured = [[float(v) for v in r if v is not None] for r in scores]
    compared = [r for r in measured if len(r) >= 2]
    if not compared:
        return Variance(judge, len(scores), repeats, 0, unmeasured, None, None, None, settings)

    def sd(r: list[float]) -> float:
        mean = sum(r) / len(r)
        return (sum((v - mean) ** 2 for v in r) / len(r)) ** 0.5

    return Variance(judge, len(scores), repeats, len(compared), unmeasured,
                    all_agree=sum(1 for r in compared if max(r) == min(r)) / len(compared),
                    mean_range=sum(max(r) - min(r) for r in compared) / len(compared),
                    mean_sd=sum(sd(r) for r in compared) / len(compared), settings=settings)


def run_variance(judges: Sequence[str] | None = None, limit: int | None = None, repeats: int = 3,
                 temperature: float | None = None, progress: bool = True) -> list[Variance]:
    """Judge each calibration answer `repeats` times (seeds 42, 43, ...; the judge prompt's temperature
    unless `temperature` is given) and summarise the spread per judge. A deterministic local judge at
    temperature 0 agrees with itself by construction - which says nothing about whether it is right."""
    from labkit.evaluation.judges import JUDGES, JudgeEvaluator
    from labkit.evaluation.testset import load_calibration
    from labkit.progress import bar

    if repeats < 2:
        raise ValueError("repeats must be at least 2 to measure variance")
    out = []
    for name in judges or JUDGES:
        rows = load_calibration(name)[:limit]
        judge = JudgeEvaluator(name)
        scores: list[list[float | None]] = []
        for r in bar(rows, desc=f"judge {name} x{repeats}", enabled=progress):
            row_scores: list[float | None] = []
            for i in range(repeats):
                params: dict[str, Any] = {"seed": 42 + i}
                if temperature is not None:
                    params["temperature"] = temperature
                outcome = judge.judge(r.query, r.response, r.context, params=params)
                row_scores.append(float(outcome.value) if isinstance(outcome, Score) else None)
            scores.append(row_scores)
        settings = {"temperature": temperature if temperature is not None else
                    judge.prompt.parameters.get("temperature"), "seeds": [42 + i for i in range(repeats)]}
        out.append(variance_summary(name, scores, settings))
    return out


def main() -> None:
    """`python -m labkit.evaluation.calibration [--limit N]`: print each judge's agreement."""
    import argparse
    import json
    from dataclasses import asdict

    from labkit import models
    from labkit.config import get_settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", dest="json_out", default=None, help="also write the figures to this file")
    parser.add_argument("--repeats", type=int, default=None,
                        help="measure judge variance instead: judge every answer N times (N >= 2)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="with --repeats: override the judge's temperature")
    args = parser.parse_args()
    if args.repeats is not None and args.repeats < 2:
        parser.error("--repeats must be at least 2")
    if args.temperature is not None and args.repeats is None:
        parser.error("--temperature only applies with --repeats")
    judge_model = get_settings().labkit_judge_model or models.chat_model_name()
    if args.repeats is not None:
        key = "variance"
        title = f"judge model: {judge_model} (variance over {args.repeats} repeats per answer)"
        found = [asdict(v) for v in run_variance(limit=args.limit, repeats=args.repeats,
                                                 temperature=args.temperature)]
        columns = [("rows", "rows", 5), ("compared", "compared", 9), ("unmeas.", "unmeasured", 8),
                   ("all agree", "all_agree", 10), ("mean range", "mean_range", 11),
                   ("mean sd", "mean_sd", 8)]
    else:
        key, title = "agreement", f"judge model: {judge_model}"
        found = [asdict(a) for a, _ in run_calibration(limit=args.limit)]
        columns = [("n", "n", 4), ("scored", "measured", 8), ("unmeas.", "unmeasured", 8),
                   ("exact", "exact", 8), ("within1", "within_one", 9), ("kappa", "kappa", 8),
                   ("kappa_q", "kappa_quadratic", 9),
                   ("mean judge", "mean_judge", 11), ("mean human", "mean_human", 11)]
    print(title)
    print(f"{'judge':14s}" + "".join(f"{head:>{width}s}" for head, _, width in columns))
    for row in found:
        cells = [f"{row[field]:d}" if isinstance(row[field], int) else
                 ("-" if row[field] is None else f"{row[field]:.2f}") for _, field, _ in columns]
        widths = [width for _, _, width in columns]
        print(f"{row['judge']:14s}" + "".join(f"{c:>{w}s}" for c, w in zip(cells, widths, strict=True)))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"judge_model": judge_model, key: found}, fh, indent=2)

if __name__ == "__main__":
    main()
