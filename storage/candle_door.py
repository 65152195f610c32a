"""The door for market rows: which rows may be stored, and the events recording the others.

One door for every write of candles, mark, premium and funding, before the lake and the database:
``screen_rows`` (core.quality.check_rows) for lake frames of one dataset and symbol (history,
import, synthetic), ``screen_candles`` (core.quality.check_candles, plus the universe and
``missing_key``) for database candle rows (the batched writer, ingest). Each rejected row becomes
one ``events`` row (kind ``data_quality.rejected_candle``, or ``data_quality.rejected_row`` for
mark, premium and funding) whose payload keeps the reason, the detail, the row's values and a
deterministic ``key`` (dataset, symbol and values hashed), so that nothing is lost, nothing bad is
stored, and ``RejectionLog`` records a row rejected again on a rerun only once. JSON has no NaN or
infinity: those values are kept as the strings "NaN", "Infinity" and "-Infinity".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from core.jsonsafe import json_safe
from core.quality import Rejection, check_candles, check_rows
from core.time import INTERVAL_MS, interval_ms
from storage import schema
from storage.batch import FLOAT8, ColumnBatch, to_batch

REJECTED_CANDLE_KIND = "data_quality.rejected_candle"
REJECTED_ROW_KIND = "data_quality.rejected_row"
REJECTION_KINDS = (REJECTED_CANDLE_KIND, REJECTED_ROW_KIND)
CHECKED_COLUMNS = ("ts", "open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class CandleScreen:
    """Candle rows split by the door: ``accepted`` rows, the ``events`` rows for the rejected."""

    accepted: ColumnBatch
    events: ColumnBatch | None
    rejections: list[Rejection]
    event_keys: tuple[str, ...] = ()  # the key of each event row, in order


def screen_candles(
    interval: str, rows: Any, known_symbols: Collection[str] | None, *, source: str, now_ms: int
) -> CandleScreen:
    """Split candle ``rows`` for ``candles_<interval>`` into accepted rows and rejection events.

    ``known_symbols`` None accepts any symbol; ``now_ms`` stamps the events. Raises ValueError
    for an unknown interval, a missing column or a value of the wrong type.
    """
    if interval not in schema.CANDLE_TABLES:
        raise ValueError(f"no candle table for interval {interval!r}; have {', '.join(schema.CANDLE_TABLES)}")
    table = schema.CANDLE_TABLES[interval]
    batch = to_batch(table, rows)
    missing = [k for k in CHECKED_COLUMNS if k not in batch.columns]
    if missing:
        raise ValueError(f"{table.name}: candle column(s) {', '.join(missing)} missing")
    symbols = batch.columns["symbol"].values
    checked = {k: batch.columns[k].values for k in CHECKED_COLUMNS}
    mask, rejections = check_candles(symbols, checked, interval_ms(interval), known_symbols)
    no_key = np.array([s is None for s in symbols], dtype=bool)
    ts_nulls = batch.columns["ts"].nulls
    if ts_nulls is not None:
        no_key |= ts_nulls
    for i in np.flatnonzero(no_key & mask):
        rejections.append(Rejection(int(i), "missing_key", f"row {i}: symbol or ts is missing"))
    rejections.sort(key=lambda r: r.index)
    accepted = batch.take(np.flatnonzero(mask & ~no_key))
    if not rejections:
        return CandleScreen(accepted, None, rejections)
    events, keys = _rejection_events(interval, batch, rejections, source, now_ms)
    return CandleScreen(accepted, events, rejections, keys)


def _rejection_events(
    interval: str, batch: ColumnBatch, rejections: list[Rejection], source: str, now_ms: int
) -> tuple[ColumnBatch, tuple[str, ...]]:
    rejected = batch.take(np.array([r.index for r in rejections], dtype=np.intp))
    rows = rejected.rows()
    for name, col in rejected.columns.items():  # floats as given: here NaN is a value, not NULL
        if col.kind == FLOAT8:
            for row, value in zip(rows, col.values.tolist(), strict=True):
                row[name] = value
    events: list[dict[str, Any]] = [
        {
            "ts": now_ms,
            "kind": REJECTED_CANDLE_KIND,
            "source": source,
            "symbol": row.get("symbol"),
            "payload": {
                "reason": r.reason,
                "detail": r.detail,
                "interval": interval,
                "table": batch.table,
                "row": json_safe(dict(row), nonfinite="text"),  # the raw values, NaN as "NaN"
                "key": event_key(batch.table, row.get("symbol"), row),
            },
        }
        for r, row in zip(rejections, rows, strict=True)
    ]
    keys = tuple(str(e["payload"]["key"]) for e in events)
    return to_batch(schema.events, events, require_pk=False), keys


def event_key(dataset: str, symbol: str | None, row: Mapping[str, Any]) -> str:
    """Return the deterministic key of a rejected row: dataset, symbol and its values (ts included),
    hashed. The same row rejected again, by any path, has the same key."""
    values = {k: v for k, v in row.items() if k != "symbol" and v is not None}
    text = json.dumps([dataset, symbol, json_safe(values, nonfinite="text")], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class RowScreen:
    """Rows of one dataset and symbol split by the door: ``accepted`` columns, the rejections and
    their ``events`` rows (dicts for storage.schema.events)."""

    accepted: dict[str, np.ndarray]
    rejections: list[Rejection]
    events: list[dict[str, Any]]

    @property
    def rows_accepted(self) -> int:
        return len(self.accepted["ts"])


def screen_rows(
    dataset: str,
    symbol: str,
    columns: Mapping[str, np.ndarray] | Any,
    *,
    source: str,
    now_ms: int,
    extra_rejections: Iterable[tuple[str, str, Mapping[str, Any]]] = (),
) -> RowScreen:
    """Split lake rows of ``dataset`` and ``symbol`` into the rows that may be stored and events.

    ``columns``: a DataFrame or a mapping of equal-length arrays (``ts`` epoch ms). Rows are checked
    by core.quality.check_rows. ``extra_rejections`` (reason, detail, raw values) are rows refused
    before they became columns (a malformed CSV line): they become events too. ``now_ms`` stamps
    the events.
    """
    names = list(columns.columns) if hasattr(columns, "columns") else list(columns)
    arrays = {str(k): np.asarray(columns[k]) for k in names}
    step = INTERVAL_MS.get(dataset.rsplit("_", 1)[-1]) if "_" in dataset else None
    keep, rejections = check_rows(dataset, symbol, arrays, step)
    kind = REJECTED_CANDLE_KIND if dataset.startswith("candles_") else REJECTED_ROW_KIND
    events = []
    for r in rejections:
        row = {k: v[r.index].item() if hasattr(v[r.index], "item") else v[r.index] for k, v in arrays.items()}
        events.append(_event(kind, dataset, symbol, r.reason, r.detail, row, source, now_ms))
    for reason, detail, raw in extra_rejections:
        events.append(_event(kind, dataset, symbol, reason, detail, dict(raw), source, now_ms))
    accepted = {k: v[keep] for k, v in arrays.items()}
    extra = [Rejection(-1, reason, detail) for reason, detail, _ in extra_rejections]
    return RowScreen(accepted, rejections + extra, events)


def _event(
    kind: str,
    dataset: str,
    symbol: str,
    reason: str,
    detail: str,
    row: dict[str, Any],
    source: str,
    now_ms: int,
) -> dict[str, Any]:
    values = json_safe(row, nonfinite="text")
    return {
        "ts": now_ms,
        "kind": kind,
        "source": source,
        "symbol": symbol,
        "payload": {
            "reason": reason,
            "detail": detail,
            "dataset": dataset,
            "row": values,
            "key": event_key(dataset, symbol, row),
        },
    }


def recorded_keys(engine: sa.Engine, symbols: Collection[str | None]) -> set[str]:
    """Return the keys of the rejection events already in ``events`` for ``symbols``."""
    wanted = [s for s in symbols if s is not None]
    query = sa.select(schema.events.c.payload).where(schema.events.c.kind.in_(REJECTION_KINDS))
    condition: sa.ColumnElement[bool] = schema.events.c.symbol.in_(wanted) if wanted else sa.false()
    if any(s is None for s in symbols):
        condition = sa.or_(condition, schema.events.c.symbol.is_(None))
    with engine.connect() as conn:
        payloads = conn.execute(query.where(condition)).scalars()
        return {str(p["key"]) for p in payloads if isinstance(p, dict) and p.get("key")}


class RejectionLog:
    """Writes rejection events to ``events``, each key once: a rerun rejecting the same rows
    records nothing twice. Counts what it recorded and what was recorded before."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.recorded = 0
        self.already = 0

    def record(self, events: list[dict[str, Any]]) -> int:
        """Insert the events whose key is not recorded yet; return how many were inserted."""
        if not events:
            return 0
        known = recorded_keys(self.engine, {e["symbol"] for e in events})
        fresh: list[dict[str, Any]] = []
        for e in events:
            key = e["payload"]["key"]
            if key not in known:
                known.add(key)
                fresh.append(e)
        if fresh:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(schema.events), fresh)
        self.recorded += len(fresh)
        self.already += len(events) - len(fresh)
        return len(fresh)
