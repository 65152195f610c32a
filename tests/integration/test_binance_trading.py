"""The signed trading client (``exchange.binance.trading``) against the replay venue's paper broker on loopback.

No mocks: the client speaks HTTP to a real aiohttp server whose broker checks signatures, timestamps
and filters as Binance does, and whose fault hooks (``Faults``) produce the unknown outcomes. The
venue's clock here is the wall clock (shiftable), so ``/fapi/v1/time`` and the signature check agree
as on Binance; BTCUSDT has its real 2025-12 filters (tick 0.1, step 0.001, MIN_NOTIONAL 100).
"""

from __future__ import annotations

import logging
import pickle
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from venue_fixtures import BTC, MARK, Clock, WallClockVenue, serve_venue, signed_client, started
from venue_fixtures import exchange_info as exchange_info

from core.errors import RejectedError, UnreachableError
from exchange.binance.payloads import AlgoOrderResponse
from exchange.binance.trading import (
    Absent,
    AccountModeError,
    BinanceRejection,
    BinanceTrading,
    Found,
    OrderOutcomeUnknown,
    RateLimitedError,
    client_id,
)
from exchange.venue import BackgroundServer, Faults
from exchange.venue.state import STATE

KEY = "trading-test-key"
SECRET = "trading-test-secret-b7f3c9"


@dataclass
class Venue(WallClockVenue):
    rate: Clock
    events: list[dict[str, Any]] = field(default_factory=list)

    def requests(self, path: str) -> int:
        return int(self.server.app[STATE].requests.get(path, 0))

    def orders_of(self, client_order_id: str) -> list[Any]:
        return [o for o in self.broker.orders.values() if o.client_order_id == client_order_id]

    def algos_of(self, client_algo_id: str) -> list[Any]:
        return [a for a in self.broker.algos.values() if a.client_algo_id == client_algo_id]


@pytest.fixture
def make_venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[Callable[..., Venue]]:
    servers: list[BackgroundServer] = []

    def make(weight_limit_1m: int | None = None) -> Venue:
        wall, rate, faults = Clock(), Clock(), Faults()
        events: list[dict[str, Any]] = []
        server, broker = serve_venue(exchange_info, tmp_path / "lake", wall, events.append, key=KEY,
                                     secret=SECRET, faults=faults, weight_limit_1m=weight_limit_1m,
                                     rate_clock_ms=rate)  # fmt: skip
        servers.append(server)
        venue = Venue(server.start(), server, broker, faults, wall, rate, events)
        venue.quote()
        return venue

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def venue(make_venue: Callable[..., Venue]) -> Venue:
    return make_venue()


def _client(
    venue: Venue, secret: str = SECRET, *, sleep: Callable[[float], None] | None = None,
    wall_clock_ms: Callable[[], int] | None = None, **overrides: Any,
) -> BinanceTrading:  # fmt: skip
    settings: dict[str, Any] = {"recv_window_ms": 1_000, "timeout_s": 2.0, "backoff_s": 0.0} | overrides
    return signed_client(venue.url, KEY, secret, sleep=sleep, wall_clock_ms=wall_clock_ms, **settings)


@pytest.fixture
def client(venue: Venue) -> Iterator[BinanceTrading]:
    yield from started(_client(venue))


# Signing, start-up ---------------------------------------------------------------------------------
def test_signed_request_is_accepted_and_a_wrong_secret_is_rejected_with_1022(venue: Venue) -> None:
    with _client(venue) as good:
        assert [b.asset for b in good.balances()] == ["USDT"]
    with _client(venue, secret="not-the-secret") as bad, pytest.raises(BinanceRejection) as info:
        bad.balances()
    assert info.value.code == -1022 and info.value.http_status == 400
    assert isinstance(info.value, RejectedError)


