"""Portfolio backtest (spec 001 §11): many symbols, many open positions, one account, one fill model.

``build_panel`` aligns per-symbol 1m candles, mark candles and funding on one time grid (a
``MarketPanel``: [bar, symbol] arrays); ``run_backtest`` runs ``core.sim.kernel.run_portfolio`` over
it, driven by ``core.signals.BarSignals`` (the policy's or a rule strategy's), and returns trades,
fills, risk events and the equity curve. Deterministic: the same inputs give identical outputs.

Mark price. Triggers and liquidation use mark candles. Where a symbol has none for a bar,
``mark_proxy`` decides: ``"last"`` uses the last-price candle as its mark; ``"interpolate"`` scales the
last-price candle by the mark/last ratio of the closes, linearly interpolated in time between the
bars that have both (held flat before the first and after the last). A symbol without any mark
candle always uses ``"last"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.config import RiskConfig
from core.errors import DataQualityError
from core.labels import label_atr
from core.signals import BarSignals
from core.sim import kernel as _k
from core.sim.config import SimConfig, risk_vector
from core.sim.rules import SymbolRules, pack_rules
from core.sim.state import SimLogs, curve_frame, events_frame, fills_frame, trades_frame
from core.time import MINUTE_MS

MarkProxy = Literal["last", "interpolate"]
_PANEL_FIELDS = ("open", "close", "mark_open", "mark_high", "mark_low", "mark_close", "quote_volume",
                 "funding_rate", "atr")  # fmt: skip


@dataclass(frozen=True, slots=True)
class MarketPanel:
    """Market data of a universe on one regular grid of bars; [bar, symbol] float64 arrays.

    ``open``/``close``: last price (fills); ``mark_*``: mark price (triggers, liquidation, unrealized
    PnL); ``quote_volume``: USDT traded in the bar (impact); ``funding_rate``: summed rates of the
    funding times in (ts, ts + bar] (0: none); ``atr``: the slippage ATR available at the bar's close
    (USDT). NaN where a symbol has no bar.
    """

    symbols: tuple[str, ...]
    ts: np.ndarray  # int64 bar open times, epoch ms
    open: np.ndarray
    close: np.ndarray
    mark_open: np.ndarray
    mark_high: np.ndarray
    mark_low: np.ndarray
    mark_close: np.ndarray
    quote_volume: np.ndarray
    funding_rate: np.ndarray
    atr: np.ndarray
    bar_ms: int = MINUTE_MS

    def __post_init__(self) -> None:
        n, m = len(self.ts), len(self.symbols)
        if self.ts.dtype != np.int64 or self.ts.ndim != 1:
            raise DataQualityError(f"panel: ts must be 1-d int64, got {self.ts.dtype} {self.ts.shape}")
        if n > 1 and np.any(np.diff(self.ts) != self.bar_ms):
            raise DataQualityError(f"panel: ts is not a regular grid of {self.bar_ms} ms")
        for name in _PANEL_FIELDS:
            a = getattr(self, name)
            if a.shape != (n, m) or a.dtype != np.float64 or not a.flags.c_contiguous:
                raise DataQualityError(f"panel: {name} must be C-contiguous float64 of shape {(n, m)}")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ts), len(self.symbols)


def _on_grid(ts: np.ndarray, t0: int, bar_ms: int, what: str) -> np.ndarray:
    ts = np.asarray(ts)
    if ts.dtype.kind not in "iu":
        raise DataQualityError(f"{what}: ts must be integer epoch ms, got {ts.dtype}")
    ts = ts.astype(np.int64)
    if len(ts) > 1 and np.any(np.diff(ts) <= 0):
        raise DataQualityError(f"{what}: ts not strictly increasing")
    if np.any((ts - t0) % bar_ms):
        raise DataQualityError(f"{what}: ts off the {bar_ms} ms grid")
    return (ts - t0) // bar_ms


def build_panel(
    symbols: Sequence[str],
    candles: Mapping[str, Mapping[str, np.ndarray]],
    funding: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    marks: Mapping[str, Mapping[str, np.ndarray] | None] | None = None,
    *,
    mark_proxy: MarkProxy = "last",
    atr_timeframe: str = "15m",
    atr_period: int = 14,
    start_ms: int | None = None,
    end_ms: int | None = None,
    bar_ms: int = MINUTE_MS,
) -> MarketPanel:
    """Align each symbol's 1m ``candles`` (ts, open, high, low, close, volume[, quote_volume]),
    ``marks`` (mark candles: ts, open, high, low, close) and ``funding`` (ts, funding_rate) on the grid
    from the earliest to the latest bar (or [start_ms, end_ms)).

    ``atr``: ``core.labels.label_atr`` of the symbol's candles (``atr_timeframe``, ``atr_period``), the
    ATR the labels' slippage uses. ``quote_volume`` defaults to volume · close. A funding time F lands
    on the bar with ts < F ≤ ts + bar. Raises DataQualityError on unsorted or off-grid input.
    """
    symbols = tuple(symbols)
    funding = funding or {}
    marks = marks or {}
    firsts = [int(candles[s]["ts"][0]) for s in symbols if len(candles[s]["ts"])]
    lasts = [int(candles[s]["ts"][-1]) for s in symbols if len(candles[s]["ts"])]
    if not firsts:
        raise DataQualityError("panel: no candle in any symbol")
    t0 = min(firsts) if start_ms is None else int(start_ms)
    t_end = max(lasts) + bar_ms if end_ms is None else int(end_ms)
    n, m = max(0, -(-(t_end - t0) // bar_ms)), len(symbols)
    grid = t0 + bar_ms * np.arange(n, dtype=np.int64)
    out = {name: np.full((n, m), np.nan) for name in _PANEL_FIELDS}
    out["funding_rate"][:] = 0.0
    for k, s in enumerate(symbols):
        c = candles[s]
        rows = _on_grid(c["ts"], t0, bar_ms, f"{s} candles")
        keep = (rows >= 0) & (rows < n)
        o, h, lo, cl = (np.asarray(c[x], np.float64) for x in ("open", "high", "low", "close"))
        qv = (
            np.asarray(c["quote_volume"], np.float64) if "quote_volume" in c else np.asarray(c["volume"]) * cl
        )
        atr = (
            label_atr(np.asarray(c["ts"], np.int64), h, lo, cl, atr_timeframe, atr_period) if len(cl) else cl
        )
        r = rows[keep]
        out["open"][r, k], out["close"][r, k] = o[keep], cl[keep]
        out["quote_volume"][r, k], out["atr"][r, k] = qv[keep], atr[keep]
        last = [np.full(n, np.nan) for _ in range(4)]
        for arr, src in zip(last, (o, h, lo, cl), strict=True):
            arr[r] = src[keep]
        mark = marks.get(s)
        mark_cols = [np.full(n, np.nan) for _ in range(4)]
        if mark is not None and len(mark["ts"]):
            mrows = _on_grid(mark["ts"], t0, bar_ms, f"{s} mark candles")
            mkeep = (mrows >= 0) & (mrows < n)
            for arr, x in zip(mark_cols, ("open", "high", "low", "close"), strict=True):
                arr[mrows[mkeep]] = np.asarray(mark[x], np.float64)[mkeep]
        missing = np.isnan(mark_cols[3]) & ~np.isnan(last[3])
        if missing.any():
            ratio = np.ones(n)
            both = ~np.isnan(mark_cols[3]) & ~np.isnan(last[3])
            if mark_proxy == "interpolate" and both.any():
                idx = np.flatnonzero(both)
                ratio = np.interp(np.arange(n), idx, mark_cols[3][idx] / last[3][idx])
            elif mark_proxy not in ("last", "interpolate"):
                raise ValueError(f"mark_proxy must be 'last' or 'interpolate', got {mark_proxy!r}")
            for arr, src in zip(mark_cols, last, strict=True):
                arr[missing] = src[missing] * ratio[missing]
        for name, arr in zip(("mark_open", "mark_high", "mark_low", "mark_close"), mark_cols, strict=True):
            out[name][:, k] = arr
        f = funding.get(s)
        if f is not None and len(f["ts"]):
            f_ts = np.asarray(f["ts"], np.int64)
            f_rows = (f_ts - t0 - 1) // bar_ms
            ok = (f_rows >= 0) & (f_rows < n)
            np.add.at(out["funding_rate"][:, k], f_rows[ok], np.asarray(f["funding_rate"], np.float64)[ok])
    return MarketPanel(symbols, grid, bar_ms=bar_ms, **out)


def panel_from_market(market: Any, *, mark: Literal["mark", "last"] = "mark", **kwargs: Any) -> MarketPanel:
    """Return the panel of a ``core.synthetic.SyntheticMarket`` (its mark candles, or last as mark)."""
    marks = dict(market.mark_1m) if mark == "mark" else None
    return build_panel(market.symbols, market.candles_1m, market.funding, marks, **kwargs)


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """What a backtest produced (frames: ``core.sim.state``), and the final account."""

    symbols: tuple[str, ...]
    trades: pd.DataFrame
    fills: pd.DataFrame
    risk_events: pd.DataFrame
    equity: pd.DataFrame
    account: dict[str, float] = field(default_factory=dict)


def _account_summary(acct: np.ndarray) -> dict[str, float]:
    keys = {"equity": _k.A_EQUITY, "wallet": _k.A_WALLET, "unrealized": _k.A_UNREALIZED,
            "used_margin": _k.A_USED_MARGIN, "initial_equity": _k.A_INITIAL_EQUITY, "fees": _k.A_FEES,
            "slippage": _k.A_SLIPPAGE, "funding": _k.A_FUNDING, "realized_pnl": _k.A_REALIZED,
            "trades": _k.A_N_TRADES, "fills": _k.A_N_FILLS, "risk_events": _k.A_N_EVENTS,
            "liquidations": _k.A_LIQUIDATIONS, "open_positions": _k.A_OPEN_POSITIONS,
            "consecutive_losses": _k.A_CONSECUTIVE_LOSSES}  # fmt: skip
    return {name: float(acct[i]) for name, i in keys.items()}


def kernel_signals(signals: BarSignals, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Return ``signals`` as the kernel's contiguous arrays (exits: bit 0 close long, bit 1 short)."""
    if signals.shape != shape:
        raise ValueError(f"signals have shape {signals.shape}, the panel {shape}")
    exits = signals.exit_long.astype(np.int8) | (signals.exit_short.astype(np.int8) << 1)
    return {
        "direction": np.ascontiguousarray(signals.direction, np.int8),
        "exits": np.ascontiguousarray(exits, np.int8),
        "size": np.ascontiguousarray(signals.size_fraction, np.float64),
        "sl": np.ascontiguousarray(signals.sl_price, np.float64),
        "tp": np.ascontiguousarray(signals.tp_price, np.float64),
        "leverage": np.ascontiguousarray(signals.leverage, np.float64),
    }


