"""Data quality at the door: which candle rows may be stored, and why the others may not.

Pure and vectorized. A rejected row is never stored as a candle; the caller records it, with its
reason and its raw values, as a data-quality event so that nothing is lost.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

#: Reason codes, in the order they are checked (a row gets the first that applies).
REASONS = (
    "unknown_symbol",
    "non_finite_price",
    "non_positive_price",
    "high_below_low",
    "ohlc_outside_range",
    "negative_volume",
    "non_finite_volume",
    "off_interval_grid",
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """One rejected row: its position in the input, the reason code, and a readable detail."""

    index: int
    reason: str
    detail: str


def check_candles(
    symbols: np.ndarray,
    columns: Mapping[str, np.ndarray],
    interval_ms: int,
    known_symbols: Collection[str] | None,
) -> tuple[np.ndarray, list[Rejection]]:
    """Return (mask of acceptable rows, rejections) for candle rows.

    ``columns`` holds ts (epoch ms, bar open), open, high, low, close, volume. ``known_symbols``
    None accepts any symbol. Checks: known symbol; finite, positive prices; high ≥ low; open and
    close within [low, high]; finite, non-negative volume; ts on the interval grid.
    """
    n = len(columns["ts"])
    ts = np.asarray(columns["ts"], dtype=np.int64)
    o, h, lo, c = (np.asarray(columns[k], dtype=np.float64) for k in ("open", "high", "low", "close"))
    v = np.asarray(columns["volume"], dtype=np.float64)
    prices = np.stack([o, h, lo, c]) if n else np.empty((4, 0))
    with np.errstate(invalid="ignore"):
        checks = {
            "unknown_symbol": (
                np.zeros(n, bool)
                if known_symbols is None
                else ~np.isin(
                    np.asarray(symbols, dtype=object), np.asarray(list(known_symbols), dtype=object)
                )
            ),
            "non_finite_price": ~np.isfinite(prices).all(axis=0),
            "non_positive_price": (prices <= 0).any(axis=0),
            "high_below_low": h < lo,
            "ohlc_outside_range": (o > h) | (o < lo) | (c > h) | (c < lo),
            "negative_volume": v < 0,
            "non_finite_volume": ~np.isfinite(v),
            "off_interval_grid": ts % interval_ms != 0,
        }
    bad = np.zeros(n, dtype=bool)
    rejections: list[Rejection] = []
    for reason in REASONS:
        hit = checks[reason] & ~bad
        if hit.any():
            for i in np.flatnonzero(hit):
                rejections.append(
                    Rejection(
                        int(i), reason, _detail(reason, int(i), symbols, ts, o, h, lo, c, v, interval_ms)
                    )
                )
            bad |= hit
    rejections.sort(key=lambda r: r.index)
    return ~bad, rejections


def _detail(
    reason: str,
    i: int,
    symbols: np.ndarray,
    ts: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    interval_ms: int,
) -> str:
    where = f"{symbols[i]} ts={int(ts[i])}"
    if reason == "unknown_symbol":
        return f"{where}: symbol is not in the universe"
    if reason == "off_interval_grid":
        return f"{where}: ts is not a multiple of the {interval_ms} ms interval"
    if reason in ("negative_volume", "non_finite_volume"):
        return f"{where}: volume={v[i]!r}"
    return f"{where}: open={o[i]!r} high={h[i]!r} low={lo[i]!r} close={c[i]!r}"
