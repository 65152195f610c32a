"""The paper book takes the operator's controls from the database within a second: the kill switch's
rows (``raytrade kill`` / ``POST /api/killswitch``), the trading state and the runtime settings; and
publishes its account on ``account.update``. A real SQLite database and the book's in-process bus."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import sqlalchemy as sa

from actors.execution import ExecutionBook, ExecutionConfig
from core.config import RiskConfig
from core.killswitch import KillSwitch, KillSwitchConfig
from core.messages import AccountUpdate, EntryIntent, MarketTick, Topic
from core.sim import SimConfig
from core.time import MINUTE_MS
from storage import db, trading_control
from storage import killswitch_store as store
from storage.instruments import sync_universe
from storage.schema import events, positions, risk_events

pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)

T0 = 1_717_200_000_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SIM = SimConfig(fee_rate=0.0004, slippage_k=0.15, impact_k=0.0, default_leverage=5)
PRICE = {"BTCUSDT": 60_000.0, "ETHUSDT": 2000.0}


class Clock:
    """The book's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.s = 1000.0

    def __call__(self) -> float:
        return self.s

    def tick(self, s: float = 1.1) -> None:
        self.s += s


@pytest.fixture
def book(db_url: str) -> Any:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    sync_universe(engine, SYMBOLS)
    engine.dispose()
    cfg = ExecutionConfig(session_id="s1", symbols=SYMBOLS, database_url=db_url, sim=SIM, risk=RiskConfig())
    clock = Clock()
    b = ExecutionBook(cfg, monotonic=clock)
    b.clock = clock
    yield b
    b.close()


def intent(symbol: str, ts: int, side: int = 1) -> EntryIntent:
    p = PRICE[symbol]
    return EntryIntent(
        symbol=symbol, decision_ts=ts, side=side, size_fraction=0.1, leverage=5, sl_price=p * 0.95, tp_price=p * 1.075,
        decision_price=p, atr=p / 100, quote_volume=5e6, bid=p - 0.1, ask=p + 0.1, book_ts=ts + MINUTE_MS + 50, mark=p,
    )  # fmt: skip


def tick(symbol: str, ts: int, mark: float | None = None) -> MarketTick:
    m = PRICE[symbol] if mark is None else mark
    return MarketTick(symbol, ts, m, m - 0.1, m + 0.1)


def kill(engine: sa.Engine, active: bool, close: bool = False) -> None:
    """What ``raytrade kill`` / ``resume`` and the API write: killswitch.* rows with the state after them."""
    stored = store.latest_state(engine)
    switch = KillSwitch(KillSwitchConfig(), None if stored is None else stored.state)
    happened = switch.operator(T0, close, "cli:test") if active else switch.resume(T0, "cli:test")
    store.record(engine, store.event_rows(happened, switch.state()))


