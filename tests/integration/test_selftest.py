"""`raytrade selftest` against real services: green when all is well, red naming what is not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

RAYTRADE = [sys.executable, "-m", "raytrade.cli"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAYTRADE_") or k.startswith("RAYTRADE_TEST_")
    }
    env.update({"RAYTRADE_DATA_DIR": str(tmp_path / "data"), "RAYTRADE_UNIVERSE": "BTCUSDT,ETHUSDT"}, **extra)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAYTRADE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_selftest_passes_on_postgresql_and_redis_after_db_upgrade(tmp_path, fresh_pg_url, redis_url):
    env = _env(
        tmp_path, RAYTRADE_DB_URL=fresh_pg_url, RAYTRADE_REDIS_URL=redis_url, RAYTRADE_RAY_NUM_CPUS="1"
    )
    up = _run(["db", "upgrade"], env, tmp_path)
    assert up.returncode == 0, up.stderr
    proc = _run(["selftest"], env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for component in ("configuration", "database", "bus", "mlflow", "ray", "lake"):
        assert component in proc.stdout
    assert "FAILED" not in proc.stdout
    assert "Redis Streams" in proc.stdout


def test_selftest_fails_naming_the_database_when_not_migrated(tmp_path):
    proc = _run(
        ["selftest", "--only", "configuration", "--only", "database", "--only", "bus"],
        _env(tmp_path),
        tmp_path,
    )
    assert proc.returncode == 1
    assert "raytrade db upgrade" in proc.stdout
    assert "selftest failed: database" in proc.stderr


def test_selftest_fails_naming_an_unreachable_redis(tmp_path):
    env = _env(tmp_path, RAYTRADE_REDIS_URL="redis://127.0.0.1:1/0")
    _run(["db", "upgrade"], env, tmp_path)
    proc = _run(["selftest", "--only", "database", "--only", "bus"], env, tmp_path)
    assert proc.returncode == 1
    assert "selftest failed: bus" in proc.stderr


def test_bad_configuration_exits_2_naming_the_key(tmp_path):
    proc = _run(["selftest"], _env(tmp_path, RAYTRADE_RISK__MAX_USED_MARGIN_PCT="7"), tmp_path)
    assert proc.returncode == 2
    assert "RAYTRADE_RISK__MAX_USED_MARGIN_PCT" in proc.stderr


def test_an_unreachable_mlflow_server_times_out_without_showing_its_password(tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing answers there
    env = _env(tmp_path, RAYTRADE_MLFLOW_TRACKING_URI=f"http://ml:PLANTEDsecret9@127.0.0.1:{port}/")
    t0 = time.monotonic()
    proc = _run(["selftest", "--only", "mlflow", "--timeout-s", "3"], env, tmp_path)
    assert time.monotonic() - t0 < 60  # MLflow alone would retry for about four minutes
    assert proc.returncode == 1
    assert "TimeoutError: timed out after 3 s without an answer" in " ".join(proc.stdout.split())
    assert "selftest failed: mlflow" in proc.stderr
    assert "PLANTEDsecret9" not in proc.stdout + proc.stderr


def test_all_nodes_reports_an_unreachable_database_per_node_without_its_password(tmp_path, ray_session):
    """--all-nodes on the session's local Ray (one node): the database check fails on that node, named
    with its id and IP and the failure text; the password is masked; the command exits 1."""
    import ray
    from typer.testing import CliRunner

    from raytrade.cli import app
    from raytrade.selftest import run_node_selftest
    from raytrade.settings import Settings

    bad = "postgresql://trader:PLANTEDsecret7@127.0.0.1:1/raytrade"
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", db_url=bad)
    rows = run_node_selftest(settings, ("database", "lake"), timeout_s=20)
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert {(r.node, r.ip) for r in rows} == {(n["NodeID"][:8], n["NodeManagerAddress"]) for n in alive}
    by_check = {r.component: r for r in rows}
    assert by_check["lake"].ok and str(settings.lake_root) in by_check["lake"].detail
    failed = by_check["database"]
    assert not failed.ok and "OperationalError" in failed.detail and "port 1 failed" in failed.detail
    assert "PLANTEDsecret7" not in failed.detail

    env = {k: "" for k in os.environ if k.startswith("RAYTRADE_") and not k.startswith("RAYTRADE_TEST_")}
    env.update({"RAYTRADE_DATA_DIR": str(tmp_path / "data"), "RAYTRADE_DB_URL": bad})
    out = CliRunner().invoke(
        app, ["selftest", "--all-nodes", "--only", "database", "--timeout-s", "20"], env=env
    )
    assert out.exit_code == 1, out.output
    text = " ".join(out.output.split())
    assert f"database@{alive[0]['NodeID'][:8]}" in text and "on every node (1 alive)" in text
    assert "PLANTEDsecret7" not in out.output
    assert ray.is_initialized()  # the session's Ray, not shut down by the command
