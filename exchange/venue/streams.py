"""WebSocket streams of the replay venue in Binance USDⓈ-M's protocol, and their payload builders.

Endpoints, as on fstream.binance.com since the URL split:

- ``/market/stream?streams=a/b`` (combined: ``{"stream": name, "data": payload}``) and
  ``/market/ws/<stream>`` (raw payloads); the same under ``/public``. The venue produces
  ``<symbol>@kline_1m``, ``@kline_15m``, ``@kline_1h`` and ``@markPrice``/``@markPrice@1s`` on
  /market and ``<symbol>@bookTicker`` on /public (symbols lower-case; both mark streams at the
  replay's tick cadence). Any other name, or a stream of the wrong category, is acknowledged and
  stays silent, as Binance does.
- JSON methods ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS`` answer ``{"result": …, "id": n}``;
  malformed requests answer ``{"error": {"code": c, "msg": m}, "id": n}``.
- ``/private?listenKey=K``, ``/private/ws?listenKey=K`` (python-binance's ``futures_user_socket``)
  and ``/private/ws/K``: user data of the paper broker; an unknown key is refused (closed with 1008).
  Once a key expires its connections stay open but hear nothing more, except the ``listenKeyExpired``
  event addressed to that key, as on Binance.

Every connection has its own bounded send queue drained by its own task, so a slow client never
blocks the replay driver or other clients; a client whose queue fills is disconnected and counted
(``slow_disconnects``), as Binance drops clients that cannot keep up. Fault hooks
(``exchange.venue.faults``) decide the fate of each message to each connection. Pings are answered
here rather than by aiohttp, so that a stalled connection (``Faults.stall``) can leave them unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from exchange.venue.faults import Delivery, Faults

log = logging.getLogger(__name__)

#: Binance's limit of streams on one connection.
MAX_STREAMS_PER_CONNECTION = 1024
#: Messages queued for one connection before it counts as too slow and is closed.
DEFAULT_SEND_QUEUE = 10_000
_PUBLIC_MARKERS = ("@bookTicker", "@depth", "@rpiDepth")
_CLOSE_POLICY = 1008
_CLOSE_GOING_AWAY = 1001

ListenKeyCheck = Callable[[str], bool]


def stream_channel(stream: str) -> str:
    """Return the category a stream name belongs to: ``public`` (book streams) or ``market``."""
    return (
        "public"
        if any(marker in stream for marker in _PUBLIC_MARKERS) or stream == "!bookTicker"
        else "market"
    )


# Payload builders ---------------------------------------------------------------------------------
def fmt_price(value: float) -> str:
    """Return the shortest decimal string that reads back as exactly ``value``."""
    return np.format_float_positional(float(value), trim="-")


def fmt_fixed(value: float, decimals: int = 8) -> str:
    """Return ``value`` with ``decimals`` decimals, as Binance writes rates and index prices."""
    return f"{value:.{decimals}f}"


def mark_price_payload(
    symbol: str,
    event_ms: int,
    mark: float,
    index: float,
    settle: float,
    funding_rate: float,
    next_funding_ms: int,
) -> dict[str, Any]:
    """Build a ``markPriceUpdate`` (the ``<symbol>@markPrice@1s`` payload)."""
    return {
        "e": "markPriceUpdate",
        "E": int(event_ms),
        "s": symbol,
        "p": fmt_price(mark),
        "i": fmt_fixed(index),
        "P": fmt_fixed(settle),
        "r": fmt_fixed(funding_rate),
        "T": int(next_funding_ms),
        "st": 1,
    }


def book_ticker_payload(
    symbol: str, update_id: int, event_ms: int, bid: Decimal, bid_qty: Decimal, ask: Decimal, ask_qty: Decimal
) -> dict[str, Any]:
    """Build a ``bookTicker`` (the ``<symbol>@bookTicker`` payload); prices and sizes as exact decimals."""
    return {
        "e": "bookTicker",
        "u": int(update_id),
        "E": int(event_ms),
        "T": int(event_ms),
        "s": symbol,
        "b": str(bid),
        "B": str(bid_qty),
        "a": str(ask),
        "A": str(ask_qty),
        "st": 1,
        "ps": symbol,
    }


@dataclass(frozen=True, slots=True)
class KlineValues:
    """One kline's values (prices in USDT, volumes in base units, ``quote_volume`` in USDT)."""

    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trade_count: int
    taker_buy_volume: float


