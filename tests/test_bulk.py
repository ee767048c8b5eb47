"""Bulk tests from a JSONL file, the question set, and the headless playground."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from labkit import bulk, costs, playground
from labkit.config import REPO_ROOT, Settings

QUESTIONS = REPO_ROOT / "data" / "ideation" / "questions.jsonl"
PRODUCTS = {p["id"]: p for p in json.loads((REPO_ROOT / "data" / "products.json").read_text())}


def facts_for(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in PRODUCTS.values() if p["category"] == row.get("category")]


# ---- the data ----------------------------------------------------------------------------------
def test_question_set_is_about_contoso_products() -> None:
    rows = bulk.read_jsonl(QUESTIONS)
    assert len(rows) >= 15
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["question"].strip().endswith("?") or row["question"].strip().endswith(".")
        if "product_id" in row:
            assert row["product_id"] in PRODUCTS, row
            assert PRODUCTS[row["product_id"]]["category"] == row["category"], row
    assert sum("product_id" in r for r in rows) >= 15


def test_read_jsonl_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2\n')
    with pytest.raises(ValueError, match=r"q\.jsonl:3"):
        bulk.read_jsonl(path)
    path.write_text('{"id": 1}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match="JSON object"):
        bulk.read_jsonl(path)


def test_progress_is_disabled_in_ci(clean_env) -> None:
    clean_env.delenv("TQDM_DISABLE", raising=False)
    assert bulk.progress_enabled() is True
    assert bulk.progress_enabled(False) is False
    clean_env.setenv("TQDM_DISABLE", "1")
    assert bulk.progress_enabled() is False
    clean_env.delenv("TQDM_DISABLE")
    clean_env.setenv("LABKIT_CI", "1")
    assert bulk.progress_enabled() is False


# ---- the runner with a fake client (no server) -------------------------------------------------
class FakeCompletions:
    def __init__(self, usage: bool = True, model: str = "smollm2-135m-instruct") -> None:
        self.usage, self.model, self.calls = usage, model, []

    def create(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        question = kwargs["messages"][-1]["content"]
        if "explode" in question:
            raise RuntimeError("server said no")
        usage = SimpleNamespace(prompt_tokens=20, completion_tokens=4, total_tokens=24)
        message = SimpleNamespace(content=f"answer to {question}")
        choice = SimpleNamespace(message=message, finish_reason="stop")
        return SimpleNamespace(choices=[choice], usage=usage if self.usage else None, model=self.model)


def fake_client(**kwargs: Any) -> Any:
    return SimpleNamespace(chat=SimpleNamespace(completions=FakeCompletions(**kwargs)))


def test_one_failing_row_is_recorded_not_raised(clean_env) -> None:
    rows = [{"id": "a", "question": "first?"}, {"id": "b", "question": "please explode"},
            {"id": "c", "text": "no question field"}, {"id": "d", "question": "last?"}]
    frame = bulk.run_bulk("ideate_bare", rows, client=fake_client(), max_tokens=8, progress=False)
    assert list(frame.columns[:9]) == bulk.COLUMNS
    assert list(frame["id"]) == ["a", "b", "c", "d"]
    assert frame.loc[0, "answer"] == "answer to first?" and pd.isna(frame.loc[3, "error"])
    assert "RuntimeError: server said no" in frame.loc[1, "error"]
    assert "PromptInputError" in frame.loc[2, "error"] and "question" in frame.loc[2, "error"]
    assert frame.loc[0, "input_tokens"] == 20 and frame.loc[0, "tokens_estimated"] == False  # noqa: E712
    assert frame.loc[0, "cost_usd"] == 0.0
    assert frame.attrs["prompt"]["name"] == "ideate_bare"
    summary = bulk.summarize(frame)
    assert summary["rows"] == 4 and summary["errors"] == 2 and summary["cost_usd"] == 0.0


def test_input_map_fixed_inputs_and_parameters(clean_env) -> None:
    client = fake_client()
    rows = [{"id": 1, "q": "How heavy is it?", "category": "Tents"}]
    frame = bulk.run_bulk("ideate_grounded", rows, {"question": "q", "products": facts_for},
                          inputs={"max_sentences": 1}, max_tokens=7, client=client, progress=False)
    assert pd.isna(frame.loc[0, "error"]) and frame.loc[0, "question"] == "How heavy is it?"
    call = client.chat.completions.calls[0]
    assert call["max_tokens"] == 7
    system = call["messages"][0]["content"]
    assert "[P-001]" in system and "at most 1 sentences" in system
    by_function = bulk.run_bulk("ideate_bare", rows, lambda row: {"question": row["q"].upper()},
                                client=fake_client(), progress=False)
    assert by_function.loc[0, "answer"] == "answer to HOW HEAVY IS IT?"


def test_missing_usage_is_counted_locally_and_marked(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(costs, "count_tokens", lambda text, *_, **__: costs.TokenCount(len(text), True))
    frame = bulk.run_bulk("ideate_bare", [{"question": "hi?"}], client=fake_client(usage=False),
                          progress=False)
    assert bool(frame.loc[0, "tokens_estimated"]) is True
    assert frame.loc[0, "output_tokens"] == len("answer to hi?")
    assert frame.loc[0, "id"] == 0  # the row number when a row has no id


def test_unpriced_models_give_no_cost(clean_env) -> None:
    frame = bulk.run_bulk("ideate_bare", [{"question": "hi?"}], client=fake_client(model="mystery"),
                          model="mystery", progress=False)
    assert pd.isna(frame.loc[0, "cost_usd"])
    assert bulk.summarize(frame)["cost_usd"] is None


# ---- against the real local model ------------------------------------------------------------------
@pytest.mark.services
def test_bulk_against_the_local_model(isolated_home: Settings) -> None:
    rows = bulk.read_jsonl(QUESTIONS)[:3]
    frame = bulk.run_bulk("ideate_grounded", rows, {"question": "question", "products": facts_for},
                          max_tokens=8, progress=False)
    assert len(frame) == 3 and frame["error"].isna().all(), frame["error"].tolist()
    assert list(frame["id"]) == [r["id"] for r in rows]
    assert (frame["answer"].str.len() > 0).all()
    assert (frame["input_tokens"] > 50).all() and (frame["output_tokens"] <= 8).all()
    assert not frame["tokens_estimated"].any()
    assert (frame["cost_usd"] == 0.0).all() and (frame["latency_s"] > 0).all()


@pytest.mark.services
def test_playground_prints_one_run_headlessly(isolated_home: Settings, clean_env: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    clean_env.setenv("LABKIT_CI", "1")
    assert playground.widget_frontend_available() is False
    result = playground.playground(["ideate_persona", playground.FREE_TEXT], question="Best tent?",
                                   max_tokens=6, seed=1)
    out = capsys.readouterr().out
    assert result is None
    assert "LABKIT_CI=1" in out and "== ideate_persona ==" in out and "== (free text) ==" in out
    assert out.count("tokens") == 2 and "$0.000000" in out


def test_playground_widgets_build_and_run_with_a_fake_client(clean_env, capsys: pytest.CaptureFixture) -> None:
    import ipywidgets as widgets

    def find(widget: Any, kind: type) -> list[Any]:
        found = [widget] if isinstance(widget, kind) else []
        for child in getattr(widget, "children", ()):
            found += find(child, kind)
        return found

    box = playground.playground(["ideate_persona", "product_json"], mode="widgets", client=fake_client())
    assert isinstance(box, widgets.VBox)
    choosers = [d for d in find(box, widgets.Dropdown) if d.description == "Prompt"]
    assert [c.value for c in choosers] == ["ideate_persona", "product_json"]
    assert playground.FREE_TEXT in choosers[0].options
    find(box, widgets.Button)[0].click()  # outside a kernel, Output widgets pass prints through
    out = capsys.readouterr().out
    assert out.count("answer to") == 2 and "20 in / 4 out tokens" in out


def test_playground_keeps_each_prompt_files_temperature_until_the_slider_moves(clean_env) -> None:
    import ipywidgets as widgets

    from labkit.prompts import load_prompt

    client = fake_client()
    names = ["ideate_persona", "product_json"]
    box = playground.playground(names, mode="widgets", client=client)
    slider = next(s for s in box.children[1].children[0].children if isinstance(s, widgets.FloatSlider))
    button = next(b for b in box.children[1].children if isinstance(b, widgets.Button))
    button.click()
    expected = [load_prompt(n).parameters.get("temperature") for n in names]
    assert [c.get("temperature") for c in client.chat.completions.calls] == expected
    slider.value = 1.3  # the learner moves the slider: both sides use it
    button.click()
    assert [c["temperature"] for c in client.chat.completions.calls[2:]] == [1.3, 1.3]
    run = playground.run_side("ideate_persona", "Best tent?", client=client)
    assert run.temperature == expected[0] and f"temperature {expected[0]:g}" in run.summary()


def test_a_headless_notebook_gets_one_final_progress_line(clean_env, capsys: pytest.CaptureFixture) -> None:
    """In a kernel without a widget front end (papermill), no '0%' state is saved above the result."""
    from labkit import progress

    bar_type = progress._final_line_bar()
    for _ in bar_type(range(7), desc="bulk demo", unit="row"):
        pass
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("bulk demo: 100%") and "7/7" in out and "\r" not in out
    # a bar updated by hand with a postfix (the fine-tune's loss) also prints only its final state
    manual = bar_type(total=4, desc="fine-tune", unit="step")
    for i in range(4):
        manual.set_postfix(loss=f"{1 / (i + 1):.3f}")
        manual.update(1)
    manual.close()
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("fine-tune: 100%") and "loss=0.250" in out
    assert progress.in_kernel() is False and progress.widget_frontend_available() is False
    assert type(progress.bar(range(2))).__name__ == "tqdm"  # a terminal gets tqdm's text bar
