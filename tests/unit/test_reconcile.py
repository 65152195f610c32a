"""Reconciliation (core.reconcile): spec 004 §3 cases A–D and §7-3, orphans and naked positions.

The venue's side comes from recorded payloads where they exist (../shared/data/payloads): positionRisk,
openAlgoOrders, the 2023 mainnet closePosition TP/SL, liquidation and trade events.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D
from pathlib import Path

import pytest
from ledger_payloads import load, order_trade_update, position_risk, rest_algo_order, rest_order

from core.ledger import (
    NOT_FOUND,
    UNKNOWN,
    AlgoOrderState,
    EngineSignal,
    Fill,
    LedgerBook,
    OrderState,
    SyncCursor,
)
from core.reconcile import (
    CorrectionKind as K,
)
from core.reconcile import (
    ExchangePosition,
    ExchangeSnapshot,
    LedgerView,
    LookupKind,
    PendingSignal,
    ReconcileConfig,
    ReconcileResult,
    reconcile,
)

NOW = 1_700_000_000_000
HOUR = 3_600_000


def buy(trade_id: int, qty: str, order_id: int = 11, symbol: str = "BTCUSDT", side: str = "BUY") -> Fill:
    return Fill(
        symbol, trade_id, order_id, side, D("50000"), D(qty), D("0.02"), "USDT", NOW - HOUR + trade_id
    )  # type: ignore[arg-type]


def entry(order_id: int = 11, status: str = "FILLED", qty: str = "0.001", t: int = NOW - HOUR) -> OrderState:
    return OrderState(
        "BTCUSDT",
        order_id,
        f"rt-{order_id}",
        "BUY",
        "MARKET",
        status,
        D(qty),
        D(qty) if status == "FILLED" else D(0),
        t,
    )


def stop(algo_id: int, order_type: str = "STOP_MARKET", side: str = "SELL", **kw: object) -> AlgoOrderState:
    a = AlgoOrderState("BTCUSDT", algo_id, f"rt-sl-{algo_id}", side, order_type, "NEW", D(0), D("45000"), NOW - HOUR,  # type: ignore[arg-type]
                       close_position=True, created_ms=NOW - HOUR)  # fmt: skip
    return replace(a, **kw)  # type: ignore[arg-type]


def position(qty: str, symbol: str = "BTCUSDT", t: int = NOW - HOUR) -> ExchangePosition:
    return ExchangePosition(symbol, D(qty), D("50000"), t)


def kinds(result: ReconcileResult) -> list[str]:
    return [c.kind for c in result.corrections]


def protected(qty: str = "0.001", **kw: object) -> dict[str, object]:
    """A venue snapshot with a position and both closePosition protections."""
    return {"positions": [position(qty)], "open_algo_orders": [stop(1), stop(2, "TAKE_PROFIT_MARKET")], **kw}


def apply(book: LedgerBook, result: ReconcileResult) -> None:
    for c in result.corrections:
        if c.ledger_event is not None:
            book.apply(c.ledger_event)


@pytest.fixture
def payload(shared_data: Path):
    return lambda group, name: load(shared_data, group, name)


# --- case A: a signal without its order ---------------------------------------------------------------


def signal(client_id: str = "rt-11") -> PendingSignal:
    return PendingSignal(5, EngineSignal(NOW - HOUR, "BTCUSDT", "LONG", "lgbm", "ev", "g-1", client_id))


def test_case_a_signal_without_order_restores_the_venue_s_order_with_the_signal_s_trade_group() -> None:
    snap = ExchangeSnapshot(NOW, orders=[entry()], trades=[buy(1, "0.001")], trades_from_id={"BTCUSDT": None},
                            **protected())  # fmt: skip
    result = reconcile(LedgerView(pending_signals=[signal()]), snap)
    restore = result.of_kind(K.RESTORE_ORDER)
    assert len(restore) == 1 and restore[0].details == {"signal_id": 5}
    assert (restore[0].after.trade_group_id, restore[0].after.engine) == ("g-1", "lgbm")  # type: ignore[union-attr]
    assert kinds(result) == [
        K.RESTORE_ORDER,
        K.INSERT_FILL,
        K.RESTORE_ALGO_ORDER,
        K.RESTORE_ALGO_ORDER,
    ]  # our entry: not adopted


def test_case_a_signal_whose_order_is_not_in_the_snapshot_is_queried_by_client_id() -> None:
    result = reconcile(LedgerView(pending_signals=[signal()]), ExchangeSnapshot(NOW))
    assert result.corrections == []
    assert [(lk.kind, lk.client_order_id) for lk in result.lookups] == [
        (LookupKind.QUERY_ORDER_BY_CLIENT_ID, "rt-11")
    ]


def test_case_a_signal_the_venue_has_no_order_for_is_recorded_as_never_executed() -> None:
    snap = ExchangeSnapshot(NOW, absent_client_ids=frozenset({("BTCUSDT", "rt-11")}))
    result = reconcile(LedgerView(pending_signals=[signal()]), snap)
    assert kinds(result) == [K.SIGNAL_WITHOUT_ORDER] and result.lookups == []
    assert result.corrections[0].details["signal_id"] == 5


# --- case B: an order without its fills ---------------------------------------------------------------


def test_case_b_fills_the_venue_has_and_the_ledger_lacks_are_inserted_once() -> None:
    book = LedgerBook()
    book.apply(entry())
    trades = [buy(1, "0.0004"), buy(2, "0.0006"), buy(2, "0.0006")]  # a page boundary repeated a trade
    snap = ExchangeSnapshot(NOW, trades=trades, trades_from_id={"BTCUSDT": None}, **protected())
    result = reconcile(LedgerView.of_book(book), snap)
    assert [c.after.trade_id for c in result.of_kind(K.INSERT_FILL)] == [1, 2]  # type: ignore[union-attr]
    assert K.ADOPT_POSITION not in kinds(result)  # our own order: the fills were only missed
    apply(book, result)
    again = reconcile(LedgerView.of_book(book), snap)
    assert again.of_kind(K.INSERT_FILL) == [] and book.positions()["BTCUSDT"].qty == D("0.001")


def test_case_b_an_order_we_think_open_that_the_venue_no_longer_lists_is_queried_then_closed() -> None:
    book = LedgerBook()
    book.apply(entry(status="NEW"))
    first = reconcile(LedgerView.of_book(book), ExchangeSnapshot(NOW))
    assert first.corrections == [] and [(lk.kind, lk.order_id) for lk in first.lookups] == [
        (LookupKind.QUERY_ORDER, 11)
    ]
    answered = ExchangeSnapshot(NOW, orders=[entry(status="CANCELED", t=NOW - 100)])
    second = reconcile(LedgerView.of_book(book), answered)
    (update,) = second.corrections
    assert update.kind == K.UPDATE_ORDER and (update.before.status, update.after.status) == (
        "NEW",
        "CANCELED",
    )  # type: ignore[union-attr]
    absent = reconcile(
        LedgerView.of_book(book), ExchangeSnapshot(NOW, absent_orders=frozenset({("BTCUSDT", 11)}))
    )
    assert absent.corrections[0].after.status == NOT_FOUND  # type: ignore[union-attr]


def test_case_b_a_rest_trade_of_an_unknown_order_restores_a_stub_and_queries_the_order() -> None:
    snap = ExchangeSnapshot(
        NOW, trades=[buy(1, "0.001", order_id=99)], trades_from_id={"BTCUSDT": None}, **protected()
    )
    result = reconcile(LedgerView(), snap)
    restore = result.of_kind(K.RESTORE_ORDER)[0]
    assert restore.after.status == UNKNOWN and restore.after.order_id == 99  # type: ignore[union-attr]
    assert (LookupKind.QUERY_ORDER, 99) in [(lk.kind, lk.order_id) for lk in result.lookups]


def test_recorded_partial_fill_event_updates_our_open_order_and_inserts_its_trade(payload) -> None:
    state, f = order_trade_update(payload("user_data_json", "order_update_trade_partial"))
    assert f is not None
    ours = replace(state, status="NEW", filled_qty=D(0), update_ms=state.update_ms - 1)
    book = LedgerBook()
    book.apply(ours)
    snap = ExchangeSnapshot(
        state.update_ms + 1, open_orders=[state], trades=[f], trades_from_id={"BTCUSDT": None}
    )
    result = reconcile(LedgerView.of_book(book), snap, ReconcileConfig(protection_grace_ms=0))
    assert kinds(result)[:2] == [K.UPDATE_ORDER, K.INSERT_FILL]
    assert result.of_kind(K.UPDATE_ORDER)[0].after.filled_qty == D("0.001")  # type: ignore[union-attr]


# --- case C: a position on the venue the ledger does not know ------------------------------------------


def test_case_c_unknown_venue_position_is_adopted_once_and_its_trades_looked_up(payload) -> None:
    venue = position_risk(payload("http_json", "position_risk")[0])  # BTCUSDT 0.001 at 50000
    snap = ExchangeSnapshot(venue.update_ms + HOUR, positions=[venue])
    result = reconcile(LedgerView(), snap)
    adopt = result.of_kind(K.ADOPT_POSITION)
    assert len(adopt) == 1 and adopt[0].after == venue and adopt[0].details["explained_by_fills"] is False
    assert (LookupKind.BACKFILL_TRADES, None) in [(lk.kind, lk.from_trade_id) for lk in result.lookups]
    assert K.PROTECT_OR_FLATTEN in kinds(result)  # and it has no protection
    recorded = {"BTCUSDT": tuple(adopt[0].details["signature"])}
    again = reconcile(LedgerView(recorded_mismatches=recorded), snap)
    assert K.ADOPT_POSITION not in kinds(again) and any(
        lk.kind == LookupKind.BACKFILL_TRADES for lk in again.lookups
    )


def test_case_c_position_opened_by_an_order_we_never_saw_is_adopted_with_its_fills() -> None:
    snap = ExchangeSnapshot(
        NOW, trades=[buy(1, "0.001", order_id=77)], trades_from_id={"BTCUSDT": None}, **protected()
    )
    result = reconcile(LedgerView(), snap)
    assert kinds(result)[:3] == [K.RESTORE_ORDER, K.INSERT_FILL, K.RESTORE_ALGO_ORDER]
    assert result.of_kind(K.ADOPT_POSITION)[0].details["explained_by_fills"] is True


def test_resting_close_position_stops_after_a_restart_are_adopted_not_placed_again(payload) -> None:
    """The 2023 mainnet TP and SL: closePosition, no quantity, protecting a 0.003 short."""
    tp, sl = (rest_order(r) for r in payload("orders_2023", "tp_sl"))
    assert (tp.order_type, sl.order_type, tp.qty, sl.close_position) == (
        "TAKE_PROFIT_MARKET",
        "STOP_MARKET",
        D(0),
        True,
    )
    book = LedgerBook()
    book.apply(
        Fill("BTCUSDT", 1, 5, "SELL", D("37063.0"), D("0.003"), D("0.04"), "USDT", sl.update_ms - HOUR)
    )
    snap = ExchangeSnapshot(
        sl.update_ms + HOUR, positions=[position("-0.003", t=sl.update_ms - HOUR)], open_orders=[tp, sl]
    )
    result = reconcile(LedgerView.of_book(book), snap)
    assert kinds(result) == [K.RESTORE_ORDER, K.RESTORE_ORDER]  # adopted; no protect, no duplicate
    algo_snap = ExchangeSnapshot(NOW, positions=[position("0.001")], open_algo_orders=[stop(1)])
    result = reconcile(LedgerView(), algo_snap)
    assert "adopted, not placed again" in result.of_kind(K.RESTORE_ALGO_ORDER)[0].reason
    (naked,) = result.of_kind(K.PROTECT_OR_FLATTEN)
    assert naked.details["missing"] == ["take_profit"]  # only the one that is not resting


# --- case D: closed on the venue, open in the ledger ---------------------------------------------------


def test_case_d_liquidation_fill_the_ledger_missed_is_inserted_and_the_position_marked_closed(
    payload,
) -> None:
    liq_order, liq = order_trade_update(payload("user_data_json", "order_update_calculated"))  # SELL 0.014
    assert liq is not None
    book = LedgerBook()
    book.apply(Fill("BTCUSDT", 100, 1, "BUY", D("10000"), D("0.014"), D("0.05"), "USDT", liq.time_ms - HOUR))
    snap = ExchangeSnapshot(liq.time_ms + HOUR, trades=[liq], trades_from_id={"BTCUSDT": 101})
    result = reconcile(LedgerView.of_book(book, cursors={"BTCUSDT": SyncCursor("BTCUSDT", 100, 0)}), snap)
    assert kinds(result) == [K.RESTORE_ORDER, K.INSERT_FILL, K.POSITION_CLOSED]
    closed = result.of_kind(K.POSITION_CLOSED)[0]
    assert closed.details["explained_by_fills"] is True and closed.before.qty == D("0.014")  # type: ignore[union-attr]
    assert result.cursors == {"BTCUSDT": SyncCursor("BTCUSDT", liq.trade_id, liq.time_ms)}
    apply(book, result)
    assert book.positions()["BTCUSDT"].qty == 0 and book.positions()["BTCUSDT"].realized_pnl == D(
        "0.014"
    ) * D("-89.88")
    assert reconcile(LedgerView.of_book(book), replace(snap, trades=[])).corrections == []


def test_case_d_closed_on_the_venue_without_the_trades_at_hand_looks_them_up_from_the_cursor() -> None:
    book = LedgerBook()
    book.apply(buy(100, "0.001"))
    view = LedgerView.of_book(book, cursors={"BTCUSDT": SyncCursor("BTCUSDT", 100, NOW - HOUR)})
    result = reconcile(view, ExchangeSnapshot(NOW))
    assert kinds(result) == [K.POSITION_CLOSED]
    assert [(lk.kind, lk.from_trade_id) for lk in result.lookups] == [(LookupKind.BACKFILL_TRADES, 101)]
    # the trades from the cursor did not explain it: ask for all the venue keeps
    deeper = reconcile(view, ExchangeSnapshot(NOW, trades_from_id={"BTCUSDT": 101}))
    assert [(lk.kind, lk.from_trade_id) for lk in deeper.lookups] == [(LookupKind.BACKFILL_TRADES, None)]


def test_quantities_that_differ_on_both_sides_are_a_mismatch_the_venue_wins() -> None:
    book = LedgerBook()
    book.apply(buy(1, "0.001"))
    result = reconcile(LedgerView.of_book(book), ExchangeSnapshot(NOW, **protected("0.003")))
    (mismatch,) = result.of_kind(K.POSITION_MISMATCH)
    assert (mismatch.details["ledger_qty"], mismatch.details["venue_qty"]) == (D("0.001"), D("0.003"))


# --- orphans and naked positions -----------------------------------------------------------------------


def test_recorded_open_algo_order_on_a_flat_symbol_is_an_orphan_to_cancel(payload) -> None:
    algo = rest_algo_order(payload("http_json", "open_algo_orders")[0])
    result = reconcile(
        LedgerView.of_book(_with(algo)), ExchangeSnapshot(algo.created_ms + HOUR, open_algo_orders=[algo])
    )
    assert kinds(result) == [K.CANCEL_ORPHAN] and result.corrections[0].details == {"algo_id": 123456789}


def test_an_algo_order_younger_than_the_position_read_is_not_an_orphan() -> None:
    young = stop(1, created_ms=NOW - 1_000)
    snap = ExchangeSnapshot(NOW, open_algo_orders=[young], positions_ms=NOW - 500)
    assert reconcile(LedgerView.of_book(_with(young)), snap).corrections == []


def test_naked_position_needs_protect_or_flatten_and_a_fresh_one_is_left_to_the_executor() -> None:
    book = LedgerBook()
    book.apply(buy(1, "0.002"))
    partial = replace(stop(1), close_position=False, qty=D("0.001"), reduce_only=True)
    snap = ExchangeSnapshot(NOW, positions=[position("0.002")], open_algo_orders=[partial])
    (naked,) = reconcile(LedgerView.of_book(_with(partial, book)), snap).of_kind(K.PROTECT_OR_FLATTEN)
    assert naked.details == {"missing": ["stop_loss", "take_profit"], "close_side": "SELL", "qty": D("0.002")}
    fresh = replace(snap, positions=[position("0.002", t=NOW - 1_000)])
    assert reconcile(LedgerView.of_book(_with(partial, book)), fresh).of_kind(K.PROTECT_OR_FLATTEN) == []


def _with(algo: AlgoOrderState, book: LedgerBook | None = None) -> LedgerBook:
    book = book or LedgerBook()
    book.apply(algo)
    return book


# --- algo orders the ledger holds -----------------------------------------------------------------------


def test_triggered_algo_with_empty_ai_then_finished_queries_the_child_it_names() -> None:
    book = _with(stop(1, close_position=False, qty=D("0.001"), reduce_only=True))
    result = reconcile(LedgerView.of_book(book), ExchangeSnapshot(NOW))
    assert [(lk.kind, lk.algo_id) for lk in result.lookups] == [(LookupKind.QUERY_ALGO_ORDER, 1)]
    triggered = replace(book.algo_orders[("BTCUSDT", 1)], status="TRIGGERED", update_ms=NOW - 10)  # ai ""
    first = reconcile(LedgerView.of_book(book), ExchangeSnapshot(NOW, algo_orders=[triggered]))
    assert kinds(first) == [K.UPDATE_ALGO_ORDER] and first.lookups == []
    finished = replace(triggered, status="FINISHED", child_order_id=4242, update_ms=NOW - 5)
    second = reconcile(LedgerView.of_book(book), ExchangeSnapshot(NOW, algo_orders=[finished]))
    assert second.of_kind(K.UPDATE_ALGO_ORDER)[0].after.child_order_id == 4242  # type: ignore[union-attr]
    assert [(lk.kind, lk.order_id) for lk in second.lookups] == [(LookupKind.QUERY_ORDER, 4242)]


# --- cursors and the fixed point ------------------------------------------------------------------------


def test_cursor_advances_only_over_contiguous_trades() -> None:
    cursor = {"BTCUSDT": SyncCursor("BTCUSDT", 10, 0)}
    trades = [buy(11, "0.001"), buy(12, "0.001", side="SELL")]
    view = LedgerView(cursors=cursor)
    assert (
        reconcile(view, ExchangeSnapshot(NOW, trades=trades, trades_from_id={"BTCUSDT": 11}))
        .cursors["BTCUSDT"]
        .last_trade_id
        == 12
    )
    assert reconcile(view, ExchangeSnapshot(NOW, trades=trades, trades_from_id={"BTCUSDT": 15})).cursors == {}
    assert reconcile(view, ExchangeSnapshot(NOW, trades=trades)).cursors == {}  # stream trades: no cursor


def test_reconciling_the_corrected_ledger_again_finds_nothing(payload) -> None:
    book = LedgerBook()
    book.apply(entry(status="NEW"))
    snap = ExchangeSnapshot(
        NOW, orders=[entry()], trades=[buy(1, "0.001"), buy(2, "0.002", order_id=12)],
        trades_from_id={"BTCUSDT": None}, **protected("0.003"),
    )  # fmt: skip
    first = reconcile(LedgerView.of_book(book), snap)
    apply(book, first)
    second = reconcile(LedgerView.of_book(book), snap)
    assert second.corrections == [] and book.positions()["BTCUSDT"].qty == D("0.003")
