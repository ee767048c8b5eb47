"""Settings from the environment and `.env`: the one place where a backend is chosen.

Introduced in notebooks/00_setup.ipynb.

`LABKIT_BACKEND` (local | azure | openai) sets the default for every service; the per-service
overrides `LABKIT_CHAT_BACKEND`, `LABKIT_EMBED_BACKEND`, `LABKIT_SEARCH_BACKEND` and
`LABKIT_STORE_BACKEND` let a learner mix them. Variable names follow the Azure samples.
Secrets are `SecretStr`: they never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_path(relative: str | Path) -> Path:
    """A path inside the repository, whatever the working directory (an executed notebook copy under
    build/ runs from another folder). Introduced in notebooks/02_index_data.ipynb."""
    path = Path(relative)
    return path if path.is_absolute() else REPO_ROOT / path


# LABKIT_ENV_FILE points at another .env file ("none" reads no file); default: the repo's .env
_ENV_FILE_SETTING = os.environ.get("LABKIT_ENV_FILE", str(REPO_ROOT / ".env"))
ENV_FILE: Path | None = None if _ENV_FILE_SETTING.lower() == "none" else Path(_ENV_FILE_SETTING)
Backend = Literal["local", "azure", "openai"]
Service = Literal["chat", "embed", "search", "store"]
SERVICES: tuple[Service, ...] = ("chat", "embed", "search", "store")

# Services that have no OpenAI-hosted equivalent fall back to the embedded local one.
_OPENAI_HAS = {"chat", "embed"}


class ConfigError(RuntimeError):
    """Configuration is missing or invalid. Names variables, never their values."""

    def __init__(self, message: str, missing: list[str] | None = None):
        super().__init__(message)
        self.missing = missing or []

    def _render_traceback_(self) -> list[str]:  # IPython: show one line, not a traceback
        return [f"ConfigError: {self}"]


class Settings(BaseSettings):
    """Typed settings. Field names are the environment variable names (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # backend choice
    labkit_backend: Backend = "local"
    labkit_chat_backend: Backend | None = None
    labkit_embed_backend: Backend | None = None
    labkit_search_backend: Backend | None = None
    labkit_store_backend: Backend | None = None

    # state, CI mode, ports
    labkit_home: Path | None = None
    labkit_ci: bool = False
    labkit_model_port: int = 8081
    labkit_search_port: int = 8082
    labkit_app_port: int = 8000

    # the embedded local model
    labkit_local_chat_model: str = "smollm2-135m-instruct"
    labkit_model_threads: int = 2
    labkit_model_ctx: int = 4096
    labkit_local_embed_model: str = "all-MiniLM-L6-v2"
    # a service that dies during start is reported at once; this limit is for one that is alive but
    # not yet answering, which on a loaded 2-core machine (importing torch) can take tens of seconds
    labkit_start_timeout_s: float = 180.0

    # the chat flow and tracing
    labkit_trace_content: bool = False  # record prompts/answers in spans only when asked
    labkit_max_question_chars: int = 2000
    # a marker in the system prompt that must never appear in an answer (the output guard checks it;
    # notebook 06); not a secret: a leak detector for system-prompt extraction (OWASP LLM07)
    labkit_prompt_canary: str = "CANARY-TALLOW-4471"
    # guard thresholds by category, merged over labkit.safety.guards.THRESHOLDS (JSON in the environment)
    labkit_safety_thresholds: dict[str, float] = Field(default_factory=dict)
    # guard backend: the offline classifier and rules, or Azure AI Content Safety (text analysis and
    # Prompt Shields) with the same rules for customers' data, the canary and citations
    labkit_safety_backend: Literal["offline", "azure"] = "offline"
    labkit_judge_model: str | None = None  # evaluation judges; None: the chat model
    # evaluation spend guard (labkit.evaluation.budget): no row starts that could pass it; None: no guard
    labkit_budget_usd: float | None = None

    # the HTTP chat service (labkit serve)
    labkit_app_max_body_bytes: int = 65536      # larger request bodies: 413
    labkit_app_max_history_turns: int = 20      # more earlier turns: 422
    labkit_app_rate_per_minute: float = 30.0    # per token: a token bucket refilled at this rate
    labkit_app_rate_burst: int = 10             # ... holding at most this many requests
    labkit_app_queue_max: int = 8               # requests waiting for the model beyond this: 503
    labkit_app_timeout_s: float = 180.0         # one answer, end to end: 504 after this
    labkit_app_cors_origins: str = ""           # comma-separated allow-list; empty: no cross-origin access
    labkit_app_config: str | None = None        # FlowConfig file for the background `app` service
    labkit_app_model_slots: int | None = None   # answers at once; default 1 local (llama.cpp), 4 cloud

    # monitoring (notebook 08): the share of answered requests kept, with personal data removed, for
    # online evaluation; the store keeps at most this many samples (the oldest go first)
    labkit_monitor_sample_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    labkit_monitor_sample_max: int = Field(default=5000, ge=1)

    # Azure OpenAI (key optional: without it, Entra ID through azure-identity)
    azure_openai_endpoint: str | None = None
    azure_openai_api_key: SecretStr | None = None
    azure_openai_chat_deployment: str | None = None
    azure_openai_embedding_deployment: str | None = None
    azure_openai_embedding_dimensions: int | None = None

    # OpenAI
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_chat_model: str = "gpt-4o-mini"
    openai_embedding_model: str = "text-embedding-3-small"
    openai_embedding_dimensions: int | None = None

    # Azure AI Search (key optional: without it, Entra ID)
    azure_search_endpoint: str | None = None
    azure_search_api_key: SecretStr | None = None

    # Azure AI Content Safety (key optional: without it, Entra ID); used when LABKIT_SAFETY_BACKEND=azure
    azure_content_safety_endpoint: str | None = None
    azure_content_safety_key: SecretStr | None = None

    # Azure Cosmos DB (key optional: without it, Entra ID)
    azure_cosmos_endpoint: str | None = None
    azure_cosmos_key: SecretStr | None = None
    azure_cosmos_database: str = "contoso"

    @field_validator("labkit_budget_usd", mode="before")
    @classmethod
    def _budget_number(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # LABKIT_BUDGET_USD= (empty) means no budget, as before
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError("must be a number of US dollars") from None

    @field_validator("labkit_budget_usd")
    @classmethod
    def _finite_budget(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError("must be a finite, non-negative number of US dollars")
        return value

    def scrub(self, text: str, limit: int = 500) -> str:
        """`text` with every configured secret value replaced by ***, cut to `limit` characters: for
        error messages before they are written anywhere (results, scores, logs)."""
        for name in ("azure_openai_api_key", "openai_api_key", "azure_search_api_key", "azure_cosmos_key",
                     "azure_content_safety_key"):
            secret = getattr(self, name, None)
            value = secret.get_secret_value() if secret is not None else ""
            if value and len(value) >= 4:
                text = text.replace(value, "***")
        return text[:limit]

    # ---- derived values -------------------------------------------------------------------
    @property
    def home(self) -> Path:
        base = Path(self.labkit_home or (REPO_ROOT / ".labkit")).expanduser()
        return (base if base.is_absolute() else REPO_ROOT / base).resolve()  # same home from any cwd

    def backend_for(self, service: Service) -> Backend:
        return self.backend_reason(service)[0]

    def backend_reason(self, service: Service) -> tuple[Backend, str]:
        """The backend of one service and a short human reason for the choice."""
        override = getattr(self, f"labkit_{service}_backend")
        if override == "openai" and service not in _OPENAI_HAS:
            raise ConfigError(f"LABKIT_{service.upper()}_BACKEND=openai is not possible: OpenAI has no "
                              f"{service} service (use local or azure)")
        if override:
            return override, f"LABKIT_{service.upper()}_BACKEND={override}"
        if self.labkit_backend == "openai" and service not in _OPENAI_HAS:
            return "local", f"LABKIT_BACKEND=openai has no {service} service; using the embedded local one"
        if self.labkit_backend == "local":
            return "local", "default (LABKIT_BACKEND unset or local)"
        return self.labkit_backend, f"LABKIT_BACKEND={self.labkit_backend}"

    def backends(self) -> dict[str, Backend]:
        return {s: self.backend_for(s) for s in SERVICES}

    def missing_for(self, service: Service) -> list[str]:
        """Names of required variables that are unset for the service's active backend."""
        backend = self.backend_for(service)
        need: list[str] = []
        if backend == "azure":
            need = {
                "chat": ["AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_CHAT_DEPLOYMENT"],
                "embed": ["AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_EMBEDDING_DEPLOYMENT"],
                "search": ["AZURE_SEARCH_ENDPOINT"],
                "store": ["AZURE_COSMOS_ENDPOINT"],
            }[service]
        elif backend == "openai":
            need = ["OPENAI_API_KEY"]
        return [name for name in need if not getattr(self, name.lower())]

    def check(self, services: tuple[Service, ...] | list[Service] = SERVICES) -> None:
        """Raise one ConfigError naming every missing variable of the active backends."""
        missing: list[str] = []
        for service in services:
            for name in self.missing_for(service):
                if name not in missing:
                    missing.append(name)
        if missing:
            active = ", ".join(f"{s}={self.backend_for(s)}" for s in services)
            samples = sorted({f".env.sample.{self.backend_for(s)}" for s in services} - {".env.sample.local"})
            raise ConfigError(
                f"missing configuration: set {', '.join(missing)} (backends: {active}; "
                f"put them in the environment or .env, see {', '.join(samples) or '.env.sample.local'})",
                missing=missing,
            )

    # ---- local paths ------------------------------------------------------------------------
    @property
    def services_dir(self) -> Path:
        return self.home / "services"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def search_dir(self) -> Path:
        """Where the local search service keeps its indexes and keys."""
        return self.home / "search"

    @property
    def search_keys_path(self) -> Path:
        return self.search_dir / "keys.json"


_SETTINGS_PREFIXES = ("LABKIT_", "AZURE_", "OPENAI_")
_settings_cache: dict[tuple[Any, ...], Settings] = {}
_settings_lock = threading.Lock()


def _settings_key() -> tuple[Any, ...]:
    """What settings depend on: the relevant variables, the .env file chosen and its modification time."""
    env_file = Settings.model_config.get("env_file")
    try:
        mtime = Path(env_file).stat().st_mtime_ns if env_file else None  # type: ignore[arg-type]
    except OSError:
        mtime = None
    variables = tuple(sorted((k.upper(), v) for k, v in os.environ.items()
                             if k.upper().startswith(_SETTINGS_PREFIXES)))
    return variables, str(env_file), mtime


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment and `.env`, read once and cached until a LABKIT_/AZURE_/OPENAI_
    variable or the `.env` file changes (tests that set variables see their values at once).

    An invalid value (e.g. LABKIT_BACKEND=Azure, LABKIT_MODEL_PORT=abc) is a ConfigError naming the
    variable, never echoing its value.
    """
    from pydantic import ValidationError

    key = _settings_key() if not overrides else None
    if key is not None:
        cached = _settings_cache.get(key)
        if cached is not None:
            return cached
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        names = sorted({str(e["loc"][0]).upper() for e in exc.errors() if e.get("loc")})
        # our own validators' messages describe the rule, never the value: say them
        rules = sorted({f"{str(e['loc'][0]).upper()} {str(e['msg']).removeprefix('Value error, ')}"
                        for e in exc.errors() if e.get("type") == "value_error" and e.get("loc")})
        hint = (f"({'; '.join(rules)})" if rules else
                "(LABKIT_*_BACKEND takes local, azure or openai in lower case; ports are numbers)")
        raise ConfigError(f"invalid configuration value for {', '.join(names)} {hint}",
                          missing=names) from None
    if key is not None:
        with _settings_lock:
            if len(_settings_cache) > 64:  # tests change variables often; keep the cache small
                _settings_cache.clear()
            _settings_cache[key] = settings
    return settings
