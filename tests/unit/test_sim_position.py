"""What a ``Position`` and a ``BookState`` tell a holder of the book (the shadow execution actor),
checked against the simulator's own fills and trades, with no access to its arrays."""

from __future__ import annotations

import pytest

from core.config import RiskConfig
from core.sim import BookState, FillSimulator, SimConfig

T0 = 1_717_200_000_000  # 2024-06-01 00:00 UTC
SIM = SimConfig(fee_rate=0.0004, slippage_k=0.15, impact_k=0.0, default_leverage=5)
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def open_eth(sim: FillSimulator, side: int, ts: int = T0 + 60_050) -> None:
    price = 2000.1 if side > 0 else 1999.9  # the ask for a long, the bid for a short
    sl, tp = (1900.0, 2150.0) if side > 0 else (2100.0, 1850.0)
    reasons = sim.open_position("ETHUSDT", side, ts, price, 1000.0, decision_price=2000.0, atr=20.0,
                                sl=sl, tp=tp, leverage=5, mark_price=2000.0, quote_volume_usdt=5e6)  # fmt: skip
    assert reasons == ()


@pytest.mark.parametrize("side", [1, -1])
def test_position_carries_the_entry_fill_fee_reference_and_slippage(side):
    sim = FillSimulator(SYMBOLS, SIM, RiskConfig())
    open_eth(sim, side)
    pos = sim.position("ETHUSDT")
    assert pos is not None
    (entry,) = sim.fills().to_dict("records")
    assert entry["reason"] == "ENTRY"
    assert pos.entry_fee_usdt == entry["fee"]
    assert pos.entry_reference_price == entry["reference_price"] == (2000.1 if side > 0 else 1999.9)
    assert pos.entry_fee_usdt == pytest.approx(0.0004 * pos.qty * pos.entry_price, rel=1e-12)
    expected_slippage = side * pos.qty * (pos.entry_price - pos.entry_reference_price)
    assert pos.entry_slippage_usdt == pytest.approx(expected_slippage, rel=1e-12)
    assert pos.entry_slippage_usdt > 0  # a market entry fills worse than its reference


def test_a_closed_trade_books_the_entry_fee_the_position_showed():
    sim = FillSimulator(SYMBOLS, SIM, RiskConfig())
    open_eth(sim, 1)
    pos = sim.position("ETHUSDT")
    assert pos is not None
    assert sim.on_mark("ETHUSDT", T0 + 61_050, 2151.0, bid=2150.9, ask=2151.1) == "TP"
    trade = sim.trades().iloc[-1]
    exit_fill = sim.fills().iloc[-1]
    assert trade["fees"] == pytest.approx(pos.entry_fee_usdt + exit_fill["fee"], rel=1e-12)
    assert trade["entry_reference_price"] == pos.entry_reference_price


def test_a_restored_book_holds_the_same_positions_and_closes_them_alike():
    first = FillSimulator(SYMBOLS, SIM, RiskConfig())
    open_eth(first, -1)
    state = first.book_state()
    second = FillSimulator(SYMBOLS, SIM, RiskConfig())
    second.restore_book(
        BookState(state.symbols, state.account.ravel().tolist(), state.positions.ravel().tolist())
    )
    assert second.positions() == first.positions()
    assert (second.equity, second.wallet, second.used_margin) == (
        first.equity,
        first.wallet,
        first.used_margin,
    )
    for sim in (first, second):
        assert sim.on_mark("ETHUSDT", T0 + 61_050, 2101.0, bid=2100.9, ask=2101.1) == "SL"
    a, b = first.trades().iloc[-1], second.trades().iloc[-1]
    assert (b["pnl"], b["fees"], b["exit_price"]) == (a["pnl"], a["fees"], a["exit_price"])
    assert second.equity == first.equity


def test_a_book_restored_after_closed_trades_logs_only_its_own_trades():
    first = FillSimulator(SYMBOLS, SIM, RiskConfig())
    open_eth(first, 1)
    assert first.on_mark("ETHUSDT", T0 + 61_050, 2151.0, bid=2150.9, ask=2151.1) == "TP"
    open_eth(first, -1, ts=T0 + 120_000)
    second = FillSimulator(SYMBOLS, SIM, RiskConfig())
    second.restore_book(first.book_state())
    assert second.trades().empty and second.fills().empty and second.risk_events().empty
    assert second.on_mark("ETHUSDT", T0 + 181_050, 2101.0, bid=2100.9, ask=2101.1) == "SL"
    assert first.on_mark("ETHUSDT", T0 + 181_050, 2101.0, bid=2100.9, ask=2101.1) == "SL"
    (trade,) = second.trades().to_dict("records")
    assert trade["symbol"] == "ETHUSDT" and trade["exit_reason"] == "SL"
    assert trade["pnl"] == first.trades().iloc[-1]["pnl"]


def test_book_state_is_a_copy_and_restore_refuses_another_book():
    sim = FillSimulator(SYMBOLS, SIM, RiskConfig())
    before = sim.book_state()
    open_eth(sim, 1)
    assert sim.position("ETHUSDT") is not None
    sim.restore_book(before)  # the state taken before the entry did not follow it
    assert sim.positions() == {} and sim.equity == SIM.initial_equity_usdt
    with pytest.raises(ValueError, match="symbols"):
        sim.restore_book(BookState(("ETHUSDT", "BTCUSDT"), before.account, before.positions))
    with pytest.raises(ValueError, match="position values"):
        sim.restore_book(BookState(SYMBOLS, before.account, before.positions[:1]))
