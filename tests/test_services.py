"""The local service lifecycle, in a temporary LABKIT_HOME with free ports (real processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from labkit.config import Settings
from labkit.services import ServiceError, ensure_running, register_model, status, stop
from labkit.services.manager import _pid_alive, default_model_path


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_up_twice_reuses_and_second_process_reuses(isolated_home: Settings) -> None:
    first = ensure_running(["model"], settings=isolated_home)["model"]
    second = ensure_running(["model"], settings=isolated_home)["model"]
    assert first.pid == second.pid
    code = "from labkit.services import ensure_running; print(ensure_running(['model'])['model'].pid)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ), check=True).stdout.strip()
    assert int(out) == first.pid
    rows = {r["name"]: r for r in status(settings=isolated_home)}
    assert rows["model"]["state"] == "running"
    assert isolated_home.labkit_local_chat_model in rows["model"]["models"]
    # the model server spins only briefly between llama.cpp steps (see manager._start)
    environ = Path(f"/proc/{first.pid}/environ").read_bytes().split(b"\0")
    assert any(e.startswith(b"GOMP_SPINCOUNT=") for e in environ)


def test_cli_up_twice_then_down_leaves_no_process(isolated_home: Settings) -> None:
    run = [sys.executable, "-m", "labkit.cli", "services"]
    env = dict(os.environ)
    subprocess.run([*run, "up", "--only", "model"], check=True, timeout=120, env=env, capture_output=True)
    subprocess.run([*run, "up", "--only", "model"], check=True, timeout=120, env=env, capture_output=True)
    config = str(isolated_home.services_dir / "model-server.json")
    assert len(_processes_mentioning(config)) == 1
    listed = json.loads(subprocess.run([*run, "status", "--json"], check=True, timeout=60, env=env,
                                       capture_output=True, text=True).stdout)
    assert {r["name"] for r in listed} == {"model", "search", "app"}
    assert all("keys" not in r for r in listed)
    subprocess.run([*run, "down"], check=True, timeout=60, env=env, capture_output=True)
    assert _processes_mentioning(config) == []
    assert not (isolated_home.services_dir / "model.json").exists()


def test_port_taken_by_another_process_is_reported(isolated_home: Settings) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", isolated_home.labkit_model_port))
        blocker.listen()
        with pytest.raises(ServiceError, match=r"in use by another process.*LABKIT_MODEL_PORT"):
            ensure_running(["model"], settings=isolated_home)


def test_stale_state_file_is_replaced(isolated_home: Settings) -> None:
    isolated_home.services_dir.mkdir(parents=True, exist_ok=True)
    stale = {"name": "model", "pid": 999999, "port": isolated_home.labkit_model_port,
             "base_url": f"http://127.0.0.1:{isolated_home.labkit_model_port}", "models": [],
             "config_hash": "x", "started_at": 0.0, "log": ""}
    (isolated_home.services_dir / "model.json").write_text(json.dumps(stale))
    state = ensure_running(["model"], settings=isolated_home)["model"]
    assert state.pid != 999999 and _pid_alive(state.pid)


def test_unknown_model_is_rejected_and_registered_model_served(isolated_home: Settings, tmp_path) -> None:
    state = ensure_running(["model"], settings=isolated_home)["model"]
    client = openai.OpenAI(base_url=state.base_url + "/v1", api_key="x", max_retries=0, timeout=300)  # loaded machine
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="no-such-model", max_tokens=4,
                                       messages=[{"role": "user", "content": "hi"}])
    # register a second model (the same weights under another name): the server restarts with both
    copy = tmp_path / "copy.gguf"
    copy.symlink_to(default_model_path())
    register_model("smollm2-copy", copy, settings=isolated_home)
    state2 = ensure_running(["model"], settings=isolated_home)["model"]
    assert state2.pid != state.pid and not _pid_alive(state.pid)
    client = openai.OpenAI(base_url=state2.base_url + "/v1", api_key="x", max_retries=0, timeout=300)  # loaded machine
    assert {m.id for m in client.models.list()} >= {"smollm2-copy", isolated_home.labkit_local_chat_model}
    reply = client.chat.completions.create(model="smollm2-copy", max_tokens=4, temperature=0,
                                           messages=[{"role": "user", "content": "Say hi"}])
    assert reply.choices[0].message.content is not None
    with pytest.raises(FileNotFoundError):
        register_model("missing", tmp_path / "nope.gguf", settings=isolated_home)


def test_stop_when_nothing_runs_is_quiet(isolated_home: Settings) -> None:
    assert stop(settings=isolated_home) == []


def test_a_reused_pid_in_a_stale_state_file_is_never_killed(isolated_home: Settings) -> None:
    """After a reboot the recorded pid may belong to someone else: leave that process alone."""
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        isolated_home.services_dir.mkdir(parents=True, exist_ok=True)
        stale = {"name": "search", "pid": stranger.pid, "port": isolated_home.labkit_search_port,
                 "base_url": f"http://127.0.0.1:{isolated_home.labkit_search_port}", "models": [],
                 "config_hash": "x", "started_at": 0.0, "log": ""}
        (isolated_home.services_dir / "search.json").write_text(json.dumps(stale))
        state = ensure_running(["search"], settings=isolated_home)["search"]
        assert state.pid != stranger.pid and stranger.poll() is None  # the stranger still runs
        assert stop(settings=isolated_home) == ["search"] and stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_model_guard_rejects_odd_model_values_with_4xx(isolated_home: Settings) -> None:
    import httpx

    state = ensure_running(["model"], settings=isolated_home)["model"]
    for body in ({"model": ["x"], "messages": []}, {"model": {"a": 1}, "messages": []}):
        response = httpx.post(state.base_url + "/v1/chat/completions", json=body, timeout=300)
        assert 400 <= response.status_code < 500 and response.json()["error"]["message"]


def test_a_live_but_slow_service_is_waited_for_not_killed() -> None:
    """On a loaded machine a busy server may miss a health check; ensure_running must wait for it
    (it is serving requests) rather than kill it. Here the server answers 503 three times, then 200."""
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from labkit.services.manager import _healthy_within

    answers = iter([503, 503, 503])

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(next(answers, 200))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert _healthy_within(base, "/health", os.getpid(), timeout=600)
        assert not _healthy_within("http://127.0.0.1:9", "/health", 2**22 + 12345, timeout=600)  # dead pid: at once
    finally:
        server.shutdown()
        server.server_close()
