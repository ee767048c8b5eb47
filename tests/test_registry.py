"""Governance (labkit.registry): gated promotion, lineage from a served answer, generated cards and the
personal-data scanner, in a temporary LABKIT_HOME without services. `labkit serve` recording its
deployment and `labkit lineage` on a real request are tested in test_app.py; the scan of a whole
run's state is tests/test_zz_data_hygiene.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labkit import registry
from labkit.cli import app as cli
from labkit.evaluation.results import VariantRun
from labkit.flow import FlowConfig
from labkit.registry import cards, hygiene
from labkit.registry.promote import write_committed
from labkit.registry.store import COMMITTED


def _evaluation(tmp_path: Path, config: FlowConfig, *, status: str = "complete",
                gates: list[dict[str, Any]] | None = None, name: str = "run") -> dict[str, Any]:
    """What the runner records after a run (the shape of a real VariantRun)."""
    manifest = {"created": f"2026-12-01T00:00:0{len(list(tmp_path.iterdir())) % 10}+00:00",
                "flow_config": config.model_dump(), "flow_version": config.flow_version(),
                "data": {"path": "data/eval/testset.jsonl", "sha256": "d" * 64, "rows": 3},
                "index": {"name": config.index, "document_count": 120, "sha256": "i" * 64},
                "model": {"chat": "smollm2-135m-instruct", "backend": "local", "judge": None},
                "evaluators": {"retrieval": "1"}, "git": {"commit": "c" * 40, "dirty": False}}
    summary = {"status": status, "flow_version": config.flow_version(), "gates": gates or [],
               "metrics": {"retrieval.hit_at_5": 1.0},
               "intervals": {"retrieval.hit_at_5": {"mean": 1.0, "low": 0.44, "high": 1.0, "n": 3}},
               "unmeasured": {"retrieval.hit_at_5": 0}, "rows": {"selected": 3, "ok": 3},
               "usage": {"input_tokens": 3000, "output_tokens": 300, "estimated": False}, "cost_usd": 0.0}
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return registry.record_evaluation(VariantRun(name, folder, summary, manifest))


PASSED = [{"gate": "retrieval.hit_at_5 >= 0.3", "passed": True, "message": "PASS retrieval.hit_at_5 >= 0.3"}]
FAILED = [{"gate": "retrieval.hit_at_5 >= 0.9", "passed": False, "message": "FAIL retrieval.hit_at_5 >= 0.9"}]


def test_a_promotion_needs_a_passed_gate_of_that_exact_version(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = FlowConfig(name="candidate", max_tokens=64)
    version = config.flow_version()
    with pytest.raises(registry.PromotionRefused, match="not in the registry"):
        registry.promote(version)
    _evaluation(tmp_path, config, name="no-gate")
    with pytest.raises(registry.PromotionRefused, match="without any gate"):
        registry.promote(version)
    _evaluation(tmp_path, config, gates=FAILED, name="failed")
    with pytest.raises(registry.PromotionRefused, match="failed the gate"):
        registry.promote(version)
    _evaluation(tmp_path, config, status="aborted", gates=PASSED, name="aborted")
    with pytest.raises(registry.PromotionRefused, match="did not finish"):
        registry.promote(version)
    other = FlowConfig(name="other")
    _evaluation(tmp_path, other, gates=PASSED, name="other")  # a pass for another version does not count
    with pytest.raises(registry.PromotionRefused):
        registry.promote(version)
    refused = CliRunner().invoke(cli, ["promote", version])
    assert refused.exit_code == 1 and "refused" in refused.output
    assert registry.production_config() is None or registry.production_config().flow_version() != version

    _evaluation(tmp_path, config, gates=PASSED, name="passed")
    done = CliRunner().invoke(cli, ["promote", version, "--reason", "test"])
    assert done.exit_code == 0, done.output
    assert registry.production_config().flow_version() == version
    from labkit.app.main import default_config
    from labkit.config import get_settings

    assert default_config(get_settings()).flow_version() == version  # `labkit serve` serves it
    card = (get_settings().home / "cards" / f"{version}.md").read_text()
    assert card.startswith(cards.HEADER) and "1.000 [0.440, 1.000] (n=3)" in card
    assert "$0.0000 per 1,000 requests" in card and "local model" in card


def test_lineage_from_a_served_answer_reaches_prompt_data_and_model_hashes(clean_env: pytest.MonkeyPatch) -> None:
    from labkit import requestlog
    from labkit.config import get_settings
    from labkit.tracing import get_tracer

    config = FlowConfig(name="served")
    registry.record_deployment(config, where="test")
    tracer = get_tracer()
    with tracer.start_as_current_span("contoso_chat") as root:
        root.set_attribute("labkit.flow_version", config.flow_version())
        request_id = f"{root.get_span_context().trace_id:032x}"
        with tracer.start_as_current_span("chat smollm2-135m-instruct") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.response.model", "smollm2-135m-instruct")
    requestlog.log_request({"request_id": request_id, "status": 200}, customer_id="C-001")
    chain = registry.lineage(request_id)
    assert chain["request"]["flow_version"] == config.flow_version() and chain["request"]["served"]
    prompts = chain["version"]["prompts"]
    assert set(prompts) == {config.prompt, config.query_prompt} and all(len(p["sha256"]) == 64 for p in prompts.values())
    assert len(chain["version"]["catalog"]["data/products.json"]) == 64
    assert chain["version"]["model"]["model"] == "smollm2-135m-instruct" and chain["deployment"]
    printed = CliRunner().invoke(cli, ["lineage", request_id])
    assert printed.exit_code == 0 and "prompt contoso_chat" in printed.output and "data data/products.json" in printed.output
    assert "C-001" not in printed.output and "C-001" not in (get_settings().home / "registry.sqlite").read_bytes().decode(
        errors="ignore")
    missing = CliRunner().invoke(cli, ["lineage", "0" * 32])
    assert missing.exit_code == 2 and "no trace" in missing.output


def test_a_committed_card_is_generated_and_matches_its_record(tmp_path: Path) -> None:
    entry = {"promoted": "2026-12-01T00:00:00+00:00", "config": FlowConfig().model_dump(),
             "prompts": {"contoso_chat": {"version": 2, "sha256": "p" * 64}},
             "model": {"model": "gpt-4o-mini", "backend": "azure"}, "gates": PASSED,
             "evaluation_record": {"model": {"chat": "gpt-4o-mini"}, "rows": {"ok": 10},
                                   "usage": {"input_tokens": 10_000, "output_tokens": 1_000},
                                   "intervals": {}, "data": {}}}
    path = write_committed("abc123", entry, tmp_path / "promoted.json")
    card = (tmp_path / "cards" / "abc123.md").read_text()
    assert card == cards.render("abc123", json.loads(path.read_text())["versions"]["abc123"])
    assert "$0.2100 per 1,000 requests" in card  # 1,000 in + 100 out tokens each: $0.15 + $0.06 (gpt-4o-mini)
    unpriced = {**entry, "evaluation_record": {**entry["evaluation_record"], "model": {"chat": "my-model"}}}
    assert "unpriced" in cards.render("x", unpriced)


def test_every_committed_card_is_what_the_registry_generates() -> None:
    if not COMMITTED.exists():
        pytest.skip("no version has been promoted in the repository yet (registry/promoted.json)")
    data = json.loads(COMMITTED.read_text())
    for version, entry in data["versions"].items():
        card = COMMITTED.parent / "cards" / f"{version}.md"
        assert card.read_text() == cards.render(version, entry), f"{card} was edited or is stale"


def test_the_scanner_finds_personal_data_only_where_it_must_not_be(tmp_path: Path) -> None:
    home, build, repo = tmp_path / "home", tmp_path / "build", tmp_path / "repo"
    for folder in (home / "logs", home / "evals" / "run", build, repo / "registry"):
        folder.mkdir(parents=True)
    (home / "logs" / "requests.jsonl").write_text('{"note": "call 555 0112"}\n')
    (home / "evals" / "run" / "results.jsonl").write_text('{"answer": "Hi Elena Marsh!"}\n')  # may hold names
    (home / "mystery.txt").write_text("elena.marsh@example.com")
    (repo / "registry" / "card.md").write_text("Ridgeline and Quillstone gear for Marsh")
    roots = {"home": home, "build": build, "repo": repo}
    found = {(f.path.name, f.kind) for f in hygiene.scan(roots=roots)}
    assert found == {("requests.jsonl", "phone"), ("mystery.txt", "email"), ("mystery.txt", "name"), ("card.md", "name")}
    unlisted = [f for f in hygiene.scan(roots=roots) if f.path.name == "mystery.txt"]
    assert unlisted[0].store == "no listed store"
