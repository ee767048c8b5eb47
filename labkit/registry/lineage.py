"""Lineage: from a served answer, an evaluation or a flow version back to its inputs.

Introduced in notebooks/09_operate.ipynb; `labkit lineage ID`.

- a request id (32 hex, the trace id of an answer): its trace gives the flow version and the model
  that answered, the request log its status and time;
- the flow version's registry record gives the prompt files (version, sha256), the model identity
  (the adapter's sha256 for a fine-tuned local model) and the catalog files' sha256;
- a fine-tuned model's record gives its base model and its training data's sha256;
- the evaluations of that version give the test data's sha256, the index (document count and
  sha256), evaluator versions, gates and the git commit; promotions and deployments say whether and
  when it went to production.
"""

from __future__ import annotations

import re
from typing import Any

from labkit.config import Settings, get_settings
from labkit.registry.store import adapter_facts, find

_REQUEST = re.compile(r"^[0-9a-f]{32}$")


def _request(request_id: str, settings: Settings) -> dict[str, Any]:
    from labkit import requestlog
    from labkit.tracing import get_trace

    spans = get_trace(request_id, path=settings.home / "traces.sqlite")
    if not spans:
        raise LookupError(f"no trace {request_id} in {settings.home / 'traces.sqlite'}")
    root = next((s for s in spans if s["name"] == "contoso_chat"), None)
    chats = [s for s in spans if s["operation"] == "chat"]
    logged = next((r for r in requestlog.read_requests(settings) if r.get("request_id") == request_id), None)
    return {
        "request_id": request_id,
        "flow_version": (root or {}).get("attributes", {}).get("labkit.flow_version"),
        "model": next(
            (
                s["attributes"].get("gen_ai.response.model") or s["attributes"].get("gen_ai.request.model")
                for s in reversed(chats)
            ),
            None,
        ),
        "spans": len(spans),
        "served": logged is not None,
        "status": (logged or {}).get("status"),
        "time": (logged or {}).get("time"),
        "customer": (logged or {}).get("customer"),  # a keyed hash, never the id
    }


def _brief_evaluation(record: dict[str, Any]) -> dict[str, Any]:
    body = record["body"]
    return {
        "id": record["id"],
        "created": record["created"],
        "status": body.get("status"),
        "gates_passed": body.get("gates_passed"),
        "data": body.get("data"),
        "index": {k: (body.get("index") or {}).get(k) for k in ("name", "document_count", "sha256")},
        "evaluators": body.get("evaluators"),
        "git": body.get("git"),
        "folder": body.get("folder"),
    }


def lineage(identifier: str, settings: Settings | None = None) -> dict[str, Any]:
    """The chain behind a request id, an evaluation id (`eval-...`) or a flow version."""
    settings = settings or get_settings()
    chain: dict[str, Any] = {"id": identifier}
    if _REQUEST.match(identifier):
        chain["kind"] = "request"
        chain["request"] = _request(identifier, settings)
        flow_version = chain["request"]["flow_version"]
    elif identifier.startswith("eval-"):
        records = find("evaluation", record_id=identifier, settings=settings)
        if not records:
            raise LookupError(f"no evaluation {identifier} in the registry")
        chain["kind"] = "evaluation"
        chain["evaluation"] = _brief_evaluation(records[0])
        flow_version = records[0]["flow_version"]
    else:
        chain["kind"] = "version"
        flow_version = identifier
    chain["flow_version"] = flow_version
    versions = find("version", flow_version=flow_version, settings=settings) if flow_version else []
    if not versions:
        chain["version"] = None
        chain["note"] = (
            f"flow_version {flow_version} is not in the registry: it was never evaluated or served "
            "with the registry in place"
        )
        return chain
    body = versions[0]["body"]
    chain["version"] = {
        "config": body["config"],
        "prompts": body["prompts"],
        "model": body["model"],
        "catalog": body.get("catalog"),
        "git": body.get("git"),
    }
    model = (chain.get("request") or {}).get("model") or body["model"].get("model")
    tunes = [r for r in find("finetune", settings=settings) if r["body"].get("model") == model]
    chain["finetune"] = tunes[0]["body"] if tunes else adapter_facts(model, settings)
    if chain["kind"] != "evaluation":
        chain["evaluations"] = [
            _brief_evaluation(r) for r in find("evaluation", flow_version=flow_version, settings=settings)
        ][:5]
    promotions = find("promotion", flow_version=flow_version, settings=settings)
    chain["promotion"] = (
        {"promoted": promotions[0]["body"]["promoted"], "evaluation": promotions[0]["body"]["evaluation"]}
        if promotions
        else None
    )
    deployments = find("deployment", flow_version=flow_version, settings=settings)
    when = (chain.get("request") or {}).get("time")
    if when:
        deployments = [d for d in deployments if d["created"] <= when] or deployments
    chain["deployment"] = (
        {
            "id": deployments[0]["id"],
            "created": deployments[0]["created"],
            "where": deployments[0]["body"].get("where"),
        }
        if deployments
        else None
    )
    return chain


def lines(chain: dict[str, Any]) -> list[str]:
    """The chain as indented text (what `labkit lineage` prints)."""
    out = []
    request = chain.get("request")
    if request:
        out.append(
            f"request {request['request_id']}: {request['spans']} spans, status {request.get('status')}, "
            f"at {request.get('time')}, customer hash {request.get('customer')}"
        )
        out.append(
            f"  answered by model {request.get('model')} with flow_version {request.get('flow_version')}"
        )
    if chain.get("evaluation"):
        e = chain["evaluation"]
        out.append(
            f"evaluation {e['id']} ({e['status']}, gates passed: {e['gates_passed']}) in {e['folder']}"
        )
    version = chain.get("version")
    if version is None:
        out.append(chain.get("note", "not in the registry"))
        return out
    config = version["config"]
    out.append(
        f"flow_version {chain['flow_version']}: config {config.get('name')!r}, index {config.get('index')}"
    )
    for name, prompt in sorted(version["prompts"].items()):
        out.append(f"  prompt {name} v{prompt.get('version')} sha256 {prompt.get('sha256')}")
    model = version["model"]
    out.append(
        f"  model {model.get('model')} ({model.get('backend')}), adapter sha256 {model.get('adapter_sha256')}"
    )
    tune = chain.get("finetune")
    if tune:
        out.append(
            f"    fine-tune: adapter {tune.get('adapter_sha256')}, base {tune.get('base')}, training data "
            f"sha256 {tune.get('data_sha256')}"
        )
    for name, sha in sorted((version.get("catalog") or {}).items()):
        out.append(f"  data {name} sha256 {sha}")
    for e in chain.get("evaluations") or []:
        data, index = e.get("data") or {}, e.get("index") or {}
        where = (f"{data['path']} sha256 {data.get('sha256')}" if data.get("path")
                 else f"rows given in code, ids sha256 {data.get('ids_sha256')}")
        out.append(
            f"  evaluation {e['id']} {e['created']}: {e['status']}, gates passed {e['gates_passed']}; data "
            f"{where}; index {index.get('name')} "
            f"{index.get('document_count')} docs sha256 {index.get('sha256')}"
        )
    promotion = chain.get("promotion")
    out.append(
        f"  promoted {promotion['promoted']} on {promotion['evaluation']}" if promotion else "  not promoted"
    )
    deployment = chain.get("deployment")
    if deployment:
        out.append(f"  served by deployment {deployment['id']} ({deployment.get('where')})")
    return out