def test_start_syncs_the_clock_and_leverage_and_margin_are_set_once_per_symbol(
    venue: Venue, client: BinanceTrading
) -> None:
    assert abs(client.http.clock_offset_ms) < 200
    assert client.modes is not None and not client.modes.hedge_mode
    assert client.filters(BTC).tick_size == 0.1
    for _ in range(3):
        client.prepare_symbol(BTC, 5)  # the venue answers ISOLATED with -4046 "no need to change"
    assert (venue.requests("/fapi/v1/leverage"), venue.requests("/fapi/v1/marginType")) == (1, 1)
    assert venue.broker.positions[BTC].leverage == 5
    client.prepare_symbol(BTC, 7)
    assert (venue.requests("/fapi/v1/leverage"), venue.requests("/fapi/v1/marginType")) == (2, 1)


def test_hedge_mode_and_multi_assets_mode_are_refused_at_start_up_naming_each(venue: Venue) -> None:
    with _client(venue) as setup:
        for path, name in (("/fapi/v1/positionSide/dual", "dualSidePosition"),
                           ("/fapi/v1/multiAssetsMargin", "multiAssetsMargin")):  # fmt: skip
            setup.http.call("POST", path, {name: "true"}, action="write")
    with _client(venue) as trading, pytest.raises(AccountModeError) as info:
        trading.start()
    assert "hedge mode" in str(info.value) and "Multi-Assets mode" in str(info.value)
    allowed = _client(venue, allow_hedge_mode=True, allow_multi_assets_mode=True, margin_type="CROSSED")
    assert allowed.start().hedge_mode


def test_venue_account_modes_follow_binance(venue: Venue, client: BinanceTrading) -> None:
    dual = "/fapi/v1/positionSide/dual"
    with pytest.raises(BinanceRejection) as same:
        client.http.call("POST", dual, {"dualSidePosition": "false"}, action="write")
    client.place_entry(BTC, "BUY", "0.002", "held", mark_price=MARK)
    with pytest.raises(BinanceRejection) as with_position:
        client.http.call("POST", dual, {"dualSidePosition": "true"}, action="write")
    client.close_position(BTC, "SELL", "0.002", "flat")
    client.http.call("POST", dual, {"dualSidePosition": "true"}, action="write")
    with pytest.raises(BinanceRejection) as in_hedge:
        client.place_entry(BTC, "BUY", "0.002", "refused", mark_price=MARK)
    assert (same.value.code, with_position.value.code, in_hedge.value.code) == (-4059, -4068, -4061)
    assert client.account_modes().hedge_mode and venue.orders_of("refused") == []


# Orders ---------------------------------------------------------------------------------------------
def test_entry_stop_and_take_profit_are_rounded_and_sent_as_plain_decimals(
    venue: Venue, client: BinanceTrading
) -> None:
    entry = client.place_entry(BTC, "BUY", 0.0037, client_id("d1"), mark_price=MARK)
    assert (entry.status, entry.executedQty, entry.clientOrderId) == (
        "FILLED",
        Decimal("0.003"),
        client_id("d1"),
    )
    [order] = venue.orders_of(client_id("d1"))
    assert order.orig_qty == Decimal("0.003") and not order.reduce_only
    price = entry.avgPrice  # 60000.1 plus slippage: the stop rounds up, the target down, toward it
    stop = client.place_protection(
        BTC, "SL", "LONG", 58_999.97, price, client_id("d1", "sl"), entry.executedQty
    )
    target = client.place_protection(BTC, "TP", "LONG", 62_000.06, price, client_id("d1", "tp"))
    [sl], [tp] = venue.algos_of(client_id("d1", "sl")), venue.algos_of(client_id("d1", "tp"))
    assert (str(sl.trigger_price), str(tp.trigger_price)) == ("59000.0", "62000.0")  # as on the wire
    assert (sl.order_type, sl.side, sl.working_type, sl.price_protect) == (
        "STOP_MARKET",
        "SELL",
        "MARK_PRICE",
        True,
    )
    assert (sl.reduce_only, sl.close_position, sl.quantity) == (True, False, Decimal("0.003"))
    assert (tp.order_type, tp.close_position, tp.reduce_only) == ("TAKE_PROFIT_MARKET", True, False)
    assert (stop.algoStatus, target.algoStatus, stop.triggerPrice) == ("NEW", "NEW", Decimal("59000.0"))
    short = client.place_entry(BTC, "SELL", 0.01, "short", mark_price=MARK)  # flips to a 0.007 short
    client.place_protection(BTC, "SL", "SHORT", 61_000.07, short.avgPrice, "short-sl", "0.007")
    client.place_protection(BTC, "TP", "SHORT", 58_000.01, short.avgPrice, "short-tp", "0.007")
    assert str(venue.algos_of("short-sl")[0].trigger_price) == "61000.0"  # down, toward the entry
    assert str(venue.algos_of("short-tp")[0].trigger_price) == "58000.1"  # up, toward the entry
    usage = client.usage
    assert usage.used_weight_1m is not None and (usage.order_count_10s, usage.order_count_1m) == (6, 6)


