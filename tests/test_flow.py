"""The Contoso Chat flow against the real local services (model, search, SQLite store): no mocks."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit import flow, search, store
from labkit.config import Settings
from labkit.tracing import get_trace
from tests.conftest import module_home

CONFIG = flow.FlowConfig(index="products-product", max_tokens=24, top_k=2, max_documents=4, max_context_words=300)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with module_home(tmp_path_factory, "flow-home") as settings:
        search.build_index("product", settings=settings)
        yield settings


def test_every_field_is_filled_and_citations_come_from_retrieval(local: Settings) -> None:
    import hashlib

    from labkit.prompts import PROMPTS_DIR

    result = flow.answer("Which tent is lighter, the Skyfall 2 or the Skyfall 2 UL?", "C-002", config=CONFIG)
    assert result.answer.strip() and result.queries
    # the request id is the id of the trace that holds this answer's spans
    spans = get_trace(result.request_id)
    assert spans and {s["trace_id"] for s in spans} == {result.request_id}
    chats = [s["attributes"] for s in spans if s["operation"] == "chat"]
    assert result.model == local.labkit_local_chat_model == chats[-1]["gen_ai.response.model"]
    # usage adds up what the model server reported for every model call (queries, answer): not estimated
    assert result.usage == {"input_tokens": sum(c["gen_ai.usage.input_tokens"] for c in chats),
                            "output_tokens": sum(c["gen_ai.usage.output_tokens"] for c in chats),
                            "estimated": False}
    assert result.prompt["name"] == "contoso_chat"
    assert result.prompt["sha256"] == hashlib.sha256((PROMPTS_DIR / "contoso_chat.prompty").read_bytes()).hexdigest()
    assert result.flow_version == CONFIG.flow_version()
    steps = ("customer", "queries", "retrieval", "prompt", "answer")
    assert set(steps) | {"total"} <= set(result.timings)
    assert all(result.timings[k] >= 0 for k in steps) and sum(result.timings[k] for k in steps) <= \
        result.timings["total"] + 1e-3
    retrieved = {d["product_id"] for d in result.context["documents"]}
    assert retrieved and {"P-001", "P-002"} & retrieved
    assert set(result.citations) <= retrieved
    assert set(result.dropped_citations).isdisjoint(retrieved)
    assert result.catalog_unavailable is False and result.query_fallback is False
    # orders come from the store, all of them
    assert result.context["orders"] == store.get_customer("C-002")["orders"]


def test_citations_are_checked_against_retrieved_documents() -> None:
    kept, dropped = flow.split_citations("Try [P-001] or [P-099], and [P-001] again [P-002].", {"P-001", "P-002"})
    assert kept == ["P-001", "P-002"] and dropped == ["P-099"]


@pytest.mark.parametrize("text,kept,dropped", [
    ("Stoves: Spark (P-016), Rover (P-017), Table (P-022).", ["P-016"], ["P-017", "P-022"]),
    ("The P-016 weighs 86 g; see also {P-018} and <P-019>.", ["P-016"], ["P-018", "P-019"]),
    ("Sources: [P-016] [P-017]", ["P-016"], ["P-017"]),
    ("Order AP-0161, part P-0161 and p-016 are not product ids.", [], []),
])
def test_product_ids_in_any_bracket_or_bare_are_checked(text: str, kept: list[str], dropped: list[str]) -> None:
    assert flow.split_citations(text, {"P-016"}) == (kept, dropped)


def test_follow_up_keeps_the_product_in_focus(local: Settings) -> None:
    first = flow.answer("Tell me about the Aster -12 sleeping bag.", "C-001", config=CONFIG)
    history = [{"role": "user", "content": "Tell me about the Aster -12 sleeping bag."},
               {"role": "assistant", "content": first.answer}]
    second = flow.answer("how much is it?", "C-001", history=history, config=CONFIG)
    assert any("Aster -12" in q for q in second.queries), second.queries
    assert "P-008" in {d["product_id"] for d in second.context["documents"]}


def test_bad_json_from_the_query_model_is_survived(local: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad_queries.prompty"
    bad.write_text("---\nname: bad_queries\nversion: 1\nmodel:\n  api: chat\n  parameters:\n    max_tokens: 8\n"
                   "inputs:\n  question:\n    type: string\n  history:\n    type: list\n    default: []\n---\n"
                   "user:\nSay the word banana and nothing else.\n")
    result = flow.answer("Is the Trailhead 28 waterproof?", "C-003", config=CONFIG.model_copy(
        update={"query_prompt": str(bad)}))
    assert result.query_fallback is True
    assert result.queries[0] == "Is the Trailhead 28 waterproof?"
    assert result.answer


def test_filters_follow_the_question() -> None:
    assert flow.query_filter("tents under $200") == "category eq 'Tents' and price le 200.0"
    assert flow.query_filter("a sleeping bag for -10 C") == "category eq 'Sleeping Bags' and temp_rating_c le -10.0"
    assert flow.query_filter("a backpack lighter than 1.5 kg") == "category eq 'Backpacks' and weight_g le 1500"
    assert flow.query_filter("hello") is None


def test_spans_are_stored_with_genai_names(local: Settings) -> None:
    result = flow.answer("What does the Spark stove weigh?", "C-004", config=CONFIG)
    spans = get_trace(result.request_id)
    operations = {s["operation"] for s in spans}
    assert {"chat", "embeddings", "retrieval"} <= operations
    chat = [s for s in spans if s["operation"] == "chat"]
    assert chat[-1]["name"] == f"chat {result.model}"
    for key in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                "gen_ai.request.max_tokens", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
        assert key in chat[-1]["attributes"], key
    retrieval = [s for s in spans if s["operation"] == "retrieval"][0]
    assert retrieval["attributes"]["gen_ai.data_source.id"] == "products-product"
    assert "gen_ai.retrieval.query.text" not in retrieval["attributes"]  # contents off by default
    root = [s for s in spans if s["parent_id"] is None]
    assert len(root) == 1 and root[0]["name"] == "contoso_chat"


def test_stream_yields_pieces_then_the_result(local: Settings) -> None:
    items = list(flow.stream("Is the Rover chair heavy?", "C-005", config=CONFIG))
    *pieces, result = items
    assert isinstance(result, flow.ChatResult) and pieces and all(isinstance(p, str) for p in pieces)
    assert result.answer == "".join(pieces).strip()
    assert result.usage["estimated"] is True and result.usage["output_tokens"] >= len(pieces)


@pytest.mark.parametrize("question", ["", "   ", "x" * 5000])
def test_bad_questions_are_rejected(local: Settings, question: str) -> None:
    with pytest.raises(flow.FlowInputError):
        flow.answer(question, "C-001", config=CONFIG)


def test_unknown_customer_is_a_clear_error(local: Settings) -> None:
    with pytest.raises(store.CustomerNotFound):
        flow.answer("hello", "C-404", config=CONFIG)


def test_search_down_gives_catalog_unavailable(local: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("LABKIT_SEARCH_BACKEND", "azure")
    monkeypatch.setenv("AZURE_SEARCH_ENDPOINT", f"http://127.0.0.1:{dead}")
    monkeypatch.setenv("AZURE_SEARCH_API_KEY", "not-a-real-key")
    result = flow.answer("Do you sell tents?", "C-001", config=CONFIG)
    assert result.catalog_unavailable is True
    assert "catalog" in result.answer and result.context["documents"] == []


def test_cli_chat_json_and_errors(local: Settings) -> None:
    import json
    import subprocess
    import sys

    run = [sys.executable, "-m", "labkit.cli", "chat"]
    out = subprocess.run([*run, "--customer", "C-001", "--json", "Do you sell a compass?"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["answer"] and result["request_id"] and result["context"]["documents"]
    bad = subprocess.run([*run, "--customer", "C-404", "hello"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "CustomerNotFound" in bad.stderr and "Traceback" not in bad.stderr


def test_filters_need_a_currency_and_stay_bounded() -> None:
    assert flow.query_filter("Which tent is under 2 kg?") == "category eq 'Tents' and weight_g le 2000"
    assert flow.query_filter("a stove under 500 grams") == "category eq 'Camp Stoves' and weight_g le 500"
    assert flow.query_filter("a tent for max 4 people") == "category eq 'Tents'"
    assert flow.query_filter("gps over $1,000") == "category eq 'Navigation' and price ge 1000.0"
    assert flow.query_filter("lighter than " + "9" * 400 + " kg") is None


def test_focus_prefers_the_longest_product_name() -> None:
    assert flow.products_mentioned("Tell me about the Skyfall 2 UL") == ["P-002"]
    history = [{"role": "user", "content": "Tell me about the Skyfall 2 UL"},
               {"role": "assistant", "content": "It is lighter [P-002] than [P-001]."}]
    assert flow.focus_product(history) == "P-002"


def test_a_family_word_names_the_plain_model_only_where_that_is_unambiguous() -> None:
    assert flow.products_mentioned("Waypoint or Waypoint Plus - which?") == ["P-023", "P-024"]
    assert flow.products_mentioned("Can I use a spare Rover seat on the Rover Lite?") == ["P-019", "P-020"]
    assert flow.products_mentioned("the Waypoint Plus") == ["P-024"]
    assert flow.products_mentioned("Aster or Summit?") == []  # two plain models in each family


def test_focused_passages_see_every_named_product_with_its_catalog_line(local: Settings) -> None:
    """A comparison of two products gets a passage of each, even when every hit of the question
    is about one of them, and each passage carries the catalog numbers of its product."""
    shape = flow.FlowConfig(prompt="contoso_chat_small", top_k=5, max_documents=2, max_context_words=240,
                            passages="focused", write_queries=False, index="products-section")
    question = "Should I get the Aster -7 or the Aster -12 for a trip where nights drop to about -10 °C?"
    result, messages = flow.prepare(question, "C-001", None, shape)
    assert sorted(d["product_id"] for d in result.context["documents"]) == ["P-007", "P-008"]
    assert "Temperature rating -7 °C." in messages[0]["content"]
    assert "Temperature rating -12 °C." in messages[0]["content"]


def test_answer_and_stream_share_one_path(local: Settings) -> None:
    question = "Is the Rover chair heavy?"
    plain = flow.answer(question, "C-005", config=CONFIG)
    *pieces, streamed = flow.stream(question, "C-005", config=CONFIG)
    assert isinstance(streamed, flow.ChatResult) and "".join(pieces).strip() == streamed.answer
    same = ("citations", "dropped_citations", "queries", "context", "filter", "model", "prompt", "flow_version",
            "safety", "blocked", "catalog_unavailable", "query_fallback")
    assert {k: getattr(plain, k) for k in same} == {k: getattr(streamed, k) for k in same}
    assert set(plain.timings) == set(streamed.timings) and set(plain.usage) <= set(streamed.usage)

    def root_attributes(result: flow.ChatResult) -> dict:
        (root,) = [s for s in get_trace(result.request_id) if s["parent_id"] is None]
        return root["attributes"]

    a, b = root_attributes(plain), root_attributes(streamed)
    assert (a.pop("labkit.streamed"), b.pop("labkit.streamed")) == (False, True)
    assert a == b and a["labkit.flow_version"] == CONFIG.flow_version()


def test_inside_a_callers_span_the_flow_joins_its_trace(local: Settings) -> None:
    """The HTTP service's request span is the root; the flow's span is its child, request_id its trace."""
    from labkit.tracing import get_tracer

    with get_tracer().start_as_current_span("POST /api/chat") as outer:
        result = flow.answer("Do you sell a compass?", "C-003", config=CONFIG)
    trace_id = f"{outer.get_span_context().trace_id:032x}"
    assert result.request_id == trace_id
    spans = {s["name"]: s for s in get_trace(trace_id)}
    assert spans["POST /api/chat"]["parent_id"] is None
    assert spans["contoso_chat"]["parent_id"] == f"{outer.get_span_context().span_id:016x}"
    alone = flow.answer("Do you sell a compass?", "C-003", config=CONFIG)  # outside any span: its own trace
    assert alone.request_id != trace_id and [s["name"] for s in get_trace(alone.request_id)
                                            if s["parent_id"] is None] == ["contoso_chat"]


def test_flow_version_hashes_the_resolved_model_and_the_adapter(clean_env, tmp_path) -> None:
    """`chat_model=None` resolves to the backend's model, and a LoRA adapter's bytes count: two
    adapters served under one name never share a flow version."""
    from labkit.services.manager import default_model_path, register_model

    config = flow.FlowConfig(chat_model="contoso-ft")
    local_default = flow.FlowConfig().flow_version()
    adapter = tmp_path / "adapter.gguf"
    adapter.write_bytes(b"first adapter")
    register_model("contoso-ft", default_model_path(), adapter)
    first = config.flow_version()
    adapter.write_bytes(b"second adapter, retrained")
    assert config.flow_version() != first
    clean_env.setenv("LABKIT_CHAT_BACKEND", "openai")
    clean_env.setenv("OPENAI_API_KEY", "sk-test")
    assert flow.FlowConfig().flow_version() != local_default  # another model behind chat_model=None
