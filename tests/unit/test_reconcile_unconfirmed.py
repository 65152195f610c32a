"""Reconciliation (core.reconcile) of an algo order the venue acknowledged but does not show yet.

Binance's query side can lag its matching side: a stop it acknowledged may answer -2013 and be missing
from openAlgoOrders for a while. Within ``ReconcileConfig.unconfirmed_algo_ms`` of its acknowledgement
the ledger's open record stays open (queried again) and still protects its position; after that,
"no such order" closes it and the position is naked again.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from core.ledger import NOT_FOUND, AlgoOrderState, Fill, LedgerBook
from core.reconcile import CorrectionKind as K
from core.reconcile import (
    ExchangePosition,
    ExchangeSnapshot,
    LedgerView,
    LookupKind,
    ReconcileConfig,
    reconcile,
)

NOW = 1_700_000_000_000
CONFIG = ReconcileConfig(protection_grace_ms=0, orphan_grace_ms=0, unconfirmed_algo_ms=60_000)


def protection(algo_id: int, order_type: str, created_ms: int, status: str = "NEW") -> AlgoOrderState:
    return AlgoOrderState("BTCUSDT", algo_id, f"rt-{algo_id}", "SELL", order_type, status, D("0.003"),  # type: ignore[arg-type]
                          D("58000"), created_ms, reduce_only=True, created_ms=created_ms)  # fmt: skip


def _round(stop_created_ms: int, *, absent: bool, stop_status: str = "NEW"):
    book = LedgerBook()
    book.apply(Fill("BTCUSDT", 5, 9, "BUY", D("60000"), D("0.003"), D("0.07"), "USDT", NOW - 120_000))
    stop = protection(1, "STOP_MARKET", stop_created_ms, stop_status)
    target = protection(2, "TAKE_PROFIT_MARKET", NOW - 1_000)
    book.apply(stop)
    book.apply(target)
    snap = ExchangeSnapshot(
        NOW, positions=[ExchangePosition("BTCUSDT", D("0.003"), D("60000"), NOW - 120_000)],
        open_algo_orders=[target], absent_algo_orders=frozenset({stop.key}) if absent else frozenset(),
    )  # fmt: skip
    return reconcile(LedgerView.of_book(book), snap, CONFIG)


@pytest.mark.parametrize("absent", [False, True], ids=["not_queried_yet", "queried_2013"])
def test_a_stop_acknowledged_within_the_window_still_protects_and_is_queried_again(absent: bool) -> None:
    result = _round(NOW - 59_000, absent=absent)
    assert result.corrections == []  # no NOT_FOUND, not naked
    [lookup] = result.lookups
    assert (lookup.kind, lookup.algo_id) == (LookupKind.QUERY_ALGO_ORDER, 1)
    assert ("acknowledged 59 s ago" in lookup.reason) == absent


def test_past_the_window_no_such_order_closes_the_stop_and_the_position_is_naked() -> None:
    result = _round(NOW - 61_000, absent=True)
    [closed] = result.of_kind(K.UPDATE_ALGO_ORDER)
    assert closed.after.status == NOT_FOUND  # type: ignore[union-attr]
    [naked] = result.of_kind(K.PROTECT_OR_FLATTEN)
    assert naked.details["missing"] == ["stop_loss"] and result.lookups == []


def test_past_the_window_an_unlisted_stop_is_not_protection_while_it_is_queried() -> None:
    result = _round(NOW - 61_000, absent=False)
    assert [c.kind for c in result.corrections] == [K.PROTECT_OR_FLATTEN]
    assert [lk.algo_id for lk in result.lookups] == [1]


def test_an_unknown_outcome_is_no_acknowledgement() -> None:
    result = _round(NOW - 1_000, absent=True, stop_status="UNKNOWN")
    assert K.PROTECT_OR_FLATTEN in [c.kind for c in result.corrections]
