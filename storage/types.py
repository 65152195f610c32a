"""Column types that behave the same on SQLite and PostgreSQL.

Timestamps are epoch milliseconds (int) in Python everywhere. PostgreSQL stores them as
TIMESTAMPTZ (spec 001 §6), SQLite as BIGINT milliseconds (fast, exact, sortable).
JSON is JSONB on PostgreSQL and JSON text on SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EpochMs(sa.types.TypeDecorator[int]):
    """Epoch milliseconds in Python; TIMESTAMPTZ on PostgreSQL, BIGINT on SQLite."""

    impl = sa.BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.BigInteger())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, datetime):
            value = ms_from_datetime(value)
        ms = int(value)
        if dialect.name == "postgresql":
            return _EPOCH + timedelta(milliseconds=ms)
        return ms

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return ms_from_datetime(value)
        return int(value)


def ms_from_datetime(value: datetime) -> int:
    """Return epoch ms of a datetime (naive is UTC), exactly (no float rounding)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


#: JSON column: JSONB on PostgreSQL.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

#: UUID stored as native UUID on PostgreSQL, 32-char text on SQLite; Python str.
Uuid = sa.Uuid(as_uuid=False)
