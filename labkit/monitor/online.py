"""Online evaluation: a sample of real answers, personal data removed, scored without labels.

Introduced in notebooks/08_monitor.ipynb; `labkit monitor evaluate` runs it.

- The service keeps a share of its answered requests (`LABKIT_MONITOR_SAMPLE_RATE`, default 0.1)
  in `LABKIT_HOME/monitor/samples.jsonl`. Which requests is decided by a hash of the request id, so
  the choice is reproducible and needs no random state. A sample holds the question and the answer
  with e-mail addresses, phone numbers, customer ids and the names, streets and cities of customers
  removed (`redact`), the ids and scores of the retrieved documents, the citations and the flow
  version; each text is cut to `MAX_CHARS`, and the store keeps the newest `LABKIT_MONITOR_SAMPLE_MAX`
  (it may hold 20% more before the oldest are dropped).
- `evaluate()` scores the samples not yet scored with the evaluators that need no label: citations
  valid (no invented product ids), declined, answer length, retrieval scores, and the groundedness
  judge, which re-reads the retrieved documents by id from the search index. Scores go to
  `monitor/scores.jsonl` with the request id, one line per sample as it is scored, so an interrupted
  run resumes where it stopped. A judge reply that cannot be read is stored as unmeasured (None with
  the reason), never as a zero.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from labkit.config import Settings, get_settings
from labkit.monitor.source import Source, read_jsonl

MAX_CHARS = 2000  # question and answer are cut to this many characters each
_lock = threading.Lock()
_lines: dict[Path, int] = {}  # lines in each sample file, once counted

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_SEP = r"[\s.\-\u2010-\u2015()]{0,2}"  # spaces, dots, hyphens and dashes, brackets between digits
# ten-digit numbers in US shape, and seven-digit numbers in the 555 exchange the kit's fictional
# customers use (555-0112, 555 0112, 5550112, 555–0112). Other seven-digit runs are left alone: the
# catalog has "300-1200 lumens".
_PHONE = re.compile(rf"(?<!\d)(?:(?:\+?1{_SEP})?\(?\d{{3}}{_SEP}\d{{3}}|555){_SEP}\d{{4}}(?!\d)")
_CUSTOMER_ID = re.compile(r"(?<![A-Za-z0-9])C[-_ ]?\d{3}(?!\d)", re.I)


@functools.cache
def _customer_words() -> re.Pattern[str]:
    """First names, last names, streets and cities of the customers in data/customers.json."""
    from labkit.schema import load_customers

    words: set[str] = set()
    for customer in load_customers():
        record = customer.model_dump()
        words.update({record["first_name"], record["last_name"]})
        address = record.get("address") or {}
        words.update(v for k, v in address.items() if k in ("street", "city") and v)
    return _words_pattern(words)


def _words_pattern(words: Iterable[str]) -> re.Pattern[str]:
    """Any of `words`, case-insensitive, not inside a longer word (`_` and digits count as boundaries,
    so elena_marsh and Marsh2 are caught)."""
    ordered = sorted({w for w in words if w and len(w) >= 2}, key=len, reverse=True)
    return re.compile(r"(?<![A-Za-z])(?:" + "|".join(re.escape(w) for w in ordered) + r")(?![A-Za-z])", re.I)


def redact(text: str | None, extra_names: Iterable[str] = ()) -> str:
    """`text` without e-mail addresses, phone numbers, customer ids and customers' names and addresses.

    `extra_names` adds words to remove (the signed-in customer's name when the store is not the
    bundled one)."""
    if not text:
        return ""
    text = _EMAIL.sub("[email]", text)
    text = _PHONE.sub("[phone]", text)
    text = _CUSTOMER_ID.sub("[customer]", text)
    text = _customer_words().sub("[name]", text)
    extra = [w for w in extra_names if w and len(w) >= 2]
    if extra:
        text = _words_pattern(extra).sub("[name]", text)
    return text


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request is in the sample: a stable hash of its id below `rate` (0 none, 1 all)."""
    if rate <= 0 or not request_id:
        return False
    if rate >= 1:
        return True
    bucket = int(hashlib.sha256(request_id.encode()).hexdigest()[:12], 16) / float(16**12)
    return bucket < rate


