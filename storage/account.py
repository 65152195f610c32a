"""Account snapshots (``account_snapshots``): one row per minute close of a running book.

The paper book writes its simulator's account, the live book the venue's (``GET /fapi/v3/account``,
read off the order path). A row is keyed by its time: writing the same minute again is a no-op when
the figures are the same and a correction otherwise, so a retried or restarted writer never fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa

from storage.bulk import write_rows
from storage.schema import account_snapshots

__all__ = ["FIGURES", "latest_snapshot", "snapshot_row", "write_snapshot"]

#: The figures of a snapshot (USDT, but ``margin_ratio``: maintenance margin / margin balance).
FIGURES: Final = (
    "equity",
    "wallet_balance",
    "unrealized_pnl",
    "available_margin",
    "used_margin",
    "margin_ratio",
)


def snapshot_row(ts_ms: int, mode: str, figures: Mapping[str, float]) -> dict[str, Any]:
    """The ``account_snapshots`` row of ``figures`` (``FIGURES``) at ``ts_ms``; ValueError on a
    missing or non-finite figure (a snapshot is written whole or not at all)."""
    row: dict[str, Any] = {"ts": int(ts_ms), "mode": mode}
    for name in FIGURES:
        value = float(figures[name])
        if not math.isfinite(value):
            raise ValueError(f"account snapshot at {ts_ms}: {name} is {value}")
        row[name] = value
    return row


def write_snapshot(engine: sa.Engine, row: Mapping[str, Any]) -> None:
    """Write one snapshot row (idempotent on ``ts``)."""
    write_rows(engine, "account_snapshots", [dict(row)])


def latest_snapshot(engine: sa.Engine | sa.Connection) -> dict[str, Any] | None:
    """The newest snapshot row (by time), None when there is none."""
    q = sa.select(account_snapshots).order_by(account_snapshots.c.ts.desc()).limit(1)
    if isinstance(engine, sa.Connection):
        row = engine.execute(q).mappings().first()
    else:
        with engine.connect() as conn:
            row = conn.execute(q).mappings().first()
    return None if row is None else dict(row)
