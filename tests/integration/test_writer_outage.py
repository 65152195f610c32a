"""The writer while PostgreSQL is down: rows stay buffered, retries back off, nothing is lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from core.config import WriterConfig
from core.errors import TransientError
from raytrade.devservices import TempPostgres, free_port
from storage import schema
from storage.db import make_engine, upgrade
from storage.writer import BatchedWriter, WriterEvent

T0 = 1_735_689_600_000


def stop_server(pg: TempPostgres) -> None:
    pg.halt()


def start_server(pg: TempPostgres) -> None:
    pg.resume()


@pytest.fixture
def own_postgres() -> Iterator[TempPostgres]:
    """A PostgreSQL server of this test's own, that the test may stop and start."""
    with TempPostgres(durable=False) as pg:
        yield pg


def candle(i: int, symbol: str = "BTCUSDT") -> dict[str, Any]:
    price = 100.0 + i
    return {
        "symbol": symbol,
        "ts": T0 + i * 60_000,
        "open": price,
        "high": price,
        "low": price,
        "close": price,
    }


def test_rows_stay_buffered_while_database_is_down_and_are_written_when_it_returns(
    own_postgres: TempPostgres,
) -> None:
    engine = make_engine(own_postgres.url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(schema.instruments.insert(), [{"symbol": "BTCUSDT", "created_at": T0}])
    events: list[WriterEvent] = []
    config = WriterConfig(flush_interval_s=0.05, max_batch_rows=1000, retry_initial_s=0.05, retry_max_s=0.2)
    writer = BatchedWriter(engine, config, on_event=events.append)
    try:
        writer.submit("candles_1m", [{**candle(i), "volume": 1.0} for i in range(10)])
        assert writer.flush(timeout_s=10)
        stop_server(own_postgres)

        writer.submit("candles_1m", [{**candle(i), "volume": 2.0} for i in range(10, 60)])
        deadline = time.monotonic() + 10
        while writer.stats().failures < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = writer.stats()
        assert stats.failures >= 4 and stats.consecutive_failures >= 4
        assert (stats.rows_written, stats.rows_buffered) == (10, 50)
        assert stats.last_error is not None
        retries = [e.retry_in_s for e in events if e.kind == "flush_failed"]
        assert retries[:3] == [0.05, 0.1, 0.2] and max(r or 0 for r in retries) == 0.2
        assert not writer.flush(timeout_s=0.3), "flush claimed success while the database is down"

        start_server(own_postgres)
        assert writer.flush(timeout_s=20)
        stats = writer.stats()
        assert (stats.rows_written, stats.rows_buffered, stats.dead_letters) == (60, 0, 0)
        assert stats.consecutive_failures == 0
    finally:
        writer.close(timeout_s=5)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(schema.candles_1m.c.ts, schema.candles_1m.c.volume)).all()
    engine.dispose()
    assert sorted(r.ts for r in rows) == [T0 + i * 60_000 for i in range(60)]
    assert sum(r.volume for r in rows) == 10 * 1.0 + 50 * 2.0


def test_close_with_database_unreachable_raises_and_keeps_the_rows() -> None:
    engine = make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing")
    config = WriterConfig(flush_interval_s=5.0, retry_initial_s=0.05, retry_max_s=0.1)
    writer = BatchedWriter(engine, config)
    writer.submit("candles_1m", [{**candle(i), "volume": 1.0} for i in range(5)])
    assert not writer.flush(timeout_s=0.3)
    with pytest.raises(TransientError, match="5 rows still buffered"):
        writer.close(timeout_s=0.2)
    stats = writer.stats()
    assert (stats.rows_buffered, stats.rows_written, stats.dead_letters) == (5, 0, 0)
    assert stats.failures >= 2 and "Connection refused" in (stats.last_error or "")
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit("candles_1m", [{**candle(9), "volume": 1.0}])
    engine.dispose()