def signals_from_frame(frame: pd.DataFrame, panel: MarketPanel) -> BarSignals:
    """Return the [bar, symbol] signals of a long table: one row per (ts, symbol) with an intent.

    Columns: ts (the decision bar's open time, on the panel grid), symbol, direction (+1/−1/0), and
    optionally size_fraction, leverage, sl_price, tp_price, exit_long, exit_short (defaults 0, 0,
    NaN, NaN, False, False). Rows off the panel raise DataQualityError; a repeated (ts, symbol) too.
    """
    from core.signals import empty_signals

    n, m = panel.shape
    out = empty_signals((n, m))
    if "ts" not in frame or "symbol" not in frame or "direction" not in frame:
        raise DataQualityError(
            f"signals: need ts, symbol and direction columns, got {', '.join(frame.columns)}"
        )
    if len(frame) == 0:
        return out
    index = {s: k for k, s in enumerate(panel.symbols)}
    unknown = sorted(set(frame["symbol"]) - set(index))
    if unknown:
        raise DataQualityError(f"signals: symbol(s) not in the panel: {', '.join(map(str, unknown))}")
    rows = (frame["ts"].to_numpy(np.int64) - int(panel.ts[0])) // panel.bar_ms
    on_grid = (frame["ts"].to_numpy(np.int64) - int(panel.ts[0])) % panel.bar_ms == 0
    if not on_grid.all() or rows.min() < 0 or rows.max() >= n:
        raise DataQualityError("signals: ts off the panel's grid or outside its bars")
    cols = frame["symbol"].map(index).to_numpy(np.int64)
    if len(set(zip(rows.tolist(), cols.tolist(), strict=True))) != len(frame):
        raise DataQualityError("signals: a (ts, symbol) appears twice")
    for name in ("direction", "size_fraction", "leverage", "sl_price", "tp_price", "exit_long", "exit_short"):
        if name in frame:
            getattr(out, name)[rows, cols] = frame[name].to_numpy()
    return out


