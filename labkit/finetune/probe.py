"""Copying or memorising? A counterfactual copy of the catalog tells them apart.

Introduced in notebooks/05_fine_tune.ipynb. A model fine-tuned on the catalog can learn its
values instead of learning to read them. `swaps()` picks values the fine-tune was trained on and
changes each (a number scaled and rounded, so the new value is plausible but false);
`build_counterfactual_index()` writes `products-counterfactual`, the section index with those
values replaced everywhere they occur; `run()` asks each question with a FlowConfig pointed at that
index and sorts every answer: states the changed value (it follows the passage), states the
original (it follows its memory), or neither. Catalogs change: a retrieved value follows the
change, a memorised one goes stale.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit.flow import FlowConfig

INDEX = "products-counterfactual"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Swap:
    product_id: str
    question: str
    customer_id: str
    old: str
    new: str


@dataclass
class ProbeResult:
    config: str
    swaps: int
    follows_passage: int = 0
    follows_memory: int = 0
    neither: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passage_rate(self) -> float | None:
        """Share of the answers that state the value which follow the passage (None: none stated)."""
        stated = self.follows_passage + self.follows_memory
        return self.follows_passage / stated if stated else None

    def line(self) -> str:
        rate = "n/a" if self.passage_rate is None else f"{self.passage_rate:.2f}"
        return (
            f"{self.config}: passage {self.follows_passage}, memory {self.follows_memory}, neither "
            f"{self.neither} of {self.swaps}; follows the passage in {rate} of the answers that state it"
        )


def changed(value: str, rng: random.Random) -> str | None:
    """The value with its first number scaled by 1.2-1.6 and rounded like the original."""
    m = _NUMBER.search(value)
    if not m:
        return None
    number = float(m.group(0))
    if number == 0:
        return None
    scaled = number * rng.uniform(1.2, 1.6)
    decimals = len(m.group(0).split(".")[1]) if "." in m.group(0) else 0
    text = f"{scaled:.{decimals}f}"
    if text == m.group(0):
        return None
    return value[: m.start()] + text + value[m.end() :]


def swaps(examples_path: str | Path, n: int = 20, seed: int = 7) -> list[Swap]:
    """`n` single-value questions whose values the training file taught (kind `fact`), changed."""
    rng = random.Random(seed)
    rows = [json.loads(line) for line in Path(examples_path).read_text(encoding="utf-8").splitlines()]
    pool = [r for r in rows if r["split"] == "train" and r["kind"] == "fact" and len(r["values"][0]) >= 3]
    rng.shuffle(pool)
    out: list[Swap] = []
    used: set[tuple[str, str]] = set()
    for r in pool:
        key = (r["product_ids"][0], r["values"][0])
        new = changed(r["values"][0], rng)
        if new is None or key in used:
            continue
        used.add(key)
        out.append(Swap(r["product_ids"][0], r["question"], r["customer_id"], r["values"][0], new))
        if len(out) == n:
            break
    return out


def _change_catalog_fields(chunk: Any, swap: Swap) -> None:
    """The chunk's catalog fields follow the swap too: the short prompt shows them with the passage
    (flow.catalog_line), and a passage that says both values would test nothing."""
    number = float(_NUMBER.search(swap.new).group(0))
    if chunk.weight_g and swap.old == f"{int(chunk.weight_g)} g":
        chunk.weight_g = int(number)
    elif swap.old in (f"${chunk.price:.2f}", f"${chunk.price:g}"):
        chunk.price = number
    elif chunk.temp_rating_c is not None and swap.old.replace(" ", "") in (f"{chunk.temp_rating_c:g}°C",
                                                                             f"{chunk.temp_rating_c:g}C"):
        chunk.temp_rating_c = -number if chunk.temp_rating_c < 0 else number


def build_counterfactual_index(chosen: list[Swap], name: str = INDEX) -> int:
    """The section index with each swap's value replaced in its product's chunks; returns how many
    chunks changed."""
    from labkit import search

    chunks = search.build_chunks("section")
    touched = 0
    for c in chunks:
        for s in chosen:
            if c.product_id != s.product_id:
                continue
            whole = re.compile(rf"(?<![\w.]){re.escape(s.old)}(?!\w)")  # "20 cm", not the end of "120 cm"
            if whole.search(c.content):
                c.content = whole.sub(s.new, c.content)
                touched += 1
            _change_catalog_fields(c, s)
    search.build_index("section", name=name, chunks=chunks)
    return touched


def run(
    config: FlowConfig,
    chosen: list[Swap],
    *,
    name: str | None = None,
    index: str = INDEX,
    progress: bool = True,
) -> ProbeResult:
    """Ask every swapped question with `config` on the counterfactual index and sort the answers."""
    from labkit import flow
    from labkit.progress import bar

    probe_config = config.model_copy(update={"index": index})
    result = ProbeResult(config=name or config.name, swaps=len(chosen))
    for s in bar(chosen, desc=f"probe {result.config}", enabled=progress):
        answer = flow.answer(s.question, s.customer_id, config=probe_config).answer
        new, old = s.new in answer, s.old in answer
        if new and not old:
            result.follows_passage += 1
            verdict = "passage"
        elif old and not new:
            result.follows_memory += 1
            verdict = "memory"
        else:
            result.neither += 1
            verdict = "neither"
        result.rows.append({**asdict(s), "answer": answer, "verdict": verdict})
    return result
