"""Input preparation and the public labeling call around the numba kernel (semantics: ``core.labels``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np

from core.config import LabelSpec
from core.errors import DataQualityError
from core.labels import kernel as _k
from core.resample import resample_candles
from core.ta import atr_wilder, last_closed_index
from core.time import MINUTE_MS, interval_ms


class LabelStatus(IntEnum):
    """Why a decision bar has (or has no) label. When several apply, the lowest code is reported."""

    OK = _k.STATUS_OK
    INCOMPLETE_HORIZON = _k.STATUS_INCOMPLETE_HORIZON  # bar i + h_bars is beyond the data
    ATR_UNAVAILABLE = _k.STATUS_ATR_UNAVAILABLE  # ATR NaN (warm-up), stale, or ≤ 0
    GAP = _k.STATUS_GAP  # a missing 1m bar between bar i and bar i + h_bars
    BAD_PRICE = _k.STATUS_BAD_PRICE  # a non-finite or non-positive price in bars i … i + h_bars


class ExitReason(IntEnum):
    """How a labelled trade ended; NONE for bars without a label."""

    NONE = _k.EXIT_NONE
    TP = _k.EXIT_TP
    SL = _k.EXIT_SL
    RISK = _k.EXIT_RISK
    TIME = _k.EXIT_TIME


@dataclass(frozen=True, slots=True)
class DirectionLabels:
    """Labels of one direction, one row per labelled decision bar (see ``core.labels`` for definitions)."""

    y: np.ndarray  # int8: +1 TP, −1 SL or RISK, 0 TIME (0 also where status ≠ OK)
    ret_net: np.ndarray  # float64, fraction of entry notional; NaN where status ≠ OK
    mae: np.ndarray  # float64 ≥ 0, fraction of the entry fill; NaN where status ≠ OK
    mfe: np.ndarray  # float64 ≥ 0, fraction of the entry fill; NaN where status ≠ OK
    time_to_event_min: np.ndarray  # int32, minutes from entry to the exit bar's close; −1 where invalid
    exit_reason: np.ndarray  # int8 ExitReason


@dataclass(frozen=True, slots=True)
class TripleBarrierLabels:
    """Long and short labels of the decision bars ``index`` of one symbol's 1m series."""

    index: np.ndarray  # int64 positions of the decision bars in the input series
    ts: np.ndarray  # int64 open time of each decision bar, epoch ms
    status: np.ndarray  # int8 LabelStatus, shared by both directions
    long: DirectionLabels
    short: DirectionLabels
    spec_hash: str

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask of the rows that carry a label (status OK)."""
        return self.status == LabelStatus.OK

    def columns(self) -> dict[str, np.ndarray]:
        """Return flat columns: ts, status, then ``long_<field>`` and ``short_<field>`` for each field."""
        out: dict[str, np.ndarray] = {"ts": self.ts, "status": self.status}
        for side, labels in (("long", self.long), ("short", self.short)):
            for field in fields(DirectionLabels):
                out[f"{side}_{field.name}"] = getattr(labels, field.name)
        return out


def label_atr(
    ts_ms: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    timeframe: str = "15m",
    period: int = 14,
) -> np.ndarray:
    """Return, for each 1m bar, the Wilder ATR (price units) of ``timeframe`` available at the bar's close.

    "1m": the 1m ATR at the bar (bars up to and including it). Coarser: Wilder ATR over the complete
    coarse bars (``resample_candles``, ``complete_only``), and for each 1m bar the last coarse bar
    closed by the 1m bar's close (``core.ta.last_closed_index``). NaN during warm-up and where that
    coarse bar is stale: closed more than one coarse interval before the 1m bar's close (the coarse
    bar in between is incomplete because of a gap). No look-ahead.
    """
    ts = np.asarray(ts_ms, np.int64)
    h, lo, c = (np.ascontiguousarray(x, np.float64) for x in (high, low, close))
    if timeframe == "1m":
        return atr_wilder(h, lo, c, period)
    coarse_ms = interval_ms(timeframe)
    coarse = resample_candles({"ts": ts, "high": h, "low": lo, "close": c}, MINUTE_MS, coarse_ms)
    coarse_atr = atr_wilder(coarse["high"], coarse["low"], coarse["close"], period)
    at = last_closed_index(ts, MINUTE_MS, coarse["ts"], coarse_ms)
    return _k.take_fresh(at, coarse["ts"], coarse_atr, ts, MINUTE_MS, coarse_ms)


def cumulative_funding(ts_ms: np.ndarray, funding_ts_ms: np.ndarray, funding_rate: np.ndarray) -> np.ndarray:
    """Return, for each 1m bar, the sum of the funding rates with funding time ≤ the bar's close.

    The funding crossed while holding from bar a's close to bar b's close is ``out[b] − out[a]``.
    Funding times are the real ones of the funding dataset (epoch ms, strictly increasing).
    ``ts_ms`` must be ascending.
    """
    f_ts, rate = _check_funding(funding_ts_ms, funding_rate)
    return _k.funding_at_close(np.ascontiguousarray(ts_ms, np.int64), f_ts, rate, MINUTE_MS)


def _check_funding(funding_ts_ms: np.ndarray, funding_rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f_ts = np.asarray(funding_ts_ms)
    if f_ts.dtype.kind not in "iu":
        raise DataQualityError(f"funding: ts must be integer epoch ms, got {f_ts.dtype}")
    f_ts = np.ascontiguousarray(f_ts, np.int64)
    rate = np.ascontiguousarray(funding_rate, np.float64)
    if f_ts.shape != rate.shape or f_ts.ndim != 1:
        raise DataQualityError(f"funding: ts has shape {f_ts.shape}, funding_rate {rate.shape}")
    if len(f_ts) > 1 and np.any(np.diff(f_ts) <= 0):
        raise DataQualityError("funding: ts not strictly increasing")
    if not np.all(np.isfinite(rate)):
        raise DataQualityError(f"funding: {int(np.sum(~np.isfinite(rate)))} non-finite funding_rate value(s)")
    return f_ts, rate


def _check_candles(candles: Mapping[str, np.ndarray], what: str = "labels") -> tuple[np.ndarray, ...]:
    missing = [c for c in ("ts", "open", "high", "low", "close") if c not in candles]
    if missing:
        raise DataQualityError(f"{what}: missing candle column(s) {', '.join(missing)}")
    ts = np.asarray(candles["ts"])
    if ts.dtype.kind not in "iu":
        raise DataQualityError(f"{what}: ts must be integer epoch ms, got {ts.dtype}")
    ts = ts.astype(np.int64, copy=False)
    cols = [np.ascontiguousarray(candles[c], np.float64) for c in ("open", "high", "low", "close")]
    for name, col in zip(("open", "high", "low", "close"), cols, strict=True):
        if col.shape != ts.shape:
            raise DataQualityError(f"{what}: column {name} has shape {col.shape}, ts has {ts.shape}")
    if len(ts) > 1 and np.any(np.diff(ts) <= 0):
        row = int(np.flatnonzero(np.diff(ts) <= 0)[0]) + 1
        raise DataQualityError(f"{what}: ts not strictly increasing at row {row}")
    if len(ts) and np.any(ts % MINUTE_MS):
        raise DataQualityError(f"{what}: ts off the 1m grid")
    return (ts, *cols)


def barrier_candles(
    ts: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    mark: Mapping[str, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Return the barrier price's (open, high, low) per 1m bar of ``ts`` and how many bars are mark.

    A bar takes the mark candle with the same open time whose close is not NaN, else its last-price
    candle stands in — ``core.sim.portfolio.build_panel``'s rule with ``mark_proxy="last"``, so the
    labels' barriers watch exactly the prices the backtest's SL/TP triggers watch. ``mark`` None or
    empty: last price throughout. Raises DataQualityError on malformed mark candles.
    """
    if mark is None or len(mark.get("ts", ())) == 0 or len(ts) == 0:
        return open_, high, low, 0
    m_ts, m_open, m_high, m_low, m_close = _check_candles(mark, "labels: mark candles")
    if len(m_ts) == len(ts) and np.array_equal(m_ts, ts) and not np.isnan(m_close).any():
        return m_open, m_high, m_low, len(ts)  # the usual case: one mark candle per bar
    pos = np.minimum(np.searchsorted(ts, m_ts), max(len(ts) - 1, 0))
    use = (ts[pos] == m_ts) & ~np.isnan(m_close)
    out = []
    for last, marked in ((open_, m_open), (high, m_high), (low, m_low)):
        col = last.copy()
        col[pos[use]] = marked[use]
        out.append(col)
    return out[0], out[1], out[2], int(use.sum())


