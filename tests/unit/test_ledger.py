"""The pure ledger (core.ledger): recorded Binance user-data events, precedence, positions from fills."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_payloads import algo_update, load, order_trade_update

from core.errors import DataQualityError
from core.ledger import (
    NOT_FOUND,
    UNKNOWN,
    Applied,
    Fill,
    Income,
    LedgerBook,
    OrderState,
    Position,
    merge_order,
    positions_from_fills,
    stub_order,
    to_json,
)

T0 = 1_700_000_000_000


def fill(trade_id: int, side: str, qty: str, price: str, *, symbol: str = "BTCUSDT", order_id: int = 1,
         fee: str = "0", asset: str | None = "USDT", t: int | None = None) -> Fill:  # fmt: skip
    return Fill(
        symbol, trade_id, order_id, side, D(price), D(qty), D(fee), asset, T0 + trade_id if t is None else t
    )  # type: ignore[arg-type]


def order(status: str, t: int, filled: str = "0", **kw: object) -> OrderState:
    base = OrderState("BTCUSDT", 7, "cid-7", "BUY", "LIMIT", status, D("0.002"), D(filled), t)
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def user_data(shared_data: Path):
    return lambda name: load(shared_data, "user_data_json", name)


# --- recorded payloads ---------------------------------------------------------------------------------


def test_recorded_trade_event_gives_order_state_and_exact_decimal_fill(user_data) -> None:
    state, f = order_trade_update(user_data("order_update_trade"))
    assert (state.symbol, state.order_id, state.status, state.filled_qty) == (
        "BTCUSDT",
        8886774,
        "PARTIALLY_FILLED",
        D("0.001"),
    )
    assert f is not None
    assert (f.trade_id, f.price, f.qty, f.commission, f.commission_asset) == (
        12345678,
        D("7100.50"),
        D("0.001"),
        D("0.01"),
        "USDT",
    )
    assert (f.realized_pnl, f.is_maker, f.client_order_id, f.time_ms) == (
        D("12.34"),
        True,
        "TEST",
        1568879465651,
    )


def test_new_and_pending_liquidation_events_carry_no_fill(user_data) -> None:
    for name in ("order_update_new", "order_update_calculated_pending"):
        assert order_trade_update(user_data(name))[1] is None


def test_liquidation_and_adl_events_are_fills_of_the_venue_s_orders(user_data) -> None:
    liq_order, liq = order_trade_update(user_data("order_update_calculated"))
    adl_order, adl = order_trade_update(user_data("order_update_adl"))
    assert liq_order.status == "FILLED" and liq is not None and liq.realized_pnl == D("-5.67")
    assert adl_order.status == "NEW_ADL" and adl is not None and adl.side == "BUY" and adl.qty == D("0.005")
    book = LedgerBook()
    for e in (liq_order, liq, adl_order, adl):
        book.apply(e)  # type: ignore[arg-type]
    p = book.positions()["BTCUSDT"]
    assert (
        p.qty == D("-0.009") and p.venue_realized_pnl == D("-8.17") and p.fees == D("0.06937084") + D("0.105")
    )


def test_same_trade_id_from_stream_and_replay_counts_once(user_data) -> None:
    _, first = order_trade_update(user_data("order_update_trade"))
    _, again = order_trade_update(user_data("order_update_trade_partial"))  # same t=12345678
    assert first is not None and again is not None and first.key == again.key
    book = LedgerBook()
    assert [book.apply_fill(f) for f in (first, again, first)] == [
        Applied.INSERTED,
        Applied.DUPLICATE,
        Applied.DUPLICATE,
    ]
    assert positions_from_fills([first, again, first])["BTCUSDT"].qty == D("0.001")
    assert book.positions()["BTCUSDT"].fill_count == 1


def test_algo_new_and_canceled_at_the_same_time_end_canceled_in_either_order(user_data) -> None:
    new, canceled = algo_update(user_data("algo_update_new")), algo_update(user_data("algo_update_canceled"))
    assert new.update_ms == canceled.update_ms and new.child_order_id is None  # ai is ""
    for events in ((new, canceled), (canceled, new)):
        book = LedgerBook()
        outcomes = [book.apply_algo(a) for a in events]
        assert book.algo_orders[new.key].status == "CANCELED"
        assert outcomes[1] == (Applied.UPDATED if events[0] is new else Applied.STALE)
    assert book.open_algo_orders() == []


# --- precedence ----------------------------------------------------------------------------------------


def test_an_older_status_never_overwrites_a_newer_one_in_any_order() -> None:
    states = [order("NEW", 100), order("PARTIALLY_FILLED", 100, "0.001"), order("PARTIALLY_FILLED", 105, "0.0015"),
              order("FILLED", 110, "0.002")]  # fmt: skip
    for perm in itertools.permutations(states):
        book = LedgerBook()
        for s in perm:
            book.apply_order(s)
        assert book.orders[("BTCUSDT", 7)] == replace(states[-1], created_ms=100)  # first seen at 100


def test_stale_duplicate_and_update_are_told_apart() -> None:
    book = LedgerBook()
    assert book.apply_order(order("PARTIALLY_FILLED", 100, "0.001")) == Applied.INSERTED
    assert book.apply_order(order("NEW", 100)) == Applied.STALE  # same time, lower rank
    assert book.apply_order(order("PARTIALLY_FILLED", 100, "0.001")) == Applied.DUPLICATE
    assert book.apply_order(order("FILLED", 101, "0.002")) == Applied.UPDATED


def test_a_terminal_status_is_not_reopened_by_a_later_open_one() -> None:
    merged = merge_order(order("CANCELED", 100), order("NEW", 200))
    assert merged.status == "CANCELED" and merged.update_ms == 100


def test_unknown_outcome_loses_to_any_venue_status_even_an_older_one() -> None:
    ours = order(UNKNOWN, 500, trade_group_id="g1", engine="lgbm")
    venue = order("NEW", 400, client_order_id="cid-7")
    merged = merge_order(ours, venue)
    assert merged.status == "NEW" and (merged.trade_group_id, merged.engine) == ("g1", "lgbm")


def test_an_older_update_still_teaches_a_missing_link_and_never_lowers_filled_qty() -> None:
    newer = order("FILLED", 110, "0.002", client_order_id=None)
    older = order("PARTIALLY_FILLED", 100, "0.001", parent_algo_id=42)
    merged = merge_order(newer, older)
    assert (merged.status, merged.client_order_id, merged.parent_algo_id, merged.filled_qty) == (
        "FILLED",
        "cid-7",
        42,
        D("0.002"),
    )


def test_a_stub_order_from_a_rest_fill_yields_to_the_order_s_first_real_state() -> None:
    stub = stub_order(fill(1, "BUY", "0.002", "100", order_id=7, t=900))
    assert stub.status == UNKNOWN and stub.client_order_id is None
    assert merge_order(stub, order("NEW", 50)).status == "NEW"
    assert NOT_FOUND in {merge_order(order("NEW", 50), order(NOT_FOUND, 60)).status}


def test_bad_records_are_refused() -> None:
    with pytest.raises(DataQualityError, match="side"):
        order("NEW", 1, side="LONG")
    with pytest.raises(DataQualityError, match="price"):
        fill(1, "BUY", "1", "0")


# --- algo orders and their children --------------------------------------------------------------------


def _trigger_sequence(user_data, finished_ai: str):
    new = algo_update(user_data("algo_update_new"))
    triggered = replace(
        new, status="TRIGGERED", update_ms=new.update_ms + 10, triggered_ms=new.update_ms + 10
    )
    child_id = 555
    finished = replace(triggered, status="FINISHED", update_ms=new.update_ms + 30,
                       child_order_id=int(finished_ai) if finished_ai else None,
                       executed_qty=D("0.01"), avg_price=D("750.1"))  # fmt: skip
    child_new = OrderState(
        "BNBUSDT",
        child_id,
        new.client_algo_id,
        "SELL",
        "TAKE_PROFIT",
        "NEW",
        D("0.01"),
        D(0),
        new.update_ms + 11,
    )
    child_filled = replace(
        child_new, status="FILLED", filled_qty=D("0.01"), avg_price=D("750.1"), update_ms=new.update_ms + 20
    )
    child_fill = Fill("BNBUSDT", 9001, child_id, "SELL", D("750.1"), D("0.01"), D("0.0030004"), "USDT", new.update_ms + 20,
                      new.client_algo_id, D("0"))  # fmt: skip
    return [new, triggered, child_new, child_filled, child_fill, finished]


@pytest.mark.parametrize("finished_ai", ["555", ""], ids=["ai_on_finished", "ai_always_empty"])
def test_child_filled_before_finished_is_joined_to_its_algo_in_every_arrival_order(
    user_data, finished_ai: str
) -> None:
    events = _trigger_sequence(user_data, finished_ai)
    results = set()
    for perm in itertools.permutations(events):
        book = LedgerBook()
        for e in perm:
            book.apply(e)
        algo = book.algo_orders[("BNBUSDT", 2148719)]
        child = book.orders[("BNBUSDT", 555)]
        assert (algo.status, algo.child_order_id, child.parent_algo_id, child.status) == (
            "FINISHED",
            555,
            2148719,
            "FILLED",
        )
        results.add(
            (
                tuple(sorted(book.orders.items())),
                tuple(sorted(book.algo_orders.items())),
                tuple(book.positions().items()),
            )
        )
    assert len(results) == 1
    assert book.positions()["BNBUSDT"].qty == D("-0.01")


def test_a_canceled_algo_does_not_adopt_an_order_with_its_client_id(user_data) -> None:
    book = LedgerBook()
    book.apply_algo(algo_update(user_data("algo_update_canceled")))
    book.apply_order(
        OrderState("BNBUSDT", 9, "Q5xaq5EGKgXXa0fD7fs0Ip", "SELL", "LIMIT", "NEW", D("1"), D(0), 1)
    )
    assert book.orders[("BNBUSDT", 9)].parent_algo_id is None


# --- positions from fills -------------------------------------------------------------------------------


def test_average_entry_realized_pnl_flip_and_fees_are_exact() -> None:
    fills = [
        fill(1, "BUY", "1", "100", fee="0.04"),
        fill(2, "BUY", "1", "110", fee="0.044"),
        fill(3, "SELL", "0.5", "120", fee="0.024"),
        fill(4, "SELL", "2", "100", fee="0.08", asset="BNB"),
    ]
    p = positions_from_fills(fills)["BTCUSDT"]
    assert p.qty == D("-0.5") and p.avg_entry_price == D("100") and p.side == "SHORT"
    assert p.realized_pnl == D("0.5") * 15 + D("1.5") * -5 == D(0)
    assert p.fees == D("0.108") and p.fees_other == (("BNB", D("0.08")),)
    assert (p.fill_count, p.last_trade_id) == (4, 4)


def test_funding_is_folded_in_from_income_records_once_and_trade_income_is_not_counted_twice() -> None:
    fills = [fill(1, "BUY", "1", "100", fee="0.04"), fill(2, "SELL", "1", "103", fee="0.0412")]
    incomes = [
        Income("BTCUSDT", "FUNDING_FEE", D("-0.25"), "USDT", T0 + 5, 77),
        Income("BTCUSDT", "FUNDING_FEE", D("-0.25"), "USDT", T0 + 5, 77),  # the same record again
        Income("BTCUSDT", "REALIZED_PNL", D("3"), "USDT", T0 + 2, 78),
        Income("BTCUSDT", "COMMISSION", D("-0.0412"), "USDT", T0 + 2, 79),
        Income("BTCUSDT", "INSURANCE_CLEAR", D("0.01"), "USDT", T0 + 6, 80),
        Income("", "TRANSFER", D("100"), "USDT", T0 + 7, 81),
    ]
    p = positions_from_fills(fills, incomes)["BTCUSDT"]
    assert (p.realized_pnl, p.funding, p.other_income, p.fees) == (D(3), D("-0.25"), D("0.01"), D("0.0812"))
    assert p.net_pnl == D(3) - D("0.25") + D("0.01") - D("0.0812")
    assert set(positions_from_fills(fills, incomes)) == {"BTCUSDT"}


def test_fill_order_is_time_then_trade_id_whatever_the_arrival_order() -> None:
    fills = [fill(i, "BUY" if i % 3 else "SELL", "0.1", str(100 + i), t=T0 + i // 2) for i in range(1, 30)]
    expected = positions_from_fills(fills)
    shuffled = fills + fills[:10]
    random.Random(3).shuffle(shuffled)
    assert positions_from_fills(shuffled) == expected


def test_to_json_keeps_decimals_exact_and_drops_raw_payloads() -> None:
    f = replace(fill(1, "BUY", "0.001", "7100.50"), raw={"e": "ORDER_TRADE_UPDATE"})
    assert to_json(f)["price"] == "7100.50" and "raw" not in to_json(f)
    assert to_json(Position("BTCUSDT", fees_other=(("BNB", D("1")),)))["fees_other"] == [["BNB", "1"]]


_fill_args = st.tuples(st.sampled_from(["BUY", "SELL"]), st.integers(1, 500), st.integers(9_000, 11_000))


@settings(max_examples=200, deadline=None)
@given(st.lists(_fill_args, min_size=1, max_size=40))
def test_pnl_is_conserved_realized_plus_open_equals_cash_flow(trades: list[tuple[str, int, int]]) -> None:
    """Realized PnL plus the open quantity valued at its average entry equals the cash the fills moved
    (exactly, up to Decimal's 28-digit division of the average)."""
    fills = [fill(i, side, str(D(q) / 1000), str(D(p) / 10)) for i, (side, q, p) in enumerate(trades, 1)]
    p = positions_from_fills(fills)["BTCUSDT"]
    cash = sum((-f.signed_qty * f.price for f in fills), D(0))
    assert p.qty == sum((f.signed_qty for f in fills), D(0))
    assert abs(p.realized_pnl - (cash + p.qty * p.avg_entry_price)) < D("1e-18")
    assert (p.avg_entry_price == 0) == (p.qty == 0)
