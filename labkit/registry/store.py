"""The registry: what produced every evaluation, fine-tune and deployment, keyed by `flow_version`.

Introduced in notebooks/09_operate.ipynb; `labkit lineage`, `labkit promote` and `labkit serve` use it.

One SQLite file, `LABKIT_HOME/registry.sqlite`, one table of records (`kind`, `id`, `flow_version`,
`created`, a JSON `body`). Kinds:
- `version`: a FlowConfig and its prompt files (name, version, sha256), model identity (adapter
  sha256 for a fine-tuned local model) and the hashes of the data files the index is built from;
- `evaluation`: an evaluation run's manifest facts (data, prompts, index, models, evaluator
  versions, git commit), its metrics with intervals and its gates;
- `finetune`: an adapter served locally: its sha256, base model, training-data sha256 and settings;
- `deployment`: a `labkit serve` start: the version it serves and when;
- `promotion`: a version promoted to production, with the evaluation whose gates it passed.

Records hold ids, hashes, versions and numbers - never a question, an answer or a customer's data
(docs/data-hygiene.md). Writing a record never fails the work it describes: the caller catches
`RegistryError` and warns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from labkit.config import REPO_ROOT, Settings, get_settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind         TEXT NOT NULL,      -- version | evaluation | finetune | deployment | promotion
    id           TEXT NOT NULL,
    flow_version TEXT,
    created      TEXT NOT NULL,      -- ISO 8601, UTC
    body         TEXT NOT NULL,      -- JSON
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS records_by_version ON records(flow_version, kind, created);
"""
# the files the product index is built from (labkit index build): their hashes identify the catalog
CATALOG_FILES = ("data/products.json",)
_lock = threading.Lock()


class RegistryError(RuntimeError):
    """The registry could not be read or written."""


def registry_path(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).home / "registry.sqlite"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _connect(settings: Settings | None = None) -> sqlite3.Connection:
    path = registry_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.executescript(SCHEMA)
    return conn


