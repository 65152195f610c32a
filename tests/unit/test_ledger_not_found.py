"""NOT_FOUND in the pure ledger (core.ledger): the venue's "no such order" (-2013) against its other answers.

Binance's query side can lag its matching side: an algo order is acknowledged, then answers -2013 for a
while. A NOT_FOUND recorded then must give way to whatever the venue shows afterwards, and must never
erase what the venue showed after the query, nor a final status.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from decimal import Decimal as D

import pytest

from core.ledger import (
    NOT_FOUND,
    UNKNOWN,
    AlgoOrderState,
    Applied,
    Fill,
    LedgerBook,
    OrderState,
    algo_supersedes,
    merge_algo,
    merge_order,
    order_supersedes,
)

PLACED, QUERIED = 1_000, 5_000  # the stop is acknowledged at PLACED; a query at QUERIED answers -2013


def order(status: str, t: int, filled: str = "0") -> OrderState:
    return OrderState("BTCUSDT", 7, "cid-7", "SELL", "MARKET", status, D("0.002"), D(filled), t)


def algo(status: str, t: int, **kw: object) -> AlgoOrderState:
    base = AlgoOrderState("BTCUSDT", 42, "sl-42", "SELL", "STOP_MARKET", status, D("0.002"), D("58000"), t,
                          reduce_only=True, working_type="MARK_PRICE", created_ms=PLACED)  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED", "CANCELED", "EXPIRED"])
def test_any_algo_state_the_venue_shows_after_a_not_found_replaces_it_even_an_older_one(status: str) -> None:
    hidden = algo(NOT_FOUND, QUERIED)
    shown = algo(status, PLACED)  # openAlgoOrders / ALGO_UPDATE, stamped before the query
    assert algo_supersedes(hidden, shown)
    merged = merge_algo(hidden, shown)
    assert (merged.status, merged.update_ms, merged.created_ms) == (status, PLACED, PLACED)


@pytest.mark.parametrize("status", ["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"])
def test_any_order_state_the_venue_shows_after_a_not_found_replaces_it(status: str) -> None:
    merged = merge_order(order(NOT_FOUND, QUERIED), order(status, PLACED, "0.001"))
    assert (merged.status, merged.update_ms) == (status, PLACED)


def test_not_found_still_closes_an_open_record_the_venue_showed_before_the_query() -> None:
    assert merge_algo(algo("NEW", PLACED), algo(NOT_FOUND, QUERIED)).status == NOT_FOUND
    assert merge_algo(algo("TRIGGERED", QUERIED), algo(NOT_FOUND, QUERIED)).status == NOT_FOUND  # same ms
    assert merge_order(order("NEW", PLACED), order(NOT_FOUND, QUERIED)).status == NOT_FOUND
    assert merge_order(order(UNKNOWN, QUERIED + 1), order(NOT_FOUND, QUERIED)).status == NOT_FOUND
    assert merge_order(order(NOT_FOUND, QUERIED), order(UNKNOWN, QUERIED + 1)).status == NOT_FOUND


@pytest.mark.parametrize("status", ["NEW", "TRIGGERING", "TRIGGERED"])
def test_not_found_never_replaces_an_algo_state_the_venue_showed_after_the_query(status: str) -> None:
    later = algo(status, QUERIED + 1)
    assert not algo_supersedes(later, algo(NOT_FOUND, QUERIED))
    assert merge_algo(later, algo(NOT_FOUND, QUERIED)) == later
    assert not order_supersedes(order("PARTIALLY_FILLED", QUERIED + 1), order(NOT_FOUND, QUERIED))


@pytest.mark.parametrize(
    ("final_algo", "final_order"), [("FINISHED", "FILLED"), ("CANCELED", "CANCELED"), ("EXPIRED", "EXPIRED")]
)
def test_a_final_status_wins_over_not_found_in_either_arrival_order(
    final_algo: str, final_order: str
) -> None:
    # Binance forgets old orders (-2013): that must not erase how they ended
    for stored, incoming in itertools.permutations([algo(final_algo, PLACED), algo(NOT_FOUND, QUERIED)]):
        assert merge_algo(stored, incoming).status == final_algo
    for stored_o, incoming_o in itertools.permutations(
        [order(final_order, PLACED), order(NOT_FOUND, QUERIED)]
    ):
        assert merge_order(stored_o, incoming_o).status == final_order


def test_book_tells_a_stale_not_found_from_an_update() -> None:
    book = LedgerBook()
    assert book.apply_algo(algo("NEW", QUERIED + 1)) == Applied.INSERTED
    assert book.apply_algo(algo(NOT_FOUND, QUERIED)) == Applied.STALE  # shown NEW after the query
    assert book.algo_orders[("BTCUSDT", 42)].status == "NEW"
    assert book.apply_algo(algo(NOT_FOUND, QUERIED + 5)) == Applied.UPDATED
    assert book.apply_algo(algo(NOT_FOUND, QUERIED + 5)) == Applied.DUPLICATE
    assert book.apply_algo(algo("NEW", QUERIED + 1)) == Applied.UPDATED  # visible again: NEW
    assert book.algo_orders[("BTCUSDT", 42)].is_open


def test_an_acknowledged_stop_hidden_from_queries_ends_new_then_finished_with_its_child_joined() -> None:
    """The fault-injection scenario: acknowledged, -2013 on a query, listed later, then triggered."""
    book = LedgerBook()
    book.apply(algo("NEW", PLACED))  # the placement's answer
    book.apply(algo(NOT_FOUND, QUERIED))  # the reconciler's query while the venue hides it
    assert not book.algo_orders[("BTCUSDT", 42)].is_open
    book.apply(algo("NEW", PLACED))  # openAlgoOrders shows it once visible
    assert book.algo_orders[("BTCUSDT", 42)].status == "NEW"
    assert [a.client_algo_id for a in book.open_algo_orders()] == ["sl-42"]
    child = OrderState(
        "BTCUSDT", 900, "sl-42", "SELL", "STOP_MARKET", "FILLED", D("0.002"), D("0.002"), 9_000
    )
    book.apply(algo("TRIGGERED", 9_000, triggered_ms=9_000))  # ai empty on TRIGGERED
    book.apply(child)
    book.apply(Fill("BTCUSDT", 77, 900, "SELL", D("57990"), D("0.002"), D("0.05"), "USDT", 9_000, "sl-42"))
    book.apply(algo("FINISHED", 9_001, child_order_id=900, executed_qty=D("0.002")))
    stop = book.algo_orders[("BTCUSDT", 42)]
    assert (stop.status, stop.child_order_id, book.orders[("BTCUSDT", 900)].parent_algo_id) == (
        "FINISHED",
        900,
        42,
    )
    assert stop.created_ms == PLACED
