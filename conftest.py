"""Session-wide: local services that the test session started in the repo's LABKIT_HOME (notebooks,
nbval) are stopped at the end, so `make test` leaves no process behind. Services that were already
running before the session (a learner's) are left alone."""

from __future__ import annotations

import pytest

_running_before: set[str] = set()


def _running() -> set[str]:
    try:
        from labkit.services import status

        return {row["name"] for row in status() if row["state"] == "running"}
    except Exception:  # a broken configuration must not hide the test results
        return set()


def pytest_sessionstart(session: pytest.Session) -> None:
    _running_before.update(_running())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    started = sorted(_running() - _running_before)
    if started:
        from labkit.services import stop

        stop(started)
