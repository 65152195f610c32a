"""Market orders by quantity (``FillSimulator.fill_order``, the paper exchange's book): adds that
average, partial and full reduces, flips, reduce-only, refusals and a liquidation, by hand."""

from __future__ import annotations

import pytest

from core.sim import FillSimulator, SimConfig, SymbolFilters, SymbolRules
from core.sim.kernel import liquidation_price

T0 = 1_717_200_000_000  # 2024-06-01 00:00 UTC
BARE = SimConfig(fee_rate=0.0004, slippage_k=0.0, impact_k=0.0, default_leverage=5)
BTC = "BTCUSDT"


def test_adds_average_the_entry_a_part_closes_as_its_own_trade_and_a_larger_order_flips() -> None:
    sim = FillSimulator([BTC], BARE)
    first = sim.fill_order(BTC, 1, T0, 10.0, 100.0)
    assert (first.codes, first.closed_qty, first.opened_qty, first.price) == ((), 0.0, 10.0, 100.0)
    assert first.fee_usdt == pytest.approx(0.4) and first.realized_pnl_usdt == 0.0
    add = sim.fill_order(BTC, 1, T0 + 1, 30.0, 200.0)
    p = sim.position(BTC)
    assert p is not None and (p.side, p.qty) == (1, 40.0) and add.fee_usdt == pytest.approx(2.4)
    assert p.entry_price == pytest.approx(175.0)  # (10·100 + 30·200) / 40
    assert p.margin_usdt == pytest.approx(1400.0) and p.entry_fee_usdt == pytest.approx(2.8)
    # DEFAULT_BRACKETS: 7,000 USDT at the entry is in the first bracket (MMR 0.5 %, cum 0)
    assert p.liquidation_price == pytest.approx((1400.0 - 7000.0) / (40 * 0.005 - 40))
    part = sim.fill_order(BTC, -1, T0 + 2, 20.0, 190.0)
    assert (part.closed_qty, part.opened_qty) == (20.0, 0.0)
    assert part.realized_pnl_usdt == pytest.approx(300.0) and part.fee_usdt == pytest.approx(1.52)
    p = sim.position(BTC)
    assert p is not None and p.qty == 20.0 and p.entry_price == pytest.approx(175.0)
    assert p.margin_usdt == pytest.approx(700.0) and p.entry_fee_usdt == pytest.approx(1.4)
    trade = sim.trades().iloc[-1]
    assert (trade["qty"], trade["exit_reason"]) == (20.0, "SIGNAL")
    assert trade["fees"] == pytest.approx(1.4 + 1.52) and trade["pnl"] == pytest.approx(300.0 - 2.92)
    flip = sim.fill_order(BTC, -1, T0 + 3, 50.0, 180.0)
    assert (flip.closed_qty, flip.opened_qty) == (20.0, 30.0)
    assert flip.realized_pnl_usdt == pytest.approx(100.0) and flip.fee_usdt == pytest.approx(3.6)
    p = sim.position(BTC)
    assert p is not None and (p.side, p.qty, p.entry_price) == (-1, 30.0, 180.0)
    assert p.margin_usdt == pytest.approx(30 * 180 / 5) and p.entry_fee_usdt == pytest.approx(3.6 * 30 / 50)
    assert sim.trades().iloc[-1]["pnl"] == pytest.approx(100.0 - 1.4 - 3.6 * 20 / 50)
    assert sim.wallet == pytest.approx(10_000 - 0.4 - 2.4 + 300 - 1.52 + 100 - 3.6)
    # PnL is conserved: the wallet moved by the closed trades' PnL less the open position's entry fee
    assert sim.wallet - 10_000 == pytest.approx(sim.trades()["pnl"].sum() - p.entry_fee_usdt, abs=1e-9)
    assert list(sim.fills()["reason"]) == ["ENTRY", "ENTRY", "SIGNAL", "SIGNAL", "ENTRY"]
    assert sim.used_margin == p.margin_usdt


