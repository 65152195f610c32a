"""Protected entries (``exchange.binance.protected``) through the real signed client against the replay
venue's paper broker on loopback, with the venue's fault hooks producing the failures.

Every scenario ends with the venue's own record checked: one order per client id (no duplicate), the
position either protected by an SL and a TP of its size or flat, no algo order resting on a flat
position, and the time naked within the bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from venue_fixtures import (
    ASK,
    BTC,
    MARK,
    WallClockVenue,
    running_venue,
    signed_client,
    started,
)
from venue_fixtures import exchange_info as exchange_info

from exchange.binance.orders import client_id
from exchange.binance.protected import (
    EntryPlan,
    Outcome,
    ProtectedEntry,
    cancel_sibling,
    enter_protected,
)
from exchange.binance.trading import BinanceTrading

KEY = "protected-test-key"
SECRET = "protected-test-secret-4c1d"
NAKED_BOUND_MS = 1_000.0
D = Decimal


class Venue(WallClockVenue):
    def orders_of(self, cid: str) -> list[Any]:
        return [o for o in self.broker.orders.values() if o.client_order_id == cid]

    def algos_of(self, cid: str) -> list[Any]:
        return [a for a in self.broker.algos.values() if a.client_algo_id == cid]

    def open_algos(self) -> list[Any]:
        return [a for a in self.broker.algos.values() if a.status == "NEW"]

    def position(self) -> Decimal:
        return Decimal(self.broker.positions[BTC].amount) if BTC in self.broker.positions else D(0)


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[Venue]:
    with running_venue(exchange_info, tmp_path / "lake", key=KEY, secret=SECRET, cls=Venue) as venue:
        yield venue


@pytest.fixture
def client(venue: Venue) -> Iterator[BinanceTrading]:
    settings = {"recv_window_ms": 1_000, "timeout_s": 0.5, "backoff_s": 0.0, "sync_clock": False}
    yield from started(signed_client(venue.url, KEY, SECRET, **settings))


def plan(
    key: str = "d1", *, side: str = "LONG", stop: float = 59_400.0, take_profit: float = 60_600.0
) -> EntryPlan:
    return EntryPlan(key, BTC, side, D("0.003"), D(str(stop)), D(str(take_profit)), D(str(MARK)))  # type: ignore[arg-type]


def assert_safe(venue: Venue, result: ProtectedEntry) -> None:
    """The venue's own record: no duplicate, protected or flat, no orphan, naked within the bound."""
    key = result.plan.decision_key
    for role in ("entry", "close"):
        assert len(venue.orders_of(client_id(key, role))) <= 1, f"duplicate {role} order"
    for role in ("sl", "tp"):
        assert len(venue.algos_of(client_id(key, role))) <= 1, f"duplicate {role} algo order"  # type: ignore[arg-type]
    position = venue.position()
    resting = venue.open_algos()
    if result.outcome is Outcome.PROTECTED:
        assert position == result.filled_qty > 0
        kinds = sorted(a.order_type for a in resting)
        assert kinds == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
        assert all(D(a.quantity) == result.filled_qty for a in resting)
    else:
        assert position == 0 and resting == [], f"position {position}, resting {resting}"
    assert result.naked_ms <= NAKED_BOUND_MS


def test_a_plain_entry_is_protected_by_an_sl_and_a_tp_of_its_fill(
    venue: Venue, client: BinanceTrading
) -> None:
    result = enter_protected(client, plan())
    assert result.outcome is Outcome.PROTECTED and result.filled_qty == D("0.003") and not result.events
    assert result.avg_price >= D(str(ASK))  # the ask, and the paper book's slippage
    assert result.stop is not None and result.stop.triggerPrice == D("59400.0")
    assert result.stop.workingType == "MARK_PRICE" and result.stop.reduceOnly
    assert result.take_profit is not None and result.take_profit.orderType == "TAKE_PROFIT_MARKET"
    assert result.protected_ms is not None and result.protected_ms >= (result.entry_ack_ms or 0.0)
    assert_safe(venue, result)


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(
            lambda v: v.faults.rest_timeout("/fapi/v1/order", sleep_s=1.5, apply=True), id="timeout"
        ),
        pytest.param(
            lambda v: v.faults.rest_error("/fapi/v1/order", status=503, apply=True), id="5xx-then-filled"
        ),
        pytest.param(
            lambda v: v.faults.rest_error("/fapi/v1/order", status=503, apply=False), id="5xx-not-placed"
        ),
    ],
)
def test_an_entry_of_unknown_outcome_is_queried_and_entered_once(
    venue: Venue, client: BinanceTrading, inject: Callable[[Venue], None]
) -> None:
    inject(venue)
    result = enter_protected(client, plan())
    assert result.outcome is Outcome.PROTECTED
    assert len(venue.orders_of(client_id("d1", "entry"))) == 1
    assert_safe(venue, result)