def finals(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as c:
        q = sa.select(positions.c.symbol, positions.c.exit_reason).where(positions.c.event_type == "FINAL")
        return [tuple(r) for r in c.execute(q.order_by(positions.c.ts, positions.c.symbol))]


def risk_types(engine: sa.Engine) -> list[str]:
    with engine.connect() as c:
        return [r for (r,) in c.execute(sa.select(risk_events.c.event_type).order_by(risk_events.c.id))]


def test_kill_rows_of_the_store_block_entries_flatten_and_resume(book: Any) -> None:
    engine = book.engine
    (first,) = book.submit([intent("ETHUSDT", T0)])
    assert first.filled
    kill(engine, active=True)
    ts = T0 + MINUTE_MS + 100
    book.on_ticks([tick("ETHUSDT", ts)])  # within the second of the last read: not yet seen
    from core.sim import kernel

    assert book.sim.acct[kernel.A_KILL_SWITCH] == 0  # read at most once a second
    book.clock.tick()
    book.on_ticks([tick("ETHUSDT", ts + 1)])
    (blocked,) = book.submit([intent("BTCUSDT", T0 + 2 * MINUTE_MS)])
    assert not blocked.filled and "KILL_SWITCH" in blocked.reasons
    assert book.summary()["open_positions"] == ["ETHUSDT"]  # a kill without close keeps the position
    kill(engine, active=True, close=True)
    book.clock.tick()
    assert book.on_ticks([tick("ETHUSDT", ts + 2)]) == 1
    assert book.summary()["open_positions"] == [] and finals(engine)[-1] == ("ETHUSDT", "KILL")
    kill(engine, active=False)
    book.clock.tick()
    book.on_bars([])
    book.clock.tick()
    (again,) = book.submit([intent("ETHUSDT", T0 + 3 * MINUTE_MS)])
    assert again.filled, again.reasons


def test_a_kill_recorded_before_the_book_started_holds(book: Any, db_url: str) -> None:
    kill(book.engine, active=True)
    cfg = book.cfg.model_copy(update={"session_id": "s2"})
    other = ExecutionBook(cfg, monotonic=book.clock)
    try:
        (res,) = other.submit([intent("ETHUSDT", T0)])
        assert not res.filled and res.reasons == ("KILL_SWITCH",)
    finally:
        other.close()


def test_trading_state_stops_entries_keeps_exits_and_stop_flattens_once(book: Any) -> None:
    engine = book.engine
    assert book.submit([intent("ETHUSDT", T0)])[0].filled
    trading_control.record_state(engine, "entries_stopped", T0, "api", "news")
    book.clock.tick()
    (res,) = book.submit([intent("BTCUSDT", T0 + MINUTE_MS)])
    assert not res.filled and res.reasons == ("ENTRIES_STOPPED",) and book.stats.blocked == 1
    # the held position is still managed: a mark through its TP closes it
    assert book.on_ticks([tick("ETHUSDT", T0 + 2 * MINUTE_MS + 100, 2160.0)]) == 1
    assert finals(engine) == [("ETHUSDT", "TP")]
    assert "entries_stopped" in risk_types(engine) and "entry_blocked" in risk_types(engine)

    trading_control.record_state(engine, "running", T0, "api", None)
    book.clock.tick()
    assert book.submit([intent("BTCUSDT", T0 + 3 * MINUTE_MS)])[0].filled
    trading_control.record_state(engine, "stopped", T0, "api", "end of day")
    book.clock.tick()
    assert book.on_ticks([tick("BTCUSDT", T0 + 4 * MINUTE_MS + 100)]) == 1
    assert finals(engine)[-1] == ("BTCUSDT", "STOP") and "trading_stopped" in risk_types(engine)
    (res,) = book.submit([intent("ETHUSDT", T0 + 4 * MINUTE_MS)])
    assert res.reasons == ("TRADING_STOPPED",)
    trading_control.record_state(engine, "running", T0, "api", None)
    book.clock.tick()
    assert book.submit([intent("ETHUSDT", T0 + 5 * MINUTE_MS)])[0].filled
    book.clock.tick()
    book.on_ticks([tick("ETHUSDT", T0 + 6 * MINUTE_MS + 100)])  # the old stop row flattens nothing again
    assert book.summary()["open_positions"] == ["ETHUSDT"]


def test_runtime_settings_tighten_max_positions_and_the_entry_delay(book: Any) -> None:
    engine = book.engine
    trading_control.record_settings(engine, {"max_positions": 1, "max_entry_delay_ms": 100}, T0, "api")
    book.clock.tick()
    assert book.submit([intent("ETHUSDT", T0)])[0].filled  # 50 ms after the close: within 100
    (res,) = book.submit([intent("BTCUSDT", T0)])
    assert not res.filled and "MAX_POSITIONS" in res.reasons
    late = intent("BTCUSDT", T0 + MINUTE_MS)
    late = dataclasses.replace(late, book_ts=late.book_ts + 200)  # 250 ms late
    trading_control.record_settings(engine, {"max_positions": None}, T0, "api")
    book.clock.tick()
    assert book.submit([late])[0].reasons == ("SIGNAL_STALE",)
    # a setting above the config does not loosen it
    trading_control.record_settings(engine, {"max_positions": 100, "max_entry_delay_ms": None}, T0, "api")
    book.clock.tick()
    book.read_controls()
    assert book.entry_delay_ms == book.cfg.max_entry_delay_ms
    from core.sim import kernel

    assert book.sim.lim[kernel.L_MAX_POSITIONS] == RiskConfig().max_positions


def test_controls_cost_one_query_a_second_and_the_account_is_published_on_change(book: Any) -> None:
    engine = book.engine
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    book.bus.subscribe(Topic.ACCOUNT_UPDATE, "t", "c", start="earliest")
    for i in range(200):  # ticks of a symbol without a position, all within one second
        book.on_ticks([tick("BTCUSDT", T0 + i)])
    reads = [s for s in statements if "FROM events" in s and "SELECT" in s]
    assert len(reads) == 1, reads
    first = book.bus.read(Topic.ACCOUNT_UPDATE, "t", "c", count=10)
    assert len(first) == 1 and isinstance(first[0].message, AccountUpdate)
    assert first[0].message.positions == 0 and first[0].message.equity == pytest.approx(
        SIM.initial_equity_usdt
    )
    assert book.submit([intent("ETHUSDT", T0)])[0].filled
    book.clock.tick()
    book.on_ticks([tick("ETHUSDT", T0 + MINUTE_MS + 500, 2010.0)])
    book.on_ticks([tick("ETHUSDT", T0 + MINUTE_MS + 600, 2011.0)])  # the same second: not again
    (second,) = book.bus.read(Topic.ACCOUNT_UPDATE, "t", "c", count=10)
    msg = second.message
    assert isinstance(msg, AccountUpdate) and msg.positions == 1 and msg.source == "execution:shadow:s1"
    assert msg.equity == pytest.approx(book.sim.equity, rel=1e-3) and msg.margin_used > 0
    assert msg.available == pytest.approx(msg.equity - msg.margin_used)
    book.clock.tick()
    book.on_bars([])  # the next second: the mark of 2011 is published
    (third,) = book.bus.read(Topic.ACCOUNT_UPDATE, "t", "c", count=10)
    assert isinstance(third.message, AccountUpdate) and third.message.equity > msg.equity
    book.clock.tick()
    book.on_bars([])  # nothing changed since: nothing published
    assert book.bus.read(Topic.ACCOUNT_UPDATE, "t", "c", count=10) == []
    with engine.connect() as c:
        rows = c.execute(
            sa.select(events.c.payload)
            .where(events.c.kind == trading_control.ACCOUNT_KIND)
            .order_by(events.c.id)
        ).all()
    assert [r.payload["positions"] for r in rows] == [0, 1, 1]
