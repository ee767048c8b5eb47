"""manifest.json: what produced the numbers; the default output folder; when a folder may be resumed.

Part of the evaluation runner (labkit.evaluation.runner; notebooks/04_evaluate.ipynb).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labkit import models
from labkit.config import ConfigError, Settings, get_settings
from labkit.evaluation.budget import SPEND_LEDGER
from labkit.evaluation.judges import JudgeEvaluator
from labkit.evaluation.ratecontrol import RunOptions
from labkit.evaluation.registry import versions
from labkit.evaluation.rows import REPO, sha256_file


def git_commit() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def index_facts(index: str) -> dict[str, Any]:
    """Name, document count and a hash of (id, content) of every document, read through the SDK."""
    from labkit import search

    facts: dict[str, Any] = {"name": index}
    try:
        strategy = index.removeprefix("products-")
        if strategy in search.STRATEGIES:
            search.ensure_index(strategy)  # the flow would build it on its first question anyway
        client = search.search_client(index, retry_total=1)
        digest = hashlib.sha256()
        ids = []
        for doc in client.search(search_text="*", select=["id", "content"], top=100000):
            ids.append((doc["id"], doc.get("content") or ""))
        for doc_id, content in sorted(ids):
            digest.update(doc_id.encode() + b"\0" + content.encode() + b"\0")
        facts.update({"document_count": len(ids), "sha256": digest.hexdigest()})
        if strategy in search.STRATEGIES:
            facts["strategy"] = strategy
            if strategy == "window":
                facts["window_tokens"], facts["window_overlap"] = search.WINDOW_TOKENS, search.WINDOW_OVERLAP
        facts["embedding_dimensions"] = models.embedding_dimensions()
    except Exception as exc:  # noqa: BLE001 - a manifest records what it could not read
        facts["error"] = f"{type(exc).__name__}"
    return facts


def build_manifest(name: str, config: Any, data_path: Path | None, rows: list[dict[str, Any]],
                   limit: int | None, chosen: list[Any], settings: Settings, options: RunOptions,
                   target_name: str) -> dict[str, Any]:
    from labkit import __version__
    from labkit.costs import base_model, load_prices
    from labkit.prompts import load_prompt

    chat_model = (getattr(config, "chat_model", None) if config is not None else None) or \
        models.chat_model_name(settings)
    judge_model = settings.labkit_judge_model or chat_model
    prompts: dict[str, Any] = {}
    if config is not None:
        for pname in (config.prompt, config.query_prompt):
            prompts[pname] = load_prompt(pname).identity
    for ev in chosen:
        if isinstance(ev, JudgeEvaluator):
            prompts[ev.prompt.name] = ev.prompt.identity
    prices = load_prices()
    manifest = {
        "labkit_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "variant": name,
        "target": target_name,
        "flow_config": config.model_dump() if config is not None else None,
        "flow_version": config.flow_version() if config is not None else None,
        "data": {"path": display_path(data_path), "sha256": sha256_file(data_path) if data_path else None,
                 "rows": len(rows), "limit": limit, "sample": options.sample, "ids_sha256": hashlib.sha256(
                     "\n".join(r["id"] for r in rows).encode()).hexdigest()},
        "prompts": prompts,
        "index": (index_facts(config.index) if config is not None and config.retrieval_mode != "none"
                  else None),
        "model": {"chat": chat_model, "base_model": base_model(chat_model, prices),
                  "backend": settings.backend_for("chat"), "judge": judge_model},
        "embedding": {"model": models.embedding_model_name(settings),
                      "backend": settings.backend_for("embed")},
        "search_backend": settings.backend_for("search"),
        "evaluators": versions(chosen),
        "prices_version": prices.get("version"),
        "git": git_commit(),
        "options": {"concurrency": options.concurrency, "row_timeout_s": options.row_timeout_s,
                    "max_attempts": options.max_attempts, "budget_usd": options.budget_usd},
    }
    return manifest


def display_path(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "variant"


def default_out(data_path: Path | None, variants: Sequence[tuple[str, Any, Any]],
                 evaluator_names: Sequence[str], identity: Mapping[str, Any]) -> Path:
    stem = data_path.stem if data_path else "rows"
    key = "+".join(f"{name}-{config.flow_version() if config is not None else 'target'}"
                   for name, config, _ in variants) + "|" + ",".join(sorted(evaluator_names))
    if identity.get("backend") != "local" or identity.get("judge") or identity.get("target"):
        # the local default keeps its earlier folder names; any other model gets a folder of its own
        key += "|" + json.dumps(dict(identity), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    label = variants[0][0] if len(variants) == 1 else "compare"
    return get_settings().home / "evals" / f"{stem}-{safe_name(label)}-{digest}"


def check_resume(folder: Path, manifest: Mapping[str, Any], fresh: bool) -> None:
    results = folder / "results.jsonl"
    if fresh:
        for name in ("results.jsonl", "summary.json", "comparison.json", SPEND_LEDGER):
            (folder / name).unlink(missing_ok=True)
        return
    old_path = folder / "manifest.json"
    if not results.exists() or not old_path.exists():
        return
    old = json.loads(old_path.read_text(encoding="utf-8"))
    for key in ("flow_version", "target", "target_info"):
        if old.get(key) != manifest.get(key):
            raise ConfigError(f"{folder} holds results of another run ({key} {old.get(key)!r}, now "
                              f"{manifest.get(key)!r}); use another output folder or --fresh")
    old_model, new_model = old.get("model") or {}, manifest.get("model") or {}
    for part in ("chat", "judge", "backend"):
        if old_model.get(part) != new_model.get(part):
            raise ConfigError(f"{folder} holds results from another {part} model "
                              f"({old_model.get(part)!r}, now {new_model.get(part)!r}); use another output "
                              "folder or --fresh")
    old_sha, new_sha = (old.get("data") or {}).get("sha256"), (manifest.get("data") or {}).get("sha256")
    if old_sha and new_sha and old_sha != new_sha:
        raise ConfigError(f"{folder} holds results for another version of the data file (its sha256 "
                          "changed); use another output folder or --fresh")
    if old.get("evaluators") != manifest.get("evaluators"):
        before = ", ".join(old.get("evaluators") or [])
        raise ConfigError(f"{folder} was scored with other evaluators ({before}); use another output folder "
                          "or --fresh")