@pytest.mark.parametrize(
    ("kwargs", "reject"),
    [
        pytest.param({"stop": 60_100.0}, None, id="sl-2021-would-trigger"),
        pytest.param({"take_profit": 59_900.0}, None, id="tp-2021-would-trigger"),
        pytest.param({}, (-4045, "Reach max stop order limit."), id="sl-refused-cap"),
    ],
)
def test_a_refused_protection_closes_the_position_at_once(
    venue: Venue, client: BinanceTrading, kwargs: dict[str, Any], reject: tuple[int, str] | None
) -> None:
    if reject is not None:
        venue.faults.reject_order(*reject, kind="algo")
    result = enter_protected(client, plan(**kwargs))
    assert result.outcome is Outcome.FLATTENED
    assert [e.kind for e in result.events] == ["protection_failed", "naked_closed"]
    assert result.close is not None and result.close.status == "FILLED" and result.close.reduceOnly
    assert_safe(venue, result)


def test_a_refused_take_profit_also_cancels_the_stop_already_placed(
    venue: Venue, client: BinanceTrading
) -> None:
    result = enter_protected(client, plan(take_profit=59_950.0))
    assert result.outcome is Outcome.FLATTENED and result.stop is not None
    assert [a.status for a in venue.algos_of(client_id("d1", "sl"))] == ["CANCELED"]
    assert_safe(venue, result)


def test_a_close_whose_answer_is_lost_is_not_sent_twice(venue: Venue, client: BinanceTrading) -> None:
    venue.faults.reject_order(-4045, "Reach max stop order limit.", kind="algo")
    real_close = client.close_position

    def close_with_fault(*args: Any, **kwargs: Any) -> Any:  # arms the venue's 503 as the close leaves
        if not venue.orders_of(client_id("d3", "close")):
            venue.faults.rest_error("/fapi/v1/order", status=503, apply=True)
        return real_close(*args, **kwargs)

    client.close_position = close_with_fault  # type: ignore[method-assign]
    result = enter_protected(client, plan("d3"))
    assert result.outcome is Outcome.FLATTENED
    assert len(venue.orders_of(client_id("d3", "close"))) == 1 and result.close is not None
    assert_safe(venue, result)


def test_a_protection_whose_answer_is_lost_is_found_at_once(venue: Venue, client: BinanceTrading) -> None:
    venue.faults.rest_error("/fapi/v1/algoOrder", status=502, apply=True)
    result = enter_protected(client, plan())
    assert result.outcome is Outcome.PROTECTED and result.naked_ms < 500
    assert_safe(venue, result)


def test_a_lost_protection_that_never_landed_flattens_within_the_bound(
    venue: Venue, client: BinanceTrading
) -> None:
    venue.faults.rest_error("/fapi/v1/algoOrder", status=503, apply=False)
    result = enter_protected(client, plan())
    assert result.outcome is Outcome.FLATTENED
    assert_safe(venue, result)


def test_when_the_take_profit_fills_the_stop_is_cancelled(venue: Venue, client: BinanceTrading) -> None:
    result = enter_protected(client, plan())
    assert result.outcome is Outcome.PROTECTED
    venue.quote(60_700.0, 60_700.1, 60_700.0)  # the mark passes the TP: the venue triggers it
    assert venue.position() == 0
    assert cancel_sibling(client, BTC, "d1", "tp")
    assert [a.status for a in venue.algos_of(client_id("d1", "sl"))] == ["CANCELED"]
    assert venue.open_algos() == []
    assert cancel_sibling(client, BTC, "d1", "tp")  # again: already gone counts as cancelled


def test_a_refused_entry_leaves_nothing(venue: Venue, client: BinanceTrading) -> None:
    venue.faults.reject_order(-2019, "Margin is insufficient.", kind="order")
    result = enter_protected(client, plan())
    assert result.outcome is Outcome.REJECTED and result.filled_qty == 0
    assert venue.position() == 0 and venue.open_algos() == []
