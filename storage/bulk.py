"""Bulk write primitives, one per dialect, for any table of storage.schema.

``write_batches(engine, batches)`` writes batches of one table in ONE transaction:

- PostgreSQL: an optimistic binary COPY straight into the table; on a unique violation the
  transaction is rolled back and the rows go through a TEMP staging table (ON COMMIT DROP) and
  ``INSERT … SELECT … ON CONFLICT (pk) DO UPDATE … WHERE (target) IS DISTINCT FROM (excluded)``,
  so that replaying identical rows updates nothing while a corrected row is updated.
- SQLite: ``executemany`` of ``INSERT … ON CONFLICT (pk) DO UPDATE … WHERE … IS NOT excluded…``.

Upsert tables (every table but schema.APPEND_TABLES) are deduplicated on their primary key inside a batch, the
last row winning. Append tables (schema.APPEND_TABLES) are inserted as they are; ``risk_events``,
unique on (ts, event_type, coalesce(symbol, '')), ignores rows it already holds.
Errors propagate as the driver raised them (psycopg or SQLAlchemy exceptions): the caller decides
what is transient (``is_transient``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import psycopg.errors
import sqlalchemy as sa

from core.errors import ConfigError
from storage import schema
from storage.batch import NUMERIC, UUID, ColumnBatch, dedupe_last, to_batch
from storage.pgcopy import copy_rows, encode_binary

#: Append tables whose unique index makes a replay a no-op rather than an error.
IGNORE_DUPLICATE_TABLES = frozenset({"risk_events"})
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")


def table_of(name: str) -> sa.Table:
    """Return the schema table called ``name``, or raise naming the known ones."""
    table = schema.metadata.tables.get(name)
    if table is None:
        raise ValueError(
            f"unknown table {name!r}; storage.schema has {', '.join(sorted(schema.metadata.tables))}"
        )
    return table


def is_upsert(table: sa.Table) -> bool:
    """Return True for tables keyed by a natural key (upserted), False for append-only ones.

    Tables in neither schema.UPSERT_TABLES nor schema.APPEND_TABLES (models, training_jobs,
    rl_models) have natural keys too, so they are upserted.
    """
    return table.name not in schema.APPEND_TABLES


def write_rows(engine: sa.Engine, table_name: str, rows: Any) -> int:
    """Normalize and write ``rows`` to ``table_name`` in one transaction; return the row count."""
    table = table_of(table_name)
    batch = to_batch(table, rows, require_pk=is_upsert(table))
    write_batches(engine, [batch])
    return batch.n


def write_batches(engine: sa.Engine, batches: Sequence[ColumnBatch]) -> None:
    """Write batches of one table, in order, in one transaction (later rows win on a key)."""
    batches = [b for b in batches if b.n]
    if not batches:
        return
    table = table_of(batches[0].table)
    if is_upsert(table):
        key = [c.name for c in table.primary_key.columns]
        batches = [dedupe_last(b, key) for b in batches]
    if engine.dialect.name == "postgresql":
        _write_postgresql(engine, table, batches)
    elif engine.dialect.name == "sqlite":
        _write_sqlite(engine, table, batches)
    else:
        raise ConfigError(
            f"no bulk writer for database dialect {engine.dialect.name!r}: use sqlite or postgresql"
        )


def is_transient(exc: BaseException) -> bool:
    """Return True when ``exc`` means "database unreachable or busy: retry later"."""
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, sqlite3.OperationalError):
        return any(word in str(orig).lower() for word in _SQLITE_TRANSIENT)
    if isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    if isinstance(exc, sa.exc.DisconnectionError | sa.exc.TimeoutError):
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) and not isinstance(
        orig, sqlite3.Error
    )


# --- PostgreSQL ------------------------------------------------------------------------------


def _write_postgresql(engine: sa.Engine, table: sa.Table, batches: list[ColumnBatch]) -> None:
    encoded = [encode_binary(b, keep_order=not is_upsert(table)) for b in batches]
    pairs = list(zip(batches, encoded, strict=True))

    def copy_direct(raw: psycopg.Connection[Any]) -> None:
        for batch, stream in pairs:
            _copy(raw, table.name, batch, stream)

    def merge_staged(raw: psycopg.Connection[Any]) -> None:
        for i, (batch, stream) in enumerate(pairs):
            _staged_merge(raw, table, i, batch, stream)

    if table.name not in IGNORE_DUPLICATE_TABLES:
        try:
            _in_transaction(engine, copy_direct)
            return
        except psycopg.errors.UniqueViolation:
            if not is_upsert(table):
                raise
    _in_transaction(engine, merge_staged)


def _in_transaction(engine: sa.Engine, work: Callable[[psycopg.Connection[Any]], None]) -> None:
    with engine.connect() as conn:
        raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
        try:
            with conn.begin():
                work(raw)
        except BaseException:
            if raw.closed or raw.broken:
                conn.invalidate()
            raise


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _copy(
    raw: psycopg.Connection[Any], target: str, batch: ColumnBatch, encoded: list[memoryview] | None
) -> None:
    with raw.cursor() as cur:
        sql = f'COPY "{target}" ({_quoted(batch.names)}) FROM STDIN (FORMAT BINARY)'
        with cur.copy(sql) as copy:
            if encoded is not None:
                for buffer in encoded:
                    copy.write(buffer)
                return
            types, rows = copy_rows(batch)
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)


def _staged_merge(
    raw: psycopg.Connection[Any],
    table: sa.Table,
    index: int,
    batch: ColumnBatch,
    encoded: list[memoryview] | None,
) -> None:
    stage = f"_rt_stage_{table.name}_{index}"
    cols = _quoted(batch.names)
    with raw.cursor() as cur:
        # only the batch's columns, without constraints: the target checks them on INSERT
        cur.execute(
            f'CREATE TEMP TABLE "{stage}" ON COMMIT DROP AS SELECT {cols} FROM "{table.name}" WITH NO DATA'
        )
        _copy(raw, stage, batch, encoded)
        cur.execute(
            f'INSERT INTO "{table.name}" AS t ({cols}) SELECT {cols} FROM "{stage}" {_conflict(table, batch, "t")}'
        )
        cur.execute(f'DROP TABLE "{stage}"')


def _conflict(table: sa.Table, batch: ColumnBatch, target: str) -> str:
    """Return the ON CONFLICT clause; ``target`` is how the statement names the target table."""
    if not is_upsert(table):
        return "ON CONFLICT DO NOTHING"
    key = [c.name for c in table.primary_key.columns]
    rest = [n for n in batch.names if n not in key]
    if not rest:
        return f"ON CONFLICT ({_quoted(key)}) DO NOTHING"
    assign = ", ".join(f'"{n}" = excluded."{n}"' for n in rest)
    old = [f'{target}."{n}"' for n in rest]
    new = [f'excluded."{n}"' for n in rest]
    if target == "t":  # PostgreSQL: one row comparison
        changed = f"ROW({', '.join(old)}) IS DISTINCT FROM ROW({', '.join(new)})"
    else:  # SQLite has no row IS DISTINCT FROM before 3.39: column by column
        changed = " OR ".join(f"{o} IS NOT {e}" for o, e in zip(old, new, strict=True))
    return f"ON CONFLICT ({_quoted(key)}) DO UPDATE SET {assign} WHERE {changed}"


# --- SQLite ----------------------------------------------------------------------------------


def _write_sqlite(engine: sa.Engine, table: sa.Table, batches: list[ColumnBatch]) -> None:
    with engine.begin() as conn:
        for batch in batches:
            placeholders = ", ".join("?" for _ in batch.names)
            verb = "INSERT OR IGNORE" if table.name in IGNORE_DUPLICATE_TABLES else "INSERT"
            sql = f'{verb} INTO "{table.name}" ({_quoted(batch.names)}) VALUES ({placeholders})'
            if is_upsert(table):
                sql += " " + _conflict(table, batch, f'"{table.name}"')
            conn.exec_driver_sql(sql, list(zip(*_sqlite_columns(engine, table, batch), strict=True)))


def _sqlite_columns(engine: sa.Engine, table: sa.Table, batch: ColumnBatch) -> list[list[Any]]:
    out = []
    for name, col in batch.columns.items():
        values = col.to_python()
        if col.kind in (UUID, NUMERIC):
            process = table.c[name].type.bind_processor(engine.dialect)
            if process is not None:
                values = [None if v is None else process(v) for v in values]
        out.append(values)
    return out