def put(
    kind: str,
    record_id: str,
    flow_version: str | None,
    body: dict[str, Any],
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Insert or replace one record; returns it as read back."""
    record = {
        "kind": kind,
        "id": record_id,
        "flow_version": flow_version,
        "created": body.get("created") or _now(),
        "body": body,
    }
    try:
        with _lock, _connect(settings) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)",
                (kind, record_id, flow_version, record["created"], json.dumps(body, default=str)),
            )
    except sqlite3.Error as exc:
        raise RegistryError(f"cannot write the registry at {registry_path(settings)}: {exc}") from exc
    return record


def find(
    kind: str | None = None,
    flow_version: str | None = None,
    record_id: str | None = None,
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Records matching the filters, newest first."""
    path = registry_path(settings)
    if not path.exists():
        return []
    where, args = [], []
    for column, value in (("kind", kind), ("flow_version", flow_version), ("id", record_id)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    query = "SELECT kind, id, flow_version, created, body FROM records"
    query += (" WHERE " + " AND ".join(where)) if where else ""
    with _connect(settings) as conn:
        rows = conn.execute(query + " ORDER BY created DESC, rowid DESC", args).fetchall()
    return [
        {"kind": k, "id": i, "flow_version": f, "created": c, "body": json.loads(b)} for k, i, f, c, b in rows
    ]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def catalog_hashes() -> dict[str, str]:
    """sha256 of each file the product index is built from."""
    return {name: sha256_file(REPO_ROOT / name) for name in CATALOG_FILES if (REPO_ROOT / name).exists()}


def _git_commit() -> dict[str, Any]:
    from labkit.evaluation.manifest import git_commit

    return git_commit()


# ---------------------------------------------------------------------------------------------
# what gets recorded
# ---------------------------------------------------------------------------------------------
def record_version(config: Any, settings: Settings | None = None,
                   git: dict[str, Any] | None = None) -> dict[str, Any]:
    """A FlowConfig as a version record: config, prompt identities, model identity, catalog hashes."""
    from labkit import models
    from labkit.prompts import load_prompt

    settings = settings or get_settings()
    prompts = {name: load_prompt(name).identity for name in (config.prompt, config.query_prompt)}
    body = {
        "config": config.model_dump(),
        "prompts": prompts,
        "model": models.model_identity(config.chat_model, settings),
        "index": config.index,
        "catalog": catalog_hashes(),
        "git": git if git is not None else _git_commit(),  # an evaluation passes the one it recorded
        "created": _now(),
    }
    version = config.flow_version()
    return put("version", version, version, body, settings)


def record_evaluation(run: Any, settings: Settings | None = None) -> dict[str, Any] | None:
    """An evaluation run (a `VariantRun`) with its manifest facts, metrics, intervals and gates."""
    manifest, summary = run.manifest, run.summary
    flow_version = summary.get("flow_version") or manifest.get("flow_version")
    key = f"{run.out.resolve()}|{manifest.get('created')}"
    record_id = "eval-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    gates = summary.get("gates") or []
    body = {
        "created": manifest.get("updated") or _now(),
        "variant": run.name,
        "folder": str(run.out),
        "status": summary.get("status"),
        "target": manifest.get("target"),
        "target_info": manifest.get("target_info"),
        **{
            k: manifest.get(k)
            for k in (
                "data",
                "prompts",
                "index",
                "model",
                "embedding",
                "evaluators",
                "git",
                "flow_config",
                "prices_version",
            )
        },
        "metrics": summary.get("metrics"),
        "intervals": summary.get("intervals"),
        "unmeasured": summary.get("unmeasured"),
        "rows": summary.get("rows"),
        "cost_usd": summary.get("cost_usd"),
        "latency_s": summary.get("latency_s"),
        "usage": summary.get("usage"),
        "by_category": summary.get("by_category"),
        "judge_note": summary.get("judge_note"),
        "gates": gates,
        "gates_passed": bool(gates) and all(g.get("passed") for g in gates),
    }
    if manifest.get("flow_config"):
        from labkit.flow import FlowConfig

        record_version(FlowConfig.model_validate(manifest["flow_config"]), settings, git=manifest.get("git"))
    return put("evaluation", record_id, flow_version, body, settings)


def adapter_facts(model: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """For a fine-tuned local model: its adapter's sha256 and, where the training left them, the base
    model, training-data sha256 and settings (the adapter's `<name>.json` or its folder's report.json)."""
    from labkit.services.manager import registered_models

    entry = registered_models(settings).get(model) or {}
    lora = entry.get("lora")
    if not lora or not Path(lora).is_file():
        return None
    adapter = Path(lora)
    facts: dict[str, Any] = {
        "model": model,
        "adapter": str(adapter),
        "adapter_sha256": sha256_file(adapter),
        "base_gguf": entry.get("gguf"),
    }
    for meta in (adapter.with_name(adapter.name.split(".")[0] + ".json"), adapter.parent / "report.json"):
        if meta.is_file():
            data = json.loads(meta.read_text(encoding="utf-8"))
            facts.update(
                {
                    k: data[k]
                    for k in ("base", "data_sha256", "settings", "data", "steps", "loss")
                    if k in data
                }
            )
            facts["metadata"] = str(meta)
            break
    return facts


def record_finetune(model: str, settings: Settings | None = None) -> dict[str, Any] | None:
    facts = adapter_facts(model, settings)
    if facts is None:
        return None
    return put(
        "finetune", f"{model}@{facts['adapter_sha256'][:12]}", None, {**facts, "created": _now()}, settings
    )


def record_deployment(config: Any, settings: Settings | None = None, where: str = "") -> dict[str, Any]:
    """`labkit serve` starting with a FlowConfig (and the version record it serves)."""
    import os

    from labkit import models

    settings = settings or get_settings()
    version = record_version(config, settings)["flow_version"]
    name = config.chat_model or models.chat_model_name(settings)
    if settings.backend_for("chat") == "local":
        record_finetune(name, settings)
    body = {"created": _now(), "where": where, "pid": os.getpid(), "model": name,
            "backend": settings.backend_for("chat"), "promoted": bool(production_record(settings))}
    return put("deployment", f"deploy-{body['created']}-{os.getpid()}", version, body, settings)


# ---------------------------------------------------------------------------------------------
# production
# ---------------------------------------------------------------------------------------------
COMMITTED = REPO_ROOT / "registry" / "promoted.json"


def production_record(settings: Settings | None = None) -> dict[str, Any] | None:
    """The newest promotion: this machine's registry first, then the repository's committed file."""
    found = find("promotion", settings=settings)
    if found:
        return found[0]
    if COMMITTED.exists():
        data = json.loads(COMMITTED.read_text(encoding="utf-8"))
        current = data.get("production")
        version = (data.get("versions") or {}).get(current or "")
        if version:
            return {
                "kind": "promotion",
                "id": current,
                "flow_version": current,
                "created": version.get("promoted"),
                "body": version,
            }
    return None


def production_config(settings: Settings | None = None) -> Any | None:
    """The promoted FlowConfig, or None when nothing was promoted."""
    from labkit.flow import FlowConfig

    record = production_record(settings)
    if record is None:
        return None
    return FlowConfig.model_validate(record["body"]["config"])
