"""The instruments table: the universe the rest of the schema refers to (spec 001 §26.3)."""

from __future__ import annotations

import difflib
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from core.errors import DataQualityError
from core.symbols import validate_internal
from storage.schema import instruments


def sync_universe(engine: sa.Engine, universe: Iterable[str], now_ms: int | None = None) -> dict[str, int]:
    """Make ``universe`` the active instruments; others become ``inactive`` (their rows stay: history refers to them).

    Returns counts of added, reactivated and deactivated symbols. Idempotent.
    """
    symbols = list(universe)
    for s in symbols:
        validate_internal(s)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with engine.begin() as conn:
        existing = dict(conn.execute(sa.select(instruments.c.symbol, instruments.c.status)).all())
        added = [s for s in symbols if s not in existing]
        reactivated = [s for s in symbols if existing.get(s) not in (None, "active")]
        deactivated = [s for s, st in existing.items() if s not in set(symbols) and st == "active"]
        if added:
            conn.execute(
                sa.insert(instruments),
                [{"symbol": s, "status": "active", "created_at": now_ms} for s in added],
            )
        if reactivated:
            conn.execute(
                sa.update(instruments).where(instruments.c.symbol.in_(reactivated)).values(status="active")
            )
        if deactivated:
            conn.execute(
                sa.update(instruments).where(instruments.c.symbol.in_(deactivated)).values(status="inactive")
            )
    return {"added": len(added), "reactivated": len(reactivated), "deactivated": len(deactivated)}


def active_symbols(engine: sa.Engine) -> list[str]:
    """Return the active instruments, sorted."""
    with engine.connect() as conn:
        q = (
            sa.select(instruments.c.symbol)
            .where(instruments.c.status == "active")
            .order_by(instruments.c.symbol)
        )
        return list(conn.execute(q).scalars())


def listed_symbols(exchange_info: Mapping[str, Any]) -> frozenset[str]:
    """Return every symbol of a decoded ``GET /fapi/v1/exchangeInfo``, whatever its status (a
    delisted symbol still has history)."""
    try:
        return frozenset(str(entry["symbol"]) for entry in exchange_info["symbols"])
    except (KeyError, TypeError) as e:
        raise DataQualityError(f"exchangeInfo: malformed payload ({type(e).__name__}: {e})") from None


def check_listed(symbols: Iterable[str], listed: Collection[str]) -> None:
    """Raise DataQualityError naming the ``symbols`` the instrument list ``listed`` does not have,
    with the closest listed spellings."""
    unlisted = [s for s in symbols if s not in listed]
    if not unlisted:
        return
    hints = []
    for s in unlisted:
        close = difflib.get_close_matches(s, sorted(listed), n=3, cutoff=0.8)
        hints.append(f"{s} (did you mean {', '.join(close)}?)" if close else s)
    raise DataQualityError(
        f"not a Binance USDⓈ-M instrument: {'; '.join(hints)}; exchangeInfo lists {len(listed)} symbol(s)"
    )
