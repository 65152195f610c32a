"""The user data stream (``exchange.binance.user_stream``) against the replay venue on loopback, no mocks.

Orders go through the signed trading client; user events come over the venue's real ``/private``
WebSocket; faults are the venue's own (``Faults``: disconnect, stall, duplicate, reorder, REST errors,
listenKey expiry). The stream runs on its own event loop in a thread, as it will in the execution
actor, and hands its events to a collector the test waits on. Intervals are short: keepalive and
watchdog are configurable in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from venue_fixtures import BTC, MARK, Clock, WallClockVenue, serve_venue, signed_client, started
from venue_fixtures import exchange_info as exchange_info

from core.messages import OrderSide
from exchange.binance.payloads import (
    AccountUpdateEvent,
    AlgoUpdateEvent,
    ListenKeyExpiredEvent,
    OrderTradeUpdateEvent,
    UserFill,
)
from exchange.binance.trading import BinanceRejection, BinanceTrading, TradingConfig
from exchange.binance.user_stream import Gap, MalformedEvent, StreamEvent, UserStream, UserStreamConfig
from exchange.venue import Faults
from exchange.venue.streams import StreamHub

KEY = "user-stream-test-key"
SECRET = "user-stream-test-secret-5d1e"
LISTEN_KEY_PATH = "/fapi/v1/listenKey"


@dataclass
class Venue(WallClockVenue):
    hub: StreamHub

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/"

    def publish(self, payload: dict[str, Any]) -> None:
        """Publish a user event now, on the venue's loop (faults switched on before apply to it)."""
        self.run(self.hub.publish_user, payload)

    def private_connections(self) -> int:
        return self.hub.connection_count("private")


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


def _client(venue: Venue, **overrides: Any) -> BinanceTrading:
    settings: dict[str, Any] = {"recv_window_ms": 2_000, "timeout_s": 2.0, "backoff_s": 0.0} | overrides
    return signed_client(venue.url, KEY, SECRET, **settings)


@pytest.fixture
def trading(venue: Venue) -> Iterator[BinanceTrading]:
    yield from started(_client(venue))


