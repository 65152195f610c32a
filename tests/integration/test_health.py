"""The health checker (actors.health): stale streams and a breaker trip recorded and obeyed by the paper
book; the Ray actor on real Redis and a real SQLite database. Real services, no mocks."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from actors.execution import ExecutionBook, ExecutionConfig
from actors.health import HealthChecker, HealthConfig, start_health_actor
from core.anomaly import AnomalyConfig
from core.config import RiskConfig
from core.messages import BookTicker, EntryIntent, SystemStatus, Topic
from core.sim import SimConfig
from core.time import MINUTE_MS
from storage import trading_control
from storage.bus import open_bus
from storage.instruments import sync_universe
from storage.schema import candles_1m, events

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
FAST = HealthConfig(interval_s=0.2, stale_stream_ms=120_000, check_serve=False, check_mlflow=False,
                    anomaly=AnomalyConfig(jump_bps=300, cooldown_ms=0))  # fmt: skip


def candle(symbol: str, ts: int, close: float) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "ts": ts,
        "open": close,
        "high": close,
        "low": close,
        "close": close,
        "volume": 1.0,
    }


def kinds(engine: sa.Engine) -> list[str]:
    with engine.connect() as c:
        return list(c.execute(sa.select(events.c.kind).order_by(events.c.id)).scalars())


class Wall:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_stale_stream_changes_status_writes_one_event_and_publishes(
    engine: sa.Engine, db_url: str, redis_url: str
) -> None:
    sync_universe(engine, SYMBOLS)
    now = 1_717_200_000_000
    with engine.begin() as c:
        c.execute(candles_1m.insert(), [candle(s, now - 2 * MINUTE_MS, 100.0) for s in SYMBOLS])
    wall = Wall(now)
    bus = open_bus(redis_url)
    bus.subscribe(Topic.SYSTEM_STATUS, "t-health", "c", start="latest")
    hc = HealthChecker(FAST, db_url, redis_url=redis_url, universe=SYMBOLS, wall_ms=wall)
    try:
        st = hc.check()
        assert st["streams"]["ok"] is True and st["database"]["ok"] is True and st["bus"]["ok"] is True
        assert st["clock"]["ok"] is None and "unknown" in st["clock"]["detail"]
        assert not [k for k in kinds(engine) if k.startswith("health.")]
        wall.ms = now + 5 * MINUTE_MS  # no new candle: stale
        st = hc.check()
        assert st["streams"]["ok"] is False and st["streams"]["stale"] == list(SYMBOLS)
        hc.check()
        assert kinds(engine).count("health.streams") == 1  # one event per change
        with engine.begin() as c:
            c.execute(candles_1m.insert(), [candle(s, now + 4 * MINUTE_MS, 100.0) for s in SYMBOLS])
        assert hc.check()["streams"]["ok"] is True and kinds(engine).count("health.streams") == 2
        got = [d.message for d in bus.read(Topic.SYSTEM_STATUS, "t-health", "c", count=100, block_ms=100)]
        assert all(isinstance(m, SystemStatus) for m in got)
        streams = [m.ok for m in got if m.component == "streams"]
        assert streams == [True, False, False, True]
        assert [n.kind for n in hc.sent].count("health") == 2
    finally:
        hc.close()
        bus.close()


def intent(ts: int) -> EntryIntent:
    p = 60_000.0
    return EntryIntent(
        symbol="BTCUSDT", decision_ts=ts, side=1, size_fraction=0.1, leverage=5, sl_price=p * 0.95, tp_price=p * 1.075,
        decision_price=p, atr=p / 100, quote_volume=5e6, bid=p - 0.1, ask=p + 0.1, book_ts=ts + MINUTE_MS + 50, mark=p,
    )  # fmt: skip


def test_price_jump_trips_the_breaker_and_the_paper_book_refuses_entries_until_reset(
    engine: sa.Engine, db_url: str
) -> None:
    sync_universe(engine, SYMBOLS)
    t0 = 1_717_200_000_000
    clock = [1000.0]
    book = ExecutionBook(ExecutionConfig(session_id="h1", symbols=SYMBOLS, database_url=db_url,
                                         sim=SimConfig(fee_rate=0.0004, default_leverage=5), risk=RiskConfig()),
                         monotonic=lambda: clock[0])  # fmt: skip
    wall = Wall(t0 + 3 * MINUTE_MS)
    hc = HealthChecker(FAST, db_url, universe=SYMBOLS, wall_ms=wall)
    try:
        with engine.begin() as c:
            c.execute(
                candles_1m.insert(),
                [candle("BTCUSDT", t0, 60_000.0), candle("BTCUSDT", t0 + MINUTE_MS, 60_100.0)],
            )
        hc.check()
        assert not hc.monitor.tripped and trading_control.latest_state(engine).state == "running"
        with engine.begin() as c:  # +5 % in a minute
            c.execute(candles_1m.insert(), [candle("BTCUSDT", t0 + 2 * MINUTE_MS, 63_105.0)])
        hc.check()
        state = trading_control.latest_state(engine)
        assert state.state == "entries_stopped" and state.source == "circuit_breaker"
        assert kinds(engine).count("circuit_breaker.trip") == 1
        hc.check()
        assert kinds(engine).count("circuit_breaker.trip") == 1  # one per onset
        clock[0] += 1.1
        (res,) = book.submit([intent(t0 + 3 * MINUTE_MS)])
        assert not res.filled and res.reasons == ("ENTRIES_STOPPED",)
        wall.ms = t0 + 6 * MINUTE_MS  # the jump's window has passed; cool-down 0
        hc.check()
        assert (
            kinds(engine).count("circuit_breaker.reset") == 1
            and trading_control.latest_state(engine).state == "running"
        )
        clock[0] += 1.1
        assert book.submit([intent(t0 + 4 * MINUTE_MS)])[0].filled
        assert [n.kind for n in hc.sent].count("circuit_breaker") == 2
    finally:
        hc.close()
        book.close()


def test_a_blown_out_spread_on_the_bus_trips_the_breaker_and_a_normal_one_resets_it(
    engine: sa.Engine, db_url: str, redis_url: str
) -> None:
    """The deciders' market.book_ticker messages (``actors.decide.book_tickers``) feed the spread check
    through the checker's own consumer group."""
    sync_universe(engine, SYMBOLS)
    t0 = 1_717_200_000_000
    bus = open_bus(redis_url)
    cfg = FAST.model_copy(
        update={"book_ticker_group": f"health-{uuid.uuid4().hex[:8]}"}
    )  # the session's Redis
    hc = HealthChecker(cfg, db_url, redis_url=redis_url, universe=SYMBOLS, wall_ms=Wall(t0))
    try:
        bus.publish(Topic.MARKET_BOOK_TICKER, quote(t0, 1990.0, 2010.0))  # 100 bps > 50 bps

        hc.check()
        state = trading_control.latest_state(engine)
        assert state.state == "entries_stopped" and state.source == "circuit_breaker"
        with engine.connect() as c:
            trip = c.execute(sa.select(events).where(events.c.kind == "circuit_breaker.trip")).one()
        assert trip.payload["trigger"] == "spread" and trip.symbol == "ETHUSDT"
        hc.check()  # nothing new on the bus: still tripped, no second event
        assert hc.monitor.tripped and kinds(engine).count("circuit_breaker.trip") == 1
        bus.publish(Topic.MARKET_BOOK_TICKER, quote(t0 + 1000, 1999.9, 2000.1))
        hc.check()
        assert kinds(engine).count("circuit_breaker.reset") == 1
        assert trading_control.latest_state(engine).state == "running" and not hc.monitor.tripped
    finally:
        hc.close()
        bus.close()


