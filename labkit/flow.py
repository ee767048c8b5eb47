"""The Contoso Chat flow: customer -> queries -> retrieval -> prompt -> answer, as one ChatResult.

Introduced in notebooks/03_build_rag.ipynb.

1. look up the customer with all orders (`labkit.store`);
2. generate search queries from the question and chat history (`prompts/contoso_queries.prompty`,
   JSON mode; a deterministic fallback when the model returns bad JSON), and carry the product
   in focus from earlier turns into follow-ups such as "how much is it?";
3. hybrid retrieval through azure-search-documents, with filters when the question names a
   price, category, weight or temperature;
4. assemble the prompt (`prompts/contoso_chat.prompty`): persona, rules, documents with ids,
   all orders, customer context, chat history;
5. chat completion, streamed or not;
6. a `ChatResult`: product ids in the answer (in any bracket, or bare) are checked against the
   retrieved documents; ids of products that were not retrieved are moved to `dropped_citations`.
Every step is an OpenTelemetry span (labkit.tracing); `request_id` is the trace id.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Generator, Iterator
from typing import Any, Literal

import openai
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from labkit import models, search, store
from labkit.config import get_settings
from labkit.prompts import load_prompt
from labkit.schema import CATEGORIES, PRODUCT_ID_IN_TEXT_RE, load_products, short_name
from labkit.tracing import PURPOSE_ATTRIBUTE, capture_content, current_purpose, get_tracer

CITATION_RE = PRODUCT_ID_IN_TEXT_RE  # [P-004], (P-004) or a bare P-004: all count as citations
CATALOG_UNAVAILABLE = ("Sorry, I can't look up the Contoso Outdoors catalog right now, so I can't answer "
                       "product questions reliably. Please try again in a few minutes.")


class FlowInputError(ValueError):
    """The question or history cannot be answered as given (empty, too long, malformed)."""

    def _render_traceback_(self) -> list[str]:
        return [f"FlowInputError: {self}"]


class FlowConfig(BaseModel):
    """One variant of the flow. `flow_version()` hashes it with the prompt files' hashes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "baseline"
    prompt: str = "contoso_chat"
    query_prompt: str = "contoso_queries"
    chat_model: str | None = None  # None: the active backend's default model or deployment
    index: str = "products-section"
    top_k: int = Field(default=3, ge=1, le=50)  # documents per query
    max_documents: int = Field(default=5, ge=1, le=50)
    max_context_words: int = Field(default=1200, ge=50)  # documents are trimmed to fit the model's window
    # "head": each document's first words; "focused": the lines and sentences that share most words
    # with the question, in document order (small models: short passages that still hold the fact)
    passages: Literal["head", "focused"] = "head"
    write_queries: bool = True  # False: search with the question alone (no query-writing model call)
    retrieval_mode: Literal["keyword", "vector", "hybrid", "none"] = "hybrid"
    use_filters: bool = True
    guards: bool = True  # input, document and output guards (labkit.safety); False to compare without
    max_tokens: int = Field(default=200, ge=1, le=4096)
    temperature: float = 0.0
    seed: int | None = 42

    def flow_version(self) -> str:
        hashes = [load_prompt(self.prompt).sha256, load_prompt(self.query_prompt).sha256]
        blob = json.dumps({"config": self.model_dump(), "prompts": hashes,
                           "model": models.model_identity(self.chat_model)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


class Document(BaseModel):
    id: str
    product_id: str
    title: str = ""
    score: float
    content: str
    catalog: str = ""  # the chunk's catalog fields as a line ("Price $89.95. Weight 980 g.")


def catalog_line(fields: dict[str, Any]) -> str:
    """A search hit's catalog fields (price, weight, temperature rating) as one line of text.

    Introduced in notebooks/05_fine_tune.ipynb: the index stores these numbers beside every chunk for
    filters and sorting; the short prompt for small models shows them with each passage, so a price
    or weight is in the context whichever section of the product was retrieved.
    """
    parts = []
    if isinstance(fields.get("price"), int | float):
        parts.append(f"Price ${fields['price']:.2f}.")
    if isinstance(fields.get("weight_g"), int | float) and fields["weight_g"]:
        parts.append(f"Weight {int(fields['weight_g'])} g.")
    if isinstance(fields.get("temp_rating_c"), int | float):
        parts.append(f"Temperature rating {fields['temp_rating_c']:g} °C.")
    return " ".join(parts)


def _document(hit: dict[str, Any]) -> Document:
    return Document(id=hit["id"], product_id=hit["product_id"], title=hit.get("title") or "",
                    score=float(hit["score"]), content=hit.get("content") or "", catalog=catalog_line(hit))


class ChatResult(BaseModel):
    """Everything one answer produced; evaluation, monitoring and the service read this object."""

    answer: str
    citations: list[str] = Field(default_factory=list)
    dropped_citations: list[str] = Field(default_factory=list)
    queries: list[str] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=lambda: {"documents": [], "orders": []})
    usage: dict[str, Any] = Field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0,
                                                           "estimated": False})
    timings: dict[str, float] = Field(default_factory=dict)
    safety: list[dict[str, Any]] = Field(default_factory=list)
    blocked: bool = False
    catalog_unavailable: bool = False
    query_fallback: bool = False
    filter: str | None = None
    request_id: str = ""
    model: str = ""
    prompt: dict[str, Any] = Field(default_factory=dict)
    flow_version: str = ""


