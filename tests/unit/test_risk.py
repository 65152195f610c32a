"""Risk guard: every reason code, the always-on subset, and one implementation for both paths."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from core.config import RiskConfig
from core.risk import (
    RISK_CODES,
    AccountSnapshot,
    EntryRequest,
    check_risk,
    decode_risk_mask,
    encode_risk_codes,
)
from core.sim import FillSimulator, SimConfig, SymbolFilters, SymbolRules
from core.time import DAY_MS, MINUTE_MS

T0 = 1_717_200_000_000  # 2024-06-01 00:00 UTC
CFG = RiskConfig()
RULES = {"BTCUSDT": SymbolRules(SymbolFilters(tick_size=0.1, min_price=261.1, max_price=809_484.0,
                                              step_size=0.001, min_qty=0.001, max_qty=1000.0,
                                              min_notional_usdt=100.0))}  # fmt: skip
OK_REQUEST = EntryRequest("BTCUSDT", 1, 0.01, 50_000.0, 3.0, T0, reference_price=50_000.0, mark_price=50_000.0,
                          sl_price=49_000.0, tp_price=52_000.0)  # fmt: skip
OK_ACCOUNT = AccountSnapshot(10_000.0, 10_000.0, 0.0, 10_000.0)


def codes(request=OK_REQUEST, account=OK_ACCOUNT, cfg=CFG, rules=RULES):
    return check_risk(request, account, cfg, rules)


def req(**changes):
    return dataclasses.replace(OK_REQUEST, **changes)


def acct(**changes):
    return dataclasses.replace(OK_ACCOUNT, **changes)


def test_baseline_entry_is_allowed():
    assert codes() == ()


@pytest.mark.parametrize(
    ("code", "request_", "account", "cfg"),
    [
        ("INVALID_ORDER", req(side=0), OK_ACCOUNT, CFG),
        ("INVALID_ORDER", req(price=math.nan), OK_ACCOUNT, CFG),
        ("INVALID_ORDER", req(leverage=0.5), OK_ACCOUNT, CFG),
        ("INVALID_ORDER", req(qty="lots"), OK_ACCOUNT, CFG),  # type: ignore[arg-type]
        ("KILL_SWITCH", OK_REQUEST, acct(kill_switch=True), CFG),
        ("TRADING_DISABLED", OK_REQUEST, acct(trading_enabled=False), CFG),
        ("DAILY_LOSS_LIMIT", OK_REQUEST, acct(equity_usdt=9_799.0, wallet_usdt=9_799.0), CFG),
        ("POSITION_OPEN", OK_REQUEST, acct(positions={"BTCUSDT": 500.0}), CFG),
        ("MAX_POSITIONS", OK_REQUEST, acct(positions={f"S{k}USDT": 10.0 * (-1) ** k for k in range(6)}), CFG),
        ("MAX_USED_MARGIN", OK_REQUEST, acct(used_margin_usdt=3_400.0), CFG),
        ("INSUFFICIENT_MARGIN", OK_REQUEST, acct(used_margin_usdt=3_000.0, wallet_usdt=3_100.0), CFG),
        ("MAX_TOTAL_NOTIONAL", OK_REQUEST, acct(positions={"AUSDT": 6_000.0, "BUSDT": -5_800.0}), CFG),
        ("MAX_DIRECTIONAL_NOTIONAL", OK_REQUEST, acct(positions={"AUSDT": 7_800.0}), CFG),
        ("MAX_SYMBOL_NOTIONAL", req(qty=0.07), OK_ACCOUNT, CFG),
        ("MAX_BTC_BETA_NOTIONAL", OK_REQUEST, OK_ACCOUNT, RiskConfig(max_btc_beta_notional_pct=0.04)),
        ("ORDER_RATE_SECOND", OK_REQUEST, acct(orders_this_second=5), CFG),
        ("ORDER_RATE_DAY", OK_REQUEST, acct(orders_today=500), CFG),
        ("MAX_SLIPPAGE", req(price=50_300.0), OK_ACCOUNT, CFG),
        ("FILTER_MIN_NOTIONAL", req(qty=0.001, mark_price=50_000.0), OK_ACCOUNT, CFG),
        ("FILTER_MARKET_LOT_SIZE", req(qty=0.0), OK_ACCOUNT, CFG),
        ("FILTER_MARKET_LOT_SIZE", req(qty=2_000.0), OK_ACCOUNT, None),
        ("FILTER_PRICE", req(sl_price=200.0), OK_ACCOUNT, CFG),
        ("FILTER_PRICE", req(tp_price=-1.0), OK_ACCOUNT, CFG),
        ("LEVERAGE_BRACKET", req(leverage=100.0), OK_ACCOUNT, CFG),  # DEFAULT_BRACKETS: 75× below 10k
    ],
)
def test_each_reason_code_blocks(code, request_, account, cfg):
    got = codes(request_, account, cfg)
    assert code in got, got
    if code == "INVALID_ORDER":
        assert got == ("INVALID_ORDER",)


def test_single_causes_give_single_codes():
    assert codes(account=acct(kill_switch=True)) == ("KILL_SWITCH",)
    assert codes(req(price=50_300.0)) == ("MAX_SLIPPAGE",)
    assert codes(account=acct(orders_today=500)) == ("ORDER_RATE_DAY",)
    assert codes(req(qty=0.07)) == ("MAX_SYMBOL_NOTIONAL",)


def test_an_entry_that_lowers_the_btc_beta_exposure_is_not_blocked():
    cfg = RiskConfig(max_btc_beta_notional_pct=0.04)  # cap 400 USDT; 600 long already
    account = acct(positions={"ETHUSDT": 600.0})
    assert "MAX_BTC_BETA_NOTIONAL" in codes(account=account, cfg=cfg)
    assert codes(req(side=-1, sl_price=51_000.0, tp_price=48_000.0), account, cfg) == ()
    # a negative beta turns a long into a hedge
    rules = {**RULES, "BTCUSDT": dataclasses.replace(RULES["BTCUSDT"], btc_beta=-1.0)}
    assert codes(account=account, cfg=cfg, rules=rules) == ()


def test_without_a_risk_config_only_venue_and_book_checks_apply():
    account = acct(equity_usdt=5_000.0, trading_enabled=False, orders_today=10_000, used_margin_usdt=4_000.0)
    assert codes(req(qty=0.07, price=50_300.0), account, None) == ()
    assert codes(req(qty=0.001), account, None) == ("FILTER_MIN_NOTIONAL",)
    assert codes(req(leverage=100.0), acct(kill_switch=True), None) == ("KILL_SWITCH", "LEVERAGE_BRACKET")


def test_counters_of_another_second_or_day_do_not_count():
    # the snapshot's counters belong to the request's second and day; the kernel keeps its own: a new
    # second or UTC day starts from zero
    sim = FillSimulator(["BTCUSDT"], SimConfig(slippage_k=0, impact_k=0), RiskConfig(max_orders_per_s=1,
                                                                                      max_orders_per_day=2))  # fmt: skip
    assert sim.open_position("BTCUSDT", 1, T0, 100.0, 100.0, sl=90.0) == ()
    sim.close_position("BTCUSDT", T0 + 1_000, 100.0)
    assert sim.check_entry("BTCUSDT", 1, T0 + 1_500, 100.0, 100.0, sl=90.0) == (
        "ORDER_RATE_SECOND",
        "ORDER_RATE_DAY",
    )
    assert sim.check_entry("BTCUSDT", 1, T0 + 2_000, 100.0, 100.0, sl=90.0) == ("ORDER_RATE_DAY",)
    assert sim.check_entry("BTCUSDT", 1, T0 + DAY_MS, 100.0, 100.0, sl=90.0) == ()


def test_mask_round_trip():
    for b, name in enumerate(RISK_CODES):
        assert decode_risk_mask(1 << b) == (name,)
    assert encode_risk_codes(list(RISK_CODES)) == (1 << len(RISK_CODES)) - 1
    assert decode_risk_mask(0) == ()


def test_python_path_and_kernel_path_agree_on_random_books():
    rng = np.random.default_rng(11)
    symbols = [f"S{k}USDT" for k in range(5)]
    rules = {s: SymbolRules(SymbolFilters(step_size=0.001, min_qty=0.001, min_notional_usdt=5.0),
                            btc_beta=float(rng.uniform(0, 2))) for s in symbols}  # fmt: skip
    cfg = SimConfig(slippage_k=0.0, impact_k=0.0)
    compared = 0
    for trial in range(40):
        risk = RiskConfig(max_positions=int(rng.integers(1, 5)), max_symbol_notional_pct=float(rng.uniform(0.05, 1)),
                          max_btc_beta_notional_pct=float(rng.uniform(0.1, 1)), max_orders_per_s=2,
                          max_orders_per_day=6, max_used_margin_pct=float(rng.uniform(0.05, 1)),
                          daily_loss_limit_pct=0.01)  # fmt: skip
        sim = FillSimulator(symbols, cfg, risk, rules)
        ts = T0 + trial * MINUTE_MS
        for _ in range(6):
            k = int(rng.integers(0, 5))
            price = float(rng.uniform(50, 150))
            side = int(rng.choice([-1, 1]))
            notional = float(rng.uniform(10, 3_000))
            leverage = float(rng.choice([1, 3, 10, 100]))
            snapshot = sim.snapshot(ts)
            qty = math.floor(notional / price / 0.001 + 1e-9) * 0.001
            request = EntryRequest(symbols[k], side, qty, price, leverage, ts, reference_price=price * 1.001)
            expected = check_risk(request, snapshot, risk, rules, fee_rate=cfg.fee_rate)
            got = sim.open_position(symbols[k], side, ts, price, notional, leverage=leverage,
                                    decision_price=price * 1.001)  # fmt: skip
            assert got == expected, (trial, got, expected)
            compared += 1
            for s in symbols:
                sim.on_mark(s, ts, float(rng.uniform(50, 150)))
            ts += int(rng.choice([0, 300, 1_000]))
    assert compared == 240


def test_daily_loss_limit_in_the_event_path_disables_flattens_and_recovers_next_day():
    sim = FillSimulator(["BTCUSDT", "ETHUSDT"], SimConfig(slippage_k=0, impact_k=0),
                        RiskConfig(daily_loss_limit_pct=0.02, max_symbol_notional_pct=1.0))  # fmt: skip
    assert sim.open_position("BTCUSDT", 1, T0, 100.0, 6_000.0, sl=80.0) == ()
    sim.on_mark("BTCUSDT", T0 + MINUTE_MS, 96.0)  # −240 USDT: −2.4% of the day's 10,000
    assert not sim.trading_enabled and sim.flatten_requested
    assert "TRADING_DISABLED" in sim.open_position("ETHUSDT", 1, T0 + 2 * MINUTE_MS, 10.0, 100.0)
    sim.flatten(T0 + 2 * MINUTE_MS, {"BTCUSDT": 96.0})
    assert sim.open_positions == 0 and not sim.flatten_requested
    assert sim.trades()["exit_reason"].tolist() == ["FLATTEN"]
    assert "TRADING_DISABLED" in sim.open_position("ETHUSDT", 1, T0 + DAY_MS - 1, 10.0, 100.0, sl=8.0)
    assert sim.open_position("ETHUSDT", 1, T0 + DAY_MS, 10.0, 100.0, sl=8.0) == ()
    assert sim.trading_enabled
    events = sim.risk_events()
    assert events["codes"].iloc[0] == "DAILY_LOSS_LIMIT" and events["symbol"].iloc[0] == ""


def test_entry_without_a_valid_stop_is_refused_as_no_protection():
    sim = FillSimulator(["BTCUSDT"], SimConfig(slippage_k=0, impact_k=0))
    assert sim.check_entry("BTCUSDT", 1, T0, 100.0, 100.0) == ("NO_PROTECTION",)  # no stop at all
    assert sim.check_entry("BTCUSDT", 1, T0, 100.0, 100.0, sl=101.0) == (
        "NO_PROTECTION",
    )  # above a long's fill
    assert sim.check_entry("BTCUSDT", -1, T0, 100.0, 100.0, sl=99.0) == ("NO_PROTECTION",)  # below a short's
    assert sim.check_entry("BTCUSDT", -1, T0, 100.0, 100.0, sl=101.0) == ()
    assert sim.open_position("BTCUSDT", 1, T0, 100.0, 100.0) == ("NO_PROTECTION",)
    assert sim.open_positions == 0