@dataclass(frozen=True, slots=True)
class LabelInputs:
    """One symbol's series prepared for the kernel (``prepare_label_inputs``); reusable across specs
    with the same ATR source and barrier price, and across event samples."""

    ts: np.ndarray  # int64 bar open times, epoch ms
    open: np.ndarray  # last price
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    barrier_open: np.ndarray  # the barrier price (mark, or last where no mark candle / spec says last)
    barrier_high: np.ndarray
    barrier_low: np.ndarray
    atr: np.ndarray  # ATR available at each bar's close, price units
    cum_funding: np.ndarray  # cumulative_funding at each bar's close
    gap_prefix: np.ndarray  # int64 [m]: steps ts[q + 1] − ts[q] ≠ 1m with q < m
    bad_prefix: np.ndarray  # int64 [m]: bars < m with a non-finite or non-positive price
    atr_source: tuple[str, int] | None  # (timeframe, period) of label_atr; None: the caller's ATR
    barrier_price: str  # the spec's barrier_price the inputs were prepared for ("mark" or "last")
    mark_bars: int  # bars whose barrier price is a mark candle
    tick_size: float  # SL/TP levels rounded to it towards the entry fill, as the simulator does; 0: not


def prepare_label_inputs(
    candles: Mapping[str, np.ndarray],
    funding: Mapping[str, np.ndarray],
    spec: LabelSpec,
    *,
    atr: np.ndarray | None = None,
    mark: Mapping[str, np.ndarray] | None = None,
    tick_size: float = 0.0,
) -> LabelInputs:
    """Validate one symbol's 1m candles and funding and prepare them for ``run_label_kernel``.

    ``candles``: ts (bar open, epoch ms, strictly increasing on the 1m grid; gaps allowed), open,
    high, low, close (last price). ``funding``: ts (real funding times, epoch ms) and funding_rate;
    empty arrays mean no funding. ``atr``: the ATR per 1m bar available at its close; default
    ``label_atr(…, spec.atr_timeframe, spec.atr_period)`` of the last-price candles. ``mark``: the
    symbol's 1m mark-price candles (ts, open, high, low, close); with ``spec.barrier_price == "mark"``
    the barriers watch them (``barrier_candles``), otherwise they are ignored. ``tick_size``: the
    symbol's price tick; > 0 rounds the TP/SL levels to it towards the entry fill exactly as the
    simulator rounds its triggers under that tick filter (``core.sim.rules.SymbolFilters``); 0 (the
    default, like the backtest's default ``SymbolRules()``): unrounded. Raises DataQualityError on
    bad input.
    """
    if not (math.isfinite(tick_size) and tick_size >= 0.0):
        raise ValueError(f"labels: tick_size must be a finite price ≥ 0, got {tick_size}")
    ts, open_, high, low, close = _check_candles(candles)
    if "ts" not in funding or "funding_rate" not in funding:
        raise DataQualityError(f"labels: funding needs ts and funding_rate, got {', '.join(funding)}")
    f_ts, rate = _check_funding(funding["ts"], funding["funding_rate"])
    atr_source: tuple[str, int] | None = None
    if atr is None:
        atr = label_atr(ts, high, low, close, spec.atr_timeframe, spec.atr_period)
        atr_source = (spec.atr_timeframe, spec.atr_period)
    atr = np.ascontiguousarray(atr, np.float64)
    if atr.shape != ts.shape:
        raise DataQualityError(f"labels: atr has shape {atr.shape}, candles {ts.shape}")
    b_open, b_high, b_low, mark_bars = barrier_candles(
        ts, open_, high, low, mark if spec.barrier_price == "mark" else None
    )
    cum_funding = _k.funding_at_close(ts, f_ts, rate, MINUTE_MS)
    gap_prefix, bad_prefix = _k.series_prefixes(ts, open_, high, low, close, b_open, b_high, b_low, MINUTE_MS)
    return LabelInputs(
        ts, open_, high, low, close, b_open, b_high, b_low, atr, cum_funding, gap_prefix, bad_prefix,
        atr_source, spec.barrier_price, mark_bars, float(tick_size),
    )  # fmt: skip