class Running:
    """A ``UserStream`` on its own event loop in a thread; its events collected for the test to wait on."""

    def __init__(
        self, venue: Venue, symbols: Callable[[], set[str]] = lambda: {BTC}, **settings: Any
    ) -> None:
        defaults: dict[str, Any] = {"ws_url": venue.ws_url, "silence_s": 2.0, "ping_interval_s": 0.2,
                                    "backoff_base_s": 0.05, "backoff_cap_s": 0.5}  # fmt: skip
        self._venue = venue
        self.client = _client(venue)
        self.stream = UserStream(self.client, UserStreamConfig(**(defaults | settings)), symbols,
                                 on_event=self._collect)  # fmt: skip
        self.events: list[StreamEvent] = []
        self.error: BaseException | None = None
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="user-stream", daemon=True)

    def __enter__(self) -> Running:
        self._thread.start()
        self.wait(lambda: self.stream.stats.connected, "the first connection")
        self.wait(lambda: self._venue.private_connections() >= 1, "the venue to register it")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.stream.stop(), self._loop).result(5)
        self._thread.join(10)
        self.client.close()
        assert not self._thread.is_alive(), "the stream did not stop"

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await self.stream.run()

        try:
            asyncio.run(main())
        except BaseException as e:  # shown by wait()
            self.error = e
            with self._changed:
                self._changed.notify_all()

    def _collect(self, event: StreamEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait(self, condition: Callable[[], bool], what: str, timeout_s: float = 8.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if self.error is not None or left <= 0:
                    raise AssertionError(f"waited {timeout_s} s for {what}; error {self.error!r}; "
                                         f"events {[type(e).__name__ for e in self.events]}")  # fmt: skip
                self._changed.wait(min(left, 0.05))

    def of(self, kind: type[Any]) -> list[Any]:
        with self._changed:
            return [e for e in self.events if isinstance(e, kind)]

    def fills(self) -> list[UserFill]:
        return self.of(UserFill)

    def order_events(self, client_order_id: str, execution: str | None = None) -> list[OrderTradeUpdateEvent]:
        return [e for e in self.of(OrderTradeUpdateEvent)
                if e.o.c == client_order_id and execution in (None, e.o.x)]  # fmt: skip


def _trade_ids(venue: Venue) -> list[int]:
    return [f.trade_id for f in venue.broker.fills]


# Typed events ----------------------------------------------------------------------------------------
def test_entry_fill_arrives_as_a_typed_order_update_with_its_fill(
    venue: Venue, trading: BinanceTrading
) -> None:
    with Running(venue) as running:
        entry = trading.place_entry(BTC, "BUY", Decimal("0.004"), "us-entry", mark_price=MARK)
        trading.close_position(BTC, "SELL", Decimal("0.004"), "us-close")
        running.wait(lambda: len(running.fills()) == 2, "the entry and close fills")
        running.wait(lambda: len(running.of(AccountUpdateEvent)) == 2, "two ACCOUNT_UPDATEs")
    new, trade = running.order_events("us-entry")
    assert (new.o.x, new.o.X, trade.o.x, trade.o.X) == ("NEW", "NEW", "TRADE", "FILLED")
    assert trade.o.i == entry.orderId and trade.o.z == Decimal("0.004") and isinstance(trade.o.L, Decimal)
    opened, closed = running.fills()
    [venue_open, venue_close] = venue.broker.fills
    assert (opened.trade_id, opened.order_id, opened.client_order_id, opened.source) == (
        venue_open.trade_id, entry.orderId, "us-entry", "stream")  # fmt: skip
    assert opened.qty == Decimal("0.004") and opened.price == Decimal(repr(venue_open.price))
    assert opened.fee == Decimal(f"{venue_open.fee:.8f}") and opened.fee_asset == "USDT"
    assert closed.realized_pnl == Decimal(f"{venue_close.realized:.8f}") and closed.realized_pnl < 0
    assert closed.to_fill().trade_id == str(venue_close.trade_id)
    account = running.of(AccountUpdateEvent)
    assert [(a.a.m, a.a.P[0].pa) for a in account] == [
        ("ORDER", Decimal("0.004")),
        ("ORDER", Decimal("0.000")),
    ]
    assert running.stream.stats.gaps == 0 and running.stream.stats.duplicate_fills == 0


def test_algo_stop_triggers_into_algo_updates_with_the_child_fill_before_finished(
    venue: Venue, trading: BinanceTrading
) -> None:
    with Running(venue) as running:
        entry = trading.place_entry(BTC, "BUY", Decimal("0.002"), "us-sl-entry", mark_price=MARK)
        trading.place_protection(BTC, "SL", "LONG", 59_000, entry.avgPrice, "us-sl", entry.executedQty)
        running.wait(lambda: len(running.of(AlgoUpdateEvent)) == 1, "the stop's NEW")
        venue.quote(58_900.0, 58_900.1, 58_900.0)
        running.wait(lambda: [a.o.X for a in running.of(AlgoUpdateEvent)][-1:] == ["FINISHED"], "FINISHED")
    algos = running.of(AlgoUpdateEvent)
    assert [a.o.X for a in algos] == ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]
    assert algos[0].o.ai is None and algos[0].o.tp == Decimal("59000.0") and algos[0].o.wt == "MARK_PRICE"
    triggered, finished = algos[2], algos[3]
    [child] = [o for o in venue.broker.orders.values() if o.orig_type == "STOP_MARKET"]
    assert triggered.o.ai == child.order_id and finished.o.aq == Decimal("0.002")
    order = [e for e in running.events if not isinstance(e, AccountUpdateEvent)]
    child_fill = next(e for e in order if isinstance(e, UserFill) and e.order_id == child.order_id)
    assert order.index(triggered) < order.index(child_fill) < order.index(finished)
    assert child_fill.client_order_id == "us-sl" and child_fill.side == "SELL"
    [child_trade] = running.order_events("us-sl", "TRADE")
    assert (child_trade.o.ot, child_trade.o.R) == ("STOP_MARKET", True)


def _algo_event(status: str, child: str, ts_ms: int) -> dict[str, Any]:
    return {"e": "ALGO_UPDATE", "T": ts_ms, "E": ts_ms, "o": {
        "caid": "raw-sl", "aid": 77, "at": "CONDITIONAL", "o": "STOP_MARKET", "s": BTC, "S": "SELL", "ps": "BOTH",
        "f": "GTC", "q": "0.002", "X": status, "ai": child, "ap": "0", "aq": "0", "act": "0", "tp": "59000",
        "p": "0", "V": "NONE", "wt": "MARK_PRICE", "pm": "NONE", "cp": False, "pP": True, "R": True, "tt": ts_ms,
        "gtd": 0, "rm": ""}}  # fmt: skip


def _trade_event(trade_id: int, ts_ms: int) -> dict[str, Any]:
    return {"e": "ORDER_TRADE_UPDATE", "T": ts_ms, "E": ts_ms, "o": {
        "s": BTC, "c": "raw-sl", "S": "SELL", "o": "MARKET", "f": "GTC", "q": "0.002", "p": "0", "ap": "59000",
        "sp": "59000", "x": "TRADE", "X": "FILLED", "i": 991, "l": "0.002", "z": "0.002", "L": "59000", "N": "USDT",
        "n": "0.04720000", "T": ts_ms, "t": trade_id, "b": "0", "a": "0", "m": False, "R": True, "wt": "MARK_PRICE",
        "ot": "STOP_MARKET", "ps": "BOTH", "cp": False, "rp": "-2.00000000"}}  # fmt: skip


def test_empty_ai_duplicates_reordering_unknown_and_malformed_events_pass_through(
    venue: Venue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="exchange.binance.user_stream")
    t = venue.wall()
    with Running(venue) as running:
        venue.faults.reorder("private", 1)  # TRIGGERED (empty ai) and the child's fill arrive swapped
        venue.publish(_algo_event("TRIGGERED", "", t))
        venue.publish(_trade_event(900_001, t + 1))
        venue.faults.duplicate("private", 2)  # FINISHED twice, the fill's event twice
        venue.publish(_algo_event("FINISHED", "991", t + 2))
        venue.publish(_trade_event(900_001, t + 1))
        for _ in range(2):
            venue.publish({"e": "STRATEGY_UPDATE", "E": t, "su": {}})
        venue.publish({"e": "ORDER_TRADE_UPDATE", "E": t, "T": t})  # no "o"
        venue.publish({"e": "MARGIN_CALL", "E": t, "cw": "3.1", "p": [{"s": BTC, "ps": "BOTH",
                                "pa": "0.002", "mt": "ISOLATED", "iw": "1.2", "mp": "58000", "up": "-2", "mm": "0.5"}]})  # fmt: skip
        running.wait(lambda: running.stream.stats.events.get("MARGIN_CALL") == 1, "the margin call")
    kinds = [(type(e).__name__, getattr(getattr(e, "o", None), "X", None)) for e in running.events]
    assert kinds == [
        ("OrderTradeUpdateEvent", "FILLED"), ("UserFill", None), ("AlgoUpdateEvent", "TRIGGERED"),
        ("AlgoUpdateEvent", "FINISHED"), ("AlgoUpdateEvent", "FINISHED"),
        ("OrderTradeUpdateEvent", "FILLED"), ("OrderTradeUpdateEvent", "FILLED"),  # the duplicate: no 2nd fill
        ("MalformedEvent", None), ("MarginCallEvent", None),
    ]  # fmt: skip
    triggered = running.of(AlgoUpdateEvent)[0]
    assert triggered.o.ai is None and running.of(AlgoUpdateEvent)[1].o.ai == 991
    stats = running.stream.stats
    assert (stats.fills, stats.duplicate_fills, stats.unknown_events) == (1, 2, {"STRATEGY_UPDATE": 2})
    assert running.of(MalformedEvent)[0].error.reason == "missing_field"
    assert sum("STRATEGY_UPDATE" in r.getMessage() for r in caplog.records) == 1  # logged once


# Keepalive, rotation, expiry -------------------------------------------------------------------------
def test_failed_keepalive_rotates_the_key_and_reconnects_with_a_gap(
    venue: Venue, trading: BinanceTrading
) -> None:
    with Running(venue, keepalive_s=0.4) as running:
        running.wait(lambda: running.stream.stats.keepalives >= 1, "a keepalive")
        venue.faults.rest_error(LISTEN_KEY_PATH, n=3, status=503)  # every attempt of the next PUT
        running.wait(lambda: running.stream.stats.backfills == 1, "the rotation's gap and backfill")
        [gap] = running.of(Gap)
        trading.place_entry(BTC, "BUY", Decimal("0.002"), "after-rotation", mark_price=MARK)
        running.wait(lambda: len(running.fills()) == 1, "the fill on the new connection")
    stats = running.stream.stats
    assert (gap.reason, stats.keepalive_failures, stats.rotations, stats.reconnects) == ("rotation", 1, 1, 1)
    assert "keepalive failed" in gap.detail and gap.start_ms <= gap.end_ms
    assert running.fills()[0].source == "stream"


def test_expired_listen_key_mid_trade_rotates_and_backfills_the_fill_exactly_once(
    venue: Venue, trading: BinanceTrading
) -> None:
    with Running(venue) as running:
        trading.place_entry(BTC, "BUY", Decimal("0.002"), "before-expiry", mark_price=MARK)
        running.wait(lambda: len(running.fills()) == 1, "the first fill")
        # the new key comes late: the fill falls in the gap
        venue.faults.rest_timeout(LISTEN_KEY_PATH, sleep_s=0.6)
        [old_key] = venue.faults.expire_listen_keys()
        running.wait(lambda: len(running.of(ListenKeyExpiredEvent)) == 1, "listenKeyExpired")
        trading.close_position(BTC, "SELL", Decimal("0.002"), "during-expiry")
        running.wait(lambda: running.stream.stats.backfills == 1, "the backfill")
        trading.place_entry(BTC, "BUY", Decimal("0.002"), "after-expiry", mark_price=MARK)
        running.wait(lambda: len(running.fills()) == 3, "a fill on the new key")
        new_key = _client(venue).http.call("POST", LISTEN_KEY_PATH, signed=False, action="write")["listenKey"]
    [expired] = running.of(ListenKeyExpiredEvent)
    assert expired.listenKey == old_key and old_key not in repr(expired) and new_key != old_key
    [gap] = running.of(Gap)
    assert gap.reason == "rotation" and gap.detail == "listenKeyExpired"
    fills = running.fills()
    assert [f.trade_id for f in fills] == _trade_ids(venue)  # each once, in order
    assert [f.source for f in fills] == ["stream", "backfill", "stream"]
    assert running.stream.stats.duplicate_fills == 1  # the backfill saw the first fill again
    assert running.order_events("during-expiry") == []  # order states are not replayed: the ledger reconciles


# Connection losses -------------------------------------------------------------------------------------
def test_silent_connection_is_replaced_by_the_watchdog_and_its_fills_backfilled_once(
    venue: Venue, trading: BinanceTrading
) -> None:
    with Running(venue, silence_s=1.0) as running:
        trading.place_entry(BTC, "BUY", Decimal("0.002"), "heard", mark_price=MARK)
        running.wait(lambda: len(running.fills()) == 1, "the first fill")
        venue.faults.stall("private", 5.0)  # open, but no message and no pong
        trading.place_entry(BTC, "BUY", Decimal("0.002"), "unheard", mark_price=MARK)
        running.wait(lambda: running.stream.stats.backfills == 1, "the backfill")
        trading.close_position(BTC, "SELL", Decimal("0.004"), "heard-again")
        running.wait(lambda: len(running.fills()) == 3, "a fill on the new connection")
    [gap] = running.of(Gap)
    assert gap.reason == "silence" and gap.end_ms - gap.start_ms >= 1000
    fills = running.fills()
    assert [f.trade_id for f in fills] == _trade_ids(venue)
    assert [(f.source, f.client_order_id) for f in fills] == [
        ("stream", "heard"),
        ("backfill", None),
        ("stream", "heard-again"),
    ]  # userTrades has no client id
    assert running.stream.stats.silences == 1 and venue.faults.stats()["private"]["stalled"] == 1


def test_closed_connection_reconnects_and_a_lost_key_is_replaced(
    venue: Venue, trading: BinanceTrading
) -> None:
    admin = _client(venue)
    with Running(venue) as running:
        admin.http.call("DELETE", LISTEN_KEY_PATH, signed=False, action="write")  # the key is gone (-1125)...
        venue.faults.disconnect("private")  # ...and the connection closed
        trading.place_entry(BTC, "BUY", Decimal("0.002"), "while-closed", mark_price=MARK)
        running.wait(lambda: len(running.of(Gap)) == 1 and len(running.fills()) == 1, "the gap and the fill")
        trading.close_position(BTC, "SELL", Decimal("0.002"), "after-reconnect")
        running.wait(lambda: len(running.fills()) == 2, "the next fill")
    [gap] = running.of(Gap)
    stats = running.stream.stats
    assert gap.reason == "closed" and (stats.keepalive_failures, stats.rotations) == (1, 1)
    assert [f.trade_id for f in running.fills()] == _trade_ids(venue)  # once, by stream or backfill
    admin.close()


def test_rollover_opens_the_next_connection_first_and_loses_or_repeats_nothing(
    venue: Venue, trading: BinanceTrading
) -> None:
    with Running(venue, max_connection_age_s=0.5, overlap_s=0.3) as running:
        side: OrderSide = "BUY"
        for i in range(12):
            trading.place_entry(BTC, side, Decimal("0.002"), f"roll-{i}", mark_price=MARK)
            side = "SELL" if side == "BUY" else "BUY"
            time.sleep(0.1)
        running.wait(lambda: len(running.fills()) == 12, "every fill")
        time.sleep(0.2)
    stats = running.stream.stats
    assert stats.rollovers >= 2 and stats.gaps == 0 and stats.overlap_duplicates >= 1, stats
    assert [f.trade_id for f in running.fills()] == _trade_ids(venue)
    for i in range(12):
        assert [e.o.x for e in running.order_events(f"roll-{i}")] == ["NEW", "TRADE"]


def test_neither_the_listen_key_nor_the_api_key_is_logged(
    venue: Venue, trading: BinanceTrading, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with Running(venue) as running:
        [old_key] = venue.faults.expire_listen_keys()
        running.wait(lambda: len(running.of(Gap)) == 1, "the rotation")
        venue.faults.disconnect("private")
        running.wait(lambda: len(running.of(Gap)) == 2, "the reconnect")
        new_key = _client(venue).http.call("POST", LISTEN_KEY_PATH, signed=False, action="write")["listenKey"]
        shown = [
            repr(running.stream),
            repr(running.stream.stats),
            repr(running.events),
            repr(running.stream.config),
        ]
    text = caplog.text + "\n".join(shown)
    assert "listenKey" in caplog.text and old_key[:4] in caplog.text  # the masked form is there
    for secret in (old_key, new_key, KEY, SECRET):
        assert secret not in text


def test_a_refused_api_key_stops_the_stream_with_the_rejection(venue: Venue) -> None:
    client = BinanceTrading(
        TradingConfig(base_url=venue.url, api_key=SecretStr("wrong"), api_secret=SecretStr("x"))
    )
    stream = UserStream(client, UserStreamConfig(ws_url=venue.ws_url), lambda: set())
    with pytest.raises(BinanceRejection) as info:
        asyncio.run(asyncio.wait_for(stream.run(), 10))
    assert info.value.code == -2015 and not stream.stats.connected
    client.close()
