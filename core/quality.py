"""Data quality at the door: which candle rows may be stored, and why the others may not.

Pure and vectorized. A rejected row is never stored as a candle; the caller records it, with its
reason and its raw values, as a data-quality event so that nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

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


#: Plausible ``ts`` range (2000-01-01 .. 2100-01-01, epoch ms): catches seconds or microseconds.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000
#: Reason codes of ``check_rows`` that come before the per-dataset checks.
ROW_REASONS = ("ts_out_of_range", "conflicting_ts", "duplicate_ts")


def check_rows(
    dataset: str, symbol: str, columns: Mapping[str, np.ndarray], interval_ms: int | None
) -> tuple[np.ndarray, list[Rejection]]:
    """Return (mask of rows that may be stored, rejections) for rows of one lake dataset and symbol.

    The one door for market rows (history, import, ingest, synthetic). All datasets: plausible
    epoch-ms ts; rows repeating a ts with the same values keep the first (``duplicate_ts`` for the
    others); rows sharing a ts with different values are all refused (``conflicting_ts``): which one
    is right cannot be told. Candles and mark prices (``candles_*``, ``mark_*``): ``check_candles``
    (a missing volume counts as 0). Premium index (may be ≤ 0): finite, OHLC consistent, on the
    grid. Funding: finite rate. ``interval_ms`` None skips the grid checks.
    """
    ts = np.asarray(columns["ts"], dtype=np.int64)
    n = len(ts)
    bad = np.zeros(n, dtype=bool)
    rejections: list[Rejection] = []

    def reject(mask: Any, reason: str, detail: Callable[[int], str]) -> None:
        hit = np.asarray(mask, dtype=bool) & ~bad
        for i in np.flatnonzero(hit):
            rejections.append(Rejection(int(i), reason, f"{symbol} ts={int(ts[i])}{detail(int(i))}"))
        bad[hit] = True

    reject(
        (ts < MIN_TS_MS) | (ts >= MAX_TS_MS), "ts_out_of_range", lambda i: " is not epoch ms in 2000..2100"
    )
    if n > 1 and not (np.diff(ts) > 0).all():
        conflicting, repeated = _repeats(ts, columns)
        reject(conflicting, "conflicting_ts", lambda i: " appears more than once with different values")
        reject(repeated, "duplicate_ts", lambda i: " repeats an earlier row")
    kind = dataset.split("_", 1)[0]
    if kind in ("candles", "mark") and interval_ms is not None:
        volume = columns["volume"] if "volume" in columns else np.zeros(n)
        ohlcv = {k: columns[k] for k in ("ts", "open", "high", "low", "close")} | {"volume": volume}
        _, found = check_candles(np.full(n, symbol, dtype=object), ohlcv, interval_ms, None)
        for r in found:
            if not bad[r.index]:
                rejections.append(r)
                bad[r.index] = True
    elif kind == "premium" and interval_ms is not None:
        o, h, lo, c = (np.asarray(columns[k], dtype=np.float64) for k in ("open", "high", "low", "close"))
        with np.errstate(invalid="ignore"):
            reject(~np.isfinite(np.stack([o, h, lo, c])).all(axis=0), "non_finite_price", lambda i: "")
            reject((h < np.maximum(o, c)) | (lo > np.minimum(o, c)), "ohlc_outside_range", lambda i: "")
        reject(
            ts % interval_ms != 0, "off_interval_grid", lambda i: f" is not a multiple of {interval_ms} ms"
        )
    elif dataset == "funding":
        rate = np.asarray(columns["funding_rate"], dtype=np.float64)
        reject(~np.isfinite(rate), "non_finite_funding_rate", lambda i: f": funding_rate={rate[i]!r}")
    rejections.sort(key=lambda r: r.index)
    return ~bad, rejections


def _repeats(ts: np.ndarray, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(rows whose ts repeats with different values, later rows repeating an identical earlier row)."""
    n = len(ts)
    order = np.argsort(ts, kind="stable")
    same_as_previous = np.zeros(n, dtype=bool)  # in sorted order: ts equal to the row before
    same_as_previous[1:] = ts[order[1:]] == ts[order[:-1]]
    group = np.cumsum(~same_as_previous) - 1  # group number of each sorted row
    first_of_group = order[np.flatnonzero(~same_as_previous)][group]
    differs = np.zeros(n, dtype=bool)
    for values in columns.values():
        v = np.asarray(values)[order]
        w = np.asarray(values)[first_of_group]
        if v.dtype.kind == "f":
            differs |= ~((v == w) | (np.isnan(v) & np.isnan(w)))
        else:
            differs |= v != w
    conflict_groups = np.unique(group[differs])
    conflicting_sorted = np.isin(group, conflict_groups) & np.isin(group, group[same_as_previous])
    conflicting = np.zeros(n, dtype=bool)
    conflicting[order] = conflicting_sorted
    repeated = np.zeros(n, dtype=bool)
    repeated[order] = same_as_previous & ~conflicting_sorted
    return conflicting, repeated