def test_placing_the_same_client_ids_again_returns_the_orders_without_duplicates(
    venue: Venue, client: BinanceTrading
) -> None:
    first = client.place_entry(BTC, "BUY", "0.002", "same-entry", mark_price=MARK)
    stop = client.place_protection(BTC, "SL", "LONG", 59_000, first.avgPrice, "same-sl", "0.002")
    again = client.place_entry(BTC, "BUY", "0.002", "same-entry", mark_price=MARK)
    stop_again = client.place_protection(BTC, "SL", "LONG", 59_000, first.avgPrice, "same-sl", "0.002")
    assert (again.orderId, stop_again.algoId) == (first.orderId, stop.algoId)
    assert len(venue.orders_of("same-entry")) == 1 and len(venue.algos_of("same-sl")) == 1
    assert venue.requests("/fapi/v1/order") == 2  # one POST, one query
    with _client(venue) as restarted:  # a new process has no memory: the ledger resolves its ids
        found = restarted.resolve_unknown(BTC, "same-entry")
        assert isinstance(found, Found) and found.source == "order" and found.order.orderId == first.orderId
        assert isinstance(restarted.resolve_unknown(BTC, "same-sl"), Found)
        assert isinstance(restarted.resolve_unknown(BTC, "never-sent"), Absent)


def _timeout(applied: bool) -> Callable[[Venue], None]:
    return lambda v: v.faults.rest_timeout("/fapi/v1/order", sleep_s=4, apply=applied)


def _error(applied: bool, status: int = 500, code: int = -1000) -> Callable[[Venue], None]:
    return lambda v: v.faults.rest_error("/fapi/v1/order", status=status, code=code, msg="x", apply=applied)


@pytest.mark.parametrize(
    ("inject", "placed"),
    [
        (_timeout(True), True),  # the answer comes after the client gave up; the order exists
        (_timeout(False), False),
        (_error(False), False),  # HTTP 500 "Unknown error"
        (_error(True), True),  # HTTP 500, yet the order was placed
        (_error(True, 503, -1006), True),  # "unexpected response from the message bus", placed
        (lambda v: v.faults.reject_order(-1006, "Unexpected response"), False),  # 503 -1006, not placed
        (_error(False, 503, -1007), False),  # "timeout waiting for response from backend server"
        (lambda v: v.faults.rest_reset("/fapi/v1/order"), True),  # connection reset after sending
    ],
    ids=[
        "timeout-placed",
        "timeout-lost",
        "500-lost",
        "500-placed",
        "1006-placed",
        "1006-lost",
        "1007-lost",
        "reset-placed",
    ],  # fmt: skip
)
def test_unknown_outcome_is_resolved_by_client_id_and_never_duplicated(
    venue: Venue, client: BinanceTrading, inject: Callable[[Venue], None], placed: bool
) -> None:
    inject(venue)
    cid = client_id("unknown")
    with pytest.raises(OrderOutcomeUnknown) as info:
        client.place_entry(BTC, "BUY", "0.002", cid, mark_price=MARK)
    assert not isinstance(info.value, RejectedError) and info.value.client_id == cid
    resolution = client.resolve_unknown(BTC, cid, kind="order", not_before_ms=info.value.settled_after_ms)
    assert isinstance(resolution, Found) == placed
    order = client.place_entry(BTC, "BUY", "0.002", cid, mark_price=MARK)  # the caller's retry
    assert order.status == "FILLED" and len(venue.orders_of(cid)) == 1
    assert venue.broker.positions[BTC].amount == Decimal("0.002")


