"""The replay venue's "acknowledged but invisible" algo orders (``Faults.hide_algo_orders``), through the
real signed client (``exchange.binance.trading.BinanceTrading``) on loopback.

Binance's algo service can acknowledge a conditional order whose queries then answer -2013 "Order does
not exist." for a while. The fault reproduces that: the order is placed, acknowledged, resting and
triggering as usual, yet ``GET /fapi/v1/algoOrder`` (by clientAlgoId or algoId), ``openAlgoOrders``
and ``allAlgoOrders`` do not show it until the venue clock has moved on by the fault's seconds. The
venue clock is the shiftable wall clock, shared with the client, so a test moves it instead of waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from venue_fixtures import BTC, MARK, WallClockVenue, running_venue, signed_client
from venue_fixtures import exchange_info as exchange_info

from exchange.binance.trading import BinanceRejection, BinanceTrading
from exchange.venue import Faults

KEY = "hidden-algo-test-key"
SECRET = "hidden-algo-test-secret-91c2"


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[WallClockVenue]:
    with running_venue(exchange_info, tmp_path / "lake", key=KEY, secret=SECRET) as venue:
        yield venue


@pytest.fixture
def client(venue: WallClockVenue) -> Iterator[BinanceTrading]:
    trading = signed_client(venue.url, KEY, SECRET, wall_clock_ms=venue.wall, sync_clock=False,
                            recv_window_ms=1_000, timeout_s=2.0, backoff_s=0.0)  # fmt: skip
    trading.start()
    yield trading
    trading.close()


def _missing_code(query: Any) -> int:
    with pytest.raises(BinanceRejection) as info:
        query()
    return info.value.code


def _visible(client: BinanceTrading) -> tuple[set[str], set[str]]:
    """Client algo ids in openAlgoOrders and in allAlgoOrders."""
    return {a.clientAlgoId for a in client.open_algo_orders(BTC)}, {
        a.clientAlgoId for a in client.all_algo_orders(BTC)
    }


def test_hidden_algo_order_is_acknowledged_then_answers_2013_and_is_listed_nowhere_until_its_time(
    venue: WallClockVenue, client: BinanceTrading
) -> None:
    entry = client.place_entry(BTC, "BUY", "0.003", "hide-entry", mark_price=MARK)
    price = entry.avgPrice or Decimal(str(MARK))
    venue.faults.hide_algo_orders(60, n=1)
    with pytest.raises(BinanceRejection) as refused:  # a refused order is not placed: it uses no hide
        client.place_protection(BTC, "SL", "LONG", 60_500, price, "hide-bad", "0.003")
    assert refused.value.code == -2021
    stop = client.place_protection(BTC, "SL", "LONG", 58_000, price, "hide-sl", "0.003")
    target = client.place_protection(BTC, "TP", "LONG", 62_000, price, "hide-tp", "0.003")
    assert (stop.algoStatus, stop.clientAlgoId, target.algoStatus) == ("NEW", "hide-sl", "NEW")
    [resting] = [a for a in venue.broker.algos.values() if a.client_algo_id == "hide-sl"]
    assert resting.status == "NEW" and resting.algo_id == stop.algoId  # placed, as acknowledged

    for shift_ms in (0, 59_000):  # hidden at once, and still 59 s after it was placed
        venue.wall.shift_ms += shift_ms
        assert _missing_code(lambda: client.get_algo_order("hide-sl")) == -2013
        assert _missing_code(lambda: client.get_algo_order(algo_id=stop.algoId)) == -2013
        assert _visible(client) == ({"hide-tp"}, {"hide-tp"})
        assert client.get_algo_order("hide-tp").algoStatus == "NEW"  # only the next n=1 is hidden

    venue.wall.shift_ms += 1_000  # 60 s after placing it
    assert client.get_algo_order("hide-sl").algoId == stop.algoId
    assert client.get_algo_order(algo_id=stop.algoId).algoStatus == "NEW"
    assert _visible(client) == ({"hide-sl", "hide-tp"}, {"hide-sl", "hide-tp"})
    venue.faults.hide_algo_orders(30)  # the next one is hidden from its own placement on
    client.place_protection(BTC, "SL", "LONG", 57_000, price, "hide-sl-2", "0.003")
    assert _visible(client) == ({"hide-sl", "hide-tp"}, {"hide-sl", "hide-tp"})
    venue.wall.shift_ms += 30_000
    assert "hide-sl-2" in _visible(client)[0]


def test_hidden_stop_triggers_as_usual_and_shows_its_final_state_once_visible(
    venue: WallClockVenue, client: BinanceTrading
) -> None:
    entry = client.place_entry(BTC, "BUY", "0.003", "trig-entry", mark_price=MARK)
    venue.faults.hide_algo_orders(60)
    stop = client.place_protection(BTC, "SL", "LONG", 59_000, entry.avgPrice or MARK, "trig-sl", "0.003")
    venue.quote(bid=58_900.0, ask=58_900.1, mark=58_900.0)  # through the stop: it fires while hidden
    assert venue.broker.positions[BTC].amount == 0
    [child] = [o for o in venue.broker.orders.values() if o.client_order_id == "trig-sl"]
    assert child.status == "FILLED"
    assert _missing_code(lambda: client.get_algo_order(algo_id=stop.algoId)) == -2013
    assert _visible(client) == (set(), set())
    assert client.get_order(BTC, "trig-sl").status == "FILLED"  # the child order is not hidden
    venue.wall.shift_ms += 60_000
    finished = client.get_algo_order("trig-sl")
    assert (finished.algoStatus, finished.actualOrderId) == ("FINISHED", child.order_id)
    assert _visible(client) == (set(), {"trig-sl"})


def test_hidden_algo_orders_can_be_cancelled_and_the_admin_route_switches_the_fault(
    venue: WallClockVenue, client: BinanceTrading
) -> None:
    entry = client.place_entry(BTC, "BUY", "0.003", "admin-entry", mark_price=MARK)
    price = entry.avgPrice or Decimal(str(MARK))
    admin = f"{venue.url}/_venue/faults"
    answer = requests.post(admin, json={"fault": "hide_algo_orders", "seconds": 20, "n": 2}, timeout=5)
    assert answer.ok, answer.text
    for cid in ("admin-1", "admin-2", "admin-3"):
        client.place_protection(BTC, "SL", "LONG", 58_000, price, cid, "0.001")
    assert _visible(client) == ({"admin-3"}, {"admin-3"})
    client.cancel_algo_order("admin-1", BTC)  # the matching side has it: a cancel reaches it
    assert [a.status for a in venue.broker.algos.values()] == ["CANCELED", "NEW", "NEW"]
    venue.wall.shift_ms += 20_000
    open_ids, all_ids = _visible(client)
    assert (open_ids, all_ids) == ({"admin-2", "admin-3"}, {"admin-1", "admin-2", "admin-3"})
    for bad in ({"fault": "hide_algo_orders", "seconds": 0}, {"fault": "hide_algo_orders", "n": 1}):
        assert requests.post(admin, json=bad, timeout=5).status_code == 400
    with pytest.raises(ValueError, match="seconds"):
        venue.faults.hide_algo_orders(-1)
    with pytest.raises(RuntimeError, match="no paper broker"):
        Faults().hide_algo_orders(10)
