"""Prompt files: a small loader for `.prompty` (v1) files kept in `prompts/`.

Introduced in notebooks/01_ideate_prompts.ipynb.

A `.prompty` file is YAML front matter (`name`, `description`, `version`, `model: {api,
configuration, parameters}`, `sample`, `inputs`) followed by a Jinja2 body split into messages by
lines that hold only a role name (`system:`, `user:`, `assistant:`). The files stay valid v1, so the
VS Code Prompty extension opens them, but this loader is our own (the `prompty` package on PyPI is
now a v2 runtime that rejects v1 files):

- the body is rendered in a sandboxed Jinja2 environment (`StrictUndefined`, no autoescape), so a
  template cannot reach Python internals such as `{{ ''.__class__.__mro__ }}`;
- role lines are taken from the template text, never from input values: a question that contains a
  line `system:` stays inside the user message;
- missing inputs raise `PromptInputError` naming every one of them; inputs with a `default` in the
  `inputs` block are optional;
- `model.configuration` (endpoint, deployment) is informational only: requests go to the active
  backend (`labkit.models`), and a file that hard-codes an endpoint or key is refused;
- every prompt reports its `name`, `version` and the `sha256` of the file bytes (`identity`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from jinja2 import StrictUndefined, TemplateError, UndefinedError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from labkit.config import REPO_ROOT

if TYPE_CHECKING:
    from openai import OpenAI

    from labkit.models import ChatReply

PROMPTS_DIR = REPO_ROOT / "prompts"
SUFFIX = ".prompty"
ROLES = ("system", "user", "assistant", "developer")
# a line that holds only a role name, optionally after '#', e.g. "system:" or "# user:"
_ROLE_LINE = re.compile(r"^[ \t]*#?[ \t]*(" + "|".join(ROLES) + r")[ \t]*:[ \t]*$",
                        re.IGNORECASE | re.MULTILINE)
_ENV_REF = re.compile(r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*(:[^}]*)?\}$")
# configuration keys that would point a request somewhere or authenticate it
_SENSITIVE_KEYS = re.compile(r"(endpoint|base_url|api_key|apikey|key|token|secret|password|connection)", re.I)


class PromptError(ValueError):
    """A prompt file is missing, malformed or cannot be rendered."""


class PromptNotFoundError(PromptError, FileNotFoundError):
    """No prompt file with that name or path."""


class PromptInputError(PromptError):
    """Required inputs were not given. `missing` lists every one of them."""

    def __init__(self, prompt: str, missing: list[str]):
        self.prompt = prompt
        self.missing = missing
        super().__init__(f"prompt {prompt!r} is missing required input(s): {', '.join(missing)}")


class PromptRenderError(PromptError):
    """The template failed while rendering (an undefined attribute, a filter error, ...)."""


class PromptSecurityError(PromptRenderError):
    """The sandbox refused an unsafe operation (for example access to `__class__`)."""


@dataclass(frozen=True)
class InputSpec:
    """One entry of a prompt's `inputs` block."""

    name: str
    type: str = "string"
    description: str = ""
    default: Any = None
    required: bool = True


def _environment() -> ImmutableSandboxedEnvironment:
    # Immutable sandbox: no attribute tricks, and no `.append()` on an input list from a template.
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                         keep_trailing_newline=True)


_ENV = _environment()