# ---------------------------------------------------------------------------------------------
# step 2: queries
# ---------------------------------------------------------------------------------------------
def _product_names() -> dict[str, str]:
    return {p.id: p.name for p in load_products()}


_VARIANTS = {"ul", "pro", "plus", "lite"}


def _family_forms(names: dict[str, str]) -> list[tuple[str, str]]:
    """A bare family word ("Waypoint", "Rover") names the family's plain model where the family has
    exactly one product without a variant word (Pro, Plus, Lite, UL) and at least one with."""
    families: dict[str, list[tuple[str, bool]]] = {}
    for pid, name in names.items():
        words = name.lower().split()
        variant = len(words) > 1 and words[1] in _VARIANTS or len(words) > 2 and words[2] in _VARIANTS
        families.setdefault(words[0], []).append((pid, variant))
    out = []
    for word, members in families.items():
        plain = [pid for pid, variant in members if not variant]
        if len(plain) == 1 and len(members) > 1:
            out.append((plain[0], word))
    return out


def products_mentioned(text: str) -> list[str]:
    """Product ids named in a text, by id ([P-004] or P-004) or by a distinctive name, in order."""
    found: dict[str, tuple[int, int]] = {}  # pid -> (position, -length of the matched name)
    lower = text.lower()
    names = _product_names()
    claimed: set[int] = set()
    # full names first, then shorter forms, so "Skyfall 2 UL" is not read as "Skyfall 2"
    forms = [(pid, name.lower()) for pid, name in names.items()]
    forms += [(pid, " ".join(name.lower().split()[:3])) for pid, name in names.items()]
    forms += [(pid, " ".join(name.lower().split()[:2])) for pid, name in names.items()]
    forms += [(pid, short_name(name).lower()) for pid, name in names.items()]  # "Spark stove"
    forms += _family_forms(names)  # "the Waypoint or the Waypoint Plus"
    for pid in names:
        for m in re.finditer(re.escape(pid), text):
            found.setdefault(pid, (m.start(), -len(pid)))
            claimed.add(m.start())
    for pid, form in sorted(forms, key=lambda f: -len(f[1])):
        for m in re.finditer(re.escape(form) + r"(?![\w-]| (?:ul|pro|plus|lite)\b)", lower):
            if m.start() in claimed:
                continue
            claimed.add(m.start())
            found.setdefault(pid, (m.start(), -len(form)))
    return [pid for pid, _ in sorted(found.items(), key=lambda kv: kv[1])]


def focus_product(history: list[dict[str, str]]) -> str | None:
    """The product the conversation was last about (latest turn that names exactly one first)."""
    for turn in reversed(history):
        mentioned = products_mentioned(turn.get("content", ""))
        if mentioned and (turn.get("role") == "user" or len(mentioned) == 1):
            return mentioned[0]
    return None


