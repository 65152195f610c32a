"""tests/unit is pure: every test runs under the guard of ``io_guard`` (no Ray, socket or database)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from io_guard import IOGuard, install

_GUARD = IOGuard()


@pytest.fixture(scope="module", autouse=True)
def _io_guard_installed() -> Iterator[None]:
    # Module scope: undone before tests/integration runs in the same session.
    with pytest.MonkeyPatch.context() as monkeypatch:
        install(monkeypatch, _GUARD)
        yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _GUARD.begin(item.nodeid)  # before any fixture of the test is set up


@pytest.fixture(autouse=True)
def io_guard() -> Iterator[IOGuard]:
    """Refuse Ray, sockets and databases in this test; fail it if it tried any of them."""
    yield _GUARD
    _GUARD.check()
