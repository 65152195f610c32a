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

Outlier rate: the share of the current window's finite values outside the reference's robust range
``median ± OUTLIER_K · σ̂``, where ``σ̂ = 1.4826 · MAD`` (the normal-consistent median absolute
deviation); when the MAD is 0 (more than half the reference tied) ``σ̂`` falls back to
``1.2533 · mean absolute deviation from the median``, and when that is 0 too (a constant feature)
every value other than the constant is an outlier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "OUTLIER_K",
    "PSI_ALARM",
    "PSI_EPSILON",
    "PSI_WARN",
    "DriftStatus",
    "FeatureDrift",
    "decile_edges",
    "feature_drift",
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

DriftStatus = Literal["ok", "warn", "alarm", "unknown"]


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
    """Return the median of ``received_ms − event_ms`` over pairs where both are known (> 0); NaN if none.

    ``event_ms`` is when the message's event happened by the venue's clock (e.g. a bar's close),
    ``received_ms`` when we received it by ours.
    """
    event = np.asarray(event_ms, dtype=np.float64)
    received = np.asarray(received_ms, dtype=np.float64)
    known = np.isfinite(event) & np.isfinite(received) & (event > 0) & (received > 0)
    if not known.any():
        return float("nan")
    return float(np.median(received[known] - event[known]))


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """Drift of one feature between two windows."""

    name: str
    psi: float
    status: DriftStatus
    missing_rate: float
    outlier_rate: float


def feature_drift(
    names: tuple[str, ...] | list[str],
    current: np.ndarray,
    reference: np.ndarray,
    expected_rows: int | None = None,
) -> list[FeatureDrift]:
    """Return each feature's drift; ``current`` and ``reference`` are (rows, len(names)) arrays.

    ``expected_rows`` is how many rows the current window should have (absent rows count as missing).
    """
    cur = np.asarray(current, dtype=np.float64).reshape(-1, len(names))
    ref = np.asarray(reference, dtype=np.float64).reshape(-1, len(names))
    out = []
    for j, name in enumerate(names):
        value = psi(cur[:, j], ref[:, j])
        out.append(
            FeatureDrift(
                name=name,
                psi=value,
                status=psi_status(value),
                missing_rate=missing_rate(cur[:, j], expected_rows),
                outlier_rate=outlier_rate(cur[:, j], ref[:, j]),
            )
        )
    return out
