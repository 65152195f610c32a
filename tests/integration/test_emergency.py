"""The kill switch's flatten (``exchange.binance.emergency``) against the replay venue's paper broker.

A real signed client over loopback; the venue's fault hooks make the close or the cancel's outcome
unknown. Each test opens a protected long (MARKET entry, algo SL and TP), flattens, and reads the
venue's own book: position 0, no open order or algo order, exactly one close order sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from venue_fixtures import (
    BTC,
    MARK,
    WallClockVenue,
    running_venue,
    signed_client,
    started,
)
from venue_fixtures import exchange_info as exchange_info

from exchange.binance.emergency import EmergencyReport, cancel_all_and_flatten
from exchange.binance.trading import BinanceTrading, client_id
from exchange.venue.state import STATE

KEY = "emergency-test-key"
SECRET = "emergency-test-secret-5d1e"
PREFIX = "kill-1767225600000"


@dataclass
class Venue(WallClockVenue):
    def requests(self, path: str) -> int:
        return int(self.server.app[STATE].requests.get(path, 0))

    def position(self) -> Decimal:
        position = self.broker.positions.get(BTC)
        return Decimal(0) if position is None else position.amount

    def open_algos(self) -> list[Any]:
        return [a for a in self.broker.algos.values() if a.status in ("NEW", "TRIGGERING")]

    def open_orders(self) -> list[Any]:
        return [o for o in self.broker.orders.values() if o.status in ("NEW", "PARTIALLY_FILLED")]

    def reduce_only_orders(self) -> list[Any]:
        return [o for o in self.broker.orders.values() if o.reduce_only]


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[Venue]:
    with running_venue(exchange_info, tmp_path / "lake", key=KEY, secret=SECRET, cls=Venue) as venue:
        yield venue


@pytest.fixture
def trading(venue: Venue) -> Iterator[BinanceTrading]:
    client = signed_client(venue.url, KEY, SECRET, recv_window_ms=1_000, timeout_s=2.0, backoff_s=0.0,
                           sync_clock=False)  # fmt: skip
    yield from started(client)


def open_protected_long(trading: BinanceTrading, quantity: Decimal = Decimal("0.003")) -> None:
    entry = trading.place_entry(BTC, "BUY", quantity, client_id("d1"), mark_price=MARK)
    assert entry.status == "FILLED"
    trading.place_protection(BTC, "SL", "LONG", 59_000, entry.avgPrice, client_id("d1", "sl"), quantity)
    trading.place_protection(BTC, "TP", "LONG", 61_000, entry.avgPrice, client_id("d1", "tp"), quantity)


def assert_flat(venue: Venue, report: EmergencyReport) -> None:
    assert venue.position() == 0
    assert venue.open_algos() == [] and venue.open_orders() == []
    assert len(venue.reduce_only_orders()) == 1  # one close, never a duplicate
    assert report.clean and report.verified and report.left == ()


def test_flatten_cancels_the_protection_and_closes_the_position(
    venue: Venue, trading: BinanceTrading
) -> None:
    open_protected_long(trading)
    assert venue.position() == Decimal("0.003") and len(venue.open_algos()) == 2

    report = cancel_all_and_flatten(trading, client_id_prefix=PREFIX)

    assert_flat(venue, report)
    assert {(c.kind, c.client_id, c.order_type) for c in report.cancelled} == {
        ("algo", client_id("d1", "sl"), "STOP_MARKET"),
        ("algo", client_id("d1", "tp"), "TAKE_PROFIT_MARKET"),
    }
    assert all(c.quantity == Decimal("0.003") for c in report.cancelled)
    (closed,) = report.closed
    assert (closed.symbol, closed.side, closed.status) == (BTC, "SELL", "FILLED")
    assert closed.position_quantity == Decimal("0.003") and closed.executed_quantity == Decimal("0.003")
    assert isinstance(closed.executed_quantity, Decimal) and not closed.resolved
    assert closed.client_order_id == client_id(f"{PREFIX}:{BTC}:BOTH:0", "close")
    assert report.rounds == 1 and report.errors == ()
    assert {a.status for a in venue.broker.algos.values()} == {"CANCELED"}
    assert venue.requests("/fapi/v1/allOpenOrders") == 1 and venue.requests("/fapi/v1/algoOpenOrders") == 1
    assert "flat" in report.lines()[-1]


def test_flatten_of_a_short_buys_it_back(venue: Venue, trading: BinanceTrading) -> None:
    trading.place_entry(BTC, "SELL", Decimal("0.002"), client_id("s1"), mark_price=MARK)
    report = cancel_all_and_flatten(trading, client_id_prefix=PREFIX)
    assert venue.position() == 0 and report.clean
    assert [(c.side, c.position_quantity) for c in report.closed] == [("BUY", Decimal("-0.002"))]


def test_nothing_open_sends_nothing(venue: Venue, trading: BinanceTrading) -> None:
    report = cancel_all_and_flatten(trading, client_id_prefix=PREFIX)
    assert report.clean and report.rounds == 0 and report.cancelled == () and report.closed == ()
    assert venue.requests("/fapi/v1/allOpenOrders") == 0 and venue.requests("/fapi/v1/order") == 0


def test_a_symbol_outside_the_chosen_ones_is_left_alone(venue: Venue, trading: BinanceTrading) -> None:
    open_protected_long(trading)
    report = cancel_all_and_flatten(trading, ["ETHUSDT"], client_id_prefix=PREFIX)
    assert report.clean and report.closed == () and report.cancelled == ()
    assert venue.position() == Decimal("0.003") and len(venue.open_algos()) == 2


@pytest.mark.parametrize(
    ("fault", "resolved"),
    [
        pytest.param("error_applied", True, id="503-with-the-close-filled"),
        pytest.param("timeout_applied", True, id="timeout-with-the-close-filled"),
        pytest.param("error_not_applied", False, id="503-without-the-close"),
    ],
)
def test_a_close_with_an_unknown_outcome_is_resolved_and_never_sent_twice(
    venue: Venue, trading: BinanceTrading, fault: str, resolved: bool
) -> None:
    open_protected_long(trading)
    if fault == "error_applied":
        venue.faults.rest_error("/fapi/v1/order", status=503, apply=True)
    elif fault == "timeout_applied":
        venue.faults.rest_timeout("/fapi/v1/order", sleep_s=4.0, apply=True)
    else:
        venue.faults.rest_error("/fapi/v1/order", status=503, apply=False)

    report = cancel_all_and_flatten(trading, client_id_prefix=PREFIX, pause_s=0.05)

    assert_flat(venue, report)
    close_id = client_id(f"{PREFIX}:{BTC}:BOTH:0", "close")
    assert [o.client_order_id for o in venue.reduce_only_orders()] == [close_id]  # the same id, once
    assert [(c.client_order_id, c.executed_quantity, c.resolved) for c in report.closed] == [
        (close_id, Decimal("0.003"), resolved)
    ]
    assert any("outcome unknown" in e for e in report.errors)
    assert report.rounds == (1 if resolved else 2)


@pytest.mark.parametrize("applied", [True, False], ids=["cancelled-late", "not-cancelled"])
def test_a_cancel_that_times_out_still_ends_clean(
    venue: Venue, trading: BinanceTrading, applied: bool
) -> None:
    open_protected_long(trading)
    venue.faults.rest_timeout("/fapi/v1/algoOpenOrders", sleep_s=4.0, apply=applied)

    report = cancel_all_and_flatten(trading, client_id_prefix=PREFIX, pause_s=0.05)

    assert_flat(venue, report)
    assert report.rounds == (1 if applied else 2)  # a cancel carried out late needs no second round
    assert any("algo order of BTCUSDT" in e and "outcome unknown" in e for e in report.errors)
    assert venue.faults.stats()["rest"]["timeouts"] == 1  # the held cancel; the second one answered
    assert {c.client_id for c in report.cancelled} == {client_id("d1", "sl"), client_id("d1", "tp")}


def test_what_cannot_be_closed_is_reported_as_left(venue: Venue, trading: BinanceTrading) -> None:
    open_protected_long(trading)
    venue.faults.rest_error("/fapi/v1/order", n=50, status=503, apply=False)  # closes and their queries
    report = cancel_all_and_flatten(trading, client_id_prefix=PREFIX, max_attempts=2, pause_s=0.05)
    assert not report.clean and report.verified
    (left,) = report.left
    assert left.symbol == BTC and left.position_quantity == Decimal("0.003")
    assert left.open_algo_orders == () and left.unresolved_closes == (
        client_id(f"{PREFIX}:{BTC}:BOTH:0", "close"),
    )
    assert venue.position() == Decimal("0.003") and venue.reduce_only_orders() == []
    assert "NOT verified flat" in report.lines()[-1]
