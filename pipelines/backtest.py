"""Portfolio backtest over the lake: load a market panel, run the core simulator (``core.sim``).

A thin shell around ``core.sim.build_panel`` and ``core.sim.run_backtest``: it reads each symbol's
``candles_1m``, ``mark_1m`` (when present; else the last-price candles stand in, see
``core.sim.portfolio`` on ``mark_proxy``) and ``funding`` for [start_ms, end_ms), plus a warm-up
before start_ms so the slippage ATR is available from the first bar, and returns trades, fills,
risk events and the equity curve as DataFrames. No Ray here: one process holds the whole book (the
account couples the symbols); folds and sweeps run in parallel (pipelines.walkforward, tune).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.errors import DataQualityError
from core.policy import decide_arrays
from core.signals import BarSignals
from core.sim import BacktestResult, MarketPanel, SimConfig, SymbolRules, build_panel, run_backtest
from core.sim.portfolio import MarkProxy, signals_from_frame
from core.time import interval_ms
from storage.lake import Lake

WARM_UP_PERIODS = 10  # ATR periods read before the window


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy() for c in frame.columns}


def load_panel(
    lake: Lake,
    symbols: Sequence[str],
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    mark_proxy: MarkProxy = "last",
    atr_timeframe: str | None = None,
    atr_period: int | None = None,
) -> MarketPanel:
    """Read and align the symbols' 1m candles, mark candles and funding of [start_ms, end_ms).

    The ATR (``LabelSpec`` defaults unless given) is computed over a warm-up of ``10 · atr_period``
    ATR bars read before ``start_ms``: Wilder's recursion forgets its seed as ``(1 − 1/period)^k``, so
    the first bar's ATR is within a few 1e-4 of the full-history one (equal when the lake starts
    after the warm-up begins). Raises DataQualityError when a symbol has no candles.
    """
    spec = LabelSpec()
    tf = atr_timeframe or spec.atr_timeframe
    period = atr_period or spec.atr_period
    warm_start = None if start_ms is None else int(start_ms) - WARM_UP_PERIODS * period * interval_ms(tf)
    candles, marks, funding = {}, {}, {}
    for symbol in symbols:
        frame = lake.read("candles_1m", symbol, warm_start, end_ms)
        if frame.empty:
            raise DataQualityError(f"backtest: no candles_1m for {symbol} in the lake at {lake.root}")
        candles[symbol] = _columns(frame)
        mark = lake.read("mark_1m", symbol, warm_start, end_ms)
        marks[symbol] = _columns(mark) if not mark.empty else None
        fund = lake.read("funding", symbol, start_ms, None if end_ms is None else int(end_ms) + 1)
        funding[symbol] = _columns(fund)
    return build_panel(
        symbols, candles, funding, marks, mark_proxy=mark_proxy, atr_timeframe=tf, atr_period=period,
        start_ms=start_ms, end_ms=end_ms,
    )  # fmt: skip


def backtest_lake(
    lake: Lake,
    symbols: Sequence[str],
    signals: BarSignals | pd.DataFrame,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    config: SimConfig | None = None,
    risk: RiskConfig | None = None,
    rules: Mapping[str, SymbolRules] | None = None,
    mark_proxy: MarkProxy = "last",
    close_at_end: bool = True,
) -> BacktestResult:
    """Backtest ``signals`` on the lake's data of ``symbols`` over [start_ms, end_ms).

    ``signals``: ``BarSignals`` of the panel's shape (bars × symbols, in ``symbols`` order), or a
    long table (ts, symbol, direction, size_fraction, leverage, sl_price, tp_price, …; see
    ``core.sim.signals_from_frame``).
    """
    panel = load_panel(lake, symbols, start_ms, end_ms, mark_proxy=mark_proxy)
    if isinstance(signals, pd.DataFrame):
        signals = signals_from_frame(signals, panel)
    return run_backtest(panel, signals, config, risk, rules, close_at_end=close_at_end)


def policy_signals(
    panel: MarketPanel,
    predictions: Mapping[str, np.ndarray],
    btc_regime: np.ndarray,
    policy: PolicyConfig,
    label_spec: LabelSpec,
) -> BarSignals:
    """Turn model outputs per bar and symbol (``core.policy.PREDICTION_KEYS``, each bars × symbols)
    into entry intents with the policy's gates, sizing and SL/TP from the panel's 15m ATR.

    ``btc_regime``: per bar (n, 1) or per bar and symbol. Uses data up to each bar's close.
    """
    decided = decide_arrays(predictions, panel.close, panel.atr, btc_regime, policy, label_spec)
    return decided.signals()
