"""``raytrade kill`` / ``raytrade resume`` on a real SQLite database and the replay venue on loopback.

The commands run through Typer's runner with the settings of a real deployment (environment): the
data folder in tmp_path, the replay venue's URL and its paper broker's key and secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from rich.console import Console
from typer.testing import CliRunner
from venue_fixtures import (
    BTC,
    MARK,
    WallClockVenue,
    running_venue,
    signed_client,
    started,
)
from venue_fixtures import exchange_info as exchange_info

from core.errors import MalformedMessage
from core.killswitch import KillSwitch
from exchange.binance.trading import BinanceTrading, client_id
from raytrade import cmd_db, cmd_kill
from raytrade.settings import load_settings
from storage import db
from storage import killswitch_store as store
from storage.schema import events

KEY = "cli-kill-test-key"
SECRET = "cli-kill-test-secret-9a4c2e"


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[WallClockVenue]:
    with running_venue(exchange_info, tmp_path / "lake", key=KEY, secret=SECRET) as venue:
        yield venue


@pytest.fixture
def trading(venue: WallClockVenue) -> Iterator[BinanceTrading]:
    yield from started(signed_client(venue.url, KEY, SECRET, sync_clock=False))


Run = Callable[..., str]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, venue: WallClockVenue) -> Run:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAYTRADE_FAPI_URL", venue.url)
    monkeypatch.setenv("RAYTRADE_VENUE_API_KEY", KEY)
    monkeypatch.setenv("RAYTRADE_VENUE_API_SECRET", SECRET)
    monkeypatch.setattr(cmd_kill, "console", Console(width=250, highlight=False))
    app = typer.Typer()
    cmd_db.register(app)
    cmd_kill.register(app)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.output, result.exception)
        assert "Traceback" not in result.output and SECRET not in result.output
        return result.output

    run("db", "upgrade")
    return run


def engine() -> sa.Engine:
    return db.make_engine(load_settings().database_url)


def kinds() -> list[str]:
    query = sa.select(events.c.kind).where(events.c.kind.like("killswitch.%")).order_by(events.c.id)
    with engine().connect() as conn:
        return list(conn.execute(query).scalars())


def kill_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "KILL"


def open_protected_long(trading: BinanceTrading) -> None:
    quantity = Decimal("0.003")
    entry = trading.place_entry(BTC, "BUY", quantity, client_id("d1"), mark_price=MARK)
    trading.place_protection(BTC, "SL", "LONG", 59_000, entry.avgPrice, client_id("d1", "sl"), quantity)
    trading.place_protection(BTC, "TP", "LONG", 61_000, entry.avgPrice, client_id("d1", "tp"), quantity)


def test_kill_with_close_positions_flattens_the_venue_and_resume_lifts_it(
    cli: Run, venue: WallClockVenue, trading: BinanceTrading, tmp_path: Path
) -> None:
    open_protected_long(trading)
    assert venue.broker.positions[BTC].amount == Decimal("0.003")

    out = cli("kill", "--close-positions", "--reason", "manual stop")

    assert venue.broker.positions[BTC].amount == 0
    assert {a.status for a in venue.broker.algos.values()} == {"CANCELED"}
    assert [o.reduce_only for o in venue.broker.orders.values()] == [False, True]  # the entry, one close
    assert kill_file(tmp_path).is_file() and "manual stop" in kill_file(tmp_path).read_text()
    assert "ACTIVE" in out and "close positions: yes" in out and "flat: no position" in out
    assert kinds() == [
        "killswitch.triggered", "killswitch.entries_blocked", "killswitch.close_requested",
        "killswitch.triggered", "killswitch.flatten",
    ]  # fmt: skip
    stored = store.latest_state(engine())
    assert stored is not None and stored.kind == "killswitch.flatten"
    assert stored.state.active and stored.state.close_positions and stored.state.reason == "operator"
    assert stored.state.detail == "manual stop" and stored.source.startswith("cli:")
    flatten = store.history(engine(), limit=1)[0]["event"]
    assert flatten["clean"] is True and any("closed BTCUSDT BOTH 0.003" in line for line in flatten["report"])

    out = cli("resume", "--reason", "checked")

    assert not kill_file(tmp_path).exists()
    assert "kill file removed" in out and "off" in out
    assert kinds()[-2:] == ["killswitch.cleared", "killswitch.resumed"]
    stored = store.latest_state(engine())
    assert stored is not None and not stored.state.active and stored.state.holding == ()


def test_kill_without_close_leaves_positions_and_a_second_kill_adds_only_the_close(
    cli: Run, venue: WallClockVenue, trading: BinanceTrading, tmp_path: Path
) -> None:
    open_protected_long(trading)
    out = cli("kill")
    assert "close positions: no" in out and kill_file(tmp_path).is_file()
    assert venue.broker.positions[BTC].amount == Decimal("0.003")
    assert kinds() == ["killswitch.triggered", "killswitch.entries_blocked", "killswitch.triggered"]

    cli("kill", "--close-positions")
    assert kinds()[3:] == ["killswitch.close_requested", "killswitch.flatten"]
    assert venue.broker.positions[BTC].amount == 0


def test_resume_is_refused_while_a_recorded_condition_holds(cli: Run, tmp_path: Path) -> None:
    cli("kill")
    stored = store.latest_state(engine())
    assert stored is not None
    running = KillSwitch(state=stored.state)  # a running system sees its user stream silent
    store.record(engine(), store.event_rows(running.user_stream_silent(2_000_000, 0), running.state()))

    out = cli("resume", code=1)

    assert "not resumed" in out and "user_stream_silent" in out
    assert kill_file(tmp_path).is_file()
    assert kinds()[-1] == "killswitch.resume_refused"
    latest = store.latest_state(engine())
    assert latest is not None and latest.state.active

    store.record(
        engine(), store.event_rows(running.user_stream_silent(2_001_000, 2_000_900), running.state())
    )
    cli("resume")
    assert not kill_file(tmp_path).exists()
    latest = store.latest_state(engine())
    assert latest is not None and not latest.state.active


def test_kill_close_positions_without_a_venue_says_so_and_exits_1(
    cli: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RAYTRADE_FAPI_URL")
    out = cli("kill", "--close-positions", code=1)
    assert "positions NOT closed here: no venue configured" in out
    assert kill_file(tmp_path).is_file() and "killswitch.close_requested" in kinds()


def test_store_refuses_rows_of_other_kinds_and_bad_states() -> None:
    sqlite = db.make_engine("sqlite://")
    with pytest.raises(ValueError, match="not a kill-switch row"):
        store.record(sqlite, [{"ts": 1, "kind": "order.sent", "source": "x", "symbol": None, "payload": {}}])
    bad = store.state_to_json(KillSwitch().state()) | {"reasons": ["moon_phase"]}
    with pytest.raises(MalformedMessage, match="moon_phase"):
        store.state_from_json(bad)
