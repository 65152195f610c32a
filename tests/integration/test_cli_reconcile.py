"""``raytrade reconcile [--dry-run] [--symbols]`` against the replay venue on loopback and an SQLite ledger:
what it prints and its exit codes (0 consistent, 2 corrected, 1 error). Settings come from the
environment as an operator sets them (RAYTRADE_FAPI_URL and the replay venue's keys)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner
from venue_fixtures import BTC, MARK, WallClockVenue, running_venue, signed_client
from venue_fixtures import exchange_info as exchange_info

from raytrade import cmd_reconcile
from raytrade.settings import load_settings
from storage import db

KEY = "cli-reconcile-key"
SECRET = "cli-reconcile-secret-93a7"


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[WallClockVenue]:
    with running_venue(exchange_info, tmp_path / "lake", key=KEY, secret=SECRET) as venue:
        yield venue


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, venue: WallClockVenue):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAYTRADE_FAPI_URL", venue.url)
    monkeypatch.setenv("RAYTRADE_VENUE_API_KEY", KEY)
    monkeypatch.setenv("RAYTRADE_VENUE_API_SECRET", SECRET)
    app = typer.Typer()
    cmd_reconcile.register(app)
    app.command("noop")(lambda: None)  # a group, so that the command is invoked by its name
    runner = CliRunner()

    def run(*args: str, code: int) -> str:
        result = runner.invoke(app, ["reconcile", *args])
        assert result.exit_code == code, (result.output, result.exception)
        assert "Traceback" not in result.output and SECRET not in result.output
        return result.output

    return run


def _upgrade() -> sa.Engine:
    engine = db.make_engine(load_settings().database_url)
    db.upgrade(engine)
    return engine


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("orders", "fills", "algo_orders", "events", "engine_signals", "sync_cursors")
        }


def test_reconcile_prints_findings_and_exits_2_then_0_and_dry_run_changes_nothing(
    cli, venue: WallClockVenue
) -> None:
    engine = _upgrade()
    venue.wall.shift_ms = -10_000  # the position is older than the 5 s the execution actor has to protect it
    with signed_client(
        venue.url, KEY, SECRET, sync_clock=False, timeout_s=2.0, wall_clock_ms=venue.wall
    ) as earlier:
        earlier.start()
        earlier.place_entry(BTC, "BUY", D("0.003"), "cli-entry", mark_price=MARK)
    venue.wall.shift_ms = 0

    out = cli("--dry-run", code=2)
    assert "dry run" in out and "adopt_position" in out and "insert_fill" in out
    assert "would do:" in out and "flatten" in out and "result: would correct" in out
    assert _counts(engine) == dict.fromkeys(_counts(engine), 0)
    assert venue.broker.positions[BTC].amount == D("0.003") and len(venue.broker.orders) == 1

    out = cli("--symbols", "BTCUSDT", code=2)
    assert "adopt_position" in out and "did:" in out and "flatten" in out and "done" in out
    assert "result: corrected" in out
    assert venue.broker.positions[BTC].amount == 0
    counts = _counts(engine)
    assert counts["fills"] == 2 and counts["events"] > 0

    out = cli(code=0)
    assert "found: nothing" in out and "result: consistent" in out
    engine.dispose()


def test_reconcile_exits_1_naming_the_problem(
    cli, venue: WallClockVenue, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = cli(code=1)  # no database schema yet
    assert "raytrade db upgrade" in out
    _upgrade().dispose()
    assert "--symbols" in cli("--symbols", "NOT A SYMBOL", code=1)
    assert "naked-with-levels" in cli("--naked-with-levels", "pray", code=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("RAYTRADE_FAPI_URL", f"http://127.0.0.1:{closed}")
    out = cli(code=1)
    assert f"127.0.0.1:{closed}" in out
    monkeypatch.delenv("RAYTRADE_VENUE_API_KEY")
    assert "RAYTRADE_BINANCE_API_KEY" in cli(code=1)
