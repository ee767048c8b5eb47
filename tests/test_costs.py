"""The price table, the cost function and local token counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labkit import costs
from labkit.config import Settings


def test_price_table_shape() -> None:
    prices = costs.load_prices()
    assert prices["version"] and prices["models"] and prices["deployments"]
    for name, entry in prices["models"].items():
        assert entry["input_per_1k"] >= 0 and entry["output_per_1k"] >= 0 and entry["read"], name
        if entry.get("local"):
            assert entry["input_per_1k"] == entry["output_per_1k"] == 0
    assert set(prices["deployments"].values()) <= set(prices["models"])
    assert prices["models"][Settings.model_fields["labkit_local_chat_model"].default]["local"] is True


def test_cost_of_a_priced_model() -> None:
    entry = costs.load_prices()["models"]["gpt-4o-mini"]
    cost = costs.estimate_cost("gpt-4o-mini", 2000, 500)
    assert cost.priced and cost.base_model == "gpt-4o-mini"
    assert cost.usd == pytest.approx(2 * entry["input_per_1k"] + 0.5 * entry["output_per_1k"])
    assert entry["read"] in cost.note
    assert (cost.input_tokens, cost.output_tokens) == (2000, 500)


def test_deployments_and_dated_snapshots_map_to_base_models() -> None:
    assert costs.estimate_cost("chat", 1000, 0).base_model == "gpt-4o-mini"
    snapshot = costs.estimate_cost("gpt-4o-mini-2024-07-18", 1000, 1000)
    assert snapshot.priced and snapshot.base_model == "gpt-4o-mini"
    assert "priced as gpt-4o-mini" in snapshot.note
    assert costs.estimate_cost("GPT-4o", 1000, 0).base_model == "gpt-4o"


def test_local_models_cost_zero_with_a_note(clean_env) -> None:
    cost = costs.estimate_cost("smollm2-135m-instruct", 5000, 5000)
    assert cost.usd == 0.0 and cost.priced and "local" in cost.note
    clean_env.setenv("LABKIT_LOCAL_CHAT_MODEL", "my-local-model")  # a local model missing from the table
    renamed = costs.estimate_cost("my-local-model", 10, 10)
    assert renamed.usd == 0.0 and renamed.priced and "local" in renamed.note


def test_unknown_models_are_unpriced_never_zero(clean_env) -> None:
    cost = costs.estimate_cost("mystery-model-9000", 1000, 1000)
    assert cost.usd is None and cost.priced is False and cost.base_model is None
    assert "prices.json" in cost.note
    assert costs.estimate_cost(None, 1, 1).usd is None


def test_a_malformed_table_is_rejected(tmp_path: Path) -> None:
    table = {"version": 1, "models": {"m": {"input_per_1k": 1, "output_per_1k": 1, "read": "2026-01-01"}},
             "deployments": {"d": "not-a-model"}}
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(table))
    with pytest.raises(costs.PriceTableError, match="unknown model"):
        costs.load_prices(path)
    del table["deployments"]["d"]
    del table["models"]["m"]["read"]
    path.write_text(json.dumps(table))
    with pytest.raises(costs.PriceTableError, match="read"):
        costs.load_prices(path)


def test_count_tokens_falls_back_to_a_labelled_estimate(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit.services import manager

    def unavailable(*args, **kwargs):
        raise manager.ServiceError("no llama-cpp-python here")

    monkeypatch.setattr(manager, "ensure_running", unavailable)
    count = costs.count_tokens("x" * 40)
    assert count == costs.TokenCount(10, True, "about 4 characters per token (no tokenizer)")
    assert costs.count_tokens("").n == 0


@pytest.mark.services
def test_count_tokens_uses_the_local_tokenizer(isolated_home: Settings) -> None:
    from labkit import models

    count = costs.count_tokens("Hello Contoso tent!")
    assert count.estimated is True and "local llama.cpp tokenizer" in count.tokenizer
    assert 2 <= count.n <= 10
    assert costs.count_tokens("Hello Contoso tent! " * 10).n > count.n

    messages = [{"role": "system", "content": "You are a helpful assistant for Contoso Outdoors."},
                {"role": "user", "content": "Which tent is the lightest?"}]
    reply = models.chat(messages, max_tokens=1)
    estimate = costs.count_message_tokens(messages)
    assert abs(estimate.n - reply.usage["input_tokens"]) <= 4, (estimate, reply.usage)
