"""One drift pass (spec 001 §17): features from the lake → ``core.drift`` → ``drift_metrics`` and ``events``.

Per symbol, as of ``end_ms`` (default: the end of the symbol's newest ``features_1m`` bar): the
current window is ``[end_ms − current_ms, end_ms)`` and the reference window the ``reference_ms``
before it. Each feature (default ``core.drift.DRIFT_FEATURES``: all but the calendar ones) gets its
PSI — sampled at its own timeframe's bar closes, ``insufficient`` when the current window holds too
few independent values of it — missing and outlier rate (``core.drift``); the symbol's
``drift_metrics`` row (key: symbol, ts = ``end_ms``, the feature schema version) holds

- ``psi``: the largest PSI among the features with a status (the worst one),
- ``missing_rate``: the share of missing feature values in the current window, absent bars included
  (expected: one row per minute of the window, times the features),
- ``outlier_rate``: the share of the current window's finite feature values outside their
  reference's robust range,
- ``features``: per feature ``{"psi", "status", "effective_samples", "missing_rate", "outlier_rate"}``
  (``features_json``; rounded to 6 digits, null where not finite),
- ``latency_ms``: the median delay from a bar's close to its receipt by the ingest, from the
  ``signals`` rows of the current window (``explain.received_ms``), live receipts only
  (``core.drift.message_latency_ms``); null without any (offline data, a replay session).

The row is upserted on its key, so a rerun with the same ``end_ms`` rewrites it. When a feature is at
alarm (PSI ≥ 0.25) and the symbol's previous row was below alarm (or there was none), one
``drift.alarm`` event names the features at alarm; a rerun of the same pass records it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import sqlalchemy as sa

from core.drift import DRIFT_FEATURES, PSI_ALARM, FeatureDrift, feature_drift, message_latency_ms
from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from pipelines.features import load_features
from storage.lake import Lake
from storage.schema import drift_metrics, events, signals

__all__ = [
    "ALARM_EVENT", "BAR_MS", "SymbolDrift", "drift_pass", "features_json", "symbol_drift", "write_drift",
]  # fmt: skip

BAR_MS = 60_000
ALARM_EVENT = "drift.alarm"
SOURCE = "drift"


@dataclass(frozen=True)
class SymbolDrift:
    """One symbol's drift as of ``end_ms`` (the ``drift_metrics`` row and its per-feature detail)."""

    symbol: str
    end_ms: int
    reference_rows: int
    current_rows: int
    psi: float
    missing_rate: float
    outlier_rate: float
    latency_ms: float
    features: list[FeatureDrift] = field(repr=False)

    @property
    def alarms(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.status == "alarm"]

    @property
    def insufficient(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.status == "insufficient"]

    def as_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if not np.isfinite(x) else float(x)

        return {
            "symbol": self.symbol, "end_ms": self.end_ms, "reference_rows": self.reference_rows,
            "current_rows": self.current_rows, "psi": num(self.psi), "missing_rate": num(self.missing_rate),
            "outlier_rate": num(self.outlier_rate), "latency_ms": num(self.latency_ms),
            "features": {f.name: {"psi": num(f.psi), "status": f.status, "missing_rate": num(f.missing_rate),
                                  "outlier_rate": num(f.outlier_rate), "effective_samples": num(f.effective_samples)}
                         for f in self.features},
        }  # fmt: skip