def test_unknown_protection_order_is_found_through_the_algo_queries(
    venue: Venue, client: BinanceTrading
) -> None:
    client.place_entry(BTC, "BUY", "0.002", "protected", mark_price=MARK)
    venue.faults.rest_error("/fapi/v1/algoOrder", status=502, apply=True)
    with pytest.raises(OrderOutcomeUnknown) as info:
        client.place_protection(BTC, "SL", "LONG", 59_000, 60_000, "lost-ack-sl", "0.002")
    resolution = client.resolve_unknown(BTC, "lost-ack-sl", not_before_ms=info.value.settled_after_ms)
    assert isinstance(resolution, Found) and resolution.source == "algoOrder"
    client.cancel_algo_order("lost-ack-sl", BTC)
    found = client.resolve_unknown(BTC, "lost-ack-sl", kind="algo")  # a finished algo order is still found
    assert isinstance(found, Found) and isinstance(found.order, AlgoOrderResponse)
    assert found.order.algoStatus == "CANCELED"
    assert len(venue.algos_of("lost-ack-sl")) == 1


def test_rejections_carry_binance_codes_and_free_the_client_id(venue: Venue, client: BinanceTrading) -> None:
    entry = client.place_entry(BTC, "BUY", "0.002", "rejections", mark_price=MARK)
    with pytest.raises(BinanceRejection) as immediate:  # a long's stop above the mark
        client.place_protection(BTC, "SL", "LONG", 60_500, entry.avgPrice, "bad-sl", "0.002")
    stop = client.place_protection(BTC, "SL", "LONG", 59_500, entry.avgPrice, "bad-sl", "0.002")  # not a dup
    venue.faults.reject_order(-4164, "Order's notional must be no smaller than 100")
    with pytest.raises(BinanceRejection) as notional:
        client.place_entry(BTC, "BUY", "0.002", "small", mark_price=MARK)
    with pytest.raises(BinanceRejection) as missing:
        client.get_order(BTC, "no-such-order")
    assert (immediate.value.code, notional.value.code, missing.value.code) == (-2021, -4164, -2013)
    assert "would immediately trigger" in immediate.value.msg and stop.algoStatus == "NEW"


def test_orders_and_algo_orders_are_queried_by_client_id_or_by_venue_id_exactly_one(
    venue: Venue, client: BinanceTrading
) -> None:
    entry = client.place_entry(BTC, "BUY", "0.002", "by-id-entry", mark_price=MARK)
    stop = client.place_protection(BTC, "SL", "LONG", 59_000, entry.avgPrice, "by-id-sl", "0.002")
    by_client, by_id = client.get_order(BTC, "by-id-entry"), client.get_order(BTC, order_id=entry.orderId)
    assert by_client == by_id and (by_id.orderId, by_id.clientOrderId) == (entry.orderId, "by-id-entry")
    algo_by_client, algo_by_id = client.get_algo_order("by-id-sl"), client.get_algo_order(algo_id=stop.algoId)
    assert algo_by_client == algo_by_id and (algo_by_id.algoId, algo_by_id.clientAlgoId) == (
        stop.algoId,
        "by-id-sl",
    )
    for missing in (
        lambda: client.get_order(BTC, order_id=entry.orderId + 1_000),
        lambda: client.get_algo_order(algo_id=stop.algoId + 1_000),
        lambda: client.get_algo_order("no-such-algo"),
    ):
        with pytest.raises(BinanceRejection) as info:
            missing()
        assert info.value.code == -2013
    sent = venue.requests("/fapi/v1/order") + venue.requests("/fapi/v1/algoOrder")
    for wrong, problem in (
        (lambda: client.get_order(BTC), "neither was given"),
        (
            lambda: client.get_order(BTC, "by-id-entry", order_id=entry.orderId),
            "got client_order_id and order_id",
        ),
        (lambda: client.get_order(BTC, ""), "client_order_id must be a non-empty id"),
        (lambda: client.get_order(BTC, order_id=0), "order_id must be a positive integer"),
        (lambda: client.get_algo_order(), "exactly one of client_algo_id or algo_id; neither"),
        (lambda: client.get_algo_order("by-id-sl", algo_id=stop.algoId), "got client_algo_id and algo_id"),
        (lambda: client.get_algo_order(algo_id=-5), "algo_id must be a positive integer"),
    ):
        with pytest.raises(ValueError, match=problem):
            wrong()
    assert venue.requests("/fapi/v1/order") + venue.requests("/fapi/v1/algoOrder") == sent  # nothing sent


