"""Bulk tests: run one prompt over a JSONL file of questions and collect a results table.

Introduced in notebooks/01_ideate_prompts.ipynb.

`run_bulk()` returns one row per input with the answer, token counts (from `usage`, or counted
locally and marked `tokens_estimated`), latency and estimated cost. A failure in one row is
recorded in its `error` column; the other rows still run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from labkit import costs, tracing
from labkit.jsonl import numbered_objects
from labkit.progress import bar as progress_bar
from labkit.progress import progress_enabled  # noqa: F401 - re-exported: tests and notebooks use bulk.progress_enabled
from labkit.prompts import Prompt, load_prompt

if TYPE_CHECKING:
    from openai import OpenAI

COLUMNS = ["id", "question", "answer", "input_tokens", "output_tokens", "tokens_estimated", "latency_s",
           "cost_usd", "error"]
InputMap = Mapping[str, "str | Callable[[dict[str, Any]], Any]"] | Callable[[dict[str, Any]], dict[str, Any]]


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file (blank lines skipped; a bad line is reported with its number)."""
    return [row for _, row in numbered_objects(path)]


def _inputs_for(row: dict[str, Any], prompt: Prompt, input_map: InputMap | None,
                fixed: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(fixed)
    if input_map is None:
        values.update({name: row[name] for name in prompt.input_names if name in row})
    elif callable(input_map):
        values.update(input_map(row))
    else:
        for name, source in input_map.items():
            values[name] = source(row) if callable(source) else row[source]
    return values


def run_bulk(
    prompt: Prompt | str,
    rows: Iterable[dict[str, Any]] | str | Path,
    input_map: InputMap | None = None,
    *,
    inputs: Mapping[str, Any] | None = None,
    max_tokens: int | None = None,
    params: Mapping[str, Any] | None = None,
    model: str | None = None,
    client: OpenAI | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run `prompt` once per row and return a results table (one row per input, in order).

    - `rows`: dicts (or a JSONL path); each may carry `id` and `question`.
    - `input_map`: how a row becomes the prompt's inputs: `{input: row_field_or_function}` or a
      function `row -> inputs`. By default, row fields named like the prompt's inputs are used.
    - `inputs`: fixed inputs shared by every row; `max_tokens` and `params` override the file's
      parameters; `model` overrides the backend's default model.
    """
    from labkit import models

    prompt = prompt if isinstance(prompt, Prompt) else load_prompt(prompt)
    rows = read_jsonl(rows) if isinstance(rows, str | Path) else list(rows)
    overrides = {**(params or {}), **({"max_tokens": max_tokens} if max_tokens is not None else {})}
    client = client or models.chat_client()
    requested_model = model or models.chat_model_name()

    records: list[dict[str, Any]] = []
    bar = progress_bar(rows, desc=f"bulk {prompt.name}", unit="row", enabled=progress)
    for index, row in enumerate(bar):
        record: dict[str, Any] = dict.fromkeys(COLUMNS)
        record["id"] = row.get("id", index)
        record["question"] = row.get("question")
        try:
            values = _inputs_for(row, prompt, input_map, inputs or {})
            if record["question"] is None:
                record["question"] = values.get("question")
            with tracing.purpose("bulk"):
                reply = prompt.run(client, model=model, params=overrides, **values)
            tokens_in, tokens_out = reply.usage.get("input_tokens"), reply.usage.get("output_tokens")
            estimated = bool(reply.usage.get("estimated")) or tokens_in is None or tokens_out is None
            if tokens_in is None:
                tokens_in = costs.count_message_tokens(prompt.render(**values), reply.model).n
            if tokens_out is None:
                tokens_out = costs.count_tokens(reply.text, reply.model).n
            cost = costs.estimate_cost(reply.model, tokens_in, tokens_out)
            if not cost.priced:  # Azure reports the base model; a deployment name may be priced instead
                cost = costs.estimate_cost(requested_model, tokens_in, tokens_out)
            record.update(answer=reply.text, input_tokens=tokens_in, output_tokens=tokens_out,
                          tokens_estimated=estimated, latency_s=round(reply.latency_s, 3), cost_usd=cost.usd,
                          model=reply.model, finish_reason=reply.finish_reason)
        except Exception as exc:  # one failing row must not stop the run
            record["error"] = f"{type(exc).__name__}: {exc}"
        records.append(record)
    bar.close()

    frame = pd.DataFrame.from_records(records)
    for column in ("model", "finish_reason"):
        if column not in frame:
            frame[column] = None
    frame = frame[[*COLUMNS, "model", "finish_reason"]]
    frame.attrs["prompt"] = prompt.identity
    frame.attrs["requested_model"] = requested_model
    return frame


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """Totals of a results table. `cost_usd` is None when any successful row had no price."""
    ok = frame[frame["error"].isna()]
    unpriced = bool(ok["cost_usd"].isna().any())
    return {
        "rows": len(frame),
        "errors": int(frame["error"].notna().sum()),
        "input_tokens": int(ok["input_tokens"].sum()),
        "output_tokens": int(ok["output_tokens"].sum()),
        "tokens_estimated": bool(ok["tokens_estimated"].any()),
        "mean_latency_s": round(float(ok["latency_s"].mean()), 2) if len(ok) else None,
        "cost_usd": None if unpriced else float(ok["cost_usd"].sum()),
    }