def run_backtest(
    panel: MarketPanel,
    signals: BarSignals,
    config: SimConfig | None = None,
    risk: RiskConfig | None = None,
    rules: Mapping[str, SymbolRules] | None = None,
    *,
    close_at_end: bool = True,
) -> BacktestResult:
    """Backtest ``signals`` ([bar, symbol], decided at each bar's close) on ``panel``.

    A signal of bar t acts at bar t + 1's open (``core.sim.kernel.portfolio_bar``): the exit flags
    close a matching open position (SIGNAL), then a direction opens one in a flat symbol if
    ``risk`` allows (None: venue and book checks only). ``size_fraction`` is a fraction of equity
    (``SimConfig.sizing = "equity_fraction"``) or USDT; ``sl_price``/``tp_price`` are trigger prices
    (``SimConfig.protection = "price"``) or distances from the entry fill; ``leverage`` < 1 means
    ``SimConfig.default_leverage``. Symbols are handled in panel order within a bar, so when a limit
    binds the earlier symbol wins. ``close_at_end`` closes what is open at the last bar's close (END).
    """
    config = config or SimConfig()
    if config.bar_ms != panel.bar_ms:
        raise ValueError(f"SimConfig.bar_ms {config.bar_ms} ≠ panel bar {panel.bar_ms}")
    n, m = panel.shape
    s = kernel_signals(signals, (n, m))
    entries = int(np.count_nonzero(s["direction"]))
    logs = SimLogs(entries + 2 * m + 64)
    acct = _k.new_account(config.initial_equity_usdt)
    pos = _k.new_positions(m)
    sym, brackets = pack_rules(panel.symbols, rules)
    cfg, lim = config.vector(), risk_vector(risk)
    curve = np.empty((n, _k.CURVE_LEN))
    j = 0
    while j < n:
        logs.ensure_room(acct, m)
        j = _k.run_portfolio(
            j, panel.ts, panel.open, panel.close, panel.mark_open, panel.mark_high, panel.mark_low,
            panel.mark_close, panel.quote_volume, panel.funding_rate, panel.atr, s["direction"], s["exits"],
            s["size"], s["sl"], s["tp"], s["leverage"], close_at_end, acct, pos, sym, brackets, cfg, lim,
            logs.trades, logs.fills, logs.events, curve,
        )  # fmt: skip
    return BacktestResult(
        symbols=panel.symbols,
        trades=trades_frame(logs.trades, int(acct[_k.A_N_TRADES]), panel.symbols),
        fills=fills_frame(logs.fills, int(acct[_k.A_N_FILLS]), panel.symbols),
        risk_events=events_frame(logs.events, int(acct[_k.A_N_EVENTS]), panel.symbols),
        equity=curve_frame(curve),
        account=_account_summary(acct),
    )