def kline_payload(
    symbol: str,
    interval: str,
    open_ms: int,
    interval_ms: int,
    event_ms: int,
    values: KlineValues,
    closed: bool,
    first_trade_id: int,
) -> dict[str, Any]:
    """Build a ``kline`` event; ``first_trade_id``..``+trade_count-1`` are the bar's trade ids (-1 without trades).

    The taker buy quote volume is "0": the lake does not keep it (as in the venue's REST klines).
    """
    count = int(values.trade_count)
    first, last = (first_trade_id, first_trade_id + count - 1) if count > 0 else (-1, -1)
    return {
        "e": "kline",
        "E": int(event_ms),
        "s": symbol,
        "k": {
            "t": int(open_ms),
            "T": int(open_ms + interval_ms - 1),
            "s": symbol,
            "i": interval,
            "f": int(first),
            "L": int(last),
            "o": fmt_price(values.open),
            "c": fmt_price(values.close),
            "h": fmt_price(values.high),
            "l": fmt_price(values.low),
            "v": fmt_price(values.volume),
            "n": count,
            "x": bool(closed),
            "q": fmt_price(values.quote_volume),
            "V": fmt_price(values.taker_buy_volume),
            "Q": "0",
            "B": "0",
        },
    }


# Connections ------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    channel: str
    combined: bool
    listen_key: str | None = None
    streams: set[str] = field(default_factory=set)
    queue: asyncio.Queue[tuple[float, str, bool]] = field(default_factory=asyncio.Queue)
    held: list[str] | None = None
    closing: bool = False
    stalled_until_s: float = 0.0  # time.monotonic() until which the connection hangs (Faults.stall)

    @property
    def stalled(self) -> bool:
        return self.stalled_until_s > time.monotonic()