@dataclass(frozen=True)
class Prompt:
    """A loaded `.prompty` file. `render()` gives chat messages, `run()` sends them."""

    name: str
    description: str
    version: str | None
    sha256: str
    path: Path
    parameters: dict[str, Any]
    inputs: dict[str, InputSpec]
    sample: dict[str, Any]
    template: str
    api: str = "chat"
    configuration: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    # ---- identity -------------------------------------------------------------------------------
    @property
    def identity(self) -> dict[str, Any]:
        """`{name, version, sha256}`: what results, traces and manifests record about a prompt."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    @property
    def template_variables(self) -> set[str]:
        """Names the template body reads from its inputs."""
        ast = _ENV.parse(self.template)
        return set(meta.find_undeclared_variables(ast)) - set(_ENV.globals)

    @property
    def input_names(self) -> list[str]:
        """Declared inputs first, then any other variable the template uses."""
        extra = sorted(self.template_variables - set(self.inputs))
        return [*self.inputs, *extra]

    @property
    def required_inputs(self) -> list[str]:
        return [n for n in self.input_names if n not in self.inputs or self.inputs[n].required]

    # ---- rendering ------------------------------------------------------------------------------
    def _values(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        missing = [n for n in self.required_inputs if n not in inputs]
        if missing:
            raise PromptInputError(self.name, missing)
        values = {n: copy.deepcopy(spec.default) for n, spec in self.inputs.items() if not spec.required}
        values.update(inputs)  # inputs the prompt does not use are ignored by the template
        return values

    def render(self, **inputs: Any) -> list[dict[str, str]]:
        """The chat messages (`[{"role", "content"}, ...]`) for these inputs."""
        values = self._values(inputs)
        # Role lines come from the template text only: mark them with a one-off token before
        # rendering, so that a role name inside an input value cannot start a new message.
        token = secrets.token_hex(8)
        marked = _ROLE_LINE.sub(lambda m: f"\x00{token}:{m.group(1).lower()}\x00", self.template)
        try:
            text = _ENV.from_string(marked).render(**values)
        except SecurityError as exc:
            raise PromptSecurityError(f"prompt {self.name!r}: the sandbox refused: {exc}") from exc
        except UndefinedError as exc:
            raise PromptRenderError(f"prompt {self.name!r}: {exc}") from exc
        except TemplateError as exc:
            raise PromptRenderError(f"prompt {self.name!r}: template error: {exc}") from exc
        return _split_roles(text, token)

    def render_sample(self) -> list[dict[str, str]]:
        """Render with the file's `sample` values (what the VS Code extension shows)."""
        return self.render(**self.sample)

    # ---- running --------------------------------------------------------------------------------
    def with_parameters(self, **overrides: Any) -> Prompt:
        """A copy whose model parameters are updated (e.g. `max_tokens=32`)."""
        return replace(self, parameters={**self.parameters, **overrides})

    def call_arguments(self, model: str | None = None, params: Mapping[str, Any] | None = None,
                       backend: str | None = None) -> dict[str, Any]:
        """Keyword arguments for `labkit.models.chat`, mapped onto the active backend."""
        from labkit import models
        from labkit.config import get_settings

        settings = get_settings()
        backend = backend or settings.backend_for("chat")
        merged = {**self.parameters, **(params or {})}
        args: dict[str, Any] = {"model": model or models.chat_model_name(settings)}
        for key, value in merged.items():
            if value is None:
                continue
            if key == "response_format":
                args[key] = map_response_format(value, backend, self.name)
            elif key in LLAMA_CPP_ONLY:  # llama.cpp sampling options: sent to it, omitted for the cloud
                if backend == "local":
                    args.setdefault("extra_body", {})[key] = value
            else:
                args[key] = value
        return args

    def run(self, client: OpenAI | None = None, *, model: str | None = None,
            params: Mapping[str, Any] | None = None, **inputs: Any) -> ChatReply:
        """Render with `inputs` and send the messages to the active chat backend.

        The file's parameters (temperature, max_tokens, seed, response_format, ...) apply; `params`
        overrides them for this call; `model` overrides the backend's default model or deployment.
        """
        from labkit import models

        messages = self.render(**inputs)
        return models.chat(messages, client=client, **self.call_arguments(model, params))


# Sampling options only the llama.cpp server knows. Its default repeat_penalty is 1.1, which can
# suppress a copied id or a "Sources:" line the answer must repeat (docs: fine-tuning guide).
LLAMA_CPP_ONLY = frozenset({"repeat_penalty", "top_k", "min_p"})


def map_response_format(value: Any, backend: str, name: str = "output") -> Any:
    """Translate a `response_format` between the OpenAI and the llama.cpp dialects.

    OpenAI and Azure take `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`;
    the local llama.cpp server takes `{"type": "json_object", "schema": {...}}`. A file may use
    either form; the request gets the one the active backend understands.
    """
    if not isinstance(value, Mapping):
        return value
    kind = value.get("type")
    if backend == "local" and kind == "json_schema":
        schema = (value.get("json_schema") or {}).get("schema")
        return {"type": "json_object", **({"schema": schema} if schema else {})}
    if backend != "local" and kind == "json_object" and value.get("schema"):
        safe_name = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "output"
        return {"type": "json_schema", "json_schema": {"name": safe_name, "schema": value["schema"]}}
    return dict(value)


