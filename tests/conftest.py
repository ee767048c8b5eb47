"""Shared fixtures: an isolated LABKIT_HOME with free ports, and the repo's running services.

Test tiers are marked per test, not per module: a test that uses a fixture which starts real
servers (directly or through another fixture) is marked `services`; notebook items are marked
`notebooks`. `pytest -m "not services and not notebooks"` is then the fast tier, and a test in it
that tries to start a local service fails with a message saying so.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.config import Settings

# fixtures that start real local servers; a test using any of them (even indirectly) is `services`
SERVICE_FIXTURES = {"isolated_home", "local", "proxy", "search_service", "search_service_module", "guarded", "web"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb" or item.get_closest_marker("notebooks"):
            item.add_marker(pytest.mark.notebooks)
        elif SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_service(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test outside the services/notebooks tiers must not start a server (it would slow the fast tier)."""
    if request.node.get_closest_marker("services") or request.node.get_closest_marker("notebooks"):
        return
    from labkit.services import manager

    def refuse(spec, *args, **kwargs):
        pytest.fail(f"this test starts the local {spec.name} service: use a fixture from "
                    "tests/conftest.py SERVICE_FIXTURES so that it is marked `services`")

    monkeypatch.setattr(manager, "_start", refuse)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No backend or Azure/OpenAI variable from the developer's shell or .env leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith(("LABKIT_", "AZURE_", "OPENAI_")) and name != "LABKIT_WHEEL_CACHE":  # set-up cache stays
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(Settings, "model_config", {**Settings.model_config, "env_file": None})
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    return monkeypatch


@pytest.fixture
def isolated_home(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    """A temporary LABKIT_HOME with free ports; every service started in it is stopped afterwards."""
    clean_env.setenv("LABKIT_MODEL_PORT", str(free_port()))
    clean_env.setenv("LABKIT_SEARCH_PORT", str(free_port()))
    settings = Settings()
    yield settings
    from labkit.services import stop

    stop(settings=settings)


@contextlib.contextmanager
def module_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Settings]:
    """Like `isolated_home`, for a module-scoped fixture: clean env, temp LABKIT_HOME, free ports."""
    import os

    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith(("LABKIT_", "AZURE_", "OPENAI_")) and var != "LABKIT_WHEEL_CACHE":
                mp.delenv(var, raising=False)
        mp.setattr(Settings, "model_config", {**Settings.model_config, "env_file": None})
        mp.setenv("LABKIT_HOME", str(tmp_path_factory.mktemp(name)))
        mp.setenv("LABKIT_MODEL_PORT", str(free_port()))
        mp.setenv("LABKIT_SEARCH_PORT", str(free_port()))
        settings = Settings()
        try:
            yield settings
        finally:
            from labkit.services import stop

            stop(settings=settings)
