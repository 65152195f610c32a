"""Time helpers on epoch milliseconds. Pure: no clock reads (time is passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

#: Kline intervals we use, in milliseconds.
INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "1d": DAY_MS,
}


def interval_ms(interval: str) -> int:
    """Return the length of a kline interval (``"1m"``, ``"15m"``, ``"1h"`` …) in milliseconds."""
    try:
        return INTERVAL_MS[interval]
    except KeyError:
        raise ValueError(f"unknown interval {interval!r}; expected one of {', '.join(INTERVAL_MS)}") from None


def ms_to_datetime(ts_ms: int) -> datetime:
    """Return the UTC datetime of an epoch-millisecond timestamp."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_to_text(ts_ms: int, *, seconds: bool = False) -> str:
    """Return an epoch-ms time as ``YYYY-MM-DD HH:MM`` (``YYYY-MM-DD HH:MM:SS`` with ``seconds``), UTC.

    Truncates (never rounds) to the minute or second, so a bar's time reads as the minute it opens.
    """
    dt = _EPOCH + timedelta(milliseconds=int(ts_ms))
    return dt.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def datetime_to_ms(dt: datetime) -> int:
    """Return epoch milliseconds of an aware datetime (naive datetimes are taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(round(dt.timestamp() * 1000))


def parse_utc(text: str) -> int:
    """Parse an ISO date or datetime (UTC unless it says otherwise) into epoch milliseconds."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO date or datetime such as 2025-05-04 or 2025-05-04T15:33"
        ) from None
    return datetime_to_ms(dt)