def _split_roles(text: str, token: str) -> list[dict[str, str]]:
    parts = re.split(rf"\x00{token}:({'|'.join(ROLES)})\x00", text)
    messages: list[dict[str, str]] = []
    preamble = parts[0].strip()
    if preamble:  # text before the first role line is a system message (as in Prompty)
        messages.append({"role": "system", "content": preamble})
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": role, "content": content.strip()})
    return messages


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _resolve(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate.resolve()
    if candidate.parent != Path("."):
        raise PromptNotFoundError(f"prompt file not found: {candidate}")
    stem = candidate.name[: -len(SUFFIX)] if candidate.name.endswith(SUFFIX) else candidate.name
    path = PROMPTS_DIR / f"{stem}{SUFFIX}"
    if path.is_file():
        return path
    for other in sorted(PROMPTS_DIR.glob(f"*{SUFFIX}")):  # by the `name` in the front matter
        try:
            if _split_front_matter(other.read_text(encoding="utf-8"), other)[0].get("name") == name_or_path:
                return other
        except PromptError:
            continue
    available = ", ".join(list_prompts()) or "(none)"
    raise PromptNotFoundError(f"no prompt named {name_or_path!r} in {PROMPTS_DIR}; available: {available}")


def _split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    text = text.lstrip("\ufeff")
    match = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|$)(.*)$", text, re.DOTALL)
    if not match:
        raise PromptError(f"{path.name}: a .prompty file starts with YAML front matter between '---' lines")
    try:
        front = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise PromptError(f"{path.name}: invalid YAML front matter: {exc}") from exc
    if not isinstance(front, dict):
        raise PromptError(f"{path.name}: the front matter must be a mapping")
    return front, match.group(2)


def _parse_inputs(raw: Any, path: Path) -> dict[str, InputSpec]:
    if raw is None:
        return {}
    if isinstance(raw, list):  # a bare list of names
        return {str(n): InputSpec(str(n)) for n in raw}
    if not isinstance(raw, dict):
        raise PromptError(f"{path.name}: 'inputs' must be a mapping of name -> spec")
    specs: dict[str, InputSpec] = {}
    for name, spec in raw.items():
        if isinstance(spec, dict):
            specs[name] = InputSpec(str(name), str(spec.get("type", "string")),
                                    str(spec.get("description", "")), spec.get("default"),
                                    required="default" not in spec)
        else:  # `question: string`
            specs[name] = InputSpec(str(name), str(spec) if spec is not None else "string")
    return specs


def _check_configuration(config: Any, path: Path) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise PromptError(f"{path.name}: 'model.configuration' must be a mapping")
    for key, value in config.items():
        if _SENSITIVE_KEYS.search(str(key)) and value not in (None, "") \
                and not (isinstance(value, str) and _ENV_REF.match(value.strip())):
            raise PromptError(f"{path.name}: model.configuration.{key} is hard-coded; use a "
                              f"${{env:NAME}} reference (requests go to the active backend anyway)")
    return dict(config)


def _load_sample(raw: Any, path: Path) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        ref = re.match(r"^\$\{file:(.+)\}$", raw.strip())
        if not ref:
            raise PromptError(f"{path.name}: 'sample' must be a mapping or ${{file:NAME}}")
        sample_path = (path.parent / ref.group(1)).resolve()
        text = sample_path.read_text(encoding="utf-8")
        raw = json.loads(text) if sample_path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise PromptError(f"{path.name}: 'sample' must be a mapping")
    return raw


def load_prompt(name_or_path: str | Path) -> Prompt:
    """Load a prompt by name (`prompts/<name>.prompty`, or its front-matter name) or by path."""
    path = _resolve(name_or_path)
    data = path.read_bytes()
    text = data.decode("utf-8")
    front, body = _split_front_matter(text, path)
    model = front.get("model") or {}
    if not isinstance(model, dict):
        raise PromptError(f"{path.name}: 'model' must be a mapping")
    api = str(model.get("api", "chat"))
    if api != "chat":
        raise PromptError(f"{path.name}: only model.api 'chat' is supported, not {api!r}")
    parameters = model.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise PromptError(f"{path.name}: 'model.parameters' must be a mapping")
    metadata = front.get("metadata") or {}
    version = front.get("version", metadata.get("version") if isinstance(metadata, dict) else None)
    prompt = Prompt(
        name=str(front.get("name") or path.stem),
        description=str(front.get("description") or "").strip(),
        version=None if version is None else str(version),
        sha256=hashlib.sha256(data).hexdigest(),
        path=path,
        parameters=dict(parameters),
        inputs=_parse_inputs(front.get("inputs"), path),
        sample=_load_sample(front.get("sample"), path),
        template=body,
        api=api,
        configuration=_check_configuration(model.get("configuration"), path),
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
    )
    try:
        prompt.template_variables  # noqa: B018 - parse once now: a syntax error names the file
    except TemplateError as exc:
        raise PromptError(f"{path.name}: template syntax error: {exc}") from exc
    return prompt


def list_prompts(folder: Path | None = None) -> list[str]:
    """Names (file stems) of the prompt files in `prompts/`."""
    return sorted(p.stem for p in (folder or PROMPTS_DIR).glob(f"*{SUFFIX}"))