def _nan_max(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return max(finite) if finite else float("nan")


def symbol_drift(
    lake: Lake,
    symbol: str,
    *,
    reference_ms: int,
    current_ms: int,
    end_ms: int | None = None,
    features: Sequence[str] | None = None,
    latency_ms: float = float("nan"),
) -> SymbolDrift:
    """Compute one symbol's drift from its lake features (module doc); raise FileNotFoundError without any."""
    coverage = lake.coverage("features_1m", symbol)
    if coverage is None:
        raise FileNotFoundError(f"no features_1m in the lake at {lake.root} for {symbol}")
    end = int(coverage.last_ts) + BAR_MS if end_ms is None else int(end_ms)
    start = end - current_ms
    names = list(features or DRIFT_FEATURES)
    frame = load_features(lake, symbol, start - reference_ms, end)
    ts = frame["ts"].to_numpy(np.int64)
    values = frame[names].to_numpy(np.float64)
    reference, current = values[ts < start], values[ts >= start]
    expected_rows = -(-current_ms // BAR_MS)
    per_feature = feature_drift(
        tuple(names), current, reference, expected_rows=expected_rows,
        current_ts=ts[ts >= start], reference_ts=ts[ts < start],
    )  # fmt: skip
    finite = np.isfinite(current).sum()
    expected_cells = max(expected_rows, len(current)) * len(names)
    outliers = [f.outlier_rate * np.isfinite(current[:, j]).sum() for j, f in enumerate(per_feature)]
    return SymbolDrift(
        symbol=symbol,
        end_ms=end,
        reference_rows=len(reference),
        current_rows=len(current),
        psi=_nan_max([f.psi for f in per_feature if f.status != "insufficient"]),
        missing_rate=1.0 - finite / expected_cells,
        outlier_rate=float(np.nansum(outliers) / finite) if finite else float("nan"),
        latency_ms=latency_ms,
        features=per_feature,
    )


def signal_latency_ms(engine: sa.Engine, symbol: str, start_ms: int, end_ms: int) -> float:
    """Median ms from a bar's close to its receipt, over the symbol's signals of [start_ms, end_ms)."""
    s = signals.c
    q = sa.select(s.ts, s.explain).where(s.symbol == symbol, s.ts >= start_ms, s.ts < end_ms)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    received = [r.explain.get("received_ms") if isinstance(r.explain, dict) else None for r in rows]
    pairs = [(int(r.ts) + BAR_MS, float(v)) for r, v in zip(rows, received, strict=True) if v is not None]
    if not pairs:
        return float("nan")
    event, got = np.array(pairs, dtype=np.float64).T
    return message_latency_ms(event, got)


def _db(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _db6(x: float) -> float | None:
    return round(float(x), 6) if np.isfinite(x) else None


def features_json(result: SymbolDrift) -> dict[str, dict[str, Any]]:
    """The ``drift_metrics.features`` value: per feature its PSI, status, effective samples, missing and
    outlier rate, rounded to 6 digits (NaN/inf → null)."""
    return {
        f.name: {"psi": _db6(f.psi), "status": f.status, "effective_samples": _db6(f.effective_samples),
                 "missing_rate": _db6(f.missing_rate), "outlier_rate": _db6(f.outlier_rate)}
        for f in result.features
    }  # fmt: skip


def write_drift(engine: sa.Engine, result: SymbolDrift) -> bool:
    """Upsert the symbol's ``drift_metrics`` row; record a ``drift.alarm`` event when it crosses alarm.

    Returns whether an event was recorded.
    """
    d = drift_metrics.c
    row = {
        "symbol": result.symbol, "ts": result.end_ms, "schema_version": FEATURE_SCHEMA_VERSION,
        "psi": _db(result.psi), "missing_rate": _db(result.missing_rate), "latency_ms": _db(result.latency_ms),
        "outlier_rate": _db(result.outlier_rate), "features": features_json(result),
    }  # fmt: skip
    key = (d.symbol == result.symbol) & (d.ts == result.end_ms) & (d.schema_version == FEATURE_SCHEMA_VERSION)
    with engine.begin() as conn:
        previous = conn.execute(
            sa.select(d.psi)
            .where(
                d.symbol == result.symbol, d.ts < result.end_ms, d.schema_version == FEATURE_SCHEMA_VERSION
            )
            .order_by(d.ts.desc())
            .limit(1)
        ).scalar_one_or_none()
        if conn.execute(sa.select(d.symbol).where(key)).first() is None:
            conn.execute(sa.insert(drift_metrics).values(row))
        else:
            conn.execute(sa.update(drift_metrics).where(key).values(row))
        alarms = result.alarms
        crossed = bool(alarms) and (previous is None or previous < PSI_ALARM)
        if not crossed:
            return False
        e = events.c
        already = conn.execute(
            sa.select(e.id).where(e.kind == ALARM_EVENT, e.symbol == result.symbol, e.ts == result.end_ms)
        ).first()
        if already is not None:
            return False
        payload = {
            "schema_version": FEATURE_SCHEMA_VERSION, "psi_alarm": PSI_ALARM,
            "features": {f.name: round(f.psi, 6) for f in sorted(alarms, key=lambda f: -f.psi)},
            "current_rows": result.current_rows, "reference_rows": result.reference_rows,
        }  # fmt: skip
        conn.execute(
            sa.insert(events).values(
                ts=result.end_ms, kind=ALARM_EVENT, source=SOURCE, symbol=result.symbol, payload=payload
            )
        )
        return True


def drift_pass(
    engine: sa.Engine,
    lake: Lake,
    symbols: Sequence[str],
    *,
    reference_ms: int,
    current_ms: int,
    end_ms: int | None = None,
    features: Sequence[str] | None = None,
) -> list[SymbolDrift]:
    """Compute and store the drift of every symbol (``symbol_drift`` + ``write_drift``); return the results."""
    unknown = sorted(set(features or ()) - set(FEATURE_NAMES))
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}")
    results = []
    for symbol in symbols:
        result = symbol_drift(
            lake, symbol, reference_ms=reference_ms, current_ms=current_ms, end_ms=end_ms, features=features
        )
        latency = signal_latency_ms(engine, symbol, result.end_ms - current_ms, result.end_ms)
        result = replace(result, latency_ms=latency)
        write_drift(engine, result)
        results.append(result)
    return results
