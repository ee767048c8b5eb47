"""Offline checks of chat fine-tuning files (labkit.finetune.validate). Fast: no servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labkit.costs import LOCAL_NOTE, MESSAGE_OVERHEAD_TOKENS, REPLY_PRIMING_TOKENS
from labkit.finetune import ValidationReport, estimate_training_cost, validate_file, validate_lines
from labkit.finetune.validate import main


def words(text: str) -> int:
    """A trivial, fast token counter: whitespace-separated words."""
    return len(text.split())


def example(i: int, *, system: bool = True) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"What tent fits {i} people?"},
                {"role": "assistant", "content": f"The TrailMaster X{i} fits them."}]
    if system:
        messages.insert(0, {"role": "system", "content": "You are Contoso's outdoor gear assistant."})
    return {"messages": messages}


def good_lines(n: int = 10) -> list[str]:
    return [json.dumps(example(i)) for i in range(n)]


def check(lines: list[str], **kwargs: Any) -> ValidationReport:
    return validate_lines(lines, count_tokens=words, **kwargs)


def line_with(messages: Any) -> str:
    return json.dumps({"messages": messages})


U = {"role": "user", "content": "Hi"}
A = {"role": "assistant", "content": "Hello!"}
S = {"role": "system", "content": "Be brief."}

# (bad line, the one error code it must produce); the bad line is put at line 3 of a good file
BAD_LINES = {
    "invalid_json": '{"messages": [',
    "not_an_object": "[1, 2, 3]",
    "missing_messages": json.dumps({"prompt": "Hi", "completion": "Hello"}),
    "messages_not_a_list": json.dumps({"messages": {"role": "user", "content": "Hi"}}),
    "empty_messages": line_with([]),
    "bad_message": line_with([U, "just text", A]),
    "unknown_role": line_with([U, {"role": "bot", "content": "Hello"}, A]),
    "role_order": line_with([U, A, S, U, A]),
    "no_assistant": line_with([S, U]),
    "empty_content": line_with([U, {"role": "assistant", "content": "  \n"}]),
    "bad_weight": line_with([U, {"role": "assistant", "content": "Hello", "weight": 0.5}]),
    "too_long": line_with([U, {"role": "assistant", "content": "word " * 200}]),
}


@pytest.mark.parametrize("code", sorted(BAD_LINES))
def test_each_bad_line_gives_exactly_its_code_on_its_line(code: str) -> None:
    lines = good_lines(10)
    lines.insert(2, BAD_LINES[code])
    report = check(lines, max_tokens_per_example=100)
    assert [(e.line, e.code) for e in report.errors] == [(3, code)], report.summary()
    assert not report.ok
    assert report.n_lines == 11 and report.n_examples == 10


@pytest.mark.parametrize("messages", [
    [U, {"role": "user", "content": "again"}, A],                 # user twice
    [A, U, A],                                                      # starts with assistant
    [U, A, U],                                                      # ends with user
    [S, S, U, A],                                                   # two system messages
])
def test_role_order_variants(messages: list[dict[str, str]]) -> None:
    report = check([line_with(messages)])
    assert [(e.line, e.code) for e in report.errors] == [(1, "role_order")]


@pytest.mark.parametrize("bad", [
    {"role": "assistant"},                          # no content
    {"content": "Hello"},                           # no role
    {"role": "assistant", "content": None},         # content not a string
    {"role": "assistant", "content": ["Hello"]},
    {"role": 3, "content": "Hello"},                # role not a string
])
def test_bad_message_variants(bad: dict[str, Any]) -> None:
    report = check([line_with([U, bad])])
    assert [e.code for e in report.errors] == ["bad_message"]


@pytest.mark.parametrize("weight", [2, -1, "1", True, None])
def test_weights_other_than_0_or_1_are_errors(weight: Any) -> None:
    report = check([line_with([U, {**A, "weight": weight}])])
    assert [e.code for e in report.errors] == ["bad_weight"]


def test_good_file_passes_with_counts_and_tokens(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(good_lines(12)) + "\n", encoding="utf-8")
    report = validate_file(path, count_tokens=words)
    assert report.ok and report.errors == [] and report.warnings == []
    assert (report.n_lines, report.n_examples) == (12, 12)
    expected = [sum(words(m["content"]) for m in example(i)["messages"]) + 3 * MESSAGE_OVERHEAD_TOKENS
                + REPLY_PRIMING_TOKENS for i in range(12)]
    assert report.tokens_total == sum(expected)
    assert (report.tokens_min, report.tokens_max) == (min(expected), max(expected))
    assert report.tokens_mean == pytest.approx(sum(expected) / 12)
    assert report.assistant_tokens_total == 12 * 5  # "The TrailMaster Xi fits them."
    assert report.tokens_estimated and "words" in report.tokenizer
    assert report.path == str(path)
    data = report.to_dict()
    assert data["ok"] is True and data["n_examples"] == 12 and json.dumps(data)


def test_weight_zero_assistant_tokens_are_not_trained() -> None:
    lines = [line_with([U, {**A, "content": "one two", "weight": 0}, U, {**A, "content": "three"}])]
    report = check(lines)
    assert report.ok and report.assistant_tokens_total == 1
    only_zero = check([line_with([U, {**A, "weight": 0}])])
    assert only_zero.ok and [w.code for w in only_zero.warnings if w.line == 1] == ["nothing_to_train"]


def test_duplicate_names_the_first_line() -> None:
    lines = good_lines(10)
    lines.append(lines[4])
    lines.append(lines[4])
    report = check(lines)
    assert [(e.line, e.code) for e in report.errors] == [(11, "duplicate"), (12, "duplicate")]
    assert all("line 5" in e.message for e in report.errors)
    assert report.n_examples == 10


def test_blank_lines_and_extra_keys_are_warnings() -> None:
    lines = good_lines(10)
    lines.insert(3, "   ")
    lines.append(line_with([U, {**A, "tool_calls": []}]))
    report = check(lines)
    assert report.ok
    assert [(w.line, w.code) for w in report.warnings] == [(4, "blank_line"), (12, "extra_keys")]
    assert report.n_examples == 11


def test_fewer_than_ten_examples_is_a_warning() -> None:
    report = check(good_lines(3))
    assert report.ok
    assert [(w.line, w.code) for w in report.warnings] == [(None, "too_few_examples")]
    assert "10" in report.warnings[0].message


def test_not_utf8_line_is_reported_and_others_checked(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    lines = [line.encode() for line in good_lines(10)]
    lines.insert(1, json.dumps({"messages": [U, {**A, "content": "Caf\u00e9"}]},
                               ensure_ascii=False).encode("latin-1"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = validate_file(path, count_tokens=words)
    assert [(e.line, e.code) for e in report.errors] == [(2, "not_utf8")]
    assert report.n_examples == 10


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    report = validate_file(path, count_tokens=words)
    assert [(e.line, e.code) for e in report.errors] == [(None, "empty_file")]
    assert report.n_lines == 0 and report.tokens_total == 0 and not report.ok
    blank = check(["", "  "])
    assert [e.code for e in blank.errors] == ["empty_file"]
    assert [w.code for w in blank.warnings] == ["blank_line", "blank_line"]


def test_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(good_lines(10)).encode() + b"\r\n")
    report = validate_file(path, count_tokens=words)
    assert report.ok and report.n_examples == 10 and report.n_lines == 10
    assert [w.code for w in report.warnings] == ["utf8_bom"]


def test_missing_file_raises_and_main_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        validate_file(missing, count_tokens=words)
    assert main([str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().count("\n") == 0 and "not found" in captured.err
    assert "Traceback" not in captured.err


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit.finetune import validate

    monkeypatch.setattr(validate, "default_token_counter", lambda: (words, "words", False))
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("\n".join(good_lines(10)) + "\n", encoding="utf-8")
    bad.write_text("\n".join([*good_lines(10), "not json"]) + "\n", encoding="utf-8")
    assert main([str(good)]) == 0
    assert ": OK:" in capsys.readouterr().out
    assert main([str(bad), "--max-tokens", "50"]) == 1
    out = capsys.readouterr().out
    assert "NOT OK" in out and "line 11: invalid_json" in out


def test_summary_mentions_codes_counts_and_lines() -> None:
    lines = good_lines(10)
    lines[2] = line_with([S, U])
    lines[6] = line_with([U, U, A])
    lines[7] = line_with([U, A, U])
    lines.append("")
    text = check(lines, model="gpt-4o-mini").summary()
    assert "NOT OK" in text
    assert "role_order x2" in text and "no_assistant x1" in text and "blank_line x1" in text
    assert "line 3: no_assistant" in text and "line 7: role_order" in text and "line 8: role_order" in text
    assert "tokens" in text and "training cost" in text and "training_per_1k" in text


def test_summary_lists_only_the_first_few_issues() -> None:
    text = check(["x"] * 20).summary()
    assert "invalid_json x20" in text and "and 15 more errors" in text


def test_cloud_model_without_training_price_has_no_cost() -> None:
    cost = estimate_training_cost(10_000, "gpt-4o-mini", 3)
    assert cost.usd is None and not cost.priced
    assert cost.billed_tokens == 30_000 and cost.base_model == "gpt-4o-mini"
    assert "training_per_1k" in cost.note and "data/prices.json" in cost.note
    deployment = estimate_training_cost(1000, "chat", 2)
    assert deployment.usd is None and deployment.base_model == "gpt-4o-mini"


def test_training_price_when_the_table_has_one() -> None:
    prices = {"version": 9, "deployments": {},
              "models": {"gpt-4o-mini": {"input_per_1k": 0.1, "output_per_1k": 0.2,
                                         "training_per_1k": 0.003, "read": "2030-01"}}}
    cost = estimate_training_cost(2000, "gpt-4o-mini-2024-07-18", 4, prices=prices)
    assert cost.usd == pytest.approx(8 * 0.003)
    assert "2030-01" in cost.note and cost.prices_version == 9


def test_local_model_costs_nothing_and_unknown_or_missing_model_is_unpriced() -> None:
    local = estimate_training_cost(5000, "smollm2-135m-instruct", 3)
    assert local.usd == 0.0 and local.note == LOCAL_NOTE
    unknown = estimate_training_cost(5000, "no-such-model-xyz", 3)
    assert unknown.usd is None and "no price" in unknown.note
    none = estimate_training_cost(5000, None, 3)
    assert none.usd is None and "model" in none.note
    with pytest.raises(ValueError):
        estimate_training_cost(10, "gpt-4o-mini", 0)


def test_cloud_model_marks_counts_as_estimates() -> None:
    report = check(good_lines(10), model="gpt-4o-mini", epochs=2)
    assert report.tokens_estimated
    assert report.cost is not None and report.cost.billed_tokens == 2 * report.tokens_total


def test_default_tokenizer_is_the_local_vocab_and_deterministic() -> None:
    from labkit.finetune.validate import default_token_counter

    count, name, exact = default_token_counter()
    assert exact and "gguf" in name.lower() and "vocab-only" in name
    first = count("Hello there")
    assert 1 <= first <= 5 and count("Hello there") == first
    assert count("") == 0
    report = validate_lines(good_lines(10))
    assert report.ok and report.tokens_total > 0 and not report.tokens_estimated
    assert report.tokenizer == name


def test_odd_lines_are_reported_not_raised() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    lone_surrogate = '{"messages": [{"role": "user", "content": "Hi \\ud800"}, {"role": "assistant", "content": "Hello"}]}'
    report = validate_lines([deep, lone_surrogate, "null", '"text"'])
    assert [(e.line, e.code) for e in report.errors] == [(1, "invalid_json"), (3, "not_an_object"),
                                                         (4, "not_an_object")]
    assert report.n_examples == 1 and report.tokens_total > 0