def parse_queries(text: str, limit: int = 3) -> list[str] | None:
    """The `queries` list from the model's JSON, or None when the output is not usable."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        match = re.search(r"\{.*\}", text or "", re.S)
        if not match:
            return None
        try:
            data = json.loads(match.group(0))
        except ValueError:
            return None
    queries = data.get("queries") if isinstance(data, dict) else data if isinstance(data, list) else None
    if not isinstance(queries, list):
        return None
    clean = [q.strip() for q in queries if isinstance(q, str) and q.strip()]
    return clean[:limit] or None


def last_user_turn(history: list[dict[str, str]]) -> str | None:
    return next((t["content"] for t in reversed(history) if t.get("role") == "user"), None)


def with_focus(queries: list[str], question: str, history: list[dict[str, str]]) -> list[str]:
    """Give a follow-up that names no product the subject of the conversation.

    The product in focus (named in an earlier turn) is added to the queries; when no turn names a
    product, the previous user question is searched together with the follow-up.
    """
    if products_mentioned(question) or not history:
        return queries
    pid = focus_product(history)
    if pid is not None:
        name = _product_names()[pid]
        if any(name.lower() in q.lower() for q in queries):
            return queries
        return [f"{name} {question}", *queries]
    previous = last_user_turn(history)
    return [f"{previous} {question}", *queries] if previous else queries


# ---------------------------------------------------------------------------------------------
# step 3: filters
# ---------------------------------------------------------------------------------------------
_CATEGORY_WORDS = {
    "Tents": r"\btents?\b", "Backpacks": r"\b(backpacks?|daypacks?|rucksacks?)\b",
    "Sleeping Bags": r"\bsleeping bags?\b", "Footwear": r"\b(boots?|shoes?|sandals?|footwear)\b",
    "Clothing": r"\b(jackets?|base layers?|clothing)\b", "Camp Stoves": r"\bstoves?\b",
    "Camp Furniture": r"\b(chairs?|tables?|furniture)\b", "Navigation": r"\b(compass(es)?|gps|navigation)\b",
}
_AMOUNT = r"(\d{1,3}(?:,\d{3})+|\d{1,6})(?:\.\d{1,2})?"  # bounded: no overflow, "1,000" is 1000
_PRICE_MAX = re.compile(r"\b(?:under|below|less than|cheaper than|at most|max(?:imum)?)\s*(?:\$\s*"
                        + _AMOUNT + r"|" + _AMOUNT + r"\s*(?:dollars|usd)\b)", re.I)
_PRICE_MIN = re.compile(r"\b(?:over|above|more than|at least)\s*(?:\$\s*" + _AMOUNT + r"|" + _AMOUNT
                        + r"\s*(?:dollars|usd)\b)", re.I)
_WEIGHT_MAX = re.compile(r"\b(?:under|below|less than|lighter than)\s*(\d{1,5}(?:\.\d{1,2})?)\s*"
                         r"(kg|kilos?|kilograms?|g|grams?)\b", re.I)
_TEMP = re.compile(r"(-?\s?\d{1,2}(?:\.\d)?)\s*°?\s*(c|celsius)\b", re.I)


def _amount(match: re.Match[str]) -> float:
    text = next(g for g in match.groups() if g)
    return float(text.replace(",", ""))


def query_filter(question: str) -> str | None:
    """An OData filter for price, category, weight or temperature named in the question, or None."""
    parts = []
    categories = [c for c, pattern in _CATEGORY_WORDS.items() if re.search(pattern, question, re.I)]
    if len(categories) == 1 and categories[0] in CATEGORIES:
        parts.append(f"category eq '{categories[0]}'")
    if m := _PRICE_MAX.search(question):
        parts.append(f"price le {_amount(m)}")
    if m := _PRICE_MIN.search(question):
        parts.append(f"price ge {_amount(m)}")
    if m := _WEIGHT_MAX.search(question):
        grams = float(m.group(1)) * (1000 if m.group(2).lower().startswith("k") else 1)
        parts.append(f"weight_g le {int(grams)}")
    if (m := _TEMP.search(question)) and re.search(r"\b(bag|sleep|warm|cold|night|rated)", question, re.I):
        parts.append(f"temp_rating_c le {float(m.group(1).replace(' ', ''))}")
    return " and ".join(parts) or None


# ---------------------------------------------------------------------------------------------
# the flow
# ---------------------------------------------------------------------------------------------
def fit_documents(docs: list[dict[str, Any]], budget_words: int) -> list[dict[str, Any]]:
    """Trim document contents so that together they stay within `budget_words` words."""
    if not docs:
        return docs
    share = max(budget_words // len(docs), 30)
    out = []
    for d in docs:
        words = d["content"].split()
        content = d["content"] if len(words) <= share else " ".join(words[:share]) + " ..."
        out.append({**d, "content": content})
    return out


_WORD_RE = re.compile(r"[a-z0-9]+(?:[-./][a-z0-9]+)*")
_STOP = frozenset("a an and are as at be but by can do does for from has have how i if in is it its me "
                  "my of on or so that the their them there these this to was what when where which who "
                  "will with would you your much many any".split())


def _terms(text: str) -> set[str]:
    """Lower-case words without stop words, a plural 's' dropped (a crude, language-free stem)."""
    out = set()
    for w in _WORD_RE.findall(text.lower()):
        if w not in _STOP:
            out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def _pieces(content: str) -> list[str]:
    """A document as lines, with long prose lines split into sentences."""
    pieces: list[str] = []
    for line in content.splitlines():
        line = line.strip()
        if not line:
            continue
        if len(line.split()) > 25 and not line.startswith("|"):
            pieces.extend(p.strip() for p in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9])", line) if p.strip())
        else:
            pieces.append(line)
    return pieces


def focus_documents(docs: list[dict[str, Any]], question: str, budget_words: int) -> list[dict[str, Any]]:
    """Like `fit_documents`, but each document keeps its first line (what it is) and then the lines
    and sentences sharing most words with the question, in document order, within its share."""
    if not docs:
        return docs
    share = max(budget_words // len(docs), 30)
    asked = _terms(question)
    out = []
    for d in docs:
        pieces = _pieces(d["content"])
        if sum(len(p.split()) for p in pieces) <= share or not pieces:
            out.append(d)
            continue
        ranked = sorted(range(1, len(pieces)), key=lambda i: (-len(asked & _terms(pieces[i])), i))
        keep, used = {0}, len(pieces[0].split())
        for i in ranked:
            n = len(pieces[i].split())
            if used + n > share:
                continue
            keep.add(i)
            used += n
        out.append({**d, "content": "\n".join(pieces[i] for i in sorted(keep))})
    return out


def split_citations(text: str, retrieved: set[str]) -> tuple[list[str], list[str]]:
    """Cited product ids that were retrieved (kept) and those that were not (dropped), in order."""
    cited = list(dict.fromkeys(CITATION_RE.findall(text)))
    return [c for c in cited if c in retrieved], [c for c in cited if c not in retrieved]


def _check_input(question: str, history: list[dict[str, str]] | None) -> list[dict[str, str]]:
    if not isinstance(question, str) or not question.strip():
        raise FlowInputError("the question is empty")
    limit = get_settings().labkit_max_question_chars
    if len(question) > limit:
        raise FlowInputError(f"the question has {len(question)} characters; the maximum is {limit}")
    if history is not None and not isinstance(history, list):
        raise FlowInputError("history must be a list of {role, content} turns")
    clean = []
    for turn in history or []:
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant") \
                or not isinstance(turn.get("content"), str):
            raise FlowInputError("each history turn needs a role (user or assistant) and a content string")
        clean.append({"role": turn["role"], "content": turn["content"][:limit * 2]})
    clean = clean[-10:]
    while sum(len(t["content"]) for t in clean) > limit * 3 and len(clean) > 1:
        clean = clean[1:]  # keep the latest turns within a budget that fits the model's window
    return clean


class _Run:
    """State of one request while it moves through the steps (shared by answer() and stream())."""

    def __init__(self, question: str, customer_id: str, history: list[dict[str, str]] | None,
                 config: FlowConfig | None):
        self.history = _check_input(question, history)
        self.question = question.strip()
        self.customer_id = customer_id
        self.config = config or FlowConfig()
        self.prompt = load_prompt(self.config.prompt)
        self.query_prompt = load_prompt(self.config.query_prompt)
        self.model = self.config.chat_model or models.chat_model_name()
        self.result = ChatResult(answer="", model=self.model, prompt=self.prompt.identity,
                                 flow_version=self.config.flow_version())
        self.tracer = get_tracer()
        self.client = models.chat_client()
        self.usage = {"input_tokens": 0, "output_tokens": 0, "estimated": False}

    def _timed(self, step: str, start: float) -> None:
        self.result.timings[step] = round(time.perf_counter() - start, 4)

    def _record_usage(self, span: Any, usage: dict[str, Any]) -> None:
        for key in ("input_tokens", "output_tokens"):
            if usage.get(key) is not None:
                self.usage[key] += usage[key]
                span.set_attribute(f"gen_ai.usage.{key}", usage[key])
        self.usage["estimated"] = self.usage["estimated"] or bool(usage.get("estimated"))
        if usage.get("estimated"):
            span.set_attribute("labkit.usage.estimated", True)  # counted locally, not reported by the model

    def _chat_attributes(self, span: Any, params: dict[str, Any]) -> None:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute(PURPOSE_ATTRIBUTE, current_purpose())
        span.set_attribute("gen_ai.provider.name", get_settings().backend_for("chat"))
        span.set_attribute("gen_ai.request.model", self.model)
        for key in ("temperature", "max_tokens"):
            if params.get(key) is not None:
                span.set_attribute(f"gen_ai.request.{key}", params[key])

    def _record(self, guard: str, decisions: list[Any], start: float) -> None:
        """Keep a guard's decisions on the result and its span (categories and scores, never text)."""
        self.result.safety += [d.model_dump() for d in decisions]
        if any(d.action == "block" for d in decisions):
            self.result.blocked = True
        self._timed(f"guard_{guard}", start)

    def guard_input(self) -> bool:
        """Step 0 (guards on): the input guard. False when it blocked (the answer is the refusal)."""
        if not self.config.guards:
            return True
        from labkit import safety

        t = time.perf_counter()
        with self.tracer.start_as_current_span("guard input") as span:
            decisions = _guarded(lambda: safety.check_input(self.question, self.history, self.customer_id),
                                 "input")
            _guard_attributes(span, decisions)
        self._record("input", decisions, t)
        if self.result.blocked:
            self.result.answer = safety.refusal(decisions)
            return False
        return True

    def guard_documents(self, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The retrieved documents without those holding planted instructions (guards on)."""
        if not self.config.guards or not found:
            return found
        from labkit import safety

        t = time.perf_counter()
        with self.tracer.start_as_current_span("guard documents") as span:
            decisions = _guarded(lambda: safety.check_documents(found), "documents")
            _guard_attributes(span, decisions)
        self._record("documents", decisions, t)
        dropped = {d.detail for d in decisions if d.action != "allow"}
        return [d for d in found if d["id"] not in dropped]

    def guard_output(self, text: str, final: bool) -> bool:
        """The output guard on the answer so far; False when it blocked."""
        if not self.config.guards:
            return True
        from labkit import safety

        t = time.perf_counter()
        cited = dropped = None
        if final:
            retrieved = {d["product_id"] for d in self.result.context["documents"]}
            cited, dropped = split_citations(text, retrieved)
        with self.tracer.start_as_current_span("guard output") as span:
            decisions = _guarded(lambda: safety.check_output(text, self.result.context,
                                                             customer_id=self.customer_id, citations=cited,
                                                             dropped=dropped), "output")
            _guard_attributes(span, decisions)
        if final or any(d.action == "block" for d in decisions):
            self._record("output", decisions, t)
        return not self.result.blocked

    def platform_block(self, guard: str) -> None:
        """Azure OpenAI's own content filter refused the prompt (HTTP 400 `content_filter`) or cut
        the completion (`finish_reason: content_filter`): a block, not an error."""
        from labkit.safety import Decision

        decision = Decision(guard=guard, category="content_filter", score=1.0, threshold=1.0, action="block",
                            backend="azure-openai", detail="platform content filter")
        self.result.safety.append(decision.model_dump())
        self.result.blocked = True

    def prepare(self) -> bool:
        """Steps 1-4. Returns False when the catalog is unavailable (the result says so)."""
        t = time.perf_counter()
        with self.tracer.start_as_current_span("customer_lookup") as span:
            customer = store.get_customer(self.customer_id)
            span.set_attribute("labkit.customer.orders", len(customer["orders"]))
        self.customer = customer
        self.result.context["orders"] = customer["orders"]
        self._timed("customer", t)

        t = time.perf_counter()
        self.result.queries = self.generate_queries()
        self._timed("queries", t)

        t = time.perf_counter()
        try:
            documents = self.retrieve(self.result.queries)
        except Exception as exc:  # the search service is down or unreachable: say so, no traceback
            from azure.core.exceptions import AzureError, HttpResponseError

            from labkit.services.manager import ServiceError

            if not isinstance(exc, AzureError | ServiceError | OSError):
                raise
            if isinstance(exc, HttpResponseError) and exc.status_code is not None and exc.status_code < 500:
                raise  # a 4xx is a configuration problem (wrong key, index/embedding mismatch), not an outage
            self.result.catalog_unavailable = True
            self.result.answer = CATALOG_UNAVAILABLE
            self.result.usage = dict(self.usage)
            self._timed("retrieval", t)
            return False
        found = self.guard_documents([d.model_dump() for d in documents])
        self.result.context["documents"] = found
        self._timed("retrieval", t)

        t = time.perf_counter()
        docs = (focus_documents(found, self.question, self.config.max_context_words)
                if self.config.passages == "focused" else fit_documents(found, self.config.max_context_words))
        self.messages = self.prompt.render(question=self.question, customer=customer, documents=docs,
                                           canary=get_settings().labkit_prompt_canary,
                                           history=self.history)
        self._timed("prompt", t)
        return True

    def generate_queries(self) -> list[str]:
        if not self.config.write_queries:
            return with_focus([self.question], self.question, self.history)[:4]
        params = self.query_prompt.call_arguments(self.config.chat_model)
        with self.tracer.start_as_current_span("generate_queries"), \
                self.tracer.start_as_current_span(f"chat {self.model}") as span:
            self._chat_attributes(span, params)
            queries = None
            try:
                reply = self.query_prompt.run(self.client, model=self.config.chat_model,
                                              question=self.question, history=self.history)
                self._record_usage(span, reply.usage)
                span.set_attribute("gen_ai.response.finish_reasons", [reply.finish_reason or ""])
                queries = parse_queries(reply.text)
            except Exception as exc:  # an unusable reply (bad JSON, refusal) is survived
                span.set_attribute("error.type", type(exc).__name__)  # no message: it may quote a key
                if models.is_transient(exc):
                    raise  # a 429 or an outage is not a bad reply: the caller decides to wait and retry
            if queries is None:
                self.result.query_fallback = True
                queries = []
            # the question itself always searches too: a weak query writer cannot lose it
            queries = list(dict.fromkeys([self.question, *queries]))[:3]
            queries = with_focus(queries, self.question, self.history)[:4]
            if capture_content():
                span.set_attribute("labkit.queries", queries)
        return queries

    def retrieve(self, queries: list[str]) -> list[Document]:
        cfg = self.config
        if cfg.retrieval_mode == "none":
            return []
        subject = self.question
        if self.history and not products_mentioned(self.question) and focus_product(self.history) is None:
            subject = f"{last_user_turn(self.history) or ''} {self.question}"  # a follow-up keeps its filters
        flt = query_filter(subject) if cfg.use_filters else None
        self.result.filter = flt
        client = search.search_client(cfg.index, retry_total=1)
        self._ensure_index(client)
        best: dict[str, Document] = {}
        vectors = None
        if cfg.retrieval_mode != "keyword":
            with self.tracer.start_as_current_span(f"embeddings {models.embedding_model_name()}") as span:
                span.set_attribute("gen_ai.operation.name", "embeddings")
                span.set_attribute("gen_ai.request.model", models.embedding_model_name())
                span.set_attribute(PURPOSE_ATTRIBUTE, current_purpose())
                vectors = models.embed_cached(queries)
        for i, query in enumerate(queries):
            with self.tracer.start_as_current_span(f"retrieval {cfg.index}") as span:
                span.set_attribute("gen_ai.operation.name", "retrieval")
                span.set_attribute("gen_ai.data_source.id", cfg.index)
                if capture_content():
                    span.set_attribute("gen_ai.retrieval.query.text", query)
                if flt:
                    span.set_attribute("labkit.retrieval.filter", flt)
                vector = vectors[i].tolist() if vectors is not None else None
                hits = search.search(query, cfg.index, mode=cfg.retrieval_mode, top=cfg.top_k, filter=flt,
                                     vector=vector, client=client)
                if not hits and flt:  # a filter that excludes everything: fall back to no filter
                    hits = search.search(query, cfg.index, mode=cfg.retrieval_mode, top=cfg.top_k,
                                         vector=vector, client=client)
                span.set_attribute("labkit.retrieval.documents", len(hits))
            for h in hits:
                doc = _document(h)
                if doc.id not in best or best[doc.id].score < doc.score:
                    best[doc.id] = doc
        ranked = sorted(best.values(), key=lambda d: -d.score)
        named = products_mentioned(self.question)
        if cfg.passages == "focused" and len(named) > 1:
            ranked += self._named_missing(named, ranked, client, vectors[0] if vectors is not None else None)
            # few passages: a question about several products gets the best passage of each first
            first = [next(d for d in ranked if d.product_id == pid) for pid in named
                     if any(d.product_id == pid for d in ranked)]
            ranked = first + [d for d in ranked if d not in first]
        return ranked[: cfg.max_documents]

    def _named_missing(self, named: list[str], ranked: list[Document], client: Any,
                       vector: Any) -> list[Document]:
        """The best chunk of each product the question names that no query retrieved (few passages:
        "the Aster -7 or the Aster -12" must see both), by a search filtered to that product."""
        cfg = self.config
        out = []
        for pid in named:
            if any(d.product_id == pid for d in ranked):
                continue
            with self.tracer.start_as_current_span(f"retrieval {cfg.index}") as span:
                span.set_attribute("gen_ai.operation.name", "retrieval")
                span.set_attribute("gen_ai.data_source.id", cfg.index)
                span.set_attribute("labkit.retrieval.filter", f"product_id eq '{pid}'")
                hits = search.search(self.question, cfg.index, mode=cfg.retrieval_mode, top=1,
                                     filter=f"product_id eq '{pid}'",
                                     vector=vector.tolist() if vector is not None else None, client=client)
                span.set_attribute("labkit.retrieval.documents", len(hits))
            out += [_document(h) for h in hits]
        return out

    def _ensure_index(self, client: Any) -> None:
        """Build a missing `products-<strategy>` index once, so a fresh machine can answer."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            client.get_document_count()
        except ResourceNotFoundError:
            strategy = self.config.index.removeprefix("products-")
            if strategy not in search.STRATEGIES:
                raise
            search.ensure_index(strategy)

    def chat_params(self) -> dict[str, Any]:
        cfg = self.config
        return self.prompt.call_arguments(cfg.chat_model, {"max_tokens": cfg.max_tokens,
                                                           "temperature": cfg.temperature, "seed": cfg.seed})

    def finish(self, text: str) -> ChatResult:
        retrieved = {d["product_id"] for d in self.result.context["documents"]}
        self.result.answer = text.strip()
        self.result.citations, self.result.dropped_citations = split_citations(text, retrieved)
        self.result.usage = dict(self.usage)
        return self.result


def _parent_context() -> otel_context.Context:
    """Inside a caller's span (the HTTP service's request span) the flow's root span is its child;
    otherwise (a notebook, the CLI, an evaluation row) every answer is a trace of its own."""
    if trace.get_current_span().get_span_context().is_valid:
        return otel_context.get_current()
    return otel_context.Context()


def _execute(run: _Run, streaming: bool) -> Iterator[str | ChatResult]:
    """The one path behind `answer()` and `stream()`: the same steps, spans, attributes and result
    fields; only the model call differs (one reply, or text pieces as they arrive)."""
    start = time.perf_counter()
    with run.tracer.start_as_current_span("contoso_chat", context=_parent_context()) as root:
        run.result.request_id = f"{root.get_span_context().trace_id:032x}"
        root.set_attribute("labkit.flow_version", run.result.flow_version)
        root.set_attribute("labkit.flow.name", run.config.name)
        root.set_attribute("labkit.streamed", streaming)
        root.set_attribute(PURPOSE_ATTRIBUTE, current_purpose())
        if not run.guard_input() or not run.prepare():
            yield run.result.answer
        else:
            t = time.perf_counter()
            params = run.chat_params()
            with run.tracer.start_as_current_span(f"chat {run.model}") as span:
                run._chat_attributes(span, params)
                try:
                    if streaming:
                        pieces: list[str] = []
                        counted = yield from _guarded_stream(run, _streamed_reply(run, params, pieces))
                        text = "".join(pieces)
                        run._record_usage(span, counted)
                    else:
                        reply = models.chat(run.messages, client=run.client, **params)
                        text = reply.text
                        run._record_usage(span, reply.usage)
                        span.set_attribute("gen_ai.response.model", reply.model)
                        span.set_attribute("gen_ai.response.finish_reasons", [reply.finish_reason or ""])
                        if reply.finish_reason == "content_filter":
                            run.platform_block("output")
                except openai.BadRequestError as exc:
                    if not _content_filtered(exc):
                        raise
                    span.set_attribute("error.type", "content_filter")
                    run.platform_block("input")
                    text = ""
                if capture_content() and not run.result.blocked:
                    span.set_attribute("labkit.answer", text)
            run._timed("answer", t)
            if not run.result.blocked:
                run.guard_output(text, final=True)
            if run.result.blocked:
                from labkit import safety

                text = safety.refusal([safety.Decision(**d) for d in run.result.safety])
                if streaming:  # what was sent had passed the guard; the reader now sees why it stopped
                    yield "\n\n" + text
            if not streaming:
                yield text
            run.finish(text)
        root.set_attribute("labkit.blocked", run.result.blocked)
        root.set_attribute("labkit.catalog_unavailable", run.result.catalog_unavailable)
    run.result.timings["total"] = round(time.perf_counter() - start, 4)
    yield run.result


def _guarded(check: Any, guard: str) -> list[Any]:
    """Run a guard; if it cannot decide, fail closed with GuardUnavailable (never answer unguarded)."""
    from labkit.config import ConfigError
    from labkit.safety import GuardUnavailable

    try:
        return check()
    except (ConfigError, GuardUnavailable):
        raise
    except FileNotFoundError as exc:  # the red-team wheels are missing: its message names the fix
        raise GuardUnavailable(f"the {guard} guard could not decide: {exc}") from None
    except Exception as exc:
        raise GuardUnavailable(f"the {guard} guard could not decide ({type(exc).__name__})") from None


def _content_filtered(exc: Exception) -> bool:
    """An Azure OpenAI 400 whose error code is `content_filter` (its prompt filter blocked the request)."""
    body = getattr(exc, "body", None)
    code = getattr(exc, "code", None) or (body.get("code") if isinstance(body, dict) else None)
    return code == "content_filter"


_BOUNDARY = re.compile(r"[.!?](?=\s)|\n")  # a sentence end: "2.5 kg" and "a.b@example.com" are not


def _guarded_stream(run: _Run, inner: Generator[str, None, dict]) -> Generator[str, None, dict]:
    """Pass the model's text on only once the output guard has passed it: checked at each sentence end
    (or every 120 characters), and the last unfinished word is held back until the next check, so no
    part of an e-mail address or a marker leaves before the whole of it has been seen. A block stops
    the stream and closes the model call; the usage is then estimated from what was generated."""
    if not run.config.guards:
        return (yield from inner)
    held = ""
    passed = ""
    count = 0
    try:
        while True:
            try:
                piece = next(inner)
            except StopIteration as done:
                usage = done.value
                break
            count += 1
            held += piece
            if not (_BOUNDARY.search(piece) or len(held) >= 120):
                continue
            if not run.guard_output(passed + held, final=False):
                prompt_chars = sum(len(m["content"]) for m in run.messages)
                return {"input_tokens": prompt_chars // 4, "output_tokens": count, "estimated": True}
            cut = max(held.rfind(" "), held.rfind("\n")) + 1  # keep the unfinished last word
            ready, held = held[:cut], held[cut:]
            if ready:
                passed += ready
                yield ready
        if held:
            if not run.guard_output(passed + held, final=False):
                return usage
            yield held
        return usage
    finally:
        inner.close()  # a block, a consumer that left, or the end: the model call is closed


def _guard_attributes(span: Any, decisions: list[Any]) -> None:
    span.set_attribute("labkit.safety.blocked", any(d.action == "block" for d in decisions))
    raised = [f"{d.category}:{d.action}:{d.score:.2f}" for d in decisions if d.action != "allow"]
    if raised:
        span.set_attribute("labkit.safety.decisions", raised)


def _streamed_reply(run: _Run, params: dict[str, Any], pieces: list[str]) -> Generator[str, None, dict]:
    """Yield the model's text pieces; return the usage (measured if the backend sends it)."""
    # OpenAI / Azure OpenAI end the stream with a usage chunk (no choices); the local server ignores it
    response = run.client.chat.completions.create(  # type: ignore[call-overload]
        messages=run.messages, stream=True, stream_options={"include_usage": True}, **params)
    usage = None
    try:
        for chunk in response:
            if getattr(chunk, "usage", None):
                usage = chunk.usage
            if chunk.choices and chunk.choices[0].finish_reason == "content_filter":
                run.platform_block("output")  # Azure OpenAI cut the completion: a block, not an error
                break
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                yield pieces[-1]
    finally:
        response.close()  # a consumer that stops early must not leave the model generating
    if usage is not None:
        return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}
    prompt_chars = sum(len(m["content"]) for m in run.messages)
    return {"input_tokens": prompt_chars // 4, "output_tokens": len(pieces), "estimated": True}


def answer(question: str, customer_id: str, history: list[dict[str, str]] | None = None,
           config: FlowConfig | None = None) -> ChatResult:
    """Answer one question for one customer. Raises FlowInputError or CustomerNotFound on bad input."""
    run = _Run(question, customer_id, history, config)
    *_, result = _execute(run, streaming=False)
    assert isinstance(result, ChatResult)
    return result


def stream(question: str, customer_id: str, history: list[dict[str, str]] | None = None,
           config: FlowConfig | None = None) -> Iterator[str | ChatResult]:
    """Yield the answer in text pieces as they arrive, then the ChatResult (the same fields and
    spans as `answer()`).

    Cloud backends are asked for a final usage chunk (`stream_options.include_usage`) and report
    measured tokens. The local server sends no usage with streams: output tokens are counted from
    the pieces (one per chunk) and input tokens are estimated, so `usage.estimated` is true.
    """
    run = _Run(question, customer_id, history, config)
    yield from _execute(run, streaming=True)


def prepare(question: str, customer_id: str, history: list[dict[str, str]] | None = None,
            config: FlowConfig | None = None) -> tuple[ChatResult, list[dict[str, str]]]:
    """The steps before the answer (customer, queries, retrieval, prompt) without the answer: the
    result so far (`context`, `queries`, `filter`) and the messages the model would be given.

    For looking at what the model reads (notebooks/03_build_rag_flow.ipynb) and for checks on it
    (tests/test_app.py: signed in as one customer, nothing of another reaches the context). The query
    writer still calls the chat model; an unavailable catalog gives an empty message list.
    """
    run = _Run(question, customer_id, history, config)
    with run.tracer.start_as_current_span("contoso_chat.prepare", context=_parent_context()):
        ready = run.prepare()
    return run.result, (run.messages if ready else [])
