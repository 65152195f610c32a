"""The guard of tests/unit: a unit test that starts Ray, opens a socket or touches a database fails.

``install`` (around each test module, so module-scoped fixtures are guarded too) replaces the entry
points (``ray.init``, ``socket.socket.connect``/``connect_ex``/``bind``, ``socket.create_connection``,
``sqlalchemy.create_engine``, ``sqlite3.connect``, ``psycopg.connect``) with functions that record
the call and raise ``UnitTestIOError`` naming the test and the call. The error is a
``BaseException`` so that an ``except Exception`` in the code under test cannot hide it, and
``check`` fails the test afterwards anyway if any call was attempted, or if Ray is running (Ray
imported only inside the test, after the guard was installed).
"""

from __future__ import annotations

import socket
import sqlite3
import sqlite3.dbapi2
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import psycopg
import pytest
import sqlalchemy
import sqlalchemy.engine
import sqlalchemy.engine.create

WHY = "tests/unit run without Ray, sockets or databases: move this test to tests/integration"


class UnitTestIOError(BaseException):
    """A unit test tried to start Ray, open a socket or touch a database."""


class IOGuard:
    """The calls refused during the current test, named by its pytest node id."""

    def __init__(self, test: str = "(no test yet)") -> None:
        self.test = test
        self.attempts: list[str] = []
        # Ray already running when the test began: started by an integration test's session fixture
        # in the same pytest run, not by this test.
        self.ray_before = False

    def begin(self, test: str) -> None:
        """Start guarding ``test``: name it and note whether Ray is already running."""
        self.test = test
        self.ray_before = _ray_running()

    def refuse(self, call: str) -> NoReturn:
        self.attempts.append(call)
        raise UnitTestIOError(f"{self.test} called {call}; {WHY}")

    def take(self) -> list[str]:
        """Return the refused calls so far and forget them (for tests of the guard itself)."""
        attempts, self.attempts = self.attempts, []
        return attempts

    def check(self) -> None:
        """Fail the test if it attempted a refused call or left Ray running; then forget the calls."""
        if _ray_running() and not self.ray_before:
            sys.modules["ray"].shutdown()
            self.attempts.append("ray.init (Ray was running after the test)")
        attempts = self.take()
        if attempts:
            pytest.fail(f"{self.test} called {', '.join(attempts)}; {WHY}", pytrace=False)


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and bool(getattr(ray, "is_initialized", lambda: False)())


def _refusing(guard: IOGuard, call: str) -> Callable[..., NoReturn]:
    def refused(*args: Any, **kwargs: Any) -> NoReturn:
        shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        guard.refuse(f"{call}({shown})")

    return refused


def _refusing_method(guard: IOGuard, call: str) -> Callable[..., NoReturn]:
    def refused(sock: socket.socket, *args: Any) -> NoReturn:
        guard.refuse(f"{call}({', '.join(map(repr, args))})")

    return refused


def install(monkeypatch: pytest.MonkeyPatch, guard: IOGuard) -> None:
    """Replace every guarded entry point for the duration of ``monkeypatch``."""
    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, _refusing_method(guard, f"socket.{name}"))
    monkeypatch.setattr(socket, "create_connection", _refusing(guard, "socket.create_connection"))
    for module in (sqlalchemy, sqlalchemy.engine, sqlalchemy.engine.create):
        monkeypatch.setattr(module, "create_engine", _refusing(guard, "sqlalchemy.create_engine"))
    for module in (sqlite3, sqlite3.dbapi2):
        monkeypatch.setattr(module, "connect", _refusing(guard, "sqlite3.connect"))
    monkeypatch.setattr(psycopg, "connect", _refusing(guard, "psycopg.connect"))
    for cls in (psycopg.Connection, psycopg.AsyncConnection):
        monkeypatch.setattr(cls, "connect", _refusing(guard, "psycopg.connect"))
    # Ray is not imported here (a second per run): patched when a test module imported it, and
    # ``check`` catches a Ray started after an import inside a test.
    ray = sys.modules.get("ray")
    if ray is not None:
        monkeypatch.setattr(ray, "init", _refusing(guard, "ray.init"))
        worker = sys.modules.get("ray._private.worker")
        if worker is not None:
            monkeypatch.setattr(worker, "init", _refusing(guard, "ray.init"))
