"""The portfolio kernel against the plain-Python reference (tests/unit/sim_reference.py) on random data,
and the accounting properties every run must satisfy."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_reference import (
    random_case,
    random_config,
    random_risk,
    random_rules,
    reference_backtest,
)

from core.sim import FillSimulator, run_backtest
from core.time import HOUR_MS

START = 1_717_286_400_000 - 2 * HOUR_MS  # 2024-06-01 22:00 UTC: a UTC day ends 120 bars in
FLOAT_TOL = {"rtol": 1e-9, "atol": 1e-9}


def assert_frames_match(got: pd.DataFrame, ref: pd.DataFrame, what: str) -> None:
    assert len(got) == len(ref), f"{what}: {len(got)} rows, reference {len(ref)}"
    if len(ref) == 0:
        return
    for col in ref.columns:
        g, r = got[col].to_numpy(), ref[col].to_numpy()
        if ref[col].dtype.kind == "f" or got[col].dtype.kind == "f":
            np.testing.assert_allclose(g.astype(float), r.astype(float), err_msg=f"{what}.{col}", **FLOAT_TOL)
        else:
            np.testing.assert_array_equal(g, r, err_msg=f"{what}.{col}")


def run_both(seed: int, n: int, m: int, close_at_end: bool = True):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng)
    panel, signals = random_case(rng, n, m, START, cfg)
    rules = random_rules(rng, panel)
    risk = random_risk(rng)
    got = run_backtest(panel, signals, cfg, risk, rules, close_at_end=close_at_end)
    ref = reference_backtest(panel, signals, cfg, risk, rules, close_at_end=close_at_end)
    return got, ref, cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 240), m=st.integers(1, 4), end=st.booleans())
def test_kernel_reproduces_reference_trades_fills_events_and_curve(seed, n, m, end):
    got, ref, _ = run_both(seed, n, m, close_at_end=end)
    assert_frames_match(got.trades, ref["trades"], "trades")
    assert_frames_match(got.fills, ref["fills"], "fills")
    assert_frames_match(got.risk_events[["ts", "symbol", "side", "codes"]] if len(ref["events"]) else
                        got.risk_events, ref["events"], "risk_events")  # fmt: skip
    assert_frames_match(got.equity, ref["curve"], "equity")


def test_random_cases_cover_every_exit_reason_and_many_risk_codes():
    reasons: set[str] = set()
    codes: set[str] = set()
    for seed in range(60):
        got, ref, _ = run_both(seed, 240, 4)
        assert_frames_match(got.trades, ref["trades"], "trades")
        reasons |= set(got.trades["exit_reason"])
        codes |= {c for cs in got.risk_events["codes"] for c in cs.split(",") if c}
    assert reasons == {"TP", "SL", "LIQUIDATION", "TIME", "SIGNAL", "FLATTEN", "END"}
    expected = {"INVALID_ORDER", "TRADING_DISABLED", "DAILY_LOSS_LIMIT", "MAX_POSITIONS", "MAX_USED_MARGIN",
                "INSUFFICIENT_MARGIN", "MAX_TOTAL_NOTIONAL", "MAX_DIRECTIONAL_NOTIONAL", "MAX_SYMBOL_NOTIONAL",
                "MAX_BTC_BETA_NOTIONAL", "ORDER_RATE_SECOND", "ORDER_RATE_DAY", "MAX_SLIPPAGE",
                "FILTER_MIN_NOTIONAL", "FILTER_MARKET_LOT_SIZE", "FILTER_PRICE", "LEVERAGE_BRACKET"}  # fmt: skip
    assert expected <= codes, expected - codes


# --- accounting properties ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 240), m=st.integers(1, 4))
def test_equity_is_wallet_plus_unrealized_and_pnl_is_conserved(seed, n, m):
    got, _, cfg = run_both(seed, n, m, close_at_end=True)
    eq, t = got.equity, got.trades
    np.testing.assert_allclose(eq["equity"], eq["wallet"] + eq["unrealized"], rtol=0, atol=1e-9)
    # everything is closed at the end: the equity change is the sum of the trades' net PnL
    assert eq["open_positions"].iloc[-1] == 0
    assert abs(eq["equity"].iloc[-1] - cfg.initial_equity_usdt - t["pnl"].sum()) < 1e-6
    # net PnL = gross PnL at reference prices − fees − slippage − funding, per trade
    np.testing.assert_allclose(t["pnl"], t["gross_pnl"] - t["fees"] - t["slippage"] - t["funding"],
                               rtol=1e-9, atol=1e-9)  # fmt: skip
    # fills are the primary fact: each trade's PnL is its fills' cash flows minus its funding
    f = got.fills
    cash = (-f["side"] * f["qty"] * f["price"] - f["fee"]).groupby(f["position_id"]).sum()
    by_id = t.set_index("position_id")
    np.testing.assert_allclose(cash.loc[by_id.index] - by_id["funding"], by_id["pnl"], rtol=1e-9, atol=1e-9)
    # the account's cost totals are the trades'
    acct = got.account
    assert abs(acct["fees"] - t["fees"].sum()) < 1e-6
    assert abs(acct["funding"] - t["funding"].sum()) < 1e-6
    assert abs(acct["slippage"] - t["slippage"].sum()) < 1e-6
    assert (t["fees"] >= -1e-9).all() and (t["exit_ts"] >= t["entry_ts"]).all()
    liq = t[t["exit_reason"] == "LIQUIDATION"]
    entry_fee = f[f["reason"] == "ENTRY"].set_index("position_id")["fee"]
    np.testing.assert_allclose(liq["pnl"], -liq["initial_margin"] - entry_fee.loc[liq["position_id"]].to_numpy(),
                               rtol=1e-9, atol=1e-7)  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 120), m=st.integers(1, 4))
def test_fill_simulator_step_bar_replays_the_backtest_exactly(seed, n, m):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng)
    panel, signals = random_case(rng, n, m, START, cfg)
    rules = random_rules(rng, panel)
    risk = random_risk(rng)
    got = run_backtest(panel, signals, cfg, risk, rules)
    sim = FillSimulator(panel.symbols, cfg, risk, rules)
    exits = signals.exit_long.astype(np.int8) | (signals.exit_short.astype(np.int8) << 1)
    for j in range(n):
        bar = {"open": panel.open[j], "close": panel.close[j], "mark_open": panel.mark_open[j],
               "mark_high": panel.mark_high[j], "mark_low": panel.mark_low[j], "mark_close": panel.mark_close[j],
               "quote_volume": panel.quote_volume[j], "funding_rate": panel.funding_rate[j]}  # fmt: skip
        d = j - 1
        decision = None if j == 0 else {
            "direction": signals.direction[d], "exits": exits[d], "size": signals.size_fraction[d],
            "sl": signals.sl_price[d], "tp": signals.tp_price[d], "leverage": signals.leverage[d],
            "close": panel.close[d], "atr": panel.atr[d], "quote_volume": panel.quote_volume[d]}  # fmt: skip
        sim.step_bar(int(panel.ts[j]), bar, decision, close_at_end=j == n - 1)
    pd.testing.assert_frame_equal(sim.trades(), got.trades, check_exact=True)
    pd.testing.assert_frame_equal(sim.fills(), got.fills, check_exact=True)
    pd.testing.assert_frame_equal(sim.risk_events(), got.risk_events, check_exact=True)
    pd.testing.assert_frame_equal(sim.equity_curve(), got.equity, check_exact=True)


def test_same_inputs_give_identical_results():
    rng = np.random.default_rng(7)
    cfg = random_config(rng)
    panel, signals = random_case(rng, 400, 4, START, cfg)
    rules = random_rules(rng, panel)
    risk = random_risk(rng)
    a = run_backtest(panel, signals, cfg, risk, rules)
    b = run_backtest(panel, signals, cfg, risk, rules)
    for name in ("trades", "fills", "risk_events", "equity"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)
    assert a.account == b.account
