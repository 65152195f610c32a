"""Feature drift and data quality (spec 001 §17): PSI, missing rate, outlier rate, message latency.

Pure numpy. A *reference* window (e.g. the last 7 days before the current window) defines what a
feature normally looks like; the *current* window (e.g. the last hour) is compared with it.

PSI (population stability index) of one feature:

- Bin edges are the reference's deciles (``numpy.quantile`` at 0.1 … 0.9, linear interpolation) with
  repeated edges merged, so ties and constant features give fewer bins, never empty-width ones. A
  constant feature has the single edge ``c``: bins ``(-inf, c]`` and ``(c, inf)``, so any move of
  the current values away from ``c`` shows. Bins are right-closed: ``(e[i-1], e[i]]``, outermost
  bins open to ±inf, so every finite value lands in one bin.
- Shares ``r`` (reference) and ``c`` (current) per bin over the finite values only (NaN and ±inf are
  missing data, counted by ``missing_rate``); an empty bin's share is raised to ``PSI_EPSILON``.
- ``PSI = Σ (c − r) · ln(c / r)``; NaN when either window has no finite value.
- Status: ``ok`` below ``PSI_WARN`` (0.1), ``warn`` below ``PSI_ALARM`` (0.25), else ``alarm``;
  ``unknown`` for NaN.

Message latency: the median delay from an event (a bar's close, venue clock) to its receipt (our
clock) over live messages only (``message_latency_ms``); replayed and backfilled data give none.

Outlier rate: the share of the current window's finite values outside the reference's robust range
``median ± OUTLIER_K · σ̂``, where ``σ̂ = 1.4826 · MAD`` (the normal-consistent median absolute
deviation); when the MAD is 0 (more than half the reference tied) ``σ̂`` falls back to
``1.2533 · mean absolute deviation from the median``, and when that is 0 too (a constant feature)
every value other than the constant is an outlier.

Which features, and when a PSI can be trusted (``feature_drift`` with the rows' times):

- ``DRIFT_FEATURES``: every schema feature except the calendar ones (``CALENDAR_FEATURES``, hour and
  weekday sin/cos of every timeframe). Those are functions of the clock: a 24 h window holds one or
  two weekdays and a 7-day reference all seven, so they differ by construction (PSI ≈ 8 on any data).
- A ``f_15m_*`` or ``f_1h_*`` feature is the value of its timeframe's last closed bar, repeated on
  every 1m row until the next close; it is sampled once per bar of its own timeframe (the 1m rows
  where such a bar closes), on both windows.
- Samples of one feature overlap (a 60-bar volatility moves little from one bar to the next), so a
  window holds fewer independent values than rows. ``effective_samples`` divides a window's sample
  count by the feature's integrated autocorrelation time, estimated on the reference (Sokal's
  automatic window), and at most its number of runs of equal values (funding features change
  three times a day: three values, however many rows). Below ``MIN_EFFECTIVE_SAMPLES`` in the current window the status is
  ``insufficient``: two samples of the same distribution would too often be ``alarm`` apart. By
  the χ² approximation (PSI ≈ χ²₉ / n) 100 samples would do; measured on an i.i.d. synthetic
  market, 96 samples (the 15m bars of a day) give PSI up to 0.34 between two days of the same
  distribution, 200 and more stay below 0.1. The PSI is still reported. On a 24 h window this
  leaves the short-memory 1m features (returns up to 15 bars, candle shape, volume z …); 15m
  features need a current window of 3 days or more, a 60-bar volatility longer still.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from core.features_schema import FEATURE_NAMES, TIMEFRAMES

__all__ = [
    "CALENDAR_FEATURES",
    "DRIFT_FEATURES",
    "MAX_MESSAGE_LATENCY_MS",
    "MIN_EFFECTIVE_SAMPLES",
    "OUTLIER_K",
    "PSI_ALARM",
    "PSI_EPSILON",
    "PSI_WARN",
    "DriftStatus",
    "FeatureDrift",
    "autocorrelation_time",
    "bar_close_rows",
    "decile_edges",
    "effective_samples",
    "feature_drift",
    "feature_timeframe_ms",
    "message_latency_ms",
    "missing_rate",
    "outlier_rate",
    "psi",
    "psi_status",
    "robust_range",
]

PSI_WARN = 0.1
PSI_ALARM = 0.25
#: Share given to an empty bin, so that ln(c / r) stays finite.
PSI_EPSILON = 1e-4
#: Half-width of the robust range in robust standard deviations.
OUTLIER_K = 5.0
_MAD_TO_SIGMA = 1.4826
_MEAN_AD_TO_SIGMA = 1.2533

#: Longest delay from an event to its receipt that is a live message's latency, ms (5 minutes).
MAX_MESSAGE_LATENCY_MS = 300_000
#: Fewest effective (independent) current-window samples for a PSI status other than ``insufficient``.
MIN_EFFECTIVE_SAMPLES = 200.0
_SOKAL_C = 5.0
_BAR_MS = 60_000
_TIMEFRAME_MS = {"1m": 60_000, "15m": 900_000, "1h": 3_600_000}

#: Hour-of-day and weekday features of every timeframe: functions of the clock, never drift-checked.
CALENDAR_FEATURES: tuple[str, ...] = tuple(
    n for n in FEATURE_NAMES if n.split("_", 2)[2] in ("hour_sin", "hour_cos", "dow_sin", "dow_cos")
)
#: The features a drift pass checks by default: the schema's, less ``CALENDAR_FEATURES``.
DRIFT_FEATURES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n not in CALENDAR_FEATURES)

DriftStatus = Literal["ok", "warn", "alarm", "unknown", "insufficient"]


def _finite(values: np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def decile_edges(reference: np.ndarray) -> np.ndarray:
    """Return the reference's distinct deciles (0.1 … 0.9) over its finite values; empty if it has none."""
    x = _finite(reference)
    if x.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(x, np.linspace(0.1, 0.9, 9)))


