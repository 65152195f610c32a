"""Bulk writes and the BatchedWriter on a real SQLite file and a real PostgreSQL (db_url)."""

from __future__ import annotations

import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from core.config import WriterConfig
from storage import pgcopy, schema
from storage.bulk import write_rows
from storage.db import make_engine, upgrade
from storage.writer import REJECTED_CANDLE_KIND, BatchedWriter, WriterBackpressure, WriterEvent

SYMBOLS = ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT"]
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
MINUTE = 60_000


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated database holding the instruments of SYMBOLS."""
    eng = make_engine(db_url)
    upgrade(eng)
    with eng.begin() as conn:
        conn.execute(schema.instruments.insert(), [{"symbol": s, "created_at": T0} for s in SYMBOLS])
    yield eng
    eng.dispose()


def candles(n_minutes: int, symbols: list[str] = SYMBOLS, start: int = T0, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = n_minutes * len(symbols)
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n))), 6)
    return {
        "symbol": np.repeat(np.array(symbols, dtype=object), n_minutes),
        "ts": np.tile(start + np.arange(n_minutes, dtype=np.int64) * MINUTE, len(symbols)),
        "open": close * (1 + rng.normal(0, 1e-4, n)),
        "high": close * 1.002,
        "low": close * 0.998,
        "close": close,
        "volume": rng.random(n) * 100,
        "quote_volume": np.where(rng.random(n) < 0.2, np.nan, rng.random(n) * 1e4),
        "trade_count": rng.integers(0, 10_000, n),
        "taker_buy_volume": rng.random(n),
    }


def read(engine: sa.Engine, table: sa.Table, order_by: str = "ts") -> list[dict[str, Any]]:
    cols = [c for c in table.c if c.name != "id"]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*cols).order_by(*[sa.text(o) for o in order_by.split(",")])).all()
    return [dict(r._mapping) for r in rows]


def as_rows(columns: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i in range(len(columns["ts"])):
        row = {}
        for k, v in columns.items():
            value = v[i].item() if isinstance(v[i], np.generic) else v[i]
            row[k] = None if isinstance(value, float) and np.isnan(value) else value
        out.append(row)
    return out


def count_commits(engine: sa.Engine) -> list[int]:
    commits = [0]

    @sa.event.listens_for(engine, "commit")
    def _on_commit(_conn: Any) -> None:
        commits[0] += 1

    return commits


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def fast_config(**overrides: Any) -> WriterConfig:
    values: dict[str, Any] = {
        "flush_interval_s": 5.0,
        "max_batch_rows": 100_000,
        "retry_initial_s": 0.05,
        "retry_max_s": 0.2,
    }
    return WriterConfig(**(values | overrides))


# --- round trips ------------------------------------------------------------------------------

MODEL_ID = str(uuid.UUID(int=0x1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0))


def every_type_rows() -> dict[str, list[dict[str, Any]]]:
    return {
        "instruments": [
            {
                "symbol": "SOLUSDT",
                "created_at": T0,
                "tick_size": Decimal("0.000100000000000000"),
                "step_size": None,
            }
        ],
        "models": [
            {
                "model_id": MODEL_ID,
                "created_at": T0 + 1,
                "algo": "lightgbm",
                "strategy": None,
                "feature_schema_version": 3,
                "label_spec_hash": "abcdef0123456789",
                "train_start": -86_400_000,
                "train_end": 946_684_800_001,
                "metrics": {"auc": 0.6123456789012345, "folds": [1, 2, 3], "name": "ünïcode ✓", "none": None},
                "artifact_uri": "file:///tmp/m",
                "is_production": True,
            }
        ],
        "labels_long_1m": [
            {
                "symbol": "BTCUSDT",
                "ts": T0,
                "spec_hash": "h1",
                "y": -1,
                "ret_net": -0.0,
                "mae": 5e-324,
                "mfe": 1.7976931348623157e308,
                "time_to_event_min": 2**31 - 1,
            },
            {
                "symbol": "BTCUSDT",
                "ts": T0 + MINUTE,
                "spec_hash": "h1",
                "y": 1,
                "ret_net": 0.1 + 0.2,
                "mae": float("inf"),
                "mfe": float("-inf"),
                "time_to_event_min": -(2**31),
            },
        ],
        "orders": [
            {
                "symbol": "ETHUSDT",
                "order_id": 2**62 + 7,
                "client_order_id": "rt-1",
                "algo_id": None,
                "side": "BUY",
                "type": "LIMIT",
                "status": "NEW",
                "reduce_only": False,
                "close_position": True,
                "price": 3000.25,
                "qty": 0.001,
                "created_at": T0,
                "updated_at": T0 + 999,
                "raw_json": None,
            }
        ],
        "features_1m": [
            {
                "symbol": "BTCUSDT",
                "ts": T0,
                "schema_version": 1,
                "features": {"rsi": 55.5, "z": [-1.25, 0]},
                "atr": None,
            }
        ],
    }


def assert_same(expected: dict[str, Any], got: dict[str, Any], signed_zero: bool = True) -> None:
    """Equal values; floats bit for bit (SQLite stores whole REALs as integers: -0.0 comes back 0.0)."""
    for k, v in expected.items():
        if isinstance(v, float) and v == 0.0 and not signed_zero:
            assert got[k] == 0.0, f"{k}: {got[k]!r} != {v!r}"
        elif isinstance(v, float):
            assert struct.pack(">d", got[k]) == struct.pack(">d", v), f"{k}: {got[k]!r} != {v!r}"
        elif k == "model_id":
            assert uuid.UUID(str(got[k])) == uuid.UUID(v)
        else:
            assert got[k] == v, f"{k}: {got[k]!r} != {v!r}"


def test_every_column_type_round_trips_exactly(engine: sa.Engine) -> None:
    for table_name, rows in every_type_rows().items():
        write_rows(engine, table_name, rows)
    for table_name, rows in every_type_rows().items():
        table = schema.metadata.tables[table_name]
        key = ",".join(c.name for c in table.primary_key.columns)
        stored = [
            r for r in read(engine, table, key) if table_name != "instruments" or r["symbol"] == "SOLUSDT"
        ]
        assert len(stored) == len(rows), table_name
        for want, got in zip(rows, stored, strict=True):
            assert_same(want, got, signed_zero=engine.dialect.name == "postgresql")


def test_candles_round_trip_with_nulls_and_bit_exact_floats(engine: sa.Engine) -> None:
    cols = candles(50)
    write_rows(engine, "candles_1m", cols)
    stored = read(engine, schema.candles_1m, "symbol,ts")
    expected = sorted(as_rows(cols), key=lambda r: (r["symbol"], r["ts"]))
    assert len(stored) == len(expected) == 150
    for want, got in zip(expected, stored, strict=True):
        assert_same(want, got)
    assert sum(r["quote_volume"] is None for r in stored) > 0


def test_write_row_fallback_round_trips_like_the_numpy_path(
    fresh_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgcopy, "default_max_groups", lambda n: 0)
    eng = make_engine(fresh_pg_url)
    upgrade(eng)
    try:
        write_rows(eng, "instruments", [{"symbol": s, "created_at": T0} for s in SYMBOLS])
        for table_name, rows in every_type_rows().items():
            write_rows(eng, table_name, rows)
        cols = candles(20)
        write_rows(eng, "candles_1m", cols)
        write_rows(eng, "candles_1m", cols)  # replay through the fallback's staging path
        stored = read(eng, schema.candles_1m, "symbol,ts")
        for want, got in zip(
            sorted(as_rows(cols), key=lambda r: (r["symbol"], r["ts"])), stored, strict=True
        ):
            assert_same(want, got)
        model = read(eng, schema.models, "model_id")[0]
        assert_same(every_type_rows()["models"][0], model)
    finally:
        eng.dispose()


# --- idempotency ------------------------------------------------------------------------------


def pg_xmins(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            (r[0], r[1])
            for r in conn.exec_driver_sql("SELECT symbol || ts::text, xmin::text FROM candles_1m ORDER BY 1")
        ]


def pg_table_stats(url: str, table: str, until: Callable[[dict[str, int]], bool]) -> dict[str, int]:
    """pg_stat_user_tables counters of ``table`` once ``until`` holds (stats arrive asynchronously)."""
    probe = make_engine(url)
    sql = f"SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = '{table}'"
    try:
        deadline = time.monotonic() + 15
        while True:
            with probe.connect() as conn:
                row = conn.exec_driver_sql(sql).one()
            stats = {"ins": row[0], "upd": row[1], "del": row[2]}
            if until(stats) or time.monotonic() > deadline:
                return stats
            time.sleep(0.1)
    finally:
        probe.dispose()


def sqlite_row_changes(engine: sa.Engine) -> list[int]:
    changes: list[int] = []

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _after(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            changes.append(cursor.rowcount)

    return changes


def test_replaying_identical_rows_changes_nothing(engine: sa.Engine) -> None:
    cols = candles(200)
    write_rows(engine, "candles_1m", cols)
    before = read(engine, schema.candles_1m, "symbol,ts")
    if engine.dialect.name == "postgresql":
        xmins = pg_xmins(engine)
        write_rows(engine, "candles_1m", cols)
        assert pg_xmins(engine) == xmins, "replay rewrote rows"
        url = engine.url.render_as_string(hide_password=False)
        engine.dispose()  # backends exit and report their counters
        stats = pg_table_stats(url, "candles_1m", lambda s: s["ins"] >= 600)
        assert stats["ins"] >= 600, stats
        assert stats["upd"] == 0, f"replay updated rows: {stats}"
    else:
        changes = sqlite_row_changes(engine)
        write_rows(engine, "candles_1m", cols)
        assert changes == [0], f"replay changed rows: {changes}"
    assert read(engine, schema.candles_1m, "symbol,ts") == before


def test_corrected_row_is_updated_and_only_it(engine: sa.Engine) -> None:
    cols = candles(100)
    write_rows(engine, "candles_1m", cols)
    fixed = {k: np.array(v, copy=True) for k, v in cols.items()}
    fixed["close"][17] = fixed["close"][17] * 1.01
    fixed["quote_volume"][18] = 123.0 if np.isnan(cols["quote_volume"][18]) else np.nan
    changes = sqlite_row_changes(engine) if engine.dialect.name == "sqlite" else None
    write_rows(engine, "candles_1m", fixed)
    stored = read(engine, schema.candles_1m, "symbol,ts")
    expected = sorted(as_rows(fixed), key=lambda r: (r["symbol"], r["ts"]))
    for want, got in zip(expected, stored, strict=True):
        assert_same(want, got)
    if changes is not None:
        assert changes == [2]
    else:
        url = engine.url.render_as_string(hide_password=False)
        engine.dispose()
        stats = pg_table_stats(url, "candles_1m", lambda s: s["upd"] >= 2)
        assert stats["upd"] == 2, stats


def test_duplicate_keys_in_one_batch_last_row_wins(engine: sa.Engine) -> None:
    rows = as_rows(candles(3, ["BTCUSDT"]))
    dup = dict(rows[1], close=rows[1]["close"] * 2, volume=7.0)
    write_rows(engine, "candles_1m", [*rows, dup])
    stored = read(engine, schema.candles_1m)
    assert len(stored) == 3
    assert stored[1]["close"] == dup["close"] and stored[1]["volume"] == 7.0
    # and when the rows already exist (the upsert path)
    again = dict(rows[1], volume=8.0)
    write_rows(engine, "candles_1m", [again, dict(rows[1], volume=9.0)])
    assert read(engine, schema.candles_1m)[1]["volume"] == 9.0


def test_risk_event_replay_is_ignored_and_events_append(engine: sa.Engine) -> None:
    risk = [
        {
            "ts": T0,
            "event_type": "kill_switch",
            "symbol": None,
            "severity": 3,
            "message": "m",
            "details": {"a": 1},
        },
        {
            "ts": T0,
            "event_type": "kill_switch",
            "symbol": "BTCUSDT",
            "severity": 3,
            "message": "m",
            "details": None,
        },
    ]
    write_rows(engine, "risk_events", risk)
    write_rows(engine, "risk_events", risk)
    assert len(read(engine, schema.risk_events)) == 2
    event = [{"ts": T0, "kind": "k", "source": "s", "symbol": None, "payload": {"x": [1]}}]
    write_rows(engine, "events", event)
    write_rows(engine, "events", event)
    assert [r["payload"] for r in read(engine, schema.events, "id")] == [{"x": [1]}, {"x": [1]}]


# --- the batched writer -----------------------------------------------------------------------


def test_writer_flushes_on_interval_with_one_commit_not_one_per_message(engine: sa.Engine) -> None:
    commits = count_commits(engine)
    rows = as_rows(candles(40, ["BTCUSDT"]))
    with BatchedWriter(engine, fast_config(flush_interval_s=0.5)) as writer:
        started = time.monotonic()
        for row in rows[:20]:
            writer.submit("candles_1m", [row])
        time.sleep(0.15)
        assert writer.stats().rows_written == 0, "flushed before the interval"
        for row in rows[20:]:
            writer.submit("candles_1m", [row])
        assert wait_for(lambda: writer.stats().rows_written == 40, 3.0)
        assert time.monotonic() - started >= 0.4
        stats = writer.stats()
    assert commits[0] == stats.flushes == 1
    assert len(read(engine, schema.candles_1m)) == 40


def test_writer_flushes_as_soon_as_a_table_holds_max_batch_rows(engine: sa.Engine) -> None:
    commits = count_commits(engine)
    rows = as_rows(candles(25, ["ETHUSDT"]))
    with BatchedWriter(engine, fast_config(flush_interval_s=5.0, max_batch_rows=25)) as writer:
        started = time.monotonic()
        for row in rows[:24]:
            writer.submit("candles_1m", [row])
        time.sleep(0.2)
        assert writer.stats().rows_written == 0
        writer.submit("candles_1m", [rows[24]])
        assert wait_for(lambda: writer.stats().rows_written == 25, 2.0)
        assert time.monotonic() - started < 4.0
    assert commits[0] == 1


def test_flush_writes_everything_with_one_transaction_per_table(engine: sa.Engine) -> None:
    commits = count_commits(engine)
    writer = BatchedWriter(engine, fast_config(), start=False)
    for row in as_rows(candles(10)):
        writer.submit("candles_1m", [row])
    writer.submit("events", [{"ts": T0, "kind": "k", "source": "test", "symbol": None, "payload": {}}])
    assert writer.flush(timeout_s=10)
    assert commits[0] == 2
    stats = writer.stats()
    assert (stats.rows_submitted, stats.rows_written, stats.rows_buffered, stats.flushes) == (31, 31, 0, 2)
    assert stats.last_flush_latency_s is not None and stats.last_flush_latency_s > 0
    writer.close()


def test_backpressure_refuses_the_whole_call_and_drops_nothing(engine: sa.Engine) -> None:
    writer = BatchedWriter(engine, fast_config(max_buffer_rows=100, max_batch_rows=1000), start=False)
    rows = as_rows(candles(60, ["BTCUSDT", "ETHUSDT"]))
    writer.submit("candles_1m", rows[:80])
    with pytest.raises(
        WriterBackpressure, match=r"80 of at most 100 rows buffered \(80 for candles_1m\)"
    ) as err:
        writer.submit("candles_1m", rows[80:110])
    assert err.value.table == "candles_1m" and err.value.buffered_rows == 80
    assert writer.stats().rows_buffered == 80
    assert writer.flush(timeout_s=10)
    writer.submit("candles_1m", rows[80:110])
    writer.close()
    assert len(read(engine, schema.candles_1m)) == 110


def test_submit_with_block_timeout_waits_for_room(engine: sa.Engine) -> None:
    writer = BatchedWriter(engine, fast_config(max_buffer_rows=50, max_batch_rows=1000), start=False)
    rows = as_rows(candles(40, ["BTCUSDT", "ETHUSDT"]))
    writer.submit("candles_1m", rows[:50])
    flusher = threading.Timer(0.3, writer.flush)
    flusher.start()
    started = time.monotonic()
    writer.submit("candles_1m", rows[50:80], block_timeout_s=5.0)
    assert time.monotonic() - started >= 0.25
    flusher.join()
    with pytest.raises(WriterBackpressure):
        writer.submit("candles_1m", rows[:60], block_timeout_s=0.1)  # can never fit
    writer.close()
    assert len(read(engine, schema.candles_1m)) == 80


def test_foreign_key_violation_goes_to_dead_letters_and_good_rows_are_written(engine: sa.Engine) -> None:
    events: list[WriterEvent] = []
    good = as_rows(candles(30, ["BTCUSDT"]))
    bad = dict(good[7], symbol="NOSUCHUSDT")
    writer = BatchedWriter(engine, fast_config(), on_event=events.append, start=False)
    writer.submit("candles_1m", [*good[:20], bad, *good[20:]])
    assert writer.flush(timeout_s=10)
    letters = writer.dead_letters()
    assert len(letters) == 1 and letters[0].rows() == [bad]
    assert "foreign key" in letters[0].error.lower()
    assert len(read(engine, schema.candles_1m)) == 30
    stats = writer.stats()
    assert (stats.rows_written, stats.rows_dead_lettered, stats.dead_letters, stats.rows_buffered) == (
        30,
        1,
        1,
        0,
    )
    assert [e.kind for e in events if e.kind == "dead_letter"] == ["dead_letter"]
    writer.close()


# --- the candle door --------------------------------------------------------------------------


def test_candle_door_rejects_bad_rows_into_events_and_keeps_them_out_of_candles(engine: sa.Engine) -> None:
    rows = as_rows(candles(12, ["BTCUSDT"]))
    nan, inf = float("nan"), float("inf")
    rows[0]["open"] = nan
    rows[1]["close"] = inf
    rows[2]["low"] = 0.0
    rows[3]["high"] = -5.0
    rows[4]["high"], rows[4]["low"] = 90.0, 110.0
    rows[5]["volume"] = -1.0
    rows[6]["ts"] += 1
    rows[7]["symbol"] = "DOGEUSDT"
    expected_reasons = [
        "non_finite_price",
        "non_finite_price",
        "non_positive_price",
        "non_positive_price",
        "high_below_low",
        "negative_volume",
        "off_interval_grid",
        "unknown_symbol",
    ]
    writer = BatchedWriter(engine, fast_config(), start=False)
    result = writer.submit_candles("1m", rows, known_symbols=SYMBOLS, source="test", ts_ms=T0 + 5)
    assert [r.reason for r in result.rejections] == expected_reasons
    assert result.accepted.n == 4
    assert writer.flush(timeout_s=10)
    stored = read(engine, schema.candles_1m)
    assert [r["ts"] for r in stored] == [rows[i]["ts"] for i in range(8, 12)]
    events = read(engine, schema.events, "id")
    assert [e["kind"] for e in events] == [REJECTED_CANDLE_KIND] * 8
    assert [e["payload"]["reason"] for e in events] == expected_reasons
    assert {e["source"] for e in events} == {"test"} and {e["ts"] for e in events} == {T0 + 5}
    assert events[0]["payload"]["row"]["open"] == "NaN"
    assert events[1]["payload"]["row"]["close"] == "Infinity"
    assert events[7]["symbol"] == "DOGEUSDT" and events[7]["payload"]["row"]["ts"] == rows[7]["ts"]
    assert writer.stats().rows_rejected == 8
    writer.close()


def test_a_wholly_rejected_candle_batch_is_recorded_once_and_counted_per_table(engine: sa.Engine) -> None:
    rows = candles(30, symbols=["DOGEUSDT"])  # not an instrument: every row is refused
    first = BatchedWriter(engine, fast_config(), start=False)
    screen = first.submit_candles("1m", rows, known_symbols=SYMBOLS, source="test", ts_ms=T0)
    assert screen.accepted.n == 0 and len(screen.rejections) == 30  # no KeyError on the empty batch
    again = first.submit_candles("1m", rows, known_symbols=SYMBOLS, source="test", ts_ms=T0)
    assert len(again.rejections) == 30
    first.close()
    stats = first.stats()
    assert (stats.rows_rejected, stats.rows_rejected_before) == (60, 30)
    assert stats.rows_written_by_table == {"events": 30}
    second = BatchedWriter(engine, fast_config(), start=False)  # a rerun: a new writer, same rows
    second.submit_candles("1m", rows, known_symbols=SYMBOLS, source="test", ts_ms=T0 + 1)
    second.close()
    assert (second.stats().rows_rejected, second.stats().rows_rejected_before) == (30, 30)
    events = read(engine, schema.events, "id")
    assert len(events) == 30 and read(engine, schema.candles_1m) == []
    assert len({e["payload"]["key"] for e in events}) == 30
