"""Aggregate candles to coarser intervals on the UTC grid, and align coarse bars causally to fine ones.

A coarse bar of length ``to`` covers ``[b, b + to)`` with ``b = ts - ts % to`` (epoch ms), so 15m,
1h, 4h and 8h bars start on the UTC grid (00:00, 00:15, … / 00/08/16 h). With ``complete_only`` a
coarse bar exists only when every constituent fine bar exists (a 15m bar needs all fifteen 1m
bars): a gap never produces a bar whose high/low/volume silently miss part of the interval, and the
bar still forming at the end of the data is dropped. Pure numpy; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from core.errors import DataQualityError

_FIRST = ("open",)
_LAST = ("close",)
_MAX = ("high",)
_MIN = ("low",)
_SUM = ("volume", "quote_volume", "taker_buy_volume", "trade_count")
_KNOWN = frozenset(("ts", *_FIRST, *_LAST, *_MAX, *_MIN, *_SUM))


def resample_candles(
    columns: Mapping[str, np.ndarray],
    from_interval_ms: int,
    to_interval_ms: int,
    complete_only: bool = True,
) -> dict[str, np.ndarray]:
    """Aggregate candles (or mark/premium OHLC: any subset of the candle columns) to ``to_interval_ms``.

    ``columns`` holds ``ts`` (bar open time, epoch ms, strictly increasing, on the ``from`` grid) and
    any of open, high, low, close, volume, quote_volume, taker_buy_volume, trade_count. Output ``ts``
    is the coarse bar's open time; open = first, high = max, low = min, close = last, volumes and
    trade counts are summed (NaN propagates). With ``complete_only`` (default) coarse bars missing
    any constituent bar are dropped, so each output bar is closed at ``ts + to_interval_ms`` and uses
    only fine bars inside it; with ``complete_only=False`` partial bars are kept, including a
    still-forming last bar, which a causal consumer must not use before its close.
    Raises DataQualityError on unknown columns, unsorted/duplicate/off-grid ``ts`` or ragged columns,
    and ValueError if ``to_interval_ms`` is not a positive multiple of ``from_interval_ms``.
    """
    if from_interval_ms <= 0 or to_interval_ms < from_interval_ms or to_interval_ms % from_interval_ms:
        raise ValueError(
            f"to_interval_ms {to_interval_ms} must be a positive multiple of from_interval_ms {from_interval_ms}"
        )
    if "ts" not in columns:
        raise DataQualityError(f"resample: missing column ts; have {', '.join(columns)}")
    unknown = sorted(set(columns) - _KNOWN)
    if unknown:
        raise DataQualityError(
            f"resample: unknown column(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN))}"
        )
    ts = np.asarray(columns["ts"])
    if ts.dtype.kind not in "iu":
        raise DataQualityError(f"resample: ts must be integer epoch ms, got dtype {ts.dtype}")
    ts = ts.astype(np.int64, copy=False)
    cols = {k: np.asarray(v) for k, v in columns.items() if k != "ts"}
    for k, v in cols.items():
        if v.shape != ts.shape:
            raise DataQualityError(f"resample: column {k} has shape {v.shape}, ts has {ts.shape}")
    if len(ts) and np.any(np.diff(ts) <= 0):
        i = int(np.flatnonzero(np.diff(ts) <= 0)[0])
        raise DataQualityError(
            f"resample: ts not strictly increasing at row {i + 1} ({ts[i]} then {ts[i + 1]})"
        )
    off = np.flatnonzero(ts % from_interval_ms)
    if len(off):
        raise DataQualityError(
            f"resample: ts {ts[off[0]]} (row {off[0]}) is off the {from_interval_ms} ms grid"
        )

    if not len(ts):
        return {"ts": ts.copy(), **{k: v.copy() for k, v in cols.items()}}
    bucket = ts - ts % to_interval_ms
    starts = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    ends = np.append(starts[1:], len(ts))
    keep = (
        (ends - starts) == to_interval_ms // from_interval_ms if complete_only else np.ones(len(starts), bool)
    )
    out: dict[str, np.ndarray] = {"ts": bucket[starts][keep]}
    for k, v in cols.items():
        if k in _FIRST:
            out[k] = v[starts][keep]
        elif k in _LAST:
            out[k] = v[ends - 1][keep]
        elif k in _MAX:
            out[k] = np.maximum.reduceat(v, starts)[keep]
        elif k in _MIN:
            out[k] = np.minimum.reduceat(v, starts)[keep]
        else:
            out[k] = np.add.reduceat(v, starts)[keep]
    return out