def test_queries_cancels_and_fill_backfill(venue: Venue, client: BinanceTrading) -> None:
    entry = client.place_entry(BTC, "SELL", "0.004", "q-entry", mark_price=MARK)
    client.place_protection(BTC, "SL", "SHORT", 61_000, entry.avgPrice, "q-sl", "0.004")
    client.place_protection(BTC, "TP", "SHORT", 59_000, entry.avgPrice, "q-tp", "0.004")
    assert {a.clientAlgoId for a in client.open_algo_orders(BTC)} == {"q-sl", "q-tp"}
    [position] = client.positions(BTC)
    assert position.positionAmt == Decimal("-0.004") and position.to_update().qty == -0.004
    client.cancel_algo_order("q-tp", BTC)
    assert [a.clientAlgoId for a in client.open_algo_orders()] == ["q-sl"]
    client.cancel_all_algo_orders(BTC)
    client.cancel_all_orders(BTC)
    assert client.open_algo_orders(BTC) == [] and client.open_orders(BTC) == []
    assert [a.algoStatus for a in client.all_algo_orders(BTC)] == ["CANCELED", "CANCELED"]
    client.close_position(BTC, "BUY", "0.004", "q-close")
    trades = client.user_trades(BTC)
    assert [t.side for t in trades] == ["SELL", "BUY"] and trades[0].orderId == entry.orderId
    fill = trades[0].to_fill("q-entry")
    assert fill.client_order_id == "q-entry" and fill.qty == 0.004
    assert client.user_trades(BTC, from_id=trades[1].id) == trades[1:]
    assert client.positions(BTC) == [] and client.mark_price(BTC) == Decimal("60000.0")
    with pytest.raises(BinanceRejection) as gone:
        client.cancel_order(BTC, "q-entry")  # filled: nothing to cancel
    assert gone.value.code == -2011


# Clock, rate limits, transport ---------------------------------------------------------------------
def test_clock_skew_1021_resyncs_the_clock_and_retries_once(venue: Venue, client: BinanceTrading) -> None:
    venue.wall.shift_ms = 4_000  # the venue's clock runs 4 s ahead: our timestamps fall out of recvWindow
    times = venue.requests("/fapi/v1/time")
    entry = client.place_entry(BTC, "BUY", "0.002", "skewed", mark_price=MARK)
    assert entry.status == "FILLED" and len(venue.orders_of("skewed")) == 1
    assert venue.requests("/fapi/v1/time") == times + 1 and abs(client.http.clock_offset_ms - 4_000) < 300
    venue.wall.shift_ms = -4_000  # now 4 s behind: without syncing, the retry fails the same way
    with _client(venue, sync_clock=False) as unsynced, pytest.raises(BinanceRejection) as info:
        unsynced.balances()
    assert info.value.code == -1021 and venue.requests("/fapi/v1/time") == times + 1


def _to_second_of_minute(ms: int) -> int:
    """The shift that puts the wall clock ``ms`` into its minute now."""
    return ms - int(time.time() * 1000) % 60_000


