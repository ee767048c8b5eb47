"""Fixtures for the local search service: a real subprocess on a free port with a temporary data dir.

`search_service` (per test) and `search_service_module` (shared by a module) yield a
`SearchServiceProcess` with `.endpoint`, `.admin_key`, `.query_key`, `.data_dir` and `.restart()`;
the process is stopped afterwards (terminate, then kill).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.core.credentials import AzureKeyCredential
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient

from labkit.services.search_service import launch_argv

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SearchServiceProcess:
    """A running `python -m labkit.services.search_service` with its keys."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_key = ""
        self.query_key = ""

    def start(self, timeout: float = 120.0) -> None:
        """Start the service and wait for /health; moves to another free port if this one was taken."""
        for _attempt in range(3):
            if self._launch(timeout):
                keys = json.loads((self.data_dir / "keys.json").read_text(encoding="utf-8"))
                self.admin_key, self.query_key = keys["admin_key"], keys["query_key"]
                return
            self.port = _free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}"
        raise RuntimeError(f"the search service could not bind a port:\n{self.log_tail()}")

    def _launch(self, timeout: float) -> bool:
        """True once healthy, False if the port was in use; raises on any other failure."""
        pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        argv = launch_argv(self.port, self.data_dir)
        start_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=dict(os.environ, PYTHONPATH=pythonpath),
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.proc = None
                output = self.log_path.read_bytes()[start_offset:].decode("utf-8", "replace")
                if "address already in use" in output.lower():
                    return False
                raise RuntimeError(f"the search service exited early:\n{self.log_tail()}")
            try:
                if httpx.get(self.endpoint + "/health", timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the search service did not become healthy:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(
                self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return "(no log)"


def _run(base: Path) -> Iterator[SearchServiceProcess]:
    service = SearchServiceProcess(base / "data", base / "service.log")
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def search_service(tmp_path: Path) -> Iterator[SearchServiceProcess]:
    """A fresh search service for one test."""
    yield from _run(tmp_path)


@pytest.fixture(scope="module")
def search_service_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchServiceProcess]:
    """One search service shared by the tests of a module (use distinct index names)."""
    yield from _run(tmp_path_factory.mktemp("search-service"))


# ---- module-scoped fixtures shared by the conformance test modules -----------------------------
@pytest.fixture(scope="module")
def service(search_service_module: SearchServiceProcess) -> SearchServiceProcess:
    return search_service_module


@pytest.fixture(scope="module")
def index_client(service: SearchServiceProcess) -> SearchIndexClient:
    return SearchIndexClient(service.endpoint, AzureKeyCredential(service.admin_key))


@pytest.fixture(scope="module")
def products(service: SearchServiceProcess, index_client: SearchIndexClient) -> Iterator[SearchClient]:
    """A read-only index with DOCS, shared by the search tests."""
    from .sdk_data import DOCS, index_definition

    index_client.create_or_update_index(index_definition("products"))
    client = SearchClient(service.endpoint, "products", AzureKeyCredential(service.admin_key))
    assert all(r.succeeded for r in client.upload_documents(DOCS))
    yield client