def sample_record(
    result: Any, question: str, customer_hash: str, index: str | None, extra_names: Iterable[str] = ()
) -> dict[str, Any]:
    """The stored form of one answer: redacted texts, document ids and scores, no customer id."""
    names = list(extra_names)
    context = getattr(result, "context", {}) or {}
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "request_id": result.request_id,
        "flow_version": result.flow_version,
        "model": result.model,
        "customer": customer_hash,
        "index": index,
        "question": redact(question, names)[:MAX_CHARS],
        "answer": redact(result.answer, names)[:MAX_CHARS],
        "documents": [
            {"id": d.get("id"), "product_id": d.get("product_id"), "score": d.get("score")}
            for d in context.get("documents", [])
        ],
        "orders": len(context.get("orders", [])),
        "citations": list(result.citations),
        "dropped_citations": list(result.dropped_citations),
        "blocked": bool(result.blocked),
    }


def _append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        f.flush()


def _trim(path: Path, keep: int) -> None:
    """Keep the newest `keep` lines once the file holds 20% more (rewritten atomically). The line count
    is kept in memory after the first look, so the file is read only when it is rewritten."""
    if path not in _lines:
        with path.open("rb") as f:
            _lines[path] = sum(1 for _ in f)
    if _lines[path] <= keep * 1.2:
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)[-keep:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    _lines[path] = len(lines)


def maybe_sample(
    result: Any,
    question: str,
    customer_id: str,
    *,
    index: str | None = None,
    settings: Settings | None = None,
) -> bool:
    """Store the answer in the online sample when its request id falls in the sampled share.

    Called by the HTTP service after each answer; returns whether it was stored."""
    from labkit import requestlog

    settings = settings or get_settings()
    if not sampled(result.request_id, settings.labkit_monitor_sample_rate):
        return False
    names: list[str] = []
    try:
        from labkit import store

        customer = store.get_customer(customer_id, settings=settings)
        names = [customer.get("first_name", ""), customer.get("last_name", "")]
    except Exception:  # noqa: BLE001 - the bundled names are removed anyway
        pass
    record = sample_record(result, question, requestlog.customer_hash(customer_id, settings), index, names)
    path = Source.current(settings).samples
    with _lock:
        _append(path, record)
        if path in _lines:
            _lines[path] += 1
        _trim(path, settings.labkit_monitor_sample_max)
    return True


# ---------------------------------------------------------------------------------------------
# label-free evaluators
# ---------------------------------------------------------------------------------------------
def declined(answer: str, citations: list[str]) -> bool:
    """A decline phrase and no citations (the same phrase list as the offline `checks.declined`)."""
    from labkit.evaluation.deterministic import DECLINE

    return bool(DECLINE.search(answer or "")) and not citations


def question_kind(question: str) -> str:
    """A rough kind for the question mix: order, comparison or product (rules, no model)."""
    text = (question or "").lower()
    if re.search(r"\b(?:my|i|i've|i'd)\b", text) and re.search(
        r"\b(?:orders?|ordered|bought|purchased?|purchases|deliver\w*|return\w*|refund\w*)\b", text
    ):
        return "order"
    if re.search(
        r"\b(?:compare|comparison|versus|vs\.?|difference|better|lighter|heavier|warmer|cheaper|"
        r"which (?:one|is|tent|stove|jacket|bag|pack))\b",
        text,
    ):
        return "comparison"
    return "product"


@functools.cache
def _categories() -> dict[str, str]:
    from labkit.schema import load_products

    return {p.id: p.category for p in load_products()}


def deterministic_scores(sample: dict[str, Any]) -> dict[str, Any]:
    """Scores that need neither a label nor a model, from one sample (or an offline result row)."""
    answer = sample.get("answer") or ""
    cited = list(sample.get("citations") or [])
    dropped = list(sample.get("dropped_citations") or [])
    documents = sample.get("documents") or []
    scores = [d.get("score") for d in documents if isinstance(d.get("score"), int | float)]
    is_declined = declined(answer, cited)
    top_product = documents[0].get("product_id") if documents else None
    return {
        "declined": float(is_declined),
        "citations_valid": None if is_declined or sample.get("blocked") else float(not dropped),
        "length_words": len(answer.split()),
        "top_score": max(scores) if scores else None,
        "mean_score": sum(scores) / len(scores) if scores else None,
        "documents": len(documents),
        "top_category": _categories().get(top_product or "", None),
        "kind": question_kind(sample.get("question") or ""),
    }


def fetch_documents(index: str, ids: list[str], settings: Settings | None = None) -> list[str]:
    """The contents of documents by id from the search index (missing ones are skipped; any other
    failure, such as the search service being down, raises)."""
    from azure.core.exceptions import ResourceNotFoundError

    from labkit import search

    client = search.search_client(index, settings)
    contents = []
    for key in ids:
        try:
            document = client.get_document(key=key)
        except ResourceNotFoundError:  # removed since the answer: judged on what is left
            continue
        contents.append(
            f"[{document.get('product_id', '')}] {document.get('title', '')}: {document.get('content', '')}"
        )
    return contents


def groundedness(sample: dict[str, Any], judge: Any, settings: Settings | None = None) -> dict[str, Any]:
    """The groundedness judge on one sample: re-reads the documents by id, then scores 1-5.

    Returns `groundedness` (a number or None) and, when None, `groundedness_unmeasured` (why) and
    `groundedness_retry` (True when a later run should try again: the judge or the search failed)."""
    from labkit.evaluation.base import Score

    if sample.get("blocked") or not (sample.get("answer") or "").strip():
        return {"groundedness": None, "groundedness_unmeasured": "no answer to judge (blocked or empty)"}
    ids = [d["id"] for d in sample.get("documents") or [] if d.get("id")]
    index = sample.get("index")
    if not ids or not index:
        return {"groundedness": None, "groundedness_unmeasured": "no retrieved documents to judge against"}
    try:
        context = "\n\n".join(fetch_documents(index, ids, settings))[:6000]
    except Exception as exc:  # noqa: BLE001 - the search service is down: try again next run
        return {"groundedness": None, "groundedness_retry": True,
                "groundedness_unmeasured": f"documents could not be read: {type(exc).__name__}"}
    if not context:
        return {"groundedness": None, "groundedness_unmeasured": "documents no longer in the index"}
    outcome = judge.judge(sample.get("question") or "", sample["answer"], context)
    if isinstance(outcome, Score):
        return {"groundedness": outcome.value}
    why = (settings or get_settings()).scrub(outcome.why)  # a failed call's message may quote a key
    retry = why.startswith("judge call failed")  # a failed call is retried; an unreadable reply is not
    return {"groundedness": None, "groundedness_unmeasured": why, "groundedness_retry": retry}


def evaluate(
    source: Source | None = None,
    *,
    limit: int | None = None,
    judge: bool = True,
    since: str | None = None,
    progress: bool = True,
    judge_factory: Callable[[], Any] | None = None,
) -> list[dict[str, Any]]:
    """Score every sample that has no score yet (resumable); returns the scores written this run.

    `judge=False` skips the groundedness judge (stored as unmeasured with the reason). Samples whose
    judge was skipped or failed, or whose documents could not be read, are scored again next time
    (a new line; the last line of a request id is the one that counts)."""
    from labkit.monitor.source import window
    from labkit.progress import bar

    source = source or Source.current()
    latest = {s.get("request_id"): s for s in read_jsonl(source.scores)}  # the last line per request wins
    done = {rid for rid, s in latest.items() if not s.get("groundedness_retry")}
    win = window(since) if since else None
    todo = []
    for sample in read_jsonl(source.samples):
        if sample.get("request_id") in done:
            continue
        if win is not None:
            when = dt.datetime.fromisoformat(sample["time"])
            if not win.start <= when < win.end:
                continue
        todo.append(sample)
    todo = todo[:limit] if limit is not None else todo
    grader = None
    if judge and todo:
        from labkit.evaluation.judges import JudgeEvaluator

        grader = (judge_factory or (lambda: JudgeEvaluator("groundedness")))()
    written = []
    for sample in bar(todo, desc="online evaluation", unit="sample", enabled=progress):
        scores = {
            "request_id": sample["request_id"],
            "time": sample["time"],
            "flow_version": sample.get("flow_version"),
            **deterministic_scores(sample),
        }
        if grader is not None:
            scores.update(groundedness(sample, grader))
        else:
            scores.update(groundedness=None, groundedness_unmeasured="judge not run (--no-judge)",
                          groundedness_retry=True)
        scores["evaluated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with _lock:
            _append(source.scores, scores)
        written.append(scores)
    return written
