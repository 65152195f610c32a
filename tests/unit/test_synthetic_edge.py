"""The planted edge of the synthetic market and its oracle: off by default, causal, as documented, priced."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from pydantic import ValidationError

from core.config import LabelSpec, PolicyConfig
from core.sim import panel_from_market
from core.synthetic import (
    EDGE_WINDOW_MINUTES,
    PLANTED_EDGE_STRENGTH,
    SyntheticParams,
    btc_factor_returns,
    edge_loading,
    expected_drift,
    generate_market,
    planted_drift,
)
from core.synthetic_edge import ORACLE_COST_MULTIPLE, oracle_backtest, oracle_expected_moves, oracle_signals
from core.time import MINUTE_MS, parse_utc

START = parse_utc("2024-06-03")  # a Monday, 00:00 UTC
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XAUUSDT")
DATASETS = ("candles_1m", "mark_1m", "premium_1m", "funding")
PLANTED = SyntheticParams(edge_strength=PLANTED_EDGE_STRENGTH)


def _same_symbol(a, b, symbol: str) -> bool:
    return all(
        getattr(a, d)[symbol].keys() == getattr(b, d)[symbol].keys()
        and all(v.tobytes() == getattr(b, d)[symbol][c].tobytes() for c, v in getattr(a, d)[symbol].items())
        for d in DATASETS
    )


@pytest.fixture(scope="module")
def markets():
    """10 days of the planted and the null market, same seed (same noise)."""
    return {
        "planted": generate_market(SYMBOLS, START, 10 * 1440, seed=3, params=PLANTED),
        "null": generate_market(SYMBOLS, START, 10 * 1440, seed=3),
    }


# --- the null market is today's market -------------------------------------------------------------


def test_strength_zero_is_bit_identical_to_a_market_generated_without_the_parameter():
    without = generate_market(SYMBOLS, START, 4000, seed=9)
    explicit = generate_market(SYMBOLS, START, 4000, seed=9, params=SyntheticParams(edge_strength=0.0))
    assert SyntheticParams().edge_strength == 0.0
    for s in SYMBOLS:
        assert _same_symbol(without, explicit, s), s
    assert without.params == explicit.params == SyntheticParams()


def test_planted_edge_leaves_btc_and_the_symbol_profiles_alone(markets):
    planted, null = markets["planted"], markets["null"]
    assert _same_symbol(planted, null, "BTCUSDT")
    for s in SYMBOLS[1:]:
        assert dict(planted.meta)[s] == dict(null.meta)[s]
        assert not np.array_equal(planted.candles_1m[s]["close"], null.candles_1m[s]["close"]), s


def test_planted_alt_does_not_depend_on_btc_being_generated():
    alone = generate_market(["ETHUSDT"], START, 3000, seed=4, params=PLANTED)
    with_btc = generate_market(["BTCUSDT", "ETHUSDT"], START, 3000, seed=4, params=PLANTED)
    assert _same_symbol(alone, with_btc, "ETHUSDT")


def test_planted_market_is_deterministic_and_pickles_with_its_params():
    a = generate_market(SYMBOLS[:2], START, 2000, seed=5, params=PLANTED)
    b = generate_market(SYMBOLS[:2], START, 2000, seed=5, params=PLANTED)
    c = pickle.loads(pickle.dumps(a))
    for s in SYMBOLS[:2]:
        assert _same_symbol(a, b, s) and _same_symbol(a, c, s)
    assert c.params.edge_strength == PLANTED_EDGE_STRENGTH


def test_edge_strength_must_be_non_negative():
    with pytest.raises(ValidationError):
        SyntheticParams(edge_strength=-0.1)


# --- the planted component: causal and as documented -------------------------------------------------


def test_planted_drift_at_t_uses_btc_returns_strictly_before_t():
    f = np.random.default_rng(1).standard_normal(500) * 5e-4
    d = planted_drift(f, 2.0)
    assert d[0] == 0.0
    for t in (0, 1, 59, 60, 61, 250, 498):
        spoiled = f.copy()
        spoiled[t:] += 0.01 * np.random.default_rng(t).standard_normal(len(f) - t)
        out = planted_drift(spoiled, 2.0)
        np.testing.assert_array_equal(out[: t + 1], d[: t + 1])  # bar t's own return is unseen
        assert out[t + 1] != d[t + 1]
    n = 321  # a shorter history gives the same first bars
    np.testing.assert_array_equal(planted_drift(f[:n], 2.0), d[:n])


def test_planted_drift_is_the_loading_times_btc_trailing_mean_return():
    f = np.random.default_rng(2).standard_normal(400) * 5e-4
    d = planted_drift(f, 1.7)
    for t in (1, 30, 60, 61, 399):
        window = f[max(0, t - EDGE_WINDOW_MINUTES) : t]
        assert d[t] == pytest.approx(1.7 * window.sum() / EDGE_WINDOW_MINUTES, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("horizon", [1, 17, 60, 360])
def test_expected_drift_is_the_future_planted_drift_with_future_btc_returns_at_their_mean(horizon):
    f = np.random.default_rng(3).standard_normal(600) * 5e-4
    e = expected_drift(f, 1.3, horizon)
    for t in (0, 10, 59, 60, 200, 599):
        known = f.copy()
        known[t + 1 :] = 0.0  # what is known at t's close
        future = planted_drift(np.concatenate((known, np.zeros(horizon))), 1.3)[t + 1 : t + 1 + horizon]
        assert e[t] == pytest.approx(future.sum(), rel=1e-9, abs=1e-15), t
        spoiled = f.copy()
        spoiled[t + 1 :] += 0.01
        assert expected_drift(spoiled, 1.3, horizon)[t] == e[t]  # uses bars up to t only


def test_market_prices_carry_exactly_the_documented_drift(markets):
    planted, null = markets["planted"], markets["null"]
    f = btc_factor_returns(planted)
    btc_returns = np.diff(np.log(planted.candles_1m["BTCUSDT"]["close"]))
    assert np.max(np.abs(btc_returns - f[1:])) < 1e-5  # the factor is BTC's return up to the 0.1 tick
    for s in SYMBOLS[1:]:
        loading = edge_loading(planted.meta[s], planted.params)
        m = planted.meta[s]
        assert loading == pytest.approx(PLANTED_EDGE_STRENGTH * np.hypot(m.beta, m.idio_vol_ratio))
        gap = np.log(planted.candles_1m[s]["close"]) - np.log(null.candles_1m[s]["close"])
        cumulative = np.cumsum(planted_drift(f, loading))
        tick = 2 * m.tick_size / np.minimum(planted.candles_1m[s]["close"], null.candles_1m[s]["close"])
        assert np.all(np.abs(gap - cumulative) <= tick), s
    assert edge_loading(planted.meta["BTCUSDT"], planted.params) == 0.0
    assert edge_loading(planted.meta["ETHUSDT"], SyntheticParams()) == 0.0


def test_alt_forward_return_follows_trailing_btc_return_with_the_documented_slope(markets):
    moves = oracle_expected_moves(markets["planted"], horizon_bars=60)
    log_btc = np.log(markets["planted"].candles_1m["BTCUSDT"]["close"])
    for kind, market in markets.items():
        for s in ("ETHUSDT", "SOLUSDT"):
            log_close = np.log(market.candles_1m[s]["close"])
            t = np.arange(60, len(log_close) - 60)
            forward = log_close[t + 60] - log_close[t]
            trailing = log_btc[t] - log_btc[t - 60]  # what f_1m_btc_ret_60 sees at t
            e = moves[s][t]
            slope = np.cov(forward, e)[0, 1] / e.var(ddof=1)  # E_t is the expected move: slope 1
            corr = np.corrcoef(forward, trailing)[0, 1]
            if kind == "planted":  # seeds 1-8 on 14 days: slope 0.73-1.31, corr 0.32-0.53
                assert 0.6 < slope < 1.5 and corr > 0.25, (s, slope, corr)
            else:  # the same noise without the edge: seeds 1-8 give |slope| ≤ 0.23, |corr| ≤ 0.19
                assert abs(slope) < 0.35 and abs(corr) < 0.22, (s, slope, corr)


# --- the oracle ------------------------------------------------------------------------------------


def test_oracle_enters_with_the_drift_only_when_it_beats_the_cost_multiple(markets):
    market, label, policy = markets["planted"], LabelSpec(), PolicyConfig()
    panel = panel_from_market(market)
    signals = oracle_signals(market, panel)
    moves = oracle_expected_moves(market)
    entered = signals.direction != 0
    assert entered[:, 0].sum() == 0  # no drift is planted in BTC
    assert entered[:, 1:].any(axis=0).all()
    for k, s in enumerate(panel.symbols):
        e = moves[s]
        cost = 2 * label.fee_rate + 2 * label.slippage_k * panel.atr[:, k] / panel.close[:, k]
        with np.errstate(invalid="ignore"):
            expected = np.abs(e) > ORACLE_COST_MULTIPLE * cost
        np.testing.assert_array_equal(entered[:, k], expected & np.isfinite(cost))
        d = signals.direction[:, k][entered[:, k]]
        np.testing.assert_array_equal(d, np.sign(e[entered[:, k]]))
        atr, close = panel.atr[entered[:, k], k], panel.close[entered[:, k], k]
        np.testing.assert_allclose(signals.sl_price[entered[:, k], k], close - d * label.k_sl * atr)
        np.testing.assert_allclose(signals.tp_price[entered[:, k], k], close + d * label.k_tp * atr)
    assert np.all(signals.size_fraction[entered] == policy.position_notional_pct)
    assert np.all(signals.leverage[entered] == policy.leverage)


def test_oracle_earns_on_the_planted_market_and_loses_on_the_null_one(markets):
    planted = oracle_backtest(markets["planted"])
    fake = oracle_backtest(markets["null"], strength=PLANTED_EDGE_STRENGTH)
    # seeds 1-5, 10 days (2025-01-06): Sharpe 13-44 on 366-467 trades, per trade 0.12-0.42; null -24 to -43
    assert planted.trades > 50 and planted.sharpe > 5 and planted.trade_sharpe > 0.1
    assert planted.summary["total_return"] > 0
    assert fake.trades > 50 and fake.sharpe < 0 and fake.summary["total_return"] < 0
    assert set(planted.backtest.trades["exit_reason"]) <= {"TP", "SL", "TIME", "END"}


def test_oracle_of_the_null_market_never_trades(markets):
    none = oracle_backtest(markets["null"])
    assert none.strength == 0.0 and none.trades == 0 and np.isnan(none.sharpe)


def test_oracle_is_deterministic_and_its_window_is_out_of_sample(markets):
    start = START + 7 * 1440 * MINUTE_MS
    a = oracle_backtest(markets["planted"], start_ms=start)
    b = oracle_backtest(markets["planted"], start_ms=start)
    assert a.sharpe == b.sharpe and a.backtest.trades.equals(b.backtest.trades)
    assert a.trades > 0 and (a.backtest.trades["entry_ts"] > start).all()
    assert a.backtest.equity["ts"].iloc[0] == start + MINUTE_MS


def test_oracle_rejects_a_panel_outside_the_market(markets):
    other = generate_market(SYMBOLS, START + 20 * 1440 * MINUTE_MS, 100, seed=3, params=PLANTED)
    with pytest.raises(ValueError, match="outside"):
        oracle_signals(markets["planted"], panel_from_market(other))
