"""Throw-away PostgreSQL and Redis servers on loopback, in temporary directories.

Used by the tests, the benchmarks and ``.ci/run`` (through ``python -m raytrade.devservices``) so
that every path that needs a real server starts it the same way. Nothing here is for production.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
PG_SYSTEM_USER = "postgres"


class ServiceError(RuntimeError):
    """A development server could not be started; the message says what is missing."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_pg_bin() -> Path:
    """Return the directory holding initdb and pg_ctl, or raise naming what to install."""
    for cand in (os.environ.get("RAYTRADE_TEST_PG_BIN"), *PG_BIN_CANDIDATES):
        if cand and (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise ServiceError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in "
        + ", ".join(PG_BIN_CANDIDATES)
        + " or PATH: install them (apt-get install postgresql) or set RAYTRADE_TEST_PG_URL"
    )


def _as_pg_user() -> tuple[list[str], str | None]:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` system user then."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True)
    return ["runuser", "-u", PG_SYSTEM_USER, "--"], PG_SYSTEM_USER


@dataclass
class TempPostgres:
    """A PostgreSQL server in a temporary directory. ``durable=False`` turns fsync off (tests only)."""

    durable: bool = True
    port: int = field(default_factory=free_port)
    user: str = "raytrade"
    database: str = "raytrade"
    root: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> TempPostgres:
        bindir = find_pg_bin()
        prefix, owner = _as_pg_user()
        self.root = Path(tempfile.mkdtemp(prefix="raytrade-pg-"))
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        if owner:
            shutil.chown(self.root, owner)
            shutil.chown(sock, owner)
        self.root.chmod(0o755)
        self._run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        )
        self._pg_ctl_start()
        self._run(
            [
                *prefix,
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                self.database,
            ]
        )
        return self

    def _pg_ctl_start(self) -> None:
        assert self.root is not None
        prefix, _ = _as_pg_user()
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root / 'sock'} -c max_connections=100"
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        pg_ctl = str(find_pg_bin() / "pg_ctl")
        log = str(self.root / "pg.log")
        self._run(
            [*prefix, pg_ctl, "-D", str(self.root / "data"), "-o", opts, "-l", log, "-w", "-t", "60", "start"]
        )

    def halt(self) -> None:
        """Stop the server but keep its data (an outage); ``resume`` starts it again on the same port."""
        assert self.root is not None, "not started"
        prefix, _ = _as_pg_user()
        self._run(
            [
                *prefix,
                str(find_pg_bin() / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            ]
        )

    def resume(self) -> None:
        """Start a halted server again, with its data."""
        self._pg_ctl_start()

    def stop(self) -> None:
        if self.root is None:
            return
        bindir = find_pg_bin()
        prefix, _ = _as_pg_user()
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def _run(self, cmd: list[str]) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
        if proc.returncode != 0:
            log = ""
            if self.root and (self.root / "pg.log").exists():
                log = (self.root / "pg.log").read_text()[-2000:]
            raise ServiceError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()} {log}")

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class TempRedis:
    """A Redis server on loopback with persistence off, in a temporary directory."""

    port: int = field(default_factory=free_port)
    root: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> TempRedis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise ServiceError(
                "redis-server not found on PATH: apt-get install redis-server, or set RAYTRADE_TEST_REDIS_URL"
            )
        self.root = Path(tempfile.mkdtemp(prefix="raytrade-redis-"))
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--daemonize",
                "no",
                "--logfile",
                str(self.root / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise ServiceError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> TempRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def postgres_url(env_var: str = "RAYTRADE_TEST_PG_URL", durable: bool = False) -> Iterator[str]:
    """Yield the PostgreSQL URL in ``env_var`` or, when unset, of a temporary server started here."""
    url = os.environ.get(env_var)
    if url:
        yield url
        return
    with TempPostgres(durable=durable) as pg:
        yield pg.url


@contextlib.contextmanager
def redis_url(env_var: str = "RAYTRADE_TEST_REDIS_URL") -> Iterator[str]:
    """Yield the Redis URL in ``env_var`` or, when unset, of a temporary server started here."""
    url = os.environ.get(env_var)
    if url:
        yield url
        return
    with TempRedis() as r:
        yield r.url


def main(argv: list[str] | None = None) -> int:
    """``python -m raytrade.devservices up`` starts both servers, prints ``export`` lines, waits for SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--env-file", required=True, help="file to write the export lines to")
    args = parser.parse_args(argv)
    pg, rd = TempPostgres(durable=False), TempRedis()
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        pg.start()
        rd.start()
        Path(args.env_file).write_text(
            f"export RAYTRADE_TEST_PG_URL='{pg.url}'\nexport RAYTRADE_TEST_REDIS_URL='{rd.url}'\n"
        )
        print(f"postgres {pg.url}\nredis {rd.url}", flush=True)
        while not stop:
            time.sleep(0.2)
    finally:
        rd.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
