"""``FillSimulator.mark_bar_close``: the backtest's bar-close marking and daily loss check, one event."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.config import RiskConfig
from core.signals import empty_signals
from core.sim import FillSimulator, MarketPanel, SimConfig, run_backtest
from core.time import MINUTE_MS

T0 = 1_717_200_000_000  # 2024-06-01 00:00 UTC
BARE = SimConfig(fee_rate=0.0004, slippage_k=0.0, impact_k=0.0, default_leverage=5)
RISK = RiskConfig(daily_loss_limit_pct=0.02, max_symbol_notional_pct=1.0)


def long_book() -> FillSimulator:
    """A BTCUSDT long of 5000 USDT at 100 (half the equity), stop far below."""
    sim = FillSimulator(["BTCUSDT", "ETHUSDT"], BARE, RISK)
    assert sim.open_position("BTCUSDT", 1, T0, 100.0, 5000.0, sl=50.0, tp=200.0) == ()
    return sim


def test_marks_the_held_positions_and_fires_the_daily_limit_only_past_it():
    sim = long_book()
    # −3.5% on half the equity and a 2 USDT fee: −1.77% of the day's start, under the 2% limit
    assert sim.mark_bar_close(T0 + MINUTE_MS, {"BTCUSDT": 96.5, "ETHUSDT": 10.0}) is False
    assert sim.position("BTCUSDT").mark_price == 96.5 and sim.equity == pytest.approx(10_000 - 2 - 175)
    assert sim.trading_enabled and not sim.flatten_requested and sim.position("ETHUSDT") is None
    assert sim.mark_bar_close(T0 + 2 * MINUTE_MS, {"BTCUSDT": math.nan}) is False  # no price: mark kept
    assert sim.position("BTCUSDT").mark_price == 96.5
    assert sim.mark_bar_close(T0 + 2 * MINUTE_MS, {"BTCUSDT": 96.0}) is True  # −2.02%
    assert not sim.trading_enabled and sim.flatten_requested and sim.position("BTCUSDT") is not None
    events = sim.risk_events()
    assert list(events["codes"]) == ["DAILY_LOSS_LIMIT"] and list(events["symbol"]) == [""]
    assert sim.mark_bar_close(T0 + 3 * MINUTE_MS, {"BTCUSDT": 90.0}) is False  # fired once a day
    assert sim.open_position("ETHUSDT", 1, T0 + 3 * MINUTE_MS, 10.0, 100.0, sl=9.0) == (
        "TRADING_DISABLED",
        "DAILY_LOSS_LIMIT",
    )


def test_fires_on_the_same_bar_close_as_the_backtest():
    # the same long through run_backtest: entered at bar 1's open, marks fall 0.5 a bar
    n = 12
    marks = np.array([100.0] * 2 + [100.0 - 0.5 * j for j in range(1, n - 1)])
    col = np.column_stack([marks, np.full(n, 10.0)])
    panel = MarketPanel(("BTCUSDT", "ETHUSDT"), T0 + MINUTE_MS * np.arange(n, dtype=np.int64),
                        **{k: col.copy() for k in ("open", "close", "mark_open", "mark_high", "mark_low",
                                                   "mark_close")},
                        quote_volume=np.full((n, 2), 1e9), funding_rate=np.zeros((n, 2)),
                        atr=np.zeros((n, 2)))  # fmt: skip
    sig = empty_signals(panel.shape)
    sig.direction[0, 0], sig.size_fraction[0, 0], sig.sl_price[0, 0], sig.tp_price[0, 0] = 1, 0.5, 50.0, 200.0
    bt = run_backtest(panel, sig, BARE, RISK, close_at_end=False)
    (flatten_ts,) = bt.trades["exit_ts"]
    assert bt.trades.iloc[0]["exit_reason"] == "FLATTEN"
    sim = FillSimulator(["BTCUSDT", "ETHUSDT"], BARE, RISK)
    assert sim.open_position("BTCUSDT", 1, int(panel.ts[1]), 100.0, 0.5 * sim.equity, sl=50.0, tp=200.0,
                             mark_price=100.0) == ()  # fmt: skip
    fired = [
        j for j in range(1, n) if sim.mark_bar_close(int(panel.ts[j]) + MINUTE_MS, {"BTCUSDT": marks[j]})
    ]
    assert len(fired) == 1 and int(panel.ts[fired[0]]) + MINUTE_MS == flatten_ts