def _shares(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, x, side="left"), minlength=edges.size + 1)
    return np.maximum(counts / x.size, PSI_EPSILON)


def psi(current: np.ndarray, reference: np.ndarray) -> float:
    """Return the PSI of ``current`` against ``reference`` on the reference's decile bins (module doc).

    Non-finite values of either are ignored; NaN when either has no finite value.
    """
    ref, cur = _finite(reference), _finite(current)
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    edges = decile_edges(ref)
    r, c = _shares(ref, edges), _shares(cur, edges)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_status(value: float) -> DriftStatus:
    """Return ``ok`` (< 0.1), ``warn`` (< 0.25), ``alarm`` (≥ 0.25) or ``unknown`` (NaN)."""
    if not np.isfinite(value):
        return "unknown"
    if value < PSI_WARN:
        return "ok"
    return "warn" if value < PSI_ALARM else "alarm"


def missing_rate(values: np.ndarray, expected_count: int | None = None) -> float:
    """Return the share of missing values: non-finite ones, plus absent ones when ``expected_count`` is given.

    ``expected_count`` is how many values the window should hold (e.g. bars × features); values
    beyond it are not counted as negative missing. NaN when nothing was expected.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    expected = x.size if expected_count is None else max(int(expected_count), x.size)
    if expected == 0:
        return float("nan")
    return 1.0 - int(np.isfinite(x).sum()) / expected


def robust_range(reference: np.ndarray, k: float = OUTLIER_K) -> tuple[float, float]:
    """Return ``median ± k · σ̂`` of the reference's finite values (module doc); (nan, nan) if it has none."""
    x = _finite(reference)
    if x.size == 0:
        return float("nan"), float("nan")
    median = float(np.median(x))
    deviation = np.abs(x - median)
    sigma = _MAD_TO_SIGMA * float(np.median(deviation))
    if sigma == 0.0:
        sigma = _MEAN_AD_TO_SIGMA * float(np.mean(deviation))
    return median - k * sigma, median + k * sigma


def outlier_rate(current: np.ndarray, reference: np.ndarray, k: float = OUTLIER_K) -> float:
    """Return the share of ``current``'s finite values outside the reference's robust range; NaN if none."""
    cur = _finite(current)
    lo, hi = robust_range(reference, k)
    if cur.size == 0 or not np.isfinite(lo):
        return float("nan")
    return float(np.mean((cur < lo) | (cur > hi)))


def message_latency_ms(event_ms: np.ndarray, received_ms: np.ndarray) -> float:
    """Return the median of ``received_ms − event_ms`` over live receipts; NaN if there are none.

    ``event_ms`` is when the message's event happened by the venue's clock (e.g. a bar's close),
    ``received_ms`` when we received it by ours. A pair counts when both are known (> 0) and the
    delay is in ``[0, MAX_MESSAGE_LATENCY_MS]``: anything else is not a live message — a replay
    session's bars close on the replayed (past) clock while they are received now, a backfilled
    bar arrives long after its close — and its "latency" would measure the replay's date.
    """
    event = np.asarray(event_ms, dtype=np.float64)
    received = np.asarray(received_ms, dtype=np.float64)
    known = np.isfinite(event) & np.isfinite(received) & (event > 0) & (received > 0)
    delay = np.where(known, received - event, np.nan)
    live = known & (delay >= 0) & (delay <= MAX_MESSAGE_LATENCY_MS)
    if not live.any():
        return float("nan")
    return float(np.median(delay[live]))


