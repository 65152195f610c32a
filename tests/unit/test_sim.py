"""Fill simulator: hand-built cases (gaps, both barriers, exact TP, funding, liquidation, daily loss
limit), agreement with the label kernel, venue-rule parsing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core.config import LabelSpec, RiskConfig
from core.labels import label_atr, label_bars
from core.signals import empty_signals
from core.sim import (
    DEFAULT_BRACKETS,
    FillSimulator,
    MarketPanel,
    SimConfig,
    SymbolRules,
    build_panel,
    parse_leverage_brackets,
    parse_symbol_filters,
    run_backtest,
)
from core.sim.kernel import fill_slippage
from core.sim.rules import LeverageBracket, bracket_for
from core.time import DAY_MS, HOUR_MS, MINUTE_MS

T0 = 1_717_200_000_000  # 2024-06-01 00:00 UTC
BARE = SimConfig(fee_rate=0.0004, slippage_k=0.0, impact_k=0.0, default_leverage=5)


def sim_with_long(config: SimConfig = BARE, side: int = 1, **kwargs) -> FillSimulator:
    """One BTCUSDT position of 10 at 100 (no slippage): SL 98 / TP 105 for a long, 102 / 95 for a short."""
    sim = FillSimulator(["BTCUSDT"], config)
    sl, tp = (98.0, 105.0) if side > 0 else (102.0, 95.0)
    assert sim.open_position("BTCUSDT", side, T0, 100.0, 1000.0, sl=sl, tp=tp, **kwargs) == ()
    return sim


def last_trade(sim: FillSimulator):
    return sim.trades().iloc[-1]


# --- triggers and fills ------------------------------------------------------------------------------


def test_gap_through_the_stop_fills_at_the_open_not_the_stop():
    sim = sim_with_long()
    assert sim.on_bar("BTCUSDT", T0, 100.0, 100.5, 99.0, 100.0) is None
    assert sim.on_bar("BTCUSDT", T0 + MINUTE_MS, 95.0, 96.0, 94.0, 95.5) == "SL"
    t = last_trade(sim)
    assert t["exit_price"] == 95.0 and t["exit_reason"] == "SL"
    assert t["exit_ts"] == T0 + 2 * MINUTE_MS  # trigger exits are timed at the bar's close
    assert t["pnl"] == pytest.approx(10 * (95 - 100) - 0.0004 * (1000 + 950))


def test_gap_through_a_short_stop_fills_at_the_open():
    sim = sim_with_long(side=-1)
    assert sim.on_bar("BTCUSDT", T0, 104.0, 104.5, 103.0, 104.0) == "SL"
    assert last_trade(sim)["exit_price"] == 104.0


def test_both_barriers_in_one_bar_is_a_stop_loss():
    sim = sim_with_long()
    assert sim.on_bar("BTCUSDT", T0, 100.0, 106.0, 97.0, 101.0) == "SL"
    assert last_trade(sim)["exit_price"] == 98.0


def test_take_profit_touched_exactly_fills_at_the_trigger():
    sim = sim_with_long()
    assert sim.on_bar("BTCUSDT", T0, 100.0, 104.99, 99.0, 104.0) is None
    assert sim.on_bar("BTCUSDT", T0 + MINUTE_MS, 104.0, 105.0, 103.0, 104.5) == "TP"
    assert last_trade(sim)["exit_price"] == 105.0


def test_take_profit_gap_fills_at_the_trigger_the_worse_of_trigger_and_open():
    sim = sim_with_long()
    assert sim.on_bar("BTCUSDT", T0, 107.0, 108.0, 106.5, 107.0) == "TP"
    assert last_trade(sim)["exit_price"] == 105.0


def test_stop_fills_carry_slippage_of_the_entry_atr_and_the_fee():
    cfg = BARE.model_copy(update={"slippage_k": 0.15})
    sim = FillSimulator(["BTCUSDT"], cfg)
    # s = 0.15 · 2 / 100 = 0.003: entry 100.3; SL gap exit 95 · 0.997
    assert sim.open_position("BTCUSDT", 1, T0, 100.0, 1003.0, decision_price=100.0, atr=2.0, sl=98.0) == ()
    p = sim.position("BTCUSDT")
    assert p is not None and p.entry_price == pytest.approx(100.3) and p.qty == pytest.approx(10.0)
    sim.on_bar("BTCUSDT", T0, 95.0, 96.0, 94.0, 95.5)
    t = last_trade(sim)
    assert t["exit_price"] == pytest.approx(95 * 0.997)
    assert t["slippage"] == pytest.approx(10 * 0.3 + 10 * 95 * 0.003)
    assert t["fees"] == pytest.approx(0.0004 * (1003.0 + 10 * 95 * 0.997))
    assert t["pnl"] == pytest.approx(t["gross_pnl"] - t["fees"] - t["slippage"] - t["funding"])


def test_impact_term_adds_square_root_of_participation():
    assert fill_slippage(0.001, 0.0, 5_000.0, 10_000.0) == 0.001
    assert fill_slippage(0.001, 0.01, 2_500.0, 10_000.0) == pytest.approx(0.001 + 0.01 * 0.5)
    assert fill_slippage(0.001, 0.01, 50_000.0, 10_000.0) == pytest.approx(0.011)  # capped at 1
    assert fill_slippage(0.0, 0.01, 1.0, math.nan) == pytest.approx(0.01)  # unknown volume


def test_triggers_follow_the_mark_not_the_last_price():
    sim = sim_with_long()
    # last price never reaches the stop, the mark does: triggered, fills at the trigger
    assert sim.on_bar("BTCUSDT", T0, 100.0, 100.5, 98.5, 99.0, mark=(100.0, 100.4, 97.9, 99.0)) == "SL"
    assert last_trade(sim)["exit_price"] == 98.0
    # the mark opens beyond the stop while the last price opens above it: the worse is the trigger
    sim = sim_with_long()
    assert sim.on_bar("BTCUSDT", T0, 98.5, 99.0, 98.2, 98.6, mark=(97.0, 98.0, 96.5, 97.5)) == "SL"
    assert last_trade(sim)["exit_price"] == 98.0
    # last price crosses the take profit, the mark does not: nothing happens
    sim = sim_with_long()
    assert sim.on_bar("BTCUSDT", T0, 100.0, 105.5, 99.5, 104.0, mark=(100.0, 104.9, 99.5, 104.0)) is None


def test_realtime_mark_tick_exits_at_the_touch_with_slippage():
    cfg = BARE.model_copy(update={"slippage_k": 0.15})
    sim = FillSimulator(["BTCUSDT"], cfg)
    sim.open_position("BTCUSDT", 1, T0, 100.0, 1000.0, decision_price=100.0, atr=2.0, sl=98.0, tp=105.0)
    assert sim.on_mark("BTCUSDT", T0 + 1500, 98.5, bid=98.4, ask=98.6) is None
    assert sim.on_mark("BTCUSDT", T0 + 2500, 97.95, bid=97.9, ask=98.0) == "SL"
    t = last_trade(sim)
    assert t["exit_reference_price"] == 97.9 and t["exit_price"] == pytest.approx(97.9 * 0.997)
    assert t["exit_ts"] == T0 + 2500


def test_time_limit_exits_at_the_close_of_the_last_held_bar():
    sim = sim_with_long(BARE.model_copy(update={"max_hold_bars": 3}))
    for j in range(2):
        assert sim.on_bar("BTCUSDT", T0 + j * MINUTE_MS, 100.0, 101.0, 99.0, 100.5 + j) is None
    assert sim.on_bar("BTCUSDT", T0 + 2 * MINUTE_MS, 101.0, 101.5, 100.5, 101.2) == "TIME"
    t = last_trade(sim)
    assert t["exit_price"] == 101.2 and t["bars_held"] == 3 and t["exit_ts"] == T0 + 3 * MINUTE_MS


def test_equity_is_wallet_plus_unrealized_after_every_event():
    sim = sim_with_long()
    assert sim.equity == pytest.approx(10_000 - 0.4)
    sim.on_bar("BTCUSDT", T0, 100.0, 101.0, 99.0, 100.7, funding_rate=0.0001)
    p = sim.position("BTCUSDT")
    assert p is not None
    assert sim.unrealized == pytest.approx(10 * 0.7) and sim.equity == sim.wallet + sim.unrealized
    assert sim.wallet == pytest.approx(10_000 - 0.4 - 10 * 100.7 * 0.0001)
    sim.on_mark("BTCUSDT", T0 + 90_000, 99.3)
    assert sim.equity == pytest.approx(sim.wallet + 10 * (99.3 - 100))
    assert sim.used_margin == pytest.approx(200 - p.funding_paid_usdt)


# --- funding -----------------------------------------------------------------------------------------


def flat_panel(symbols, n, start, price=100.0, funding=None) -> MarketPanel:
    ts = start + MINUTE_MS * np.arange(n, dtype=np.int64)
    candles = {s: {"ts": ts, "open": np.full(n, price), "high": np.full(n, price), "low": np.full(n, price),
                   "close": np.full(n, price), "volume": np.full(n, 1e6)} for s in symbols}  # fmt: skip
    return build_panel(symbols, candles, funding or {})


def test_funding_every_real_funding_time_4h_vs_8h():
    start = T0 - MINUTE_MS  # the decision bar 23:59; entry at 00:00's open
    n = 1 + 12 * 60
    rates4 = np.array([0.001, 0.0002, -0.0003, 0.0004, 0.0005])
    rates8 = np.array([0.001, 0.0007, 0.0009])
    funding = {
        "AUSDT": {"ts": T0 + 4 * HOUR_MS * np.arange(5), "funding_rate": rates4},  # 00, 04, 08, 12, 16 h
        "BUSDT": {"ts": T0 + 8 * HOUR_MS * np.arange(3), "funding_rate": rates8},  # 00, 08, 16 h
    }
    panel = flat_panel(("AUSDT", "BUSDT"), n, start, funding=funding)
    sig = empty_signals(panel.shape)
    sig.direction[0] = 1
    sig.size_fraction[0] = 0.1
    sig.leverage[0] = 1
    sig.sl_price[0] = 50.0  # far away: the trade ends by time
    res = run_backtest(panel, sig, BARE.model_copy(update={"max_hold_bars": 12 * 60}))
    t = res.trades.set_index("symbol")
    assert (t["exit_reason"] == "TIME").all() and (t["exit_ts"] == T0 + 12 * HOUR_MS).all()
    qty = t["qty"]
    # held from 00:00 to 12:00: 4 h pays 04:00, 08:00 and 12:00 (00:00 is before the entry), 8 h pays 08:00
    assert t.loc["AUSDT", "funding"] == pytest.approx(qty["AUSDT"] * 100 * rates4[1:4].sum())
    assert t.loc["BUSDT", "funding"] == pytest.approx(qty["BUSDT"] * 100 * rates8[1])
    # the funding of a time lands on the bar ending at it: ts < F <= ts + 1m
    assert panel.funding_rate[np.searchsorted(panel.ts, T0 + 4 * HOUR_MS - MINUTE_MS), 0] == rates4[1]


def test_funding_sign_long_pays_positive_short_receives():
    for side in (1, -1):
        sim = sim_with_long(side=side)
        sim.on_funding("BTCUSDT", T0 + HOUR_MS, 0.001, mark_price=100.0)
        p = sim.position("BTCUSDT")
        assert p is not None and p.funding_paid_usdt == pytest.approx(side * 10 * 100 * 0.001)
        assert p.margin_usdt == pytest.approx(200 - side * 1.0)


# --- liquidation -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def btc_brackets(shared_data) -> tuple[LeverageBracket, ...]:
    payload = json.loads((shared_data / "payloads/rest/leverage_brackets.json").read_text())
    return parse_leverage_brackets(payload)["BTCUSDT"]


@pytest.mark.parametrize("side", [1, -1])
def test_liquidation_price_matches_a_hand_computation_with_real_brackets(btc_brackets, side):
    bracket = bracket_for(btc_brackets, 100_000.0)
    assert bracket == LeverageBracket(50_000.0, 600_000.0, 0.005, 50.0, 100)
    sim = FillSimulator(["BTCUSDT"], BARE, rules={"BTCUSDT": SymbolRules(brackets=btc_brackets)})
    stop = 10_000.0 if side > 0 else 90_000.0  # beyond the liquidation price: the liquidation comes first
    assert sim.open_position("BTCUSDT", side, T0, 50_000.0, 100_000.0, leverage=20, sl=stop) == ()
    p = sim.position("BTCUSDT")
    assert p is not None and p.qty == 2.0 and p.margin_usdt == 5_000.0
    # isolated, one-way: margin + side·qty·(LP − entry) = qty·LP·MMR − cum
    if side > 0:
        hand = (2 * 50_000 - 5_000 - 50) / (2 * (1 - 0.005))
        assert hand == pytest.approx(47_713.567839, rel=1e-9)
    else:
        hand = (5_000 + 50 + 2 * 50_000) / (2 * (1 + 0.005))
        assert hand == pytest.approx(52_263.681592, rel=1e-9)
    assert p.liquidation_price == pytest.approx(hand, rel=1e-12)
    wallet = sim.wallet
    beyond = hand * (1 - side * 0.001)
    assert (
        sim.on_bar("BTCUSDT", T0, 50_000.0, max(50_000.0, beyond), min(50_000.0, beyond), 50_000.0)
        == "LIQUIDATION"
    )
    t = last_trade(sim)
    assert t["exit_price"] == pytest.approx(hand)
    assert t["pnl"] == pytest.approx(-5_000 - 0.0004 * 100_000)  # the isolated margin and the entry fee
    assert sim.wallet == pytest.approx(wallet - 5_000)
    assert t["fees"] - 40 == pytest.approx(2 * hand * 0.005 - 50)  # clearance = maintenance margin left


def test_leverage_above_the_bracket_is_blocked(btc_brackets):
    sim = FillSimulator(["BTCUSDT"], BARE, rules={"BTCUSDT": SymbolRules(brackets=btc_brackets)})
    assert sim.check_entry("BTCUSDT", 1, T0, 50_000.0, 100_000.0, leverage=125, sl=49_000.0) == (
        "LEVERAGE_BRACKET",
    )
    assert sim.check_entry("BTCUSDT", 1, T0, 50_000.0, 40_000.0, leverage=125, sl=49_000.0) == ()


def test_liquidation_before_or_after_the_stop_by_distance():
    # DEFAULT_BRACKETS, 1,000 USDT at leverage 50: LP = (1000 − 20)/(10 · 0.995) = 98.4925
    lp = 980 / 9.95
    cases = [  # (stop, mark bar, expected)
        (97.0, (100.0, 100.0, 96.0, 97.0), "LIQUIDATION"),  # stop beyond LP: LP reached first
        (99.0, (100.0, 100.0, 96.0, 97.0), "SL"),  # stop nearer: the stop fills first
        (99.0, (98.0, 98.5, 96.0, 97.0), "LIQUIDATION"),  # the mark opens beyond both
    ]
    for stop, mark, expected in cases:
        sim = FillSimulator(["BTCUSDT"], BARE)
        sim.open_position("BTCUSDT", 1, T0, 100.0, 1000.0, sl=stop, leverage=50)
        p = sim.position("BTCUSDT")
        assert p is not None and p.liquidation_price == pytest.approx(lp)
        assert sim.on_bar("BTCUSDT", T0, *mark) == expected, (stop, mark)


def test_funding_moves_the_liquidation_price():
    sim = FillSimulator(["BTCUSDT"], BARE)
    sim.open_position("BTCUSDT", 1, T0, 100.0, 1000.0, leverage=50, sl=50.0)
    p0 = sim.position("BTCUSDT")
    sim.on_funding("BTCUSDT", T0 + HOUR_MS, 0.002, mark_price=100.0)  # pays 2 USDT from a 20 USDT margin
    p1 = sim.position("BTCUSDT")
    assert p0 is not None and p1 is not None
    assert (
        p1.liquidation_price == pytest.approx((1000 - 18) / 9.95)
        and p1.liquidation_price > p0.liquidation_price
    )


# --- daily loss limit --------------------------------------------------------------------------------


def test_daily_loss_limit_flattens_and_blocks_entries_until_the_next_utc_day():
    start = T0 - 2 * HOUR_MS  # 22:00; the UTC day ends after bar 119
    n = 180
    ts = start + MINUTE_MS * np.arange(n, dtype=np.int64)
    price = np.where(np.arange(n) >= 10, 95.0, 100.0)
    candles = {s: {"ts": ts, "open": price, "high": price, "low": price, "close": price,
                   "volume": np.full(n, 1e6)} for s in ("AUSDT", "BUSDT")}  # fmt: skip
    candles["BUSDT"] = {**candles["BUSDT"], **{k: np.full(n, 50.0) for k in ("open", "high", "low", "close")}}
    panel = build_panel(("AUSDT", "BUSDT"), candles)
    sig = empty_signals(panel.shape)
    sig.direction[0, 0] = 1
    sig.size_fraction[0, 0] = 0.6
    sig.direction[11:, 1] = 1  # B wants in from the flatten on
    sig.size_fraction[11:, 1] = 0.1
    sig.sl_price[:, 0], sig.sl_price[:, 1] = 80.0, 40.0  # stops far away: the daily limit acts first
    risk = RiskConfig(daily_loss_limit_pct=0.02, max_symbol_notional_pct=1.0)
    res = run_backtest(panel, sig, BARE, risk, close_at_end=False)
    t = res.trades
    assert list(t["exit_reason"]) == ["FLATTEN"]  # A lost 3% of equity at bar 10: flattened at 11's open
    assert t["exit_ts"].iloc[0] == ts[11] and t["exit_price"].iloc[0] == 95.0
    ev = res.risk_events
    assert (
        ev["codes"].iloc[0] == "DAILY_LOSS_LIMIT"
        and ev["symbol"].iloc[0] == ""
        and ev["ts"].iloc[0] == ts[11]
    )
    blocked = ev[ev["symbol"] == "BUSDT"]
    assert len(blocked) == 120 - 12 and blocked["codes"].str.contains("TRADING_DISABLED").all()
    entries = res.fills[(res.fills["symbol"] == "BUSDT") & (res.fills["reason"] == "ENTRY")]
    assert list(entries["ts"]) == [T0]  # first bar of the next UTC day
    assert not res.equity["trading_enabled"].iloc[10] and res.equity["trading_enabled"].iloc[120]


# --- labels agreement --------------------------------------------------------------------------------


def random_walk(seed: int, n: int):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.standard_normal(n) * 0.002))
    open_ = np.concatenate(([100.0], close[:-1])) * np.exp(rng.standard_normal(n) * 0.0005)
    wick = rng.exponential(0.002, (2, n))
    return {"ts": T0 + MINUTE_MS * np.arange(n, dtype=np.int64), "open": open_, "close": close,
            "high": np.maximum(open_, close) * (1 + wick[0]), "low": np.minimum(open_, close) * (1 - wick[1]),
            "volume": np.full(n, 1e3)}  # fmt: skip


@pytest.mark.parametrize("with_funding", [False, True])
def test_single_trades_reproduce_the_label_kernel_returns(with_funding):
    spec = LabelSpec(k_tp=1.5, k_sl=1.0, h_bars=120, risk_mae_atr=2.0)
    n = 1200
    candles = random_walk(3, n)
    f_ts = T0 + 4 * HOUR_MS * np.arange(1, 5) if with_funding else np.zeros(0, np.int64)
    funding = {"ts": f_ts, "funding_rate": np.linspace(0.0005, -0.0003, len(f_ts))}
    labels = label_bars(candles, funding, spec)
    panel = build_panel(("BTCUSDT",), {"BTCUSDT": candles}, {"BTCUSDT": funding})
    atr = label_atr(candles["ts"], candles["high"], candles["low"], candles["close"], "15m", 14)
    np.testing.assert_array_equal(panel.atr[:, 0], atr)  # the slippage ATR is the labels'
    cfg = SimConfig.from_label_spec(spec, impact_k=0.0, sizing="notional_usdt", protection="entry_distance",
                                    default_leverage=1)  # fmt: skip
    valid = np.flatnonzero(labels.valid)
    checked = set()
    crossings = 0
    for i in valid[:: max(1, len(valid) // 40)]:
        for side, lab in ((1, labels.long), (-1, labels.short)):
            sig = empty_signals(panel.shape)
            sig.direction[i, 0] = side
            sig.size_fraction[i, 0] = 1000.0
            sig.sl_price[i, 0] = spec.k_sl * panel.atr[i, 0]
            sig.tp_price[i, 0] = spec.k_tp * panel.atr[i, 0]
            t = run_backtest(panel, sig, cfg).trades
            assert len(t) == 1
            reason = {1: "TP", 2: "SL", 3: "SL", 4: "TIME"}[int(lab.exit_reason[i])]
            assert t["exit_reason"].iloc[0] == reason
            assert t["bars_held"].iloc[0] == lab.time_to_event_min[i]
            tr = t.iloc[0]
            crossed = funding["funding_rate"][(f_ts > tr["entry_ts"]) & (f_ts <= tr["exit_ts"])].sum()
            # the labels charge funding on the entry notional, the simulator at the mark of each funding
            # time: equal before funding, and funding within the price move
            assert tr["return"] + tr["funding"] / tr["notional"] == pytest.approx(
                lab.ret_net[i] + side * crossed, abs=1e-12)  # fmt: skip
            assert tr["funding"] == pytest.approx(side * crossed * tr["notional"], rel=0.05, abs=1e-12)
            if not with_funding:
                assert tr["return"] == pytest.approx(lab.ret_net[i], abs=1e-12)
            checked.add(reason)
            crossings += crossed != 0
    assert checked == {"TP", "SL", "TIME"}
    assert crossings > 0 if with_funding else crossings == 0


# --- venue rules -------------------------------------------------------------------------------------


def test_parse_real_exchange_filters_and_brackets(shared_data):
    info = json.loads((shared_data / "payloads/rest/exchange_info_2025-12.json").read_text())
    filters = parse_symbol_filters(info)
    btc = filters["BTCUSDT"]
    assert (btc.tick_size, btc.min_price, btc.step_size, btc.min_qty, btc.max_qty, btc.min_notional_usdt) == (
        0.1, 261.1, 0.001, 0.001, 1000.0, 100.0)  # fmt: skip
    brackets = parse_leverage_brackets(
        json.loads((shared_data / "payloads/rest/leverage_brackets.json").read_text())
    )
    assert len(brackets["BTCUSDT"]) == 12 and brackets["BTCUSDT"][0].max_leverage == 125
    assert "BTCUSDC" in brackets  # ccxt's "BTC/USDC:USDC"
    assert brackets["DOGEUSDT"] == DEFAULT_BRACKETS


def test_parse_binance_raw_bracket_shape():
    raw = [{"symbol": "ETHUSDT", "brackets": [
        {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0},
        {"bracket": 2, "initialLeverage": 100, "notionalCap": 600000, "notionalFloor": 50000, "maintMarginRatio": 0.005, "cum": 50.0},
    ]}]  # fmt: skip
    table = parse_leverage_brackets(raw)["ETHUSDT"]
    assert table[1] == LeverageBracket(50_000.0, 600_000.0, 0.005, 50.0, 100)


def test_step_floor_and_tick_rounding_of_an_entry():
    from core.sim import SymbolFilters

    rules = {"BTCUSDT": SymbolRules(SymbolFilters(tick_size=0.5, step_size=0.01, min_qty=0.01))}
    sim = FillSimulator(["BTCUSDT"], BARE, rules=rules)
    assert sim.open_position("BTCUSDT", 1, T0, 99.0, 1000.0, sl=95.3, tp=110.8) == ()
    p = sim.position("BTCUSDT")
    assert p is not None
    assert p.qty == pytest.approx(10.1) and p.sl_price == 95.5 and p.tp_price == 110.5  # towards the fill


def test_unknown_symbol_and_time_going_back_a_day_raise():
    sim = FillSimulator(["BTCUSDT"], BARE)
    with pytest.raises(ValueError, match="unknown symbol"):
        sim.on_mark("ETHUSDT", T0, 100.0)
    sim.on_mark("BTCUSDT", T0 + DAY_MS, 100.0)
    from core.errors import DataQualityError

    with pytest.raises(DataQualityError, match="UTC day"):
        sim.on_mark("BTCUSDT", T0, 100.0)
