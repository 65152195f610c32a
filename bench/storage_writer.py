"""Benchmark the batched writer against one-row-per-commit on a durable PostgreSQL.

    python bench/storage_writer.py [--symbols 20] [--minutes 10000] [--row-commit-rows 10000]

RAYTRADE_DB_URL points it at a PostgreSQL of your own; unset, it starts a temporary one with
fsync on (raytrade.devservices.TempPostgres(durable=True)), so commits cost what they cost.
It writes candles_1m rows (a) one INSERT + COMMIT per row, timed on a subset, (b) through the
BatchedWriter as new rows, (c) through the writer again with the same rows (idempotent replay),
checks that the table holds exactly symbols × minutes rows, and prints the rates; the last line
is one JSON object: copy_rows_per_s, replay_rows_per_s, row_commit_rows_per_s, ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import sqlalchemy as sa

from core.config import WriterConfig
from core.symbols import DEFAULT_UNIVERSE
from raytrade.devservices import TempPostgres
from storage import schema
from storage.db import make_engine, upgrade
from storage.writer import BatchedWriter

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
MINUTE_MS = 60_000


def make_candles(symbols: list[str], minutes: int, seed: int = 42) -> dict[str, np.ndarray]:
    """Return realistic 1m candles: per-symbol random walks at their own price scale and tick."""
    rng = np.random.default_rng(seed)
    n = len(symbols) * minutes
    scale = np.repeat(10.0 ** rng.uniform(-3, 5, len(symbols)), minutes)
    tick = 10.0 ** np.floor(np.log10(scale) - 4)
    steps = rng.normal(0, 8e-4, n).reshape(len(symbols), minutes)
    path = scale * np.exp(np.cumsum(steps, axis=1).ravel())
    close = np.round(path / tick) * tick
    open_ = np.round(np.roll(path, 1) / tick) * tick
    open_[::minutes] = close[::minutes]
    wick = np.abs(rng.normal(0, 5e-4, (2, n))) * path
    high = np.round(np.maximum(open_, close) + wick[0], 8)
    low = np.round(np.minimum(open_, close) - np.minimum(wick[1], 0.5 * np.minimum(open_, close)), 8)
    high, low = np.maximum(high, np.maximum(open_, close)), np.minimum(low, np.minimum(open_, close))
    volume = np.round(rng.lognormal(3, 1.2, n) / scale * 1000, 3)
    return {
        "symbol": np.repeat(np.array(symbols, dtype=object), minutes),
        "ts": np.tile(T0 + np.arange(minutes, dtype=np.int64) * MINUTE_MS, len(symbols)),
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
        "quote_volume": np.round(volume * close, 4),
        "trade_count": rng.integers(10, 20_000, n),
        "taker_buy_volume": np.round(volume * rng.uniform(0.2, 0.8, n), 3),
    }


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    url = os.environ.get("RAYTRADE_DB_URL")
    if url:
        yield url
        return
    with TempPostgres(durable=True) as pg:
        yield pg.url


def row_commit_rate(engine: sa.Engine, rows: dict[str, np.ndarray], count: int) -> float:
    """Insert ``count`` rows one INSERT + COMMIT at a time; return rows/s."""
    keys = list(rows)
    lists = [rows[k][:count].tolist() for k in keys]
    records = [dict(zip(keys, values, strict=True)) for values in zip(*lists, strict=True)]
    insert = schema.candles_1m.insert()
    with engine.connect() as conn:
        started = time.perf_counter()
        for record in records:
            conn.execute(insert, record)
            conn.commit()
        elapsed = time.perf_counter() - started
    return count / elapsed


def writer_rate(engine: sa.Engine, rows: dict[str, np.ndarray], config: WriterConfig) -> tuple[float, Any]:
    """Submit all rows to a BatchedWriter and flush; return (rows/s, writer stats)."""
    n = len(rows["ts"])
    with BatchedWriter(engine, config) as writer:
        started = time.perf_counter()
        writer.submit("candles_1m", rows)
        if not writer.flush(timeout_s=600):
            raise RuntimeError("the writer did not finish within 600 s")
        elapsed = time.perf_counter() - started
        stats = writer.stats()
    if stats.rows_written != n or stats.dead_letters:
        raise RuntimeError(f"writer lost rows: {stats}")
    return n / elapsed, stats


def table_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(schema.candles_1m)).scalar_one())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--minutes", type=int, default=10_000)
    parser.add_argument("--row-commit-rows", type=int, default=10_000, help="rows timed one commit each")
    parser.add_argument("--max-batch-rows", type=int, default=50_000, help="WriterConfig.max_batch_rows")
    args = parser.parse_args(argv)
    symbols = list(DEFAULT_UNIVERSE[: args.symbols])
    rows = make_candles(symbols, args.minutes)
    n = len(rows["ts"])
    config = WriterConfig(flush_interval_s=1.0, max_batch_rows=args.max_batch_rows)

    with database_url() as url:
        engine = make_engine(url)
        upgrade(engine)
        if table_count(engine):
            raise SystemExit(
                "candles_1m is not empty: the benchmark needs an empty table (unset RAYTRADE_DB_URL)"
            )
        with engine.begin() as conn:
            existing = set(conn.execute(sa.select(schema.instruments.c.symbol)).scalars())
            new = [{"symbol": s, "created_at": T0} for s in symbols if s not in existing]
            if new:
                conn.execute(schema.instruments.insert(), new)
        with engine.connect() as conn:
            fsync = conn.exec_driver_sql("SHOW fsync").scalar_one()
            sync_commit = conn.exec_driver_sql("SHOW synchronous_commit").scalar_one()
        print(
            f"PostgreSQL at {engine.url.render_as_string()} (fsync={fsync}, synchronous_commit={sync_commit})"
        )
        print(f"{n:,} candles_1m rows: {len(symbols)} symbols x {args.minutes:,} minutes")

        subset = min(args.row_commit_rows, n)
        row_rate = row_commit_rate(engine, rows, subset)
        print(f"(a) one INSERT + COMMIT per row: {row_rate:,.0f} rows/s (timed on the first {subset:,} rows)")
        with engine.begin() as conn:  # the table was empty: remove the subset again
            conn.execute(sa.delete(schema.candles_1m))

        copy_rate, stats = writer_rate(engine, rows, config)
        print(f"(b) BatchedWriter, new rows:     {copy_rate:,.0f} rows/s ({stats.flushes} transactions)")
        replay_rate, stats = writer_rate(engine, rows, config)
        print(f"(c) BatchedWriter, replay:       {replay_rate:,.0f} rows/s ({stats.flushes} transactions)")

        stored = table_count(engine)
        engine.dispose()
    if stored != n:
        raise SystemExit(f"candles_1m holds {stored:,} rows, expected {n:,}")
    print(f"candles_1m holds exactly {stored:,} rows")
    ratio = copy_rate / row_rate
    print(f"new-row rate / row-commit rate = {ratio:,.1f}x")
    result = {
        "copy_rows_per_s": round(copy_rate),
        "replay_rows_per_s": round(replay_rate),
        "row_commit_rows_per_s": round(row_rate),
        "ratio": round(ratio, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
