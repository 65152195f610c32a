"""Event sampling: which decision bars to label when not every bar is wanted (spec 001 §8.2).

Both filters are causal: whether bar t is an event depends on data up to and including bar t only,
so the event set of a truncated series is the prefix of the full series' event set. They return
int64 bar positions, ascending, to pass as ``index`` to ``label_bars``.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _ewm_sd_before(log_close: np.ndarray, span: int) -> np.ndarray:
    """EWM sd of the log returns strictly before each bar (NaN until ``span`` returns were seen)."""
    n = len(log_close)
    out = np.full(n, np.nan)
    alpha = 2.0 / (span + 1.0)
    var = 0.0
    seen = 0
    for t in range(2, n):
        r = log_close[t - 1] - log_close[t - 2]
        if np.isfinite(r):
            var = r * r if seen == 0 else (1.0 - alpha) * var + alpha * (r * r)
            seen += 1
        if seen >= span:
            out[t] = np.sqrt(var)
    return out


@nb.njit(cache=True)
def _cusum(log_close: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    n = len(log_close)
    flags = np.zeros(n, np.bool_)
    up = 0.0
    down = 0.0
    for t in range(1, n):
        r = log_close[t] - log_close[t - 1]
        h = threshold[t]
        if not (np.isfinite(r) and np.isfinite(h)):
            continue
        up = max(0.0, up + r)
        down = min(0.0, down + r)
        if down < -h:
            down = 0.0
            flags[t] = True
        elif up > h:
            up = 0.0
            flags[t] = True
    return flags


def cusum_events(
    close: np.ndarray, threshold: float | np.ndarray, *, vol_span: int | None = None
) -> np.ndarray:
    """Return the bars where the symmetric CUSUM filter fires (López de Prado, AFML §2.5.2.1).

    On log returns ``r_t = ln(close_t / close_{t−1})``: ``s⁺ = max(0, s⁺ + r)``,
    ``s⁻ = min(0, s⁻ + r)``; bar t is an event when ``s⁻ < −h_t`` (then ``s⁻ = 0``) or else
    ``s⁺ > h_t`` (then ``s⁺ = 0``). ``threshold`` is ``h`` in log-return units (a float or one value
    per bar); with ``vol_span`` it is a multiple of the EWM sd (span ``vol_span`` bars) of the
    returns before bar t. Bars whose return or threshold is not finite are skipped. Uses closes up to
    and including t.
    """
    log_close = np.log(np.asarray(close, np.float64))
    h = np.broadcast_to(np.asarray(threshold, np.float64), log_close.shape).copy()
    if np.any(h[np.isfinite(h)] <= 0):
        raise ValueError("cusum threshold must be > 0")
    if vol_span is not None:
        if vol_span < 2:
            raise ValueError(f"vol_span must be ≥ 2, got {vol_span}")
        h = h * _ewm_sd_before(log_close, vol_span)
    return np.flatnonzero(_cusum(log_close, h)).astype(np.int64)


@nb.njit(cache=True)
def _spikes(x: np.ndarray, z: float, window: int) -> np.ndarray:
    n = len(x)
    flags = np.zeros(n, np.bool_)
    total = 0.0  # sums over the finite values of x[t − window … t − 1]
    total_sq = 0.0
    missing = 0
    for t in range(n):
        if t >= window:
            if t % window == 0:  # re-add from scratch now and then: subtracting accumulates rounding
                total = 0.0
                total_sq = 0.0
                missing = 0
                for q in range(t - window, t):
                    if np.isfinite(x[q]):
                        total += x[q]
                        total_sq += x[q] * x[q]
                    else:
                        missing += 1
            if missing == 0 and np.isfinite(x[t]):
                mean = total / window
                var = (total_sq - total * mean) / (window - 1)
                if var > 0.0 and x[t] - mean > z * np.sqrt(var):
                    flags[t] = True
        if np.isfinite(x[t]):
            total += x[t]
            total_sq += x[t] * x[t]
        else:
            missing += 1
        if t >= window:
            if np.isfinite(x[t - window]):
                total -= x[t - window]
                total_sq -= x[t - window] * x[t - window]
            else:
                missing -= 1
    return flags


def spike_events(x: np.ndarray, z: float, window: int = 60) -> np.ndarray:
    """Return the bars where ``x`` (volume, ATR, |return| …) spikes above its recent level.

    Bar t is an event when ``x_t > mean + z · sd`` of the ``window`` bars before it (t − window …
    t − 1, sample sd); not before ``window`` bars, nor when any of those bars or ``x_t`` is not
    finite, nor when the window is constant. Uses ``x`` up to and including t.
    """
    if window < 2:
        raise ValueError(f"window must be ≥ 2, got {window}")
    return np.flatnonzero(_spikes(np.asarray(x, np.float64), float(z), int(window))).astype(np.int64)
