"""Gated promotion: a flow version goes to production only with a passed gate of its own.

Introduced in notebooks/09_operate.ipynb; `labkit promote FLOW_VERSION`.

The gate must come from an evaluation of that exact `flow_version` (the identity of config, prompt
files and model), that finished every row, and that ran at least one gate, all passed. Anything
else is refused with the reason. A promotion is a registry record; `repository=True` also writes it
to `registry/promoted.json`, the committed record of what the repository ships, and regenerates the
version's card in `registry/cards/`.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from labkit.config import Settings, get_settings
from labkit.registry.store import COMMITTED, find, put


class PromotionRefused(ValueError):
    """A promotion without a passed gate for that exact flow version (the message says why)."""


def gate_evidence(flow_version: str, settings: Settings | None = None) -> dict[str, Any]:
    """The newest evaluation of `flow_version` whose gates all passed; raises PromotionRefused."""
    evaluations = find("evaluation", flow_version=flow_version, settings=settings)
    if not evaluations:
        raise PromotionRefused(
            f"no evaluation of flow_version {flow_version} is in the registry: run "
            "`labkit eval` with a --gate (or --gate-vs-baseline) on this exact version first"
        )
    for record in evaluations:
        body = record["body"]
        if body.get("status") in ("complete", "complete_with_errors") and body.get("gates_passed"):
            return record
    latest = evaluations[0]["body"]
    if latest.get("status") not in ("complete", "complete_with_errors"):
        why = f"its latest evaluation did not finish (status {latest.get('status')})"
    elif not latest.get("gates"):
        why = "it was evaluated without any gate"
    else:
        failed = [g.get("gate") for g in latest["gates"] if not g.get("passed")]
        why = f"its latest evaluation failed the gate(s): {', '.join(str(f) for f in failed)}"
    raise PromotionRefused(f"flow_version {flow_version} has no passed gate: {why}")


def promote(
    flow_version: str, *, reason: str = "", repository: bool = False, settings: Settings | None = None
) -> dict[str, Any]:
    """Promote a version to production (see the module docstring). Returns the promotion record."""
    settings = settings or get_settings()
    versions = find("version", flow_version=flow_version, settings=settings)
    if not versions:
        raise PromotionRefused(f"flow_version {flow_version} is not in the registry (evaluate it first)")
    evidence = gate_evidence(flow_version, settings)
    from labkit.registry.cards import write_card

    body = {
        "promoted": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "reason": reason,
        "config": versions[0]["body"]["config"],
        "prompts": versions[0]["body"]["prompts"],
        "model": versions[0]["body"]["model"],
        "catalog": versions[0]["body"].get("catalog"),
        "evaluation": evidence["id"],
        "gates": evidence["body"]["gates"],
        "metrics": evidence["body"]["metrics"],
        "git": versions[0]["body"].get("git"),
        "evaluation_record": {
            k: evidence["body"].get(k)
            for k in (
                "data",
                "index",
                "model",
                "evaluators",
                "intervals",
                "unmeasured",
                "rows",
                "cost_usd",
                "judge_note",
                "git",
                "status",
                "usage",
                "latency_s",
            )
        },
    }
    record = put("promotion", f"{flow_version}@{body['promoted']}", flow_version, body, settings)
    record["card"] = write_card(flow_version, body, settings.home / "cards")
    if repository:
        write_committed(flow_version, body)
    return record


def write_committed(flow_version: str, entry: dict[str, Any], path: Path = COMMITTED) -> Path:
    """Add the promotion to `registry/promoted.json` and write the version's card beside it."""
    from labkit.registry.cards import write_card

    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"versions": {}}
    data["versions"][flow_version] = entry
    data["production"] = flow_version
    data["note"] = "written by `labkit promote --repository`; do not edit by hand"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    write_card(flow_version, entry, path.parent / "cards")
    return path
