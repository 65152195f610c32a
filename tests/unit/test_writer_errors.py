"""Which database errors the writer retries (transient) and which it dead-letters. No database."""

from __future__ import annotations

import sqlite3

import psycopg
import psycopg.errors
import pytest
import sqlalchemy as sa

from storage.bulk import is_transient, table_of


def wrapped(cls: type[sa.exc.DBAPIError], orig: Exception) -> sa.exc.DBAPIError:
    return cls("INSERT …", {}, orig)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("connection refused"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        wrapped(sa.exc.OperationalError, psycopg.OperationalError("server closed the connection")),
        wrapped(sa.exc.OperationalError, sqlite3.OperationalError("database is locked")),
        sa.exc.TimeoutError("QueuePool limit reached"),
    ],
)
def test_unreachable_or_busy_database_is_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.ForeignKeyViolation("insert violates foreign key constraint"),
        psycopg.errors.UniqueViolation("duplicate key"),
        psycopg.errors.InvalidTextRepresentation("bad value"),
        wrapped(sa.exc.IntegrityError, sqlite3.IntegrityError("FOREIGN KEY constraint failed")),
        wrapped(sa.exc.OperationalError, sqlite3.OperationalError("no such table: candles_1m")),
        ValueError("an encoder bug"),
    ],
)
def test_refused_rows_and_bugs_are_not_transient(error: Exception) -> None:
    assert not is_transient(error)


def test_unknown_table_is_a_value_error_listing_the_tables() -> None:
    with pytest.raises(ValueError, match="unknown table 'candle_1m'.*candles_1m"):
        table_of("candle_1m")
