"""Shared technical-analysis primitives (numba), following TA-Lib's conventions.

Batch indicators used by the label ATR source and the baseline strategies, so that each is
computed one way only. Each returns an array as long as its input, NaN during warm-up; the value
at i uses inputs up to and including i (``prior_max`` / ``prior_min``: strictly before i). A NaN
input poisons the recursive ones (ATR, EMA, RSI) from there on and the windows that contain it, as
in TA-Lib. (The feature kernels keep incremental versions of these in their own state.)
"""

from __future__ import annotations

import numba as nb
import numpy as np

from core.features_kernel import ATR_FLOOR_REL
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


def atr_wilder(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Return Wilder's ATR as TA-Lib computes it: NaN for the first ``period`` bars, the value at
    index ``period`` is the mean of true ranges 1..period, then ATR = (prev·(p−1) + TR)/p.

    An ATR below ``core.features_kernel.ATR_FLOOR_REL`` of the bar's close is returned as 0, as the
    features' ATR: a flat market, where Wilder's decay never reaches 0 by itself. The recursion
    carries on from the unfloored value. Uses bars up to and including t. A NaN input poisons the
    rest, as in TA-Lib.
    """
    # the floor is passed in rather than read as a global: numba would freeze a constant of another
    # file into this function's cache and miss a change of it
    return _atr_wilder(high, low, close, period, ATR_FLOOR_REL)


@nb.njit(cache=True)
def _atr_wilder(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int, floor_rel: float
) -> np.ndarray:
    n = len(high)
    out = np.full(n, np.nan)
    if n <= period:
        return out
    tr = true_range(high, low, close)
    acc = 0.0
    for i in range(1, period + 1):
        acc += tr[i]
    prev = acc / period
    out[period] = 0.0 if prev < floor_rel * close[period] else prev
    for i in range(period + 1, n):
        prev = (prev * (period - 1) + tr[i]) / period
        out[i] = 0.0 if prev < floor_rel * close[i] else prev
    return out


@nb.njit(cache=True)
def last_closed_index(
    ts_ms: np.ndarray, base_interval_ms: int, htf_ts_ms: np.ndarray, htf_interval_ms: int
) -> np.ndarray:
    """For each base bar, the index of the last higher-timeframe bar closed by the base bar's close.

    A base bar [t, t + base) closes at t + base; a higher-timeframe bar [T, T + H) is usable at that
    moment iff T + H ≤ t + base. Returns −1 where none is. Both inputs sorted ascending.
    """
    out = np.empty(len(ts_ms), np.int64)
    j = 0  # one merge pass over both sorted series (a binary search per base bar is 10× slower)
    for q in range(len(ts_ms)):
        closes = ts_ms[q] + base_interval_ms
        while j < len(htf_ts_ms) and htf_ts_ms[j] + htf_interval_ms <= closes:
            j += 1
        out[q] = j - 1
    return out


def last_closed_index_1m(ts_ms: np.ndarray, htf_ts_ms: np.ndarray, htf_interval_ms: int) -> np.ndarray:
    """``last_closed_index`` for 1m base bars."""
    return last_closed_index(
        np.asarray(ts_ms, np.int64), MINUTE_MS, np.asarray(htf_ts_ms, np.int64), htf_interval_ms
    )


@nb.njit(cache=True)
def ema(x: np.ndarray, period: int) -> np.ndarray:
    """Return the EMA with k = 2/(period + 1), seeded by the SMA of the first ``period`` values
    (TA-Lib EMA): first value at index period − 1."""
    n = len(x)
    out = np.full(n, np.nan)
    if n < period:
        return out
    acc = 0.0
    for i in range(period):
        acc += x[i]
    prev = acc / period
    out[period - 1] = prev
    k = 2.0 / (period + 1)
    for i in range(period, n):
        prev = prev + k * (x[i] - prev)
        out[i] = prev
    return out


@nb.njit(cache=True)
def sma(x: np.ndarray, window: int) -> np.ndarray:
    """Return the mean of the last ``window`` values (TA-Lib SMA): first value at index window − 1."""
    n = len(x)
    out = np.full(n, np.nan)
    for i in range(window - 1, n):
        acc = 0.0
        for j in range(i - window + 1, i + 1):
            acc += x[j]
        out[i] = acc / window
    return out


@nb.njit(cache=True)
def rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Return the population std (ddof 0) of the last ``window`` values, two-pass (TA-Lib STDDEV, nbdev 1)."""
    n = len(x)
    out = np.full(n, np.nan)
    for i in range(window - 1, n):
        acc = 0.0
        for j in range(i - window + 1, i + 1):
            acc += x[j]
        m = acc / window
        ss = 0.0
        for j in range(i - window + 1, i + 1):
            ss += (x[j] - m) * (x[j] - m)
        out[i] = np.sqrt(ss / window)
    return out


@nb.njit(cache=True)
def rsi_wilder(x: np.ndarray, period: int) -> np.ndarray:
    """Return Wilder's RSI (TA-Lib RSI): first value at index ``period`` from the mean gain and loss of
    the first ``period`` changes, then Wilder smoothing. A flat window gives 50 (TA-Lib: 0)."""
    n = len(x)
    out = np.full(n, np.nan)
    if n <= period:
        return out
    gain = 0.0
    loss = 0.0
    for i in range(1, period + 1):
        d = x[i] - x[i - 1]
        if d > 0:
            gain += d
        else:
            loss -= d
    gain /= period
    loss /= period
    for i in range(period, n):
        if i > period:
            d = x[i] - x[i - 1]
            gain = (gain * (period - 1) + (d if d > 0 else 0.0)) / period
            loss = (loss * (period - 1) + (-d if d < 0 else 0.0)) / period
        tot = gain + loss
        out[i] = 50.0 if tot == 0.0 else 100.0 * gain / tot
    return out


@nb.njit(cache=True)
def prior_max(x: np.ndarray, window: int) -> np.ndarray:
    """Return the max of the ``window`` values before i (``x[i − window … i − 1]``); NaN for i < window."""
    n = len(x)
    out = np.full(n, np.nan)
    for i in range(window, n):
        m = x[i - window]
        for j in range(i - window + 1, i):
            if x[j] > m or np.isnan(x[j]):
                m = x[j]
                if np.isnan(m):
                    break
        out[i] = m
    return out


@nb.njit(cache=True)
def prior_min(x: np.ndarray, window: int) -> np.ndarray:
    """Return the min of the ``window`` values before i (``x[i − window … i − 1]``); NaN for i < window."""
    n = len(x)
    out = np.full(n, np.nan)
    for i in range(window, n):
        m = x[i - window]
        for j in range(i - window + 1, i):
            if x[j] < m or np.isnan(x[j]):
                m = x[j]
                if np.isnan(m):
                    break
        out[i] = m
    return out