def quote(ts: int, bid: float, ask: float) -> BookTicker:
    return BookTicker(symbol="ETHUSDT", ts_ms=ts, bid_price=bid, bid_qty=0.0, ask_price=ask, ask_qty=0.0)


def test_health_actor_runs_in_the_background_and_sees_a_stale_stream(engine: sa.Engine, db_url: str, redis_url: str,
                                                                    ray_session: None) -> None:  # fmt: skip
    import ray

    sync_universe(engine, SYMBOLS)
    fresh = (int(time.time() * 1000) // MINUTE_MS - 1) * MINUTE_MS
    with engine.begin() as c:
        c.execute(candles_1m.insert(), [candle(s, fresh, 100.0) for s in SYMBOLS])
    cfg = FAST.model_copy(update={"stale_stream_ms": 1})  # goes stale a moment after the candle's close
    actor = start_health_actor(
        name="health-test", config=cfg, database_url=db_url, redis_url=redis_url, universe=SYMBOLS
    )
    try:
        deadline = time.monotonic() + 60
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = ray.get(actor.status.remote())
            if st["checks"] >= 3 and any(k == "health.streams" for k in kinds(engine)):
                break
            time.sleep(0.2)
        assert st["checks"] >= 3 and st["components"]["database"]["ok"] is True
        assert st["components"]["bus"]["ok"] is True and st["components"]["streams"]["ok"] is False
        assert "health.streams" in kinds(engine)
    finally:
        ray.get(actor.stop.remote())
        ray.kill(actor)