def feature_timeframe_ms(name: str) -> int:
    """Return the bar length, ms, of a ``f_<timeframe>_<feature>`` name; 1m for other names."""
    parts = name.split("_", 2)
    if len(parts) == 3 and parts[0] == "f" and parts[1] in TIMEFRAMES:
        return _TIMEFRAME_MS[parts[1]]
    return _BAR_MS


def bar_close_rows(ts_ms: np.ndarray, timeframe_ms: int) -> np.ndarray:
    """Return the mask of 1m rows (open times, ms) at whose close a bar of ``timeframe_ms`` closes."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    return (ts + _BAR_MS) % int(timeframe_ms) == 0


def autocorrelation_time(values: np.ndarray) -> float:
    """Return the integrated autocorrelation time τ ≥ 1 of a series (in samples): 1 + 2 Σ ρ_k.

    The sum runs to Sokal's window, the smallest lag M with M ≥ 5 τ(M) (τ(M) the largest partial
    sum up to M, which errs towards fewer effective samples); when no lag qualifies the
    series is too persistent to tell, and τ is its length. Non-finite values are dropped; a
    constant series (or one of fewer than 3 values) gives 1.
    """
    x = _finite(values)
    n = x.size
    if n < 3:
        return 1.0
    x = x - x.mean()
    variance = float(np.dot(x, x))
    if variance <= 1e-300:
        return 1.0
    size = 1 << int(2 * n - 1).bit_length()
    spectrum = np.fft.rfft(x, size)
    rho = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n] / variance
    # the running maximum: a trend's estimated ρ turns negative at long lags and would shrink τ
    tau = np.maximum.accumulate(1.0 + 2.0 * np.cumsum(rho[1:]))
    lags = np.arange(1, n)
    window = np.nonzero(lags >= _SOKAL_C * tau)[0]
    if window.size == 0:
        return float(n)
    return max(1.0, float(tau[window[0]]))


def effective_samples(count: int, tau: float) -> float:
    """Return how many independent values ``count`` samples of autocorrelation time ``tau`` are worth."""
    return float(count) / max(1.0, float(tau))


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """Drift of one feature between two windows."""

    name: str
    psi: float
    status: DriftStatus
    missing_rate: float
    outlier_rate: float
    #: Independent current-window samples the PSI rests on (module doc); inf when not estimated.
    effective_samples: float = float("inf")


def feature_drift(
    names: tuple[str, ...] | list[str],
    current: np.ndarray,
    reference: np.ndarray,
    expected_rows: int | None = None,
    *,
    current_ts: np.ndarray | None = None,
    reference_ts: np.ndarray | None = None,
) -> list[FeatureDrift]:
    """Return each feature's drift; ``current`` and ``reference`` are (rows, len(names)) arrays.

    ``expected_rows`` is how many rows the current window should have (absent rows count as missing).
    Given the rows' 1m open times (``current_ts``, ``reference_ts``, ms), each feature's PSI uses
    the rows where a bar of its timeframe closes, and a feature with fewer than
    ``MIN_EFFECTIVE_SAMPLES`` effective current samples is ``insufficient`` (module doc). Without
    them every row is a sample and every PSI gets a status. Missing and outlier rates use every row.
    """
    cur = np.asarray(current, dtype=np.float64).reshape(-1, len(names))
    ref = np.asarray(reference, dtype=np.float64).reshape(-1, len(names))
    timed = current_ts is not None and reference_ts is not None
    out = []
    for j, name in enumerate(names):
        cur_j, ref_j = cur[:, j], ref[:, j]
        n_eff = float("inf")
        if timed:
            timeframe = feature_timeframe_ms(name)
            cur_j = cur_j[bar_close_rows(np.asarray(current_ts), timeframe)]
            ref_j = ref_j[bar_close_rows(np.asarray(reference_ts), timeframe)]
            finite = cur_j[np.isfinite(cur_j)]
            runs = 1 + int(np.count_nonzero(np.diff(finite))) if finite.size else 0
            n_eff = min(effective_samples(finite.size, autocorrelation_time(ref_j)), float(runs))
        value = psi(cur_j, ref_j)
        status = psi_status(value)
        if status != "unknown" and n_eff < MIN_EFFECTIVE_SAMPLES:
            status = "insufficient"
        out.append(
            FeatureDrift(
                name=name,
                psi=value,
                status=status,
                missing_rate=missing_rate(cur[:, j], expected_rows),
                outlier_rate=outlier_rate(cur[:, j], ref[:, j]),
                effective_samples=n_eff,
            )
        )
    return out