class StreamHub:
    """Routes published payloads to the WebSocket connections subscribed to them (venue loop only).

    ``publish`` and ``wants`` are called in the venue's event loop (by the replay driver);
    ``publish_user`` and ``disconnect`` are safe from any thread.
    """

    def __init__(
        self,
        faults: Faults,
        *,
        listen_key_valid: ListenKeyCheck | None = None,
        send_queue_size: int = DEFAULT_SEND_QUEUE,
    ) -> None:
        self.faults = faults
        self.listen_key_valid = listen_key_valid
        self.send_queue_size = send_queue_size
        self._connections: set[_Connection] = set()
        self._by_stream: dict[str, set[_Connection]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        faults.attach(disconnect=self.disconnect, stall=self.stall)

    def add_routes(self, app: web.Application) -> None:
        """Add the WebSocket endpoints and close every connection when the app shuts down."""
        for channel in ("market", "public"):
            app.router.add_get(f"/{channel}/stream", self._market_handler(channel, combined=True))
            app.router.add_get(f"/{channel}/ws", self._market_handler(channel, combined=False))
            app.router.add_get(f"/{channel}/ws/{{streams:.+}}", self._market_handler(channel, combined=False))
        app.router.add_get("/private", self._private)
        app.router.add_get("/private/ws", self._private)
        app.router.add_get("/private/stream", self._private)
        app.router.add_get("/private/ws/{key}", self._private)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)

    # Publishing ------------------------------------------------------------------------------
    def wants(self, stream: str) -> bool:
        """Return True if some connection listens to ``stream`` (lets the driver skip building payloads)."""
        return bool(self._by_stream.get(stream))

    def publish(self, stream: str, payload: dict[str, Any]) -> None:
        """Send ``payload`` to every connection subscribed to ``stream`` on its category's channel."""
        targets = self._by_stream.get(stream)
        if not targets:
            return
        channel = stream_channel(stream)
        raw: str | None = None
        wrapped: str | None = None
        for conn in list(targets):
            if conn.channel != channel or conn.closing:
                continue  # a wrong-category subscription stays silent
            if raw is None:
                raw = json.dumps(payload, separators=(",", ":"))
                wrapped = f'{{"stream":"{stream}","data":{raw}}}'
            self._deliver(conn, wrapped if conn.combined else raw)  # type: ignore[arg-type]

    def publish_user(self, payload: dict[str, Any]) -> None:
        """Send a user-data event to every open /private connection (thread-safe; faults apply)."""
        if self._loop is None or self._loop.is_closed():
            return
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.publish_user, payload)
            return
        raw = json.dumps(payload, separators=(",", ":"))
        # listenKeyExpired goes to its key's connections; nothing more reaches a key that is not live
        expired = payload.get("listenKey") if payload.get("e") == "listenKeyExpired" else None
        live = self.listen_key_valid
        for conn in list(self._connections):
            if conn.channel != "private" or conn.closing:
                continue
            if (expired is not None and conn.listen_key != expired) or (
                expired is None and live is not None and not live(conn.listen_key or "")
            ):
                continue
            text = f'{{"stream":"{conn.listen_key}","data":{raw}}}' if conn.combined else raw
            self._deliver(conn, text)

    def disconnect(self, channel: str) -> None:
        """Close every connection on ``channel`` now (thread-safe); clients see a normal close and may reconnect."""
        if self._loop is None or self._loop.is_closed():
            return
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.disconnect, channel)
            return
        for conn in list(self._connections):
            if conn.channel == channel and not conn.closing:
                self.faults.count(channel, "disconnects")
                self._close(conn, _CLOSE_GOING_AWAY, b"disconnected by the venue")

    def stall(self, channel: str, seconds: float) -> None:
        """Hang every open connection on ``channel`` for ``seconds`` (thread-safe; see ``Faults.stall``)."""
        if self._loop is None or self._loop.is_closed():
            return
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.stall, channel, seconds)
            return
        until = time.monotonic() + seconds
        for conn in list(self._connections):
            if conn.channel == channel and not conn.closing:
                self.faults.count(channel, "stalled")
                conn.stalled_until_s = until

    def connection_count(self, channel: str | None = None) -> int:
        """Return the number of open connections (on ``channel``, or all)."""
        return sum(1 for c in self._connections if channel is None or c.channel == channel)

    def _deliver(self, conn: _Connection, text: str) -> None:
        if conn.stalled:
            self.faults.count(conn.channel, "dropped")
            return
        delivery = self.faults.delivery(conn.channel, can_hold=conn.held is None)
        if delivery.copies == 0:
            return
        items = [text] * delivery.copies
        if delivery.hold:
            conn.held = items
            return
        self._enqueue(conn, items, delivery)
        if conn.held is not None:
            held, conn.held = conn.held, None
            self._enqueue(conn, held, delivery)

    def _enqueue(self, conn: _Connection, items: list[str], delivery: Delivery) -> None:
        not_before = time.monotonic() + delivery.delay_s if delivery.delay_s else 0.0
        for text in items:
            if conn.queue.qsize() >= self.send_queue_size:
                self.faults.count(conn.channel, "slow_disconnects")
                log.warning(
                    "closing a %s connection that cannot keep up (%d queued)",
                    conn.channel,
                    conn.queue.qsize(),
                )
                self._close(conn, _CLOSE_POLICY, b"too slow: send queue full")
                return
            conn.queue.put_nowait((not_before, text, True))

    def _close(self, conn: _Connection, code: int, message: bytes) -> None:
        conn.closing = True
        self._forget(conn)
        self._spawn(conn.ws.close(code=code, message=message))

    # Handlers --------------------------------------------------------------------------------
    def _market_handler(self, channel: str, combined: bool) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.WebSocketResponse:
            names = request.query.get("streams", "") if combined else request.match_info.get("streams", "")
            streams = [s for s in names.split("/") if s]
            ws = web.WebSocketResponse(heartbeat=None, autoping=False)
            await ws.prepare(request)
            if len(streams) > MAX_STREAMS_PER_CONNECTION:
                await ws.close(code=_CLOSE_POLICY, message=b"too many streams")
                return ws
            conn = _Connection(ws, channel, combined)
            self._subscribe(conn, streams)
            return await self._serve(conn)

        return handler

    async def _private(self, request: web.Request) -> web.WebSocketResponse:
        key = request.match_info.get("key") or request.query.get("listenKey", "")
        ws = web.WebSocketResponse(heartbeat=None, autoping=False)
        await ws.prepare(request)
        if not key or self.listen_key_valid is None or not self.listen_key_valid(key):
            self.faults.count("private", "refused")
            await ws.close(code=_CLOSE_POLICY, message=b"invalid listenKey")
            return ws
        combined = request.path.rstrip("/").endswith("/stream")
        return await self._serve(_Connection(ws, "private", combined, listen_key=key))

    async def _serve(self, conn: _Connection) -> web.WebSocketResponse:
        self._connections.add(conn)
        self.faults.count(conn.channel, "connections")
        sender = asyncio.ensure_future(self._send_loop(conn))
        try:
            async for msg in conn.ws:
                if msg.type == WSMsgType.TEXT:
                    reply = self._method(conn, msg.data)
                    if reply is not None and not conn.closing:
                        conn.queue.put_nowait((0.0, json.dumps(reply, separators=(",", ":")), False))
                elif msg.type == WSMsgType.PING:
                    if not conn.stalled:
                        await conn.ws.pong(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            conn.closing = True
            self._forget(conn)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return conn.ws

    async def _send_loop(self, conn: _Connection) -> None:
        try:
            while True:
                not_before, text, counted = await conn.queue.get()
                wait_s = not_before - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                if conn.stalled:  # queued before the stall: lost with the rest
                    self.faults.count(conn.channel, "dropped")
                    continue
                await conn.ws.send_str(text)
                if counted:
                    self.faults.count(conn.channel, "sent")
        except (ConnectionResetError, RuntimeError):  # the peer went away mid-send
            self._forget(conn)

    def _method(self, conn: _Connection, text: str) -> dict[str, Any] | None:
        try:
            request = json.loads(text)
        except ValueError as e:
            return {"error": {"code": 3, "msg": f"Invalid JSON: {e}"}}
        if not isinstance(request, dict):
            return {"error": {"code": 2, "msg": "Invalid request: expected a JSON object"}}
        request_id = request.get("id")
        if not isinstance(request_id, int | str) or isinstance(request_id, bool):
            return {"error": {"code": 2, "msg": "Invalid request: missing field `id`"}, "id": None}
        method = request.get("method")
        params = request.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) and p for p in params):
                return {
                    "error": {"code": 1, "msg": "Invalid value type: expected a list of stream names"},
                    "id": request_id,
                }
            if method == "SUBSCRIBE":
                if len(conn.streams | set(params)) > MAX_STREAMS_PER_CONNECTION:
                    return {
                        "error": {"code": 2, "msg": "Invalid request: too many streams"},
                        "id": request_id,
                    }
                self._subscribe(conn, params)
            else:
                self._unsubscribe(conn, params)
            return {"result": None, "id": request_id}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.streams), "id": request_id}
        return {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": request_id}

    def _subscribe(self, conn: _Connection, streams: list[str]) -> None:
        for stream in streams:
            conn.streams.add(stream)
            self._by_stream.setdefault(stream, set()).add(conn)

    def _unsubscribe(self, conn: _Connection, streams: list[str]) -> None:
        for stream in streams:
            conn.streams.discard(stream)
            subscribers = self._by_stream.get(stream)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self._by_stream[stream]

    def _forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        self._unsubscribe(conn, list(conn.streams))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_startup(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    async def _on_shutdown(self, app: web.Application) -> None:
        conns = list(self._connections)
        for conn in conns:
            conn.closing = True
            self._forget(conn)
        await asyncio.gather(
            *(c.ws.close(code=_CLOSE_GOING_AWAY, message=b"venue shutting down") for c in conns),
            return_exceptions=True,
        )
