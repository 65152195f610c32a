"""Trading metrics against hand-computed numbers, the column contract, and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.errors import DataQualityError
from core.metrics import (
    EQUITY_COLUMNS,
    MINUTES_PER_YEAR,
    PER_SYMBOL_COLUMNS,
    TRADE_COLUMNS,
    check_equity,
    check_trades,
    cost_breakdown,
    empty_equity,
    empty_trades,
    equity_returns,
    expectancy,
    exposure,
    max_drawdown,
    per_symbol_table,
    profit_factor,
    sharpe,
    sortino,
    summarize,
    tail_loss,
    turnover,
    win_rate,
)
from core.time import MINUTE_MS

T0 = 1_717_200_000_000
SQRT_YEAR = math.sqrt(525_600)


def _trade(symbol, side, entry, exit_, qty, fees=0.0, slippage=0.0, funding=0.0, i=0, reason="TP"):
    notional = qty * entry
    pnl = side * qty * (exit_ - entry) - fees - funding
    return {
        "symbol": symbol, "side": side, "entry_ts": T0 + i * 10 * MINUTE_MS,
        "exit_ts": T0 + (i * 10 + 5) * MINUTE_MS, "entry_price": entry, "exit_price": exit_,
        "qty": qty, "notional": notional, "exit_reason": reason, "fees": fees, "slippage": slippage,
        "funding": funding, "pnl": pnl, "return": pnl / notional,
    }  # fmt: skip


def _trades() -> pd.DataFrame:
    rows = [
        _trade("BTCUSDT", 1, 100.0, 112.0, 1.0, fees=1.0, slippage=0.2, funding=1.0, i=0),  # pnl 10, ret .10
        _trade("BTCUSDT", -1, 100.0, 104.0, 1.0, fees=0.5, slippage=0.2, funding=0.5, i=1, reason="SL"),  # -5
        _trade("ETHUSDT", 1, 50.0, 60.0, 2.0, slippage=0.1, i=2),  # pnl 20, ret .20
        _trade("ETHUSDT", -1, 50.0, 55.0, 2.0, slippage=0.1, i=3, reason="SL"),  # pnl -10, ret -.10
        _trade("SOLUSDT", 1, 100.0, 105.0, 1.0, i=4, reason="TIME"),  # pnl 5, ret .05
    ]
    return pd.DataFrame(rows).astype({"side": np.int8})


def _equity(values, open_positions) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame(
        {
            "ts": T0 + np.arange(n, dtype=np.int64) * MINUTE_MS,
            "equity": np.asarray(values, float),
            "wallet": np.asarray(values, float),
            "unrealized": np.zeros(n),
            "used_margin": np.zeros(n),
            "open_positions": np.asarray(open_positions, np.int64),
        }
    )


# --- trade statistics ----------------------------------------------------------------------------------


def test_trade_fixture_follows_the_pnl_contract():
    t = _trades()
    np.testing.assert_allclose(t["pnl"], [10.0, -5.0, 20.0, -10.0, 5.0])
    np.testing.assert_allclose(t["return"], [0.10, -0.05, 0.20, -0.10, 0.05])
    check_trades(t)


def test_profit_factor_expectancy_win_rate_by_hand():
    pnl = [10.0, -5.0, 20.0, -10.0, 5.0]
    assert profit_factor(pnl) == pytest.approx(35.0 / 15.0, rel=1e-15)
    assert expectancy(pnl) == 4.0
    assert win_rate(pnl) == 0.6


def test_profit_factor_edge_cases():
    assert profit_factor([1.0, 2.0]) == math.inf  # no loss
    assert profit_factor([-1.0, -2.0]) == 0.0  # no gain
    assert math.isnan(profit_factor([]))  # no trade
    assert math.isnan(profit_factor([0.0, 0.0]))  # neither gain nor loss
    assert profit_factor([2.0, np.nan, -1.0]) == 2.0  # NaN ignored


def test_win_rate_counts_zero_pnl_as_not_a_win_and_nan_without_trades():
    assert win_rate([1.0, 0.0, -1.0, 2.0]) == 0.5
    assert math.isnan(win_rate([]))
    assert math.isnan(expectancy([]))


def test_tail_loss_is_the_mean_of_the_worst_one_percent_by_count():
    base = [0.01] * 148
    assert tail_loss([*base, -0.10, -0.08]) == pytest.approx(-0.09, abs=1e-15)  # 150 trades: worst 2
    assert tail_loss([0.01] * 99 + [-0.2]) == -0.2  # 100 trades: worst 1
    assert tail_loss([0.0] * 297 + [-0.3, -0.2, -0.1]) == pytest.approx(-0.2, abs=1e-15)  # 300: worst 3
    assert tail_loss([0.1, -0.05, 0.2, -0.1, 0.05]) == -0.1  # fewer than 100: the worst one
    assert tail_loss([0.03, 0.02]) == 0.02  # a book with no losing tail
    assert math.isnan(tail_loss([]))
    assert tail_loss([-0.1, -0.3, 0.2, 0.4], quantile=0.5) == pytest.approx(-0.2, abs=1e-15)
    with pytest.raises(ValueError):
        tail_loss([0.1], quantile=0.0)


# --- equity statistics ---------------------------------------------------------------------------------


def test_max_drawdown_by_hand():
    assert max_drawdown([100, 120, 90, 110, 130, 65, 140]) == pytest.approx(0.5, abs=1e-15)
    assert max_drawdown([100, 90, 95, 80, 120]) == pytest.approx(0.2, abs=1e-15)
    assert max_drawdown([100.0, 100.0, 100.0]) == 0.0  # flat
    assert max_drawdown([1, 2, 3, 4]) == 0.0  # rising
    assert max_drawdown([100.0]) == 0.0
    assert math.isnan(max_drawdown([]))


def test_sharpe_by_hand():
    r = [0.01, -0.02, 0.03, 0.0]
    mean, sd = 0.005, math.sqrt((0.005**2 + 0.025**2 + 0.025**2 + 0.005**2) / 3)
    assert MINUTES_PER_YEAR == 525_600
    assert sharpe(r) == pytest.approx(mean / sd * SQRT_YEAR, rel=1e-12)
    assert sharpe(r, periods_per_year=252) == pytest.approx(mean / sd * math.sqrt(252), rel=1e-12)
    assert sharpe(r) == pytest.approx(174.135226, rel=1e-8)


def test_sortino_by_hand():
    r = [0.01, -0.02, 0.03, 0.0]
    downside = math.sqrt((0.02**2) / 4)  # 0.01: over all periods
    assert sortino(r) == pytest.approx(0.005 / downside * SQRT_YEAR, rel=1e-12)
    assert sortino(r) == pytest.approx(0.5 * SQRT_YEAR, rel=1e-12)


def test_sharpe_sortino_edge_cases():
    assert math.isnan(sharpe([0.0, 0.0, 0.0]))  # flat equity
    assert math.isnan(sharpe([0.01]))
    assert math.isnan(sortino([0.0, 0.0]))
    assert sortino([0.01, 0.02]) == math.inf  # no down period
    assert math.isnan(sortino([]))


def test_equity_returns_and_exposure():
    np.testing.assert_allclose(equity_returns([100.0, 110.0, 99.0]), [0.1, -0.1])
    assert len(equity_returns([100.0])) == 0
    assert exposure([0, 1, 2, 0]) == 0.5
    assert math.isnan(exposure([]))


def test_turnover_is_traded_notional_over_mean_equity():
    t = _trades()
    traded = 5 * 100.0 + (112.0 + 104.0 + 120.0 + 110.0 + 105.0)
    eq = _equity([1000.0, 1000.0], [0, 0])
    assert turnover(t, eq) == pytest.approx(traded / 1000.0, rel=1e-15)
    assert turnover(empty_trades(), eq) == 0.0
    assert math.isnan(turnover(t, empty_equity()))


def test_cost_breakdown_sums():
    c = cost_breakdown(_trades())
    assert c == pytest.approx({"fees": 1.5, "slippage": 0.6, "funding": 1.5, "total": 3.6}, abs=1e-12)


def test_per_symbol_table_by_hand():
    table = per_symbol_table(_trades())
    assert list(table.index) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert tuple(table.columns) == PER_SYMBOL_COLUMNS
    btc = table.loc["BTCUSDT"]
    assert btc["trades"] == 2 and btc["pnl"] == pytest.approx(5.0)
    assert btc["win_rate"] == 0.5 and btc["profit_factor"] == pytest.approx(2.0)
    assert btc["expectancy"] == pytest.approx(2.5) and btc["expectancy_return"] == pytest.approx(0.025)
    assert btc["tail_loss"] == pytest.approx(-0.05)
    assert btc["fees"] == 1.5 and btc["slippage"] == pytest.approx(0.4) and btc["funding"] == 1.5
    assert btc["total"] == pytest.approx(3.4) and btc["notional"] == 200.0
    assert table.loc["SOLUSDT", "profit_factor"] == math.inf
    assert table["trades"].dtype == np.int64
    assert per_symbol_table(empty_trades()).empty


# --- summarize and the contract ------------------------------------------------------------------------


def test_summarize_small_backtest_by_hand():
    eq = _equity([1000.0, 1010.0, 1005.0, 1025.0, 1015.0, 1020.0], [0, 1, 1, 1, 0, 0])
    s = summarize(_trades(), eq)
    assert s["trades"] == 5.0 and s["pnl"] == pytest.approx(20.0)
    assert s["profit_factor"] == pytest.approx(35.0 / 15.0)
    assert s["expectancy"] == pytest.approx(4.0) and s["expectancy_return"] == pytest.approx(0.04)
    assert s["win_rate"] == 0.6 and s["tail_loss"] == pytest.approx(-0.1)
    assert s["max_drawdown"] == pytest.approx(10.0 / 1025.0, rel=1e-12)
    r = [1010 / 1000 - 1, 1005 / 1010 - 1, 1025 / 1005 - 1, 1015 / 1025 - 1, 1020 / 1015 - 1]
    assert s["sharpe"] == pytest.approx(float(np.mean(r) / np.std(r, ddof=1)) * SQRT_YEAR, rel=1e-12)
    assert s["sortino"] == pytest.approx(sortino(r), rel=1e-12)
    assert s["exposure"] == 0.5
    assert s["total_return"] == pytest.approx(0.02)
    assert s["days"] == pytest.approx(5 / 1440)
    assert s["turnover"] == pytest.approx(1051.0 / np.mean(eq["equity"]))
    assert s["turnover_per_day"] == pytest.approx(s["turnover"] / (5 / 1440))
    assert (s["fees"], s["funding"]) == (1.5, 1.5) and s["total_costs"] == pytest.approx(3.6)
    assert all(isinstance(v, float) for v in s.values())


def test_summarize_without_trades_and_flat_equity():
    s = summarize(empty_trades(), _equity([1000.0] * 10, [0] * 10))
    assert s["trades"] == 0.0 and s["turnover"] == 0.0 and s["exposure"] == 0.0
    assert s["max_drawdown"] == 0.0 and s["total_return"] == 0.0 and s["total_costs"] == 0.0
    for key in ("profit_factor", "win_rate", "expectancy", "tail_loss", "sharpe", "sortino"):
        assert math.isnan(s[key]), key


def test_summarize_with_no_losing_trade_reports_infinite_profit_factor():
    t = _trades().iloc[[0, 2, 4]]
    assert summarize(t, _equity([1000.0, 1035.0], [0, 0]))["profit_factor"] == math.inf


def test_empty_frames_carry_the_contract():
    assert dict(empty_trades().dtypes.astype(str)) == dict(TRADE_COLUMNS)
    assert dict(empty_equity().dtypes.astype(str)) == dict(EQUITY_COLUMNS)
    check_trades(empty_trades())
    check_equity(empty_equity())


def test_contract_violations_are_data_quality_errors():
    with pytest.raises(DataQualityError, match="pnl"):
        check_trades(_trades().drop(columns=["pnl"]))
    with pytest.raises(DataQualityError, match="side"):
        check_trades(_trades().assign(side=np.int8(0)))
    with pytest.raises(DataQualityError, match="open_positions"):
        check_equity(_equity([1.0], [0]).drop(columns=["open_positions"]))
    eq = _equity([1.0, 2.0], [0, 0])
    eq.loc[1, "ts"] = eq.loc[0, "ts"]
    with pytest.raises(DataQualityError, match="increasing"):
        check_equity(eq)
    with pytest.raises(DataQualityError, match="entry_ts"):
        check_trades(_trades().assign(entry_ts=1.5))
