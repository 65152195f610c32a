"""The live book takes the operator's trading state and runtime settings (``storage.trading_control``)
at most a second after they were written: against the replay venue's paper broker on loopback, with a
real database."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from venue_fixtures import BTC, MARK, WallClockVenue, running_venue
from venue_fixtures import exchange_info as exchange_info

from actors.live_book import LiveBook, LiveConfig
from core.messages import EntryIntent
from exchange.binance.signed import TradingConfig
from storage import trading_control
from storage.schema import risk_events

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

KEY = "live-controls-test-key"
SECRET = "live-controls-test-secret-5e2f"
MINUTE = 60_000


class Venue(WallClockVenue):
    def position(self) -> Decimal:
        return Decimal(self.broker.positions[BTC].amount) if BTC in self.broker.positions else Decimal(0)

    def open_algos(self) -> list[Any]:
        return [a for a in self.broker.algos.values() if a.status == "NEW"]


class Monotonic:
    def __init__(self) -> None:
        self.s = 0.0

    def __call__(self) -> float:
        return self.s


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[Venue]:
    with running_venue(exchange_info, tmp_path / "lake", key=KEY, secret=SECRET, cls=Venue) as venue:
        yield venue


@pytest.fixture
def book(venue: Venue, engine: sa.Engine, tmp_path: Path) -> Iterator[tuple[LiveBook, Monotonic]]:
    trading = TradingConfig(base_url=venue.url, api_key=SecretStr(KEY), api_secret=SecretStr(SECRET),
                            recv_window_ms=1_000, timeout_s=0.5, backoff_s=0.0, sync_clock=False)  # fmt: skip
    cfg = LiveConfig(session_id="live-controls", symbols=(BTC,), database_url=engine.url.render_as_string(False),
                     trading=trading)  # fmt: skip
    clock = Monotonic()
    live = LiveBook(cfg, monotonic=clock)
    yield live, clock
    live.close()


def intent(venue: Venue, delay_ms: int = 0) -> EntryIntent:
    now = venue.wall()
    decision = now - now % MINUTE - MINUTE - delay_ms
    return EntryIntent(
        BTC, decision, 1, 0.02, 3, 59_400.0, 60_600.0, MARK, 50.0, 1e9, 60_000.0, 60_000.1, now, mark=MARK
    )


def test_stop_entries_keeps_the_position_stop_flattens_it_and_start_resumes(
    book: tuple[LiveBook, Monotonic], venue: Venue, engine: sa.Engine
) -> None:
    live, clock = book
    assert live.submit([intent(venue)])[0]["filled"]
    trading_control.record_state(engine, "entries_stopped", venue.wall(), "api", "drill")
    clock.s += 1.5
    live.on_ticks([])
    (blocked,) = live.submit([intent(venue)])
    assert (
        blocked["reasons"] == ("ENTRIES_STOPPED",) and venue.position() > 0 and len(venue.open_algos()) == 2
    )
    trading_control.record_state(engine, "stopped", venue.wall(), "api", "drill")
    clock.s += 1.5
    live.on_ticks([])
    assert venue.position() == 0 and venue.open_algos() == [] and live.entries == {}
    assert live.submit([intent(venue)])[0]["reasons"] == ("TRADING_STOPPED",)
    with engine.connect() as c:
        kinds = [r for (r,) in c.execute(sa.select(risk_events.c.event_type))]
    assert {"entries_stopped", "trading_stopped", "flatten"} <= set(kinds)
    trading_control.record_state(engine, "running", venue.wall(), "api", None)
    clock.s += 1.5
    live.on_ticks([])
    # entries go to the venue again (this one repeats the first's decision bar, so the venue answers
    # the first's client id: what matters is that the book no longer refuses it)
    resumed = live.submit([intent(venue)])[0]
    assert "reasons" not in resumed and "outcome" in resumed
    clock.s += 1.5
    live.on_ticks([])  # the stop row already ran: no second flatten
    with engine.connect() as c:
        kinds = [r for (r,) in c.execute(sa.select(risk_events.c.event_type))]
    assert kinds.count("flatten") == 1 and kinds.count("trading_started") == 1


def test_runtime_settings_tighten_the_entry_delay(
    book: tuple[LiveBook, Monotonic], venue: Venue, engine: sa.Engine
) -> None:
    live, clock = book
    trading_control.record_settings(engine, {"max_entry_delay_ms": 1}, venue.wall(), "api")
    clock.s += 1.5
    live.on_ticks([])
    assert live.entry_delay_ms == 1
    (late,) = live.submit([intent(venue, delay_ms=5_000)])
    assert late["reasons"] == ("SIGNAL_STALE",)
    trading_control.record_settings(engine, {"max_entry_delay_ms": None}, venue.wall(), "api")
    clock.s += 1.5
    live.on_ticks([])
    assert live.entry_delay_ms == live.cfg.max_entry_delay_ms
    assert live.submit([intent(venue)])[0]["filled"]
