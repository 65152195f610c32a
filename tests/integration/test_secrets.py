"""Secrets are never printed (issue 14 §4): planted passwords and keys appear in no output and no log.

Every command's ``--help`` and every command that runs quickly is run with a password in the
database, Redis and MLflow URLs and with Binance and replay-venue API keys; their stdout, stderr
and every file they wrote (data folder, reports, Ray's session logs) are searched for the planted
strings. Services are real (PostgreSQL, Redis, local Ray); the MLflow server and the Redis
password are deliberately wrong, so the failure paths are searched too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

RAYTRADE = [sys.executable, "-m", "raytrade.cli"]
SECRETS = {
    "db": "PLANTEDdbpw71",
    "redis": "PLANTEDredispw72",
    "mlflow": "PLANTEDmlflowpw73",
    "venue_key": "PLANTEDvenuekey74",
    "venue_secret": "PLANTEDvenuesecret75",
    "binance_key": "PLANTEDbinancekey76",
    "binance_secret": "PLANTEDbinancesecret77",
}
START_MS = 1_736_121_600_000  # 2025-01-06 00:00 UTC


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user or 'user'}:{password}@{host}"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def planted(tmp_path: Path, fresh_pg_url: str, redis_url: str) -> Iterator[tuple[dict[str, str], list[Path]]]:
    """An environment full of planted secrets, and the folders whose files must not contain them."""
    from core.synthetic import generate_market
    from pipelines.market import write_synthetic_market
    from storage.lake import Lake

    ray_tmp = Path(tempfile.mkdtemp(prefix="rts", dir="/tmp"))  # short: Ray's socket paths are bounded
    write_synthetic_market(
        generate_market(["BTCUSDT"], START_MS, 1440, seed=3), Lake(tmp_path / "data" / "lake")
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAYTRADE_") or k.startswith("RAYTRADE_TEST_")
    }
    env.update(
        RAYTRADE_DATA_DIR=str(tmp_path / "data"),
        RAYTRADE_UNIVERSE="BTCUSDT,ETHUSDT",
        RAYTRADE_DB_URL=_with_password(fresh_pg_url, SECRETS["db"]),  # the test server trusts local users
        RAYTRADE_REDIS_URL=_with_password(redis_url, SECRETS["redis"]).replace("user:", ":"),
        RAYTRADE_MLFLOW_TRACKING_URI=f"http://mlflow:{SECRETS['mlflow']}@127.0.0.1:{_closed_port()}/",
        RAYTRADE_VENUE_API_KEY=SECRETS["venue_key"],
        RAYTRADE_VENUE_API_SECRET=SECRETS["venue_secret"],
        RAYTRADE_BINANCE_API_KEY=SECRETS["binance_key"],
        RAYTRADE_BINANCE_API_SECRET=SECRETS["binance_secret"],
        RAYTRADE_RAY_NUM_CPUS="1",
        RAY_TMPDIR=str(ray_tmp),
        COLUMNS="300",
    )
    yield env, [tmp_path, ray_tmp]
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [name for name, secret in SECRETS.items() if secret.encode() in data]


def _run(
    args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RAYTRADE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s
    )


def _commands() -> list[list[str]]:
    import typer

    from raytrade import cli

    cli._register_commands()
    group = typer.main.get_command(cli.app)
    ctx = group.make_context("raytrade", ["--help"], resilient_parsing=True)

    def walk(command, path: list[str]) -> Iterator[list[str]]:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                yield from walk(command.get_command(ctx, name), [*path, name])
        else:
            yield path

    return list(walk(group, []))


def test_no_command_help_shows_a_secret_and_the_venue_takes_no_secret_on_the_command_line(planted):
    from typer.testing import CliRunner

    from raytrade import cli

    env, _folders = planted
    commands = _commands()
    assert {"venue", "worker", "selftest"} <= {c[0] for c in commands} and ["config", "show"] in commands
    runner = CliRunner()
    for path in [[], *commands]:
        result = runner.invoke(cli.app, [*path, "--help"], env=env)
        assert result.exit_code == 0, (path, result.output)
        assert _leaks(result.output) == [], path
    venue_help = runner.invoke(cli.app, ["venue", "--help"], env=env).output
    assert "--api-key" not in venue_help and "--api-secret" not in venue_help
    assert "RAYTRADE_VENUE_API_KEY" in " ".join(venue_help.split())


@pytest.mark.slow
def test_no_command_output_or_log_shows_a_planted_secret(planted, tmp_path):
    env, folders = planted
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(name: str, args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
        outputs[name] = _run(args, {**env, **extra}, tmp_path)
        return outputs[name]

    shown = run("config show", ["config", "show"])
    assert shown.returncode == 0, shown.stderr
    settings = json.loads(shown.stdout)
    assert settings["mlflow_tracking_uri"].startswith("http://mlflow:***@127.0.0.1:")
    assert settings["venue_api_secret"] == settings["binance_api_key"] == "**********"
    assert run("db upgrade", ["db", "upgrade"]).returncode == 0, outputs["db upgrade"].stderr
    assert run("db current", ["db", "current"]).returncode == 0
    config = json.dumps({"symbols": ["BTCUSDT"], "start": "2025-01-06", "end": "2025-01-06T12:00"})
    assert run("jobs enqueue", ["jobs", "enqueue", "backtest", "--config", config]).returncode == 0
    run("worker", ["worker", "--once"])  # the Redis password is wrong: the bus fails, and says so
    assert run("jobs list", ["jobs", "list"]).returncode == 0

    t0 = time.monotonic()
    selftest = run("selftest", ["selftest", "--timeout-s", "5"])
    assert selftest.returncode == 1
    assert time.monotonic() - t0 < 200  # every check bounded (the MLflow server never answers)
    rows = " ".join(selftest.stdout.split())
    assert "timed out after 5 s" in rows and "selftest failed: bus, mlflow" in " ".join(
        selftest.stderr.split()
    )

    venue = run(
        "venue",
        ["venue", "--speed", "6000x", "--port", "0", "--ticks", "1", "--end", str(START_MS + 10 * 60_000)],
    )
    assert venue.returncode == 0, venue.stderr
    assert "no paper broker" not in venue.stderr  # the broker took its keys from the settings
    one_key = run("venue, one key", ["venue", "--port", "0"], RAYTRADE_VENUE_API_SECRET="")
    assert one_key.returncode == 2 and "set both RAYTRADE_VENUE_API_KEY" in one_key.stderr

    bad_db = run("bad db url", ["db", "current"], RAYTRADE_DB_URL=f"postgresql://u:{SECRETS['db']}@h:x/d")
    bad_redis = run(
        "bad redis url", ["jobs", "list"], RAYTRADE_REDIS_URL=f"{SECRETS['redis']}@127.0.0.1:6379"
    )
    assert bad_db.returncode == bad_redis.returncode == 2

    for name, proc in outputs.items():
        assert _leaks(proc.stdout + proc.stderr) == [], (name, proc.stdout + proc.stderr)
    logs = [p for folder in folders for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.suffix in (".log", ".out", ".err") for p in logs)  # Ray's session logs were written
    assert {str(p): _leaks(p.read_bytes()) for p in logs if _leaks(p.read_bytes())} == {}
