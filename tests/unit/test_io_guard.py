"""The guard of tests/unit (tests/unit/io_guard.py) refuses Ray, sockets and databases, naming the test."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
import ray
import sqlalchemy
from io_guard import UnitTestIOError

from storage import db

UNIT = Path(__file__).resolve().parent


def _connect(address):
    with socket.socket() as sock:
        sock.connect(address)


def _connect_ex(address):
    with socket.socket() as sock:
        sock.connect_ex(address)


def _bind(address):
    with socket.socket() as sock:
        sock.bind(address)


CALLS = {
    "socket.create_connection": lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
    "socket.connect": lambda: _connect(("127.0.0.1", 9)),
    "socket.connect_ex": lambda: _connect_ex(("::1", 9)),
    "socket.bind": lambda: _bind(("127.0.0.1", 0)),
    "sqlalchemy.create_engine": lambda: sqlalchemy.create_engine("sqlite://"),
    "sqlite3.connect": lambda: sqlite3.connect(":memory:"),
    "psycopg.connect": lambda: psycopg.connect("postgresql://127.0.0.1:1/none", connect_timeout=1),
    "ray.init": lambda: ray.init(num_cpus=1),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_guard_refuses_the_call_and_names_the_test(call, io_guard, request):
    with pytest.raises(UnitTestIOError) as refused:
        CALLS[call]()
    assert str(refused.value).startswith(f"{request.node.nodeid} called {call}(")
    assert "move this test to tests/integration" in str(refused.value)
    assert [a.split("(")[0] for a in io_guard.take()] == [call]  # taken, so this test itself passes


def test_guard_refuses_a_database_opened_through_our_storage_code(io_guard):
    with pytest.raises(UnitTestIOError, match=r"sqlalchemy\.create_engine\('sqlite:///x\.db'"):
        db.make_engine("sqlite:///x.db")
    assert len(io_guard.take()) == 1


def test_swallowed_call_still_fails_the_test_and_the_guard_ends_with_tests_unit(tmp_path):
    # A unit test that hides the refusal fails anyway; a test outside tests/unit is not guarded.
    unit = tmp_path / "unit"
    unit.mkdir()
    (unit / "conftest.py").write_text((UNIT / "conftest.py").read_text())
    (unit / "test_hides.py").write_text(
        textwrap.dedent("""
            import sqlite3

            def test_hides_the_refusal():
                try:
                    sqlite3.connect(":memory:")
                except BaseException:
                    pass
        """)
    )
    (tmp_path / "test_outside.py").write_text(
        "import sqlite3\n\ndef test_z_outside_may_use_sqlite():\n    sqlite3.connect(':memory:').close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(UNIT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "unit", "test_outside.py"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "unit/test_hides.py::test_hides_the_refusal called sqlite3.connect(':memory:')" in out, out
    assert "ERROR unit/test_hides.py::test_hides_the_refusal" in out, out
    assert "PASSED test_outside.py::test_z_outside_may_use_sqlite" in out, out


class _FakeRay:
    """Stands in for the ray module: only whether it is initialized matters to the guard."""

    def __init__(self, running: bool) -> None:
        self.running = running
        self.shutdowns = 0

    def is_initialized(self) -> bool:
        return self.running

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.running = False


def test_ray_left_running_by_an_earlier_integration_fixture_is_not_blamed_on_a_unit_test(monkeypatch):
    # `make test` runs tests/integration before tests/unit in one session: its session Ray is up
    from io_guard import IOGuard

    fake = _FakeRay(running=True)
    monkeypatch.setitem(sys.modules, "ray", fake)
    guard = IOGuard()
    guard.begin("tests/unit/test_x.py::test_pure")
    guard.check()  # passes: Ray was already running when the test began
    assert fake.shutdowns == 0 and fake.running


def test_ray_started_during_a_unit_test_fails_it_even_when_the_call_was_not_seen(monkeypatch):
    from io_guard import IOGuard

    fake = _FakeRay(running=False)
    monkeypatch.setitem(sys.modules, "ray", fake)
    guard = IOGuard()
    guard.begin("tests/unit/test_x.py::test_starts_ray")
    fake.running = True  # e.g. started through an entry point the guard did not patch
    with pytest.raises(pytest.fail.Exception, match="test_starts_ray called ray.init"):
        guard.check()
    assert fake.shutdowns == 1 and not fake.running
