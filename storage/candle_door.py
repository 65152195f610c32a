"""The door for candles: which rows may be stored as candles, and the events recording the others.

core.quality.check_candles decides; a row without symbol or ts is rejected as ``missing_key``.
Each rejected row becomes one ``events`` row (kind ``data_quality.rejected_candle``) whose payload
keeps the reason, the detail and the row's values, so that nothing is lost and nothing bad is
stored as a candle. JSON has no NaN or infinity: those values are kept as the strings "NaN",
"Infinity" and "-Infinity".
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.jsonsafe import json_safe
from core.quality import Rejection, check_candles
from core.time import interval_ms
from storage import schema
from storage.batch import FLOAT8, ColumnBatch, to_batch

REJECTED_CANDLE_KIND = "data_quality.rejected_candle"
CHECKED_COLUMNS = ("ts", "open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class CandleScreen:
    """Candle rows split by the door: ``accepted`` rows, the ``events`` rows for the rejected."""

    accepted: ColumnBatch
    events: ColumnBatch | None
    rejections: list[Rejection]


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
    events = _rejection_events(interval, batch, rejections, source, now_ms) if rejections else None
    return CandleScreen(accepted, events, rejections)


def _rejection_events(
    interval: str, batch: ColumnBatch, rejections: list[Rejection], source: str, now_ms: int
) -> ColumnBatch:
    rejected = batch.take(np.array([r.index for r in rejections], dtype=np.intp))
    rows = rejected.rows()
    for name, col in rejected.columns.items():  # floats as given: here NaN is a value, not NULL
        if col.kind == FLOAT8:
            for row, value in zip(rows, col.values.tolist(), strict=True):
                row[name] = value
    events = [
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
            },
        }
        for r, row in zip(rejections, rows, strict=True)
    ]
    return to_batch(schema.events, events, require_pk=False)
