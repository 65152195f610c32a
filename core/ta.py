"""Shared technical-analysis primitives (numba), following TA-Lib's conventions.

Used by the feature kernels and by the label ATR source, so that an ATR is computed one way only.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from core.time import MINUTE_MS


@nb.njit(cache=True)
def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Return the true range per bar; the first bar has no previous close and gets NaN (TA-Lib: TRANGE)."""
    n = len(high)
    out = np.empty(n)
    if n:
        out[0] = np.nan
    for i in range(1, n):
        pc = close[i - 1]
        out[i] = max(high[i] - low[i], abs(high[i] - pc), abs(low[i] - pc))
    return out


@nb.njit(cache=True)
def atr_wilder(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Return Wilder's ATR as TA-Lib computes it: NaN for the first ``period`` bars, the value at
    index ``period`` is the mean of true ranges 1..period, then ATR = (prev·(p−1) + TR)/p.

    Uses bars up to and including t. A NaN input poisons the rest, as in TA-Lib.
    """
    n = len(high)
    out = np.full(n, np.nan)
    if n <= period:
        return out
    tr = true_range(high, low, close)
    acc = 0.0
    for i in range(1, period + 1):
        acc += tr[i]
    prev = acc / period
    out[period] = prev
    for i in range(period + 1, n):
        prev = (prev * (period - 1) + tr[i]) / period
        out[i] = prev
    return out


@nb.njit(cache=True)
def last_closed_index(
    ts_ms: np.ndarray, base_interval_ms: int, htf_ts_ms: np.ndarray, htf_interval_ms: int
) -> np.ndarray:
    """For each base bar, the index of the last higher-timeframe bar closed by the base bar's close.

    A base bar [t, t + base) closes at t + base; a higher-timeframe bar [T, T + H) is usable at that
    moment iff T + H ≤ t + base. Returns −1 where none is. Both inputs sorted ascending.
    """
    htf_close = htf_ts_ms + htf_interval_ms
    return np.searchsorted(htf_close, ts_ms + base_interval_ms, side="right").astype(np.int64) - 1


def last_closed_index_1m(ts_ms: np.ndarray, htf_ts_ms: np.ndarray, htf_interval_ms: int) -> np.ndarray:
    """``last_closed_index`` for 1m base bars."""
    return last_closed_index(
        np.asarray(ts_ms, np.int64), MINUTE_MS, np.asarray(htf_ts_ms, np.int64), htf_interval_ms
    )
