"""The live book with its user data stream (``actors.live_book`` + ``actors.live_stream``) against the replay
venue's paper broker and its ``/private`` WebSocket on loopback, with a real database, no mocks.

Exits on the venue reach the book as they happen: the sibling protection is cancelled from the fill
event, without a reconciliation; the ledger equals the venue's record through duplicated and reordered
events, an expired listenKey and a dropped connection (gaps backfilled, then reconciled); a stream
without messages and pongs beyond the kill switch's bound blocks entries until it is healthy again.
Bounds are small (seconds) so that every test runs in a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from venue_fixtures import BTC, MARK, Clock, WallClockVenue, serve_venue
from venue_fixtures import exchange_info as exchange_info

from actors.live_book import LiveBook, LiveConfig
from core.killswitch import KillSwitchConfig
from core.messages import EntryIntent
from exchange.binance.orders import client_id
from exchange.binance.signed import TradingConfig
from exchange.binance.user_stream import UserStreamConfig
from exchange.venue import Faults
from exchange.venue.streams import StreamHub
from storage.schema import events, risk_events

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

KEY = "live-stream-test-key"
SECRET = "live-stream-test-secret-3c7f"
LISTEN_KEY_PATH = "/fapi/v1/listenKey"
D = Decimal
MINUTE = 60_000
TP_PRICE = 60_700.0  # above the TP at 60,600: the venue triggers it


@dataclass
class Venue(WallClockVenue):
    hub: StreamHub

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/"

    def open_algos(self) -> list[Any]:
        return [a for a in self.broker.algos.values() if a.status == "NEW"]

    def position(self) -> Decimal:
        return D(self.broker.positions[BTC].amount) if BTC in self.broker.positions else D(0)

    def fills(self) -> list[tuple[int, Decimal]]:
        return sorted((f.trade_id, D(f.qty)) for f in self.broker.fills)


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[Venue]:
    wall, faults = Clock(), Faults()
    hub = StreamHub(faults)
    server, broker = serve_venue(exchange_info, tmp_path / "lake", wall, hub.publish_user, key=KEY,
                                 secret=SECRET, faults=faults, hub=hub)  # fmt: skip
    venue = Venue(server.start(), server, broker, faults, wall, hub)
    venue.quote()
    yield venue
    server.stop()


class Monotonic:
    """The book's clock for its periodic reconciliation: frozen, so that only a gap can run one."""

    def __call__(self) -> float:
        return 0.0


def make_book(venue: Venue, engine: sa.Engine, tmp_path: Path, **stream: Any) -> LiveBook:
    trading = TradingConfig(base_url=venue.url, api_key=SecretStr(KEY), api_secret=SecretStr(SECRET),
                            recv_window_ms=1_000, timeout_s=0.5, backoff_s=0.0, sync_clock=False)  # fmt: skip
    settings: dict[str, Any] = {"ws_url": venue.ws_url, "silence_s": 1.0, "ping_interval_s": 0.1,
                                "backoff_base_s": 0.05, "backoff_cap_s": 0.3, "connect_timeout_s": 2.0}  # fmt: skip
    cfg = LiveConfig(
        session_id="live-stream", symbols=(BTC,), database_url=engine.url.render_as_string(False),
        trading=trading, audit_dir=tmp_path / "audit", user_stream=UserStreamConfig(**(settings | stream)),
        killswitch=KillSwitchConfig(user_stream_silence_ms=500, user_stream_closed_ms=300),
    )  # fmt: skip
    live = LiveBook(cfg, monotonic=Monotonic())
    assert live.stream is not None and live.stream.health().connected
    return live


@pytest.fixture
def live(venue: Venue, engine: sa.Engine, tmp_path: Path) -> Iterator[LiveBook]:
    book = make_book(venue, engine, tmp_path)
    yield book
    book.close()


def intent(venue: Venue) -> EntryIntent:
    now = venue.wall()
    decision = now - now % MINUTE - MINUTE  # the bar that closed last: within the entry delay
    return EntryIntent(BTC, decision, 1, 0.02, 3, 59_400.0, 60_600.0, MARK, 50.0, 1e9, 60_000.0, 60_000.1, now,
                       mark=MARK)  # fmt: skip


