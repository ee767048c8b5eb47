"""Token counts and cost estimates from a price table you keep (`data/prices.json`).

Introduced in notebooks/01_ideate_prompts.ipynb.

- `load_prices()` reads the versioned table: base models with input and output prices per 1,000
  tokens and the date each price was read, plus a mapping from deployment names to base models.
- `estimate_cost(model_or_deployment, input_tokens, output_tokens)` returns a `Cost`. Local models
  cost 0 (with a note saying so); a model the table does not know gets `usd=None, priced=False`,
  never a silent 0.
- `count_tokens(text)` asks the local llama.cpp server's tokenizer (`POST /extras/tokenize`). No
  tiktoken: it downloads encodings at first use. Counts for cloud models are estimates (another
  tokenizer), and always marked `estimated=True`; prefer the `usage` block of a response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from labkit.config import REPO_ROOT, Settings, get_settings

PRICES_PATH = REPO_ROOT / "data" / "prices.json"
# "gpt-4o-mini-2024-07-18" -> "gpt-4o-mini": dated snapshots cost what their base model costs
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")
LOCAL_NOTE = "local model: runs on your machine, no per-token charge"
# ChatML-style templates add about 5 tokens around each message and 3 to open the reply
MESSAGE_OVERHEAD_TOKENS = 5
REPLY_PRIMING_TOKENS = 3


@dataclass(frozen=True)
class Cost:
    """An estimated cost in USD. `usd` is None when the model has no price (`priced` False)."""

    usd: float | None
    base_model: str | None
    priced: bool
    note: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    prices_version: Any = None


@dataclass(frozen=True)
class TokenCount:
    """A token count made locally: an estimate, unlike a response's `usage`."""

    n: int
    estimated: bool = True
    tokenizer: str = ""


class PriceTableError(ValueError):
    """`data/prices.json` is malformed."""


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    models = data.get("models")
    deployments = data.get("deployments", {})
    if "version" not in data or not isinstance(models, dict) or not isinstance(deployments, dict):
        raise PriceTableError(f"{path}: need 'version', 'models' and 'deployments'")
    for name, entry in models.items():
        for key in ("input_per_1k", "output_per_1k", "read"):
            if key not in entry:
                raise PriceTableError(f"{path}: model {name!r} has no {key!r}")
        if entry["input_per_1k"] < 0 or entry["output_per_1k"] < 0:
            raise PriceTableError(f"{path}: model {name!r} has a negative price")
    for deployment, base in deployments.items():
        if base not in models:
            raise PriceTableError(f"{path}: deployment {deployment!r} maps to unknown model {base!r}")
    return data


def load_prices(path: Path | str | None = None) -> dict[str, Any]:
    """The price table (validated; re-read when the file changes)."""
    path = Path(path or PRICES_PATH)
    return _load(str(path), path.stat().st_mtime)


def _local_models(settings: Settings) -> set[str]:
    names = {settings.labkit_local_chat_model, settings.labkit_local_embed_model}
    try:
        from labkit.services import registered_models

        names |= set(registered_models(settings))  # fine-tuned models served locally
    except Exception:  # the registry is optional here
        pass
    return names


def base_model(model_or_deployment: str, prices: Mapping[str, Any] | None = None) -> str | None:
    """The base model a name is priced as: itself, its deployment mapping, or its undated snapshot."""
    prices = prices or load_prices()
    models, deployments = prices["models"], prices["deployments"]
    name = model_or_deployment.strip()
    for candidate in (name, name.lower()):
        if candidate in models:
            return candidate
        if candidate in deployments:
            return deployments[candidate]
    undated = _SNAPSHOT.sub("", name.lower())
    if undated != name.lower() and undated in models:
        return undated
    return None


def estimate_cost(model_or_deployment: str | None, input_tokens: int | None, output_tokens: int | None,
                  *, prices: Mapping[str, Any] | None = None, settings: Settings | None = None) -> Cost:
    """Cost of one call. Local models cost 0; unknown models get `usd=None` and `priced=False`."""
    prices = prices or load_prices()
    settings = settings or get_settings()
    tokens_in, tokens_out = int(input_tokens or 0), int(output_tokens or 0)
    version = prices.get("version")
    if not model_or_deployment:
        return Cost(None, None, False, "no model name: cannot price", tokens_in, tokens_out, version)
    base = base_model(model_or_deployment, prices)
    if base is None:
        if model_or_deployment in _local_models(settings):
            return Cost(0.0, model_or_deployment, True, LOCAL_NOTE, tokens_in, tokens_out, version)
        return Cost(None, None, False,
                    f"no price for {model_or_deployment!r}: add it (or its deployment) to data/prices.json",
                    tokens_in, tokens_out, version)
    entry = prices["models"][base]
    usd = tokens_in / 1000 * entry["input_per_1k"] + tokens_out / 1000 * entry["output_per_1k"]
    if entry.get("local"):
        note = LOCAL_NOTE
    else:
        via = "" if base == model_or_deployment else f" (priced as {base})"
        note = f"list price read {entry['read']}{via}"
    return Cost(usd, base, True, note, tokens_in, tokens_out, version)


# ---------------------------------------------------------------------------------------------
# token counts
# ---------------------------------------------------------------------------------------------
def _tokenizer_model(model: str | None, settings: Settings) -> str:
    if model and model in _local_models(settings):
        return model
    return settings.labkit_local_chat_model


def count_tokens(text: str, model: str | None = None, *, settings: Settings | None = None) -> TokenCount:
    """Tokens in `text` by the local model's tokenizer (an estimate for any other model).

    Starts the local model server if needed. If it cannot run (no llama-cpp-python), falls back to
    about four characters per token, and says so in `tokenizer`.
    """
    import httpx

    settings = settings or get_settings()
    if not text:
        return TokenCount(0, True, "empty")
    name = _tokenizer_model(model, settings)
    try:
        from labkit.services import ensure_running

        base_url = ensure_running(["model"], settings=settings)["model"].base_url
        response = httpx.post(f"{base_url}/extras/tokenize", json={"input": text, "model": name}, timeout=30)
        response.raise_for_status()
        return TokenCount(len(response.json()["tokens"]), True, f"{name} (local llama.cpp tokenizer)")
    except Exception:  # any failure: fall back to a rough, clearly labelled estimate
        return TokenCount(max(1, round(len(text) / 4)), True, "about 4 characters per token (no tokenizer)")


def count_message_tokens(messages: Sequence[Mapping[str, Any]], model: str | None = None,
                         *, settings: Settings | None = None) -> TokenCount:
    """Estimated prompt tokens of chat messages: their text plus the chat template's few per message."""
    text = "\n".join(str(m.get("content") or "") for m in messages)
    counted = count_tokens(text, model, settings=settings)
    overhead = MESSAGE_OVERHEAD_TOKENS * len(messages) + (REPLY_PRIMING_TOKENS if messages else 0)
    return TokenCount(counted.n + overhead, True, counted.tokenizer)