def test_reduce_only_closes_at_most_the_position_and_is_refused_when_flat() -> None:
    sim = FillSimulator([BTC], BARE)
    sim.fill_order(BTC, 1, T0, 10.0, 100.0)
    done = sim.fill_order(BTC, -1, T0 + 1, 25.0, 101.0, reduce_only=True, reason="SL")
    assert (done.closed_qty, done.opened_qty) == (10.0, 0.0) and done.fee_usdt == pytest.approx(0.404)
    assert sim.position(BTC) is None and sim.trades().iloc[-1]["exit_reason"] == "SL"
    wallet, fills = sim.wallet, len(sim.fills())
    refused = sim.fill_order(BTC, -1, T0 + 2, 1.0, 101.0, reduce_only=True)
    assert refused.codes == ("INVALID_ORDER",) and not refused.filled
    assert (sim.wallet, len(sim.fills())) == (wallet, fills)


def test_margin_and_bracket_refusals_change_nothing_and_a_dry_run_only_tells() -> None:
    sim = FillSimulator([BTC], BARE)
    assert sim.fill_order(BTC, 1, T0, 300.0, 100.0, leverage=1).codes == ("INSUFFICIENT_MARGIN",)
    # 15,000 USDT lies in DEFAULT_BRACKETS' second bracket, which allows 50x at most
    assert sim.fill_order(BTC, 1, T0, 150.0, 100.0, leverage=75).codes == ("LEVERAGE_BRACKET",)
    dry = sim.fill_order(BTC, 1, T0, 150.0, 100.0, leverage=50, dry_run=True)
    assert dry.filled and (dry.opened_qty, dry.price) == (150.0, 100.0)
    assert sim.position(BTC) is None and sim.wallet == 10_000.0 and len(sim.fills()) == 0
    with pytest.raises(ValueError, match="exit reason"):
        sim.fill_order(BTC, 1, T0, 1.0, 100.0, reason="LIQUIDATION")


def test_an_added_position_is_liquidated_at_its_price_and_loses_its_margin() -> None:
    sim = FillSimulator([BTC], BARE)
    sim.fill_order(BTC, 1, T0, 10.0, 100.0, leverage=50)
    sim.fill_order(BTC, 1, T0 + 1, 10.0, 100.0, leverage=50)
    p = sim.position(BTC)
    assert p is not None and p.margin_usdt == pytest.approx(40.0)
    liq = liquidation_price(1.0, 20.0, 100.0, p.margin_usdt, 0.005, 0.0)
    assert p.liquidation_price == liq == pytest.approx(1960 / 19.9)
    assert sim.on_mark(BTC, T0 + 2, 98.4) == "LIQUIDATION"
    exit_fill = sim.last_exit()
    assert exit_fill is not None and (exit_fill.reason, exit_fill.price, exit_fill.side) == (
        "LIQUIDATION",
        liq,
        -1,
    )
    assert exit_fill.realized_pnl_usdt == 20.0 * (liq - 100.0)
    assert exit_fill.fee_usdt == pytest.approx(40.0 + exit_fill.realized_pnl_usdt)
    assert sim.wallet == pytest.approx(10_000 - 0.8 - 40.0)


def test_an_order_equal_to_the_position_within_half_a_step_closes_it_all() -> None:
    rules = {BTC: SymbolRules(filters=SymbolFilters(step_size=0.001))}
    sim = FillSimulator([BTC], BARE, rules=rules)
    sim.fill_order(BTC, 1, T0, 0.1, 50_000.0)
    sim.fill_order(BTC, 1, T0 + 1, 0.2, 50_000.0)
    p = sim.position(BTC)
    assert p is not None and p.qty != 0.3  # 0.1 + 0.2 in floats
    close = sim.fill_order(BTC, -1, T0 + 2, 0.3, 50_000.0)
    assert (close.closed_qty, close.opened_qty) == (p.qty, 0.0) and sim.position(BTC) is None