def poll_until(live: LiveBook, condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> float:
    """Poll the book until ``condition`` holds; return the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"waited {timeout_s} s for {what}; summary {live.summary()}")
        live.poll(0.02)
    return time.monotonic() - start


def enter(live: LiveBook, venue: Venue) -> str:
    (result,) = live.submit([intent(venue)])
    assert result.get("outcome") == "protected" and venue.position() == D("0.003"), result
    return str(result["trade_group_id"])


def ledger_fills_equal_venue(live: LiveBook, venue: Venue) -> bool:
    return sorted((f.trade_id, f.qty) for f in live.store.fills(BTC)) == venue.fills()


def ledger_equals_venue(live: LiveBook, venue: Venue) -> bool:
    """Fills, the position, and every order's and algo order's status as the venue has them."""
    orders = {o.order_id: o.status for o in live.store.orders(BTC)}
    algos = {a.algo_id: a.status for a in live.store.algo_orders(BTC)}
    position = live.store.positions().get(BTC)
    return (
        ledger_fills_equal_venue(live, venue)
        and (D(0) if position is None else position.qty) == venue.position()
        and orders == {o.order_id: o.status for o in venue.broker.orders.values()}
        and algos == {a.algo_id: a.status for a in venue.broker.algos.values()}
    )


def kill_events(engine: sa.Engine) -> list[tuple[str, str | None]]:
    with engine.connect() as c:
        rows = c.execute(sa.select(events.c.kind, events.c.payload).where(events.c.kind.like("killswitch.%")))
        return [(kind, payload["event"].get("reason")) for kind, payload in rows]  # killswitch_store rows


def test_a_take_profit_on_the_venue_cancels_the_stop_from_the_fill_event_without_reconciling(
    live: LiveBook, venue: Venue
) -> None:
    group = enter(live, venue)
    assert live.stats.sync_runs == 1  # the start's; the frozen clock runs no other
    venue.quote(TP_PRICE, TP_PRICE + 0.1, TP_PRICE)  # the venue triggers the TP: the position is gone
    assert venue.position() == 0 and len(venue.open_algos()) == 1  # the SL rests until the book hears
    took_s = poll_until(live, lambda: venue.open_algos() == [], "the SL cancelled")
    assert took_s < 1.0 and live.stats.sibling_cancel_ms and live.stats.sibling_cancel_ms[0] < 1_000.0
    [sl] = [a for a in venue.broker.algos.values() if a.client_algo_id == client_id(group, "sl")]
    assert sl.status == "CANCELED"
    assert live.summary()["open_positions"] == [] and live.stats.stream_exits == 1 and live.stats.exits == 1
    poll_until(live, lambda: ledger_equals_venue(live, venue), "the ledger to equal the venue")
    assert len(venue.fills()) == 2 and live.store.positions()[BTC].qty == 0
    tp_child = next(o for o in live.store.orders(BTC) if o.client_order_id == client_id(group, "tp"))
    [tp] = [a for a in live.store.algo_orders(BTC) if a.client_algo_id == client_id(group, "tp")]
    assert (tp.status, tp.child_order_id, tp_child.parent_algo_id) == (
        "FINISHED",
        tp_child.order_id,
        tp.algo_id,
    )
    assert live.stats.sync_runs == 1 and live.stats.gaps == 0
    (after,) = live.submit([intent(venue)])  # the symbol is free again: no POSITION_OPEN
    assert after["outcome"] == "protected"


def _algo_event(algo: Any, status: str, child: str, ts_ms: int) -> dict[str, Any]:
    return {"e": "ALGO_UPDATE", "T": ts_ms, "E": ts_ms, "o": {
        "caid": algo.client_algo_id, "aid": algo.algo_id, "at": "CONDITIONAL", "o": algo.order_type, "s": BTC,
        "S": algo.side, "ps": "BOTH", "f": "GTC", "q": str(algo.quantity), "X": status, "ai": child, "ap": "0",
        "aq": "0", "act": "0", "tp": str(algo.trigger_price), "p": "0", "V": "NONE", "wt": "MARK_PRICE",
        "pm": "NONE", "cp": False, "pP": True, "R": True, "tt": ts_ms, "gtd": 0, "rm": ""}}  # fmt: skip


def _child_fill(order_id: int, trade_id: int, qty: str, ts_ms: int) -> dict[str, Any]:
    return {"e": "ORDER_TRADE_UPDATE", "T": ts_ms, "E": ts_ms, "o": {
        "s": BTC, "c": "venue-child-id", "S": "SELL", "o": "MARKET", "f": "GTC", "q": qty, "p": "0", "ap": "60600",
        "sp": "60600", "x": "TRADE", "X": "FILLED", "i": order_id, "l": qty, "z": qty, "L": "60600", "N": "USDT",
        "n": "0.07272000", "T": ts_ms, "t": trade_id, "b": "0", "a": "0", "m": False, "R": True, "wt": "MARK_PRICE",
        "ot": "TAKE_PROFIT_MARKET", "ps": "BOTH", "cp": False, "rp": "1.80000000"}}  # fmt: skip


def test_a_child_fill_before_its_link_cancels_the_sibling_once_finished_names_the_child(
    live: LiveBook, venue: Venue
) -> None:
    """ALGO_UPDATE TRIGGERED with an empty ``ai``, then the child's fill under a client id of its own,
    then FINISHED naming the child: the fill is the TP's only once the link arrives."""
    group = enter(live, venue)
    [tp] = [a for a in venue.broker.algos.values() if a.client_algo_id == client_id(group, "tp")]
    t, child = venue.wall(), 990_001
    venue.run(venue.hub.publish_user, _algo_event(tp, "TRIGGERED", "", t))
    venue.run(venue.hub.publish_user, _child_fill(child, 880_001, "0.003", t + 1))
    poll_until(live, lambda: any(f.trade_id == 880_001 for f in live.store.fills(BTC)), "the child's fill")
    assert len(venue.open_algos()) == 2 and live.stats.stream_exits == 0  # not known as the TP's yet
    venue.run(venue.hub.publish_user, _algo_event(tp, "FINISHED", str(child), t + 2))
    poll_until(live, lambda: len(venue.open_algos()) == 1, "the SL cancelled")
    assert [a.client_algo_id for a in venue.open_algos()] == [client_id(group, "tp")]  # the real TP rests
    assert live.stats.stream_exits == 1 and live.entries == {}
    [linked] = [a for a in live.store.algo_orders(BTC) if a.algo_id == tp.algo_id]
    [order] = [o for o in live.store.orders(BTC) if o.order_id == child]
    assert (linked.status, linked.child_order_id, order.parent_algo_id) == ("FINISHED", child, tp.algo_id)


def test_duplicate_and_reordered_user_events_leave_the_ledger_equal_to_the_venue(
    live: LiveBook, venue: Venue
) -> None:
    venue.faults.duplicate("private", 6)  # the entry's NEW, TRADE, ACCOUNT_UPDATE and both protections' NEW
    venue.faults.reorder("private", 3)
    enter(live, venue)
    venue.faults.duplicate("private", 4)  # the trigger's TRIGGERING, TRIGGERED, the child's fill, …
    venue.faults.reorder("private", 4)  # … each pair swapped: the child's fill before TRIGGERED
    venue.quote(TP_PRICE, TP_PRICE + 0.1, TP_PRICE)
    poll_until(live, lambda: venue.open_algos() == [], "the SL cancelled")
    poll_until(live, lambda: ledger_equals_venue(live, venue), "the ledger to equal the venue")
    stats = venue.faults.stats()["private"]
    assert stats["duplicated"] >= 8 and stats["reordered"] >= 5
    assert live.stats.stream_exits == 1 and live.stats.sync_runs == 1
    assert live.stream is not None and live.stream.stream.stats.duplicate_fills >= 1


def test_an_expired_listen_key_mid_trade_is_backfilled_and_reconciled(live: LiveBook, venue: Venue) -> None:
    group = enter(live, venue)
    poll_until(live, lambda: ledger_fills_equal_venue(live, venue), "the entry's fill")
    venue.faults.rest_timeout(LISTEN_KEY_PATH, sleep_s=0.6)  # the new key comes late: the TP falls in the gap
    venue.faults.expire_listen_keys()
    venue.quote(TP_PRICE, TP_PRICE + 0.1, TP_PRICE)
    poll_until(live, lambda: live.stats.gaps == 1, "the gap")
    poll_until(
        live, lambda: venue.open_algos() == [] and live.entries == {}, "the SL cancelled, the entry gone"
    )
    poll_until(live, lambda: ledger_fills_equal_venue(live, venue), "the TP's fill backfilled")
    assert live.store.positions()[BTC].qty == 0 and len(venue.fills()) == 2
    assert live.stats.sync_runs == 2  # the start's and the gap's
    assert live.stream is not None and live.stream.stream.stats.rotations == 1
    [sl] = [a for a in venue.broker.algos.values() if a.client_algo_id == client_id(group, "sl")]
    assert sl.status == "CANCELED"


def test_a_connection_dropped_during_a_fill_is_backfilled_and_reconciled(
    live: LiveBook, venue: Venue
) -> None:
    enter(live, venue)
    poll_until(live, lambda: ledger_fills_equal_venue(live, venue), "the entry's fill")
    venue.faults.disconnect("private")
    venue.quote(TP_PRICE, TP_PRICE + 0.1, TP_PRICE)
    poll_until(
        live, lambda: venue.open_algos() == [] and live.entries == {}, "the SL cancelled, the entry gone"
    )
    poll_until(live, lambda: live.stats.gaps == 1, "the gap")
    poll_until(live, lambda: ledger_fills_equal_venue(live, venue), "the TP's fill")
    assert live.store.positions()[BTC].qty == 0 and len(venue.fills()) == 2
    assert live.stats.sync_runs == 2  # the gap's reconciliation ran
    assert live.stream is not None and live.stream.stream.stats.reconnects == 1


def test_a_stream_without_messages_or_pongs_blocks_entries_until_it_is_healthy_again(
    live: LiveBook, venue: Venue, engine: sa.Engine
) -> None:
    venue.faults.silence("private", 1.0)  # no messages, but pongs answer: a quiet account, not a dead stream
    time.sleep(1.0)
    live.poll()
    assert live.kill.entries_allowed and kill_events(engine) == []
    venue.faults.stall("private", 3.0)  # no message and no pong: past 0.5 s the switch fires
    poll_until(live, lambda: not live.kill.entries_allowed, "the kill switch")
    (blocked,) = live.submit([intent(venue)])
    assert blocked["reasons"] == ("KILL_SWITCH",) and venue.position() == 0
    # the stream's watchdog (1 s) replaces the connection; signs of life clear the conditions
    poll_until(live, lambda: live.kill.holding(venue.wall()) == (), "the conditions to clear")
    kinds = kill_events(engine)
    assert ("killswitch.triggered", "user_stream_silent") in kinds
    assert ("killswitch.entries_blocked", "user_stream_silent") in kinds
    assert ("killswitch.cleared", "user_stream_silent") in kinds
    assert live.resume()["active"] is False
    assert live.stream is not None and live.stream.stream.stats.silences == 1
    enter(live, venue)


def test_a_stream_that_cannot_reconnect_counts_as_closed_and_clears_once_back(
    live: LiveBook, venue: Venue, engine: sa.Engine
) -> None:
    venue.faults.rest_error(LISTEN_KEY_PATH, n=15, status=503)  # the key check and new keys fail for a while
    venue.faults.disconnect("private")
    poll_until(live, lambda: ("killswitch.triggered", "user_stream_closed") in kill_events(engine), "closed")
    assert not live.kill.entries_allowed
    poll_until(live, lambda: live.kill.holding(venue.wall()) == (), "the conditions to clear")
    assert ("killswitch.cleared", "user_stream_closed") in kill_events(engine)
    assert live.resume()["active"] is False


def test_a_liquidation_is_a_risk_event_and_the_protections_are_cancelled(
    live: LiveBook, venue: Venue, engine: sa.Engine
) -> None:
    enter(live, venue)
    venue.quote(35_000.0, 35_000.1, 35_000.0)  # far past the 3x long's liquidation price: before any stop
    poll_until(live, lambda: venue.open_algos() == [] and live.entries == {}, "the protections gone")
    assert venue.position() == 0 and live.stats.liquidations == 1
    poll_until(live, lambda: ledger_fills_equal_venue(live, venue), "the liquidation's fill")
    with engine.connect() as c:
        kinds = [r.event_type for r in c.execute(sa.select(risk_events.c.event_type))]
    assert kinds.count("liquidation") == 1