def test_429_waits_for_a_short_retry_after_and_refuses_to_send_during_a_long_one(
    make_venue: Callable[..., Venue],
) -> None:
    venue = make_venue(weight_limit_1m=12)
    slept: list[float] = []
    ours = Clock()
    venue.rate.shift_ms = _to_second_of_minute(59_000)  # the venue's rate window: 1 s before the next

    def sleep(seconds: float) -> None:  # time passes for the venue and the client, not for the test
        slept.append(seconds)
        for clock in (venue.rate, venue.wall, ours):
            clock.shift_ms += int(seconds * 1000)

    with _client(venue, sleep=sleep, wall_clock_ms=ours, sync_clock=False) as trading:
        for _ in range(3):
            trading.positions(BTC)  # weight 5 each: the third is answered 429, Retry-After 1
        assert slept == [1.0] and venue.requests("/fapi/v3/positionRisk") == 3
        sleep(5.0)  # early in the next minute, 5 of 12 used: a 429 now asks for ~55 s
        trading.positions(BTC)
        with pytest.raises(RateLimitedError) as info:
            trading.positions(BTC)
        assert 50 <= info.value.retry_after_s <= 60 and trading.usage.backoff_until_ms > 0
        served = venue.requests("/fapi/v3/positionRisk")
        with pytest.raises(RateLimitedError, match="not sent"):
            trading.positions(BTC)
        assert venue.requests("/fapi/v3/positionRisk") == served  # nothing sent during the back-off


def test_own_weight_budget_is_respected_before_binance_says_429(venue: Venue) -> None:
    ours = Clock(_to_second_of_minute(1_000))  # all requests within one minute, on both sides
    venue.wall.shift_ms = venue.rate.shift_ms = ours.shift_ms
    with _client(
        venue, wall_clock_ms=ours, weight_limit_1m=10, max_rate_wait_s=0, sync_clock=False
    ) as trading:
        trading.positions(BTC)
        trading.positions(BTC)  # the header now shows 10 of 10
        with pytest.raises(RateLimitedError, match="not sent"):
            trading.positions(BTC)
    assert venue.requests("/fapi/v3/positionRisk") == 2


def test_unreachable_venue_is_not_an_unknown_outcome(venue: Venue) -> None:
    trading = _client(venue)
    trading.start()
    venue.server.stop()
    with pytest.raises(UnreachableError) as info:  # nothing was sent: no outcome to resolve
        trading.place_entry(BTC, "BUY", "0.002", "never-sent", mark_price=MARK)
    assert not isinstance(info.value, OrderOutcomeUnknown)


def test_the_secret_appears_in_no_log_error_or_repr(venue: Venue, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[str] = []
    with _client(venue) as trading:
        trading.start()
        venue.faults.rest_error("/fapi/v1/order")
        for call in (lambda: trading.place_entry(BTC, "BUY", "0.002", "s1", mark_price=MARK),
                     lambda: _client(venue, secret=SECRET + "x").balances()):  # fmt: skip
            with pytest.raises(Exception) as info:
                call()
            shown += [str(info.value), repr(info.value), str(pickle.loads(pickle.dumps(info.value)))]
        shown += [repr(trading), repr(trading.http), repr(trading.config), str(trading.config.model_dump())]
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("exchange."))
    assert "/fapi/v1/order" in ours and SECRET not in caplog.text  # urllib3's DEBUG lines included
    for text in [ours, *shown]:  # urllib3 logs signed URLs at DEBUG: the log filter redacts signature=
        assert SECRET not in text and "signature=" not in text and not re.search("[0-9a-f]{64}", text)


def test_venue_admin_route_switches_the_new_rest_faults(venue: Venue) -> None:
    admin = f"{venue.url}/_venue/faults"
    assert requests.post(admin, json={"fault": "rest_reset", "prefix": "/fapi/v1/ping"}, timeout=5).ok
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{venue.url}/fapi/v1/ping", timeout=5)
    body = {"fault": "rest_error", "prefix": "/fapi/v1/order", "apply": True, "status": 503, "code": -1006}
    assert requests.post(admin, json=body, timeout=5).ok
    with _client(venue) as trading, pytest.raises(OrderOutcomeUnknown, match="-1006"):
        trading.start()
        trading.place_entry(BTC, "BUY", "0.002", "admin", mark_price=MARK)
    assert len(venue.orders_of("admin")) == 1 and venue.faults.stats()["rest"] == {
        "errors": 1,
        "timeouts": 0,
        "resets": 1,
    }