def run_label_kernel(
    inputs: LabelInputs, spec: LabelSpec, index: np.ndarray | None = None
) -> TripleBarrierLabels:
    """Label the decision bars ``index`` (default: every bar) of prepared inputs, long and short.

    Uses ``spec``'s barriers, horizon and costs, and the ATR and barrier price ``inputs`` was
    prepared with: raises ValueError if that was ``label_atr`` of another timeframe or period, or
    another ``barrier_price``, than ``spec`` names (the labels carry ``spec.spec_hash()``). With a
    caller-supplied ATR, matching the spec is the caller's duty. The numba kernel runs in parallel
    over bars.
    """
    if inputs.atr_source is not None and inputs.atr_source != (spec.atr_timeframe, spec.atr_period):
        raise ValueError(
            f"labels: inputs carry the {inputs.atr_source} ATR, spec asks for "
            f"{(spec.atr_timeframe, spec.atr_period)}; prepare the inputs with this spec"
        )
    if inputs.barrier_price != spec.barrier_price:
        raise ValueError(
            f"labels: inputs carry {inputs.barrier_price!r} barrier prices, spec asks for "
            f"{spec.barrier_price!r}; prepare the inputs with this spec"
        )
    n = len(inputs.ts)
    if index is None:
        index = np.arange(n, dtype=np.int64)
    else:
        index = np.ascontiguousarray(index, np.int64)
        if index.ndim != 1 or (len(index) and (index.min() < 0 or index.max() >= n)):
            raise ValueError(f"labels: index must be 1-d positions in [0, {n})")
    block_high, block_low = _k.build_block_tables(
        inputs.barrier_high, inputs.barrier_low, _k.table_levels(spec.h_bars)
    )
    m = len(index)
    status = np.empty(m, np.int8)
    y = np.empty((2, m), np.int8)
    ret_net = np.empty((2, m))
    mae = np.empty((2, m))
    mfe = np.empty((2, m))
    tte = np.empty((2, m), np.int32)
    reason = np.empty((2, m), np.int8)
    _k.label_kernel(
        index, inputs.open, inputs.barrier_open, inputs.barrier_high, inputs.barrier_low, inputs.close,
        inputs.atr, inputs.cum_funding,
        inputs.gap_prefix, inputs.bad_prefix, block_high, block_low, spec.h_bars, spec.k_tp, spec.k_sl,
        spec.risk_mae_atr, spec.fee_rate, spec.slippage_k, inputs.tick_size, status, y, ret_net, mae, mfe,
        tte, reason,
    )  # fmt: skip
    sides = [DirectionLabels(y[s], ret_net[s], mae[s], mfe[s], tte[s], reason[s]) for s in range(2)]
    return TripleBarrierLabels(index, inputs.ts[index], status, sides[0], sides[1], spec.spec_hash())


def label_bars(
    candles: Mapping[str, np.ndarray],
    funding: Mapping[str, np.ndarray],
    spec: LabelSpec,
    *,
    atr: np.ndarray | None = None,
    index: np.ndarray | None = None,
    mark: Mapping[str, np.ndarray] | None = None,
    tick_size: float = 0.0,
) -> TripleBarrierLabels:
    """Label 1m decision bars of one symbol, long and short, with cost-aware triple barriers.

    ``prepare_label_inputs`` then ``run_label_kernel``: see them for the arguments (``mark``: the 1m
    mark-price candles the barriers watch under ``barrier_price="mark"``; ``tick_size``: round TP/SL
    to the symbol's tick as the simulator does). ``index``:
    positions of the decision bars to label (event sampling), default every bar. The label of bar i
    uses bars i … i + h_bars (the future, by design); the status column marks every bar that
    cannot be labelled.
    """
    inputs = prepare_label_inputs(candles, funding, spec, atr=atr, mark=mark, tick_size=tick_size)
    return run_label_kernel(inputs, spec, index)
