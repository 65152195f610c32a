"""Migrations build the schema on SQLite and PostgreSQL, and the schema keeps its promises."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from storage import db
from storage.instruments import active_symbols, sync_universe
from storage.schema import candles_1m, events, metadata, risk_events
from storage.types import EpochMs

SPEC_TABLES = {
    # spec 001 §6
    "instruments",
    "candles_1m",
    "candles_15m",
    "candles_1h",
    "premium_index",
    "funding_rates",
    "features_1m",
    "labels_long_1m",
    "labels_short_1m",
    "training_jobs",
    "models",
    "signals",
    "account_snapshots",
    "positions",
    "orders",
    "fills",
    "risk_events",
    "drift_metrics",
    # spec 001 §25.4, spec 004 §10, spec 003 §7
    "rl_models",
    "rl_decisions",
    "engine_signals",
    "cancels",
    "events",
    # the ledger (issue 15): algo orders, per-symbol trade sync cursors, income (funding)
    "algo_orders",
    "sync_cursors",
    "income",
}


def _compare_type(context, inspected_column, metadata_column, inspected_type, metadata_type):
    if isinstance(metadata_type, EpochMs):  # TIMESTAMPTZ on PostgreSQL, BIGINT on SQLite
        expected = "TIMESTAMP" if context.dialect.name == "postgresql" else "BIGINT"
        return expected not in str(inspected_type).upper()
    return None


def test_migrations_create_every_spec_table_and_match_the_metadata(engine):
    assert set(sa.inspect(engine).get_table_names()) - {"alembic_version"} == SPEC_TABLES
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": _compare_type})
        diffs = [
            d
            for d in compare_metadata(ctx, metadata)
            if not (
                isinstance(d, tuple)
                and d[0] == "add_index"
                and d[1].name == "uq_risk_events_ts_event_type_symbol"
            )
        ]
    assert diffs == []
    assert db.is_current(engine)


def test_timestamps_are_timestamptz_on_postgresql_and_jsonb_for_json(fresh_pg_url):
    engine = db.make_engine(fresh_pg_url)
    db.upgrade(engine)
    with engine.connect() as conn:
        types = dict(
            conn.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'features_1m'"
                )
            ).all()
        )
    assert types["ts"] == "timestamp with time zone"
    assert types["features"] == "jsonb"
    engine.dispose()


def test_downgrade_to_base_and_upgrade_again(engine):
    db.downgrade(engine, "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine)
    assert db.is_current(engine)


def test_epoch_ms_round_trips_exactly(engine):
    sync_universe(engine, ["BTCUSDT"], now_ms=1_700_000_000_123)
    ts = 1_746_372_780_000
    with engine.begin() as conn:
        conn.execute(
            sa.insert(candles_1m),
            [
                {
                    "symbol": "BTCUSDT",
                    "ts": ts,
                    "open": 1.0,
                    "high": 2.0,
                    "low": 0.5,
                    "close": 1.5,
                    "volume": 0.0,
                }
            ],
        )
        got = conn.execute(sa.select(candles_1m.c.ts, candles_1m.c.close)).one()
        created = conn.execute(sa.text("SELECT created_at FROM instruments")).scalar_one()
    assert got == (ts, 1.5)
    assert created is not None


def test_candles_refuse_unknown_symbols_by_foreign_key(engine):
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            sa.insert(candles_1m),
            [{"symbol": "NOPEUSDT", "ts": 0, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 0}],
        )


def test_events_table_is_append_only(engine):
    with engine.begin() as conn:
        conn.execute(sa.insert(events), [{"ts": 1, "kind": "k", "source": "test", "payload": {"a": 1}}])
    for stmt in (sa.update(events).values(kind="x"), sa.delete(events)):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(stmt)
    with engine.connect() as conn:
        assert conn.execute(sa.select(events.c.kind, events.c.payload)).one() == ("k", {"a": 1})


def test_risk_events_unique_on_ts_type_and_symbol_even_when_symbol_is_null(engine):
    row = {"ts": 5, "event_type": "kill_switch", "symbol": None, "severity": 3, "message": "m"}
    with engine.begin() as conn:
        conn.execute(sa.insert(risk_events), [row, {**row, "symbol": "BTCUSDT"}])
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.insert(risk_events), [row])


def test_sync_universe_adds_deactivates_and_reactivates(engine):
    assert sync_universe(engine, ["BTCUSDT", "ETHUSDT"], now_ms=1) == {
        "added": 2,
        "reactivated": 0,
        "deactivated": 0,
    }
    assert sync_universe(engine, ["ETHUSDT"], now_ms=2) == {"added": 0, "reactivated": 0, "deactivated": 1}
    assert active_symbols(engine) == ["ETHUSDT"]
    assert sync_universe(engine, ["BTCUSDT", "ETHUSDT"], now_ms=3) == {
        "added": 0,
        "reactivated": 1,
        "deactivated": 0,
    }
    assert active_symbols(engine) == ["BTCUSDT", "ETHUSDT"]
