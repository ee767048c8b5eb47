"""The counterfactual probe and the four-variant comparison (labkit.finetune.probe, .compare)."""

from __future__ import annotations

import random
import re

from labkit.config import REPO_ROOT
from labkit.finetune import compare, probe


def test_a_changed_value_keeps_its_form_and_differs() -> None:
    rng = random.Random(0)
    for value in ("2150 g", "Up to 90 seconds", "9.8 m²", "150 x 200 cm", "$179.99"):
        new = probe.changed(value, rng)
        assert new and new != value
        assert re.sub(r"[\d.]+", "#", new) == re.sub(r"[\d.]+", "#", value)  # only the number changed
    assert probe.changed("lime green", rng) is None and probe.changed("0 g", rng) is None


def test_a_swapped_catalog_value_changes_the_catalog_fields_too() -> None:
    """The short prompt shows each chunk's price, weight and rating beside its text (flow.catalog_line):
    a counterfactual passage must not say the old value there."""
    from labkit import flow, search

    chunks = {c.id: c for c in search.build_chunks("section") if c.product_id in ("P-004", "P-007")}
    pack, bag = chunks["P-004-section-001"], chunks["P-007-section-001"]
    probe._change_catalog_fields(pack, probe.Swap("P-004", "q", "C-001", "980 g", "1372 g"))
    probe._change_catalog_fields(pack, probe.Swap("P-004", "q", "C-001", "$89.95", "$121.43"))
    probe._change_catalog_fields(bag, probe.Swap("P-007", "q", "C-001", "-7 °C", "-10 °C"))
    probe._change_catalog_fields(bag, probe.Swap("P-007", "q", "C-001", "28 L", "35 L"))  # not a catalog field
    assert flow.catalog_line(vars(pack)) == "Price $121.43. Weight 1372 g."
    assert flow.catalog_line(vars(bag)).endswith("Temperature rating -10 °C.")


def test_swaps_are_trained_values_and_repeatable() -> None:
    examples = REPO_ROOT / "data" / "finetune" / "examples.jsonl"
    first, again = probe.swaps(examples, n=10), probe.swaps(examples, n=10)
    assert first == again and len(first) == 10
    assert len({(s.product_id, s.old) for s in first}) == 10
    trained = examples.read_text(encoding="utf-8")
    assert all(s.question in trained and s.old in trained for s in first)


def test_the_comparison_has_four_variants_in_one_prompt_shape() -> None:
    configs = compare.variants("contoso-chat-small-ft")
    assert [c.name for c in configs] == ["base+prompt", "base+RAG", "fine-tuned", "fine-tuned+RAG"]
    assert {c.prompt for c in configs} == {"contoso_chat_small"}
    assert [c.retrieval_mode == "none" for c in configs] == [True, False, True, False]
    assert [c.chat_model for c in configs] == [None, None, "contoso-chat-small-ft", "contoso-chat-small-ft"]
    rows = compare.rows()
    assert len(rows) == 26 and {r["category"] for r in rows} == set(compare.CATEGORIES)
    assert len(compare.rows(limit=6)) == 6


def test_the_reference_adapter_matches_its_card_and_is_served_by_default(clean_env) -> None:
    """The committed adapter is the file its card describes, the model server lists it on a fresh
    clone, and the service answers with it on the embedded model (the default flow on a cloud one)."""
    import hashlib

    from labkit.app.main import default_config
    from labkit.config import Settings
    from labkit.finetune import pipeline
    from labkit.services.manager import registered_models

    card = pipeline.reference_card()
    data = pipeline.REFERENCE_GGUF.read_bytes()
    assert card["sha256"] == hashlib.sha256(data).hexdigest() and card["bytes"] == len(data)
    assert data[:4] == b"GGUF" and len(data) < 20_000_000
    manifest = (REPO_ROOT / "data" / "finetune" / "manifest.json").read_text()
    assert card["data_sha256"] in manifest
    served = registered_models()[pipeline.REFERENCE_MODEL]
    assert served["lora"] == str(pipeline.REFERENCE_GGUF)
    assert default_config(Settings()).chat_model == pipeline.REFERENCE_MODEL
    clean_env.setenv("LABKIT_CHAT_BACKEND", "openai")
    clean_env.setenv("OPENAI_API_KEY", "sk-test")
    assert default_config(Settings()).chat_model is None
