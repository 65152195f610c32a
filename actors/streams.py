"""Binance USDⓈ-M market streams for one symbol group: names, parsing, routing and connections.

Stream layout (Binance since 2025, see DESIGN.md): klines and ``markPrice@1s`` are served under
``<ws_url>market/stream?streams=…``, ``bookTicker`` under ``<ws_url>public/stream?streams=…``; a
stream asked for on the wrong path is acknowledged and then stays silent. ``ws_url`` is what
python-binance calls ``BinanceSocketManager.FSTREAM_URL`` (``wss://fstream.binance.com/``).

Payloads are parsed here, once, into ``KlineUpdate``/``MarkUpdate``/``BookUpdate`` with our names
and units; a payload that does not parse raises ``MalformedMessage`` naming the problem, which the
caller records as a data-quality event. Venue field names appear nowhere else.

``StreamConnection`` keeps one combined-stream connection alive through python-binance's
``ReconnectingWebsocket`` with its own reconnect turned off: python-binance gives up after 5
reconnects, drops the connection when 100 messages are queued and watches no silence, so the
supervision is ours — reconnect forever with exponential backoff and jitter, a silence watchdog per
stream kind, and a proactive reconnect before Binance's 24 h connection limit in which the new
connection is opened before the old one is closed (the overlap is de-duplicated downstream).
Binance replays nothing after a reconnect: ``on_state`` tells the owner so that it backfills.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from binance.exceptions import ReadLoopClosed
from binance.ws.constants import WSListenerState
from binance.ws.reconnecting_websocket import ReconnectingWebsocket

from core.symbols import SymbolError, to_internal, to_ws
from core.time import INTERVAL_MS

log = logging.getLogger(__name__)

MARK_STREAM = "markPrice@1s"
BOOK_STREAM = "bookTicker"
#: Stream kind → URL category (``/market`` or ``/public``).
CATEGORY = {"kline": "market", "markPrice": "market", "bookTicker": "public"}


class MalformedMessage(ValueError):
    """A stream payload that cannot be used; ``reason`` is a short code, ``payload`` the raw message."""

    def __init__(self, reason: str, detail: str, payload: object, symbol: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.payload = payload
        self.symbol = symbol


@dataclass(frozen=True, slots=True)
class KlineUpdate:
    """One kline push. ``open_ms`` is the bar's open time; ``closed`` is True on the final push."""

    symbol: str
    interval: str
    open_ms: int
    event_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float  # base asset
    quote_volume: float  # USDT
    trade_count: int
    taker_buy_volume: float  # base asset
    closed: bool

    def row(self) -> dict[str, Any]:
        """Return the candles-table row of this bar."""
        return {
            "symbol": self.symbol, "ts": self.open_ms, "open": self.open, "high": self.high,
            "low": self.low, "close": self.close, "volume": self.volume, "quote_volume": self.quote_volume,
            "trade_count": self.trade_count, "taker_buy_volume": self.taker_buy_volume,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class MarkUpdate:
    """One markPrice push: mark and index price, funding rate estimate and next funding time."""

    symbol: str
    event_ms: int
    mark: float
    index: float  # NaN when the venue sends none
    funding_rate: float
    next_funding_ms: int

    @property
    def premium(self) -> float:
        """Return mark / index − 1 (NaN without an index): the approximation of the premium index
        that online features use in place of Binance's premiumIndexKlines close."""
        return self.mark / self.index - 1.0 if self.index > 0 else math.nan


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """One bookTicker push: best bid and ask (quote currency) with quantities (base asset)."""

    symbol: str
    event_ms: int
    update_id: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float


Update = KlineUpdate | MarkUpdate | BookUpdate


def stream_names(symbols: Sequence[str], intervals: Sequence[str]) -> dict[str, list[str]]:
    """Return the combined-stream names per URL category (``market``, ``public``) for ``symbols``."""
    market: list[str] = []
    public: list[str] = []
    for symbol in symbols:
        key = to_ws(symbol)
        market.extend(f"{key}@kline_{interval}" for interval in intervals)
        market.append(f"{key}@{MARK_STREAM}")
        public.append(f"{key}@{BOOK_STREAM}")
    return {"market": market, "public": public}


def stream_kind(stream: str) -> str:
    """Return the kind of a stream name: ``kline_1m``, ``kline_15m``, …, ``markPrice`` or ``bookTicker``."""
    _, _, rest = stream.partition("@")
    return rest.split("@", 1)[0]


def stream_url(ws_url: str, category: str, streams: Sequence[str]) -> tuple[str, str, str]:
    """Return python-binance's (url, prefix, path) of a combined-stream connection."""
    if category not in ("market", "public"):
        raise ValueError(f"stream category must be 'market' or 'public', got {category!r}")
    base = ws_url if ws_url.endswith("/") else ws_url + "/"
    return f"{base}{category}/", "stream?", "streams=" + "/".join(streams)


# --- parsing ----------------------------------------------------------------------------------------


def _field(data: Mapping[str, Any], name: str, what: str, payload: object, symbol: str | None) -> Any:
    if name not in data:
        raise MalformedMessage("missing_field", f"{what}: field {name!r} missing", payload, symbol)
    return data[name]


def _price(
    value: Any, name: str, what: str, payload: object, symbol: str | None, *, zero_ok: bool = False
) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        x = float(value)
    except (TypeError, ValueError):
        raise MalformedMessage(
            "bad_number", f"{what}: {name}={value!r} is not a number", payload, symbol
        ) from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise MalformedMessage(
            "bad_value", f"{what}: {name}={value!r} is not finite and {bound}", payload, symbol
        )
    return x


def _int(value: Any, name: str, what: str, payload: object, symbol: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedMessage("bad_number", f"{what}: {name}={value!r} is not an int >= 0", payload, symbol)
    return value


def parse_kline(data: Mapping[str, Any], payload: object = None) -> KlineUpdate:
    """Parse a ``kline`` event (``{"e": "kline", "E": …, "s": …, "k": {…}}``)."""
    payload = data if payload is None else payload
    symbol = _symbol(data, payload)
    k = _field(data, "k", "kline", payload, symbol)
    if not isinstance(k, Mapping):
        raise MalformedMessage("bad_shape", "kline: 'k' is not an object", payload, symbol)
    interval = _field(k, "i", "kline", payload, symbol)
    if interval not in INTERVAL_MS:
        raise MalformedMessage("bad_value", f"kline: unknown interval {interval!r}", payload, symbol)
    step = INTERVAL_MS[interval]
    open_ms = _int(_field(k, "t", "kline", payload, symbol), "t", "kline", payload, symbol)
    close_ms = _int(_field(k, "T", "kline", payload, symbol), "T", "kline", payload, symbol)
    if open_ms % step or close_ms != open_ms + step - 1:
        raise MalformedMessage(
            "off_grid", f"kline {interval}: t={open_ms}, T={close_ms} are not a bar of the {step} ms grid",
            payload, symbol,
        )  # fmt: skip
    o, h, lo, c = (
        _price(_field(k, n, "kline", payload, symbol), n, "kline", payload, symbol) for n in "ohlc"
    )
    if h < max(o, c, lo) or lo > min(o, c):
        raise MalformedMessage(
            "ohlc_outside_range", f"kline {interval} at {open_ms}: o={o} h={h} l={lo} c={c}", payload, symbol
        )
    closed = _field(k, "x", "kline", payload, symbol)
    if not isinstance(closed, bool):
        raise MalformedMessage("bad_value", f"kline: x={closed!r} is not a boolean", payload, symbol)
    volume = _price(_field(k, "v", "kline", payload, symbol), "v", "kline", payload, symbol, zero_ok=True)
    return KlineUpdate(
        symbol=symbol,
        interval=interval,
        open_ms=open_ms,
        event_ms=_int(_field(data, "E", "kline", payload, symbol), "E", "kline", payload, symbol),
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=volume,
        quote_volume=_price(k.get("q", 0), "q", "kline", payload, symbol, zero_ok=True),
        trade_count=_int(k.get("n", 0), "n", "kline", payload, symbol),
        taker_buy_volume=_price(k.get("V", 0), "V", "kline", payload, symbol, zero_ok=True),
        closed=closed,
    )


def parse_mark(data: Mapping[str, Any], payload: object = None) -> MarkUpdate:
    """Parse a ``markPriceUpdate`` event; a missing or zero index price gives index NaN."""
    payload = data if payload is None else payload
    symbol = _symbol(data, payload)
    index_raw = data.get("i")
    index = math.nan
    if index_raw not in (None, ""):
        index = _price(index_raw, "i", "markPrice", payload, symbol, zero_ok=True) or math.nan
    rate_raw = _field(data, "r", "markPrice", payload, symbol)
    try:
        rate = float(rate_raw) if rate_raw != "" else math.nan
    except (TypeError, ValueError):
        raise MalformedMessage(
            "bad_number", f"markPrice: r={rate_raw!r} is not a number", payload, symbol
        ) from None
    return MarkUpdate(
        symbol=symbol,
        event_ms=_int(_field(data, "E", "markPrice", payload, symbol), "E", "markPrice", payload, symbol),
        mark=_price(_field(data, "p", "markPrice", payload, symbol), "p", "markPrice", payload, symbol),
        index=index,
        funding_rate=rate,
        next_funding_ms=_int(
            _field(data, "T", "markPrice", payload, symbol), "T", "markPrice", payload, symbol
        ),
    )


def parse_book(data: Mapping[str, Any], payload: object = None) -> BookUpdate:
    """Parse a ``bookTicker`` event; a crossed book (bid > ask) is malformed."""
    payload = data if payload is None else payload
    symbol = _symbol(data, payload)
    bid = _price(_field(data, "b", "bookTicker", payload, symbol), "b", "bookTicker", payload, symbol)
    ask = _price(_field(data, "a", "bookTicker", payload, symbol), "a", "bookTicker", payload, symbol)
    if bid > ask:
        raise MalformedMessage("crossed_book", f"bookTicker: bid {bid} > ask {ask}", payload, symbol)
    event_ms = data.get("T", data.get("E"))
    return BookUpdate(
        symbol=symbol,
        event_ms=_int(event_ms, "T", "bookTicker", payload, symbol),
        update_id=_int(data.get("u", 0), "u", "bookTicker", payload, symbol),
        bid=bid,
        bid_qty=_price(_field(data, "B", "bookTicker", payload, symbol), "B", "bookTicker", payload, symbol, zero_ok=True),
        ask=ask,
        ask_qty=_price(_field(data, "A", "bookTicker", payload, symbol), "A", "bookTicker", payload, symbol, zero_ok=True),
    )  # fmt: skip


def _symbol(data: Mapping[str, Any], payload: object) -> str:
    raw = data.get("s")
    try:
        return to_internal(raw, "rest")  # type: ignore[arg-type]
    except SymbolError as e:
        raise MalformedMessage("bad_symbol", str(e), payload, raw if isinstance(raw, str) else None) from None


_PARSERS: dict[str, Callable[[Mapping[str, Any], object], Update]] = {
    "kline": parse_kline,
    "markPriceUpdate": parse_mark,
    "bookTicker": parse_book,
}


class StreamRouter:
    """Route combined-stream messages (``{"stream": …, "data": …}``) of one group to parsed updates.

    A message of a stream the group did not subscribe, a payload whose event type or symbol does
    not match its stream name, or a payload that does not parse raises MalformedMessage.
    Subscription acknowledgements (``{"result": null, "id": …}``) route to None.
    """

    def __init__(self, symbols: Sequence[str], intervals: Sequence[str]) -> None:
        names = stream_names(symbols, intervals)
        self._streams: dict[str, tuple[str, str]] = {}
        for name in names["market"] + names["public"]:
            key, _, rest = name.partition("@")
            kind = rest.split("@", 1)[0]
            event = (
                "kline" if kind.startswith("kline_") else ("markPriceUpdate" if kind == "markPrice" else kind)
            )
            self._streams[name] = (event, to_internal(key, "ws"))
        self.names = names

    def route(self, message: object) -> Update | None:
        """Return the parsed update of ``message`` (None for an acknowledgement)."""
        if not isinstance(message, Mapping):
            raise MalformedMessage(
                "bad_shape", f"message is a {type(message).__name__}, not an object", message
            )
        if "result" in message and "id" in message and "stream" not in message:
            return None
        stream, data = message.get("stream"), message.get("data")
        if not isinstance(stream, str) or not isinstance(data, Mapping):
            raise MalformedMessage("bad_shape", "message lacks 'stream' or 'data'", message)
        if stream not in self._streams:
            raise MalformedMessage("unknown_stream", f"stream {stream!r} was not subscribed", message)
        event, symbol = self._streams[stream]
        if data.get("e") != event:
            raise MalformedMessage(
                "wrong_event",
                f"stream {stream} carries {event!r} events, got {data.get('e')!r}",
                message,
                symbol,
            )
        update = _PARSERS[event](data, message)
        if update.symbol != symbol:
            raise MalformedMessage(
                "wrong_symbol",
                f"stream {stream} is {symbol}'s, payload says {update.symbol}",
                message,
                symbol,
            )
        if isinstance(update, KlineUpdate) and stream_kind(stream) != f"kline_{update.interval}":
            raise MalformedMessage(
                "wrong_interval", f"stream {stream} got a {update.interval} kline", message, symbol
            )
        return update


# --- connections ------------------------------------------------------------------------------------


def backoff_s(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Return the wait before reconnect ``attempt`` (0-based): exponential, capped, with equal jitter
    (uniform in [d/2, d] for d = min(cap, base·2^attempt)); never gives up."""
    delay = min(cap_s, base_s * 2.0 ** min(attempt, 30))
    return delay / 2 + rng.random() * delay / 2


class _Socket(ReconnectingWebsocket):
    """python-binance's socket with its own reconnect off: a closed connection reports an error
    message and ends, and ``StreamConnection`` decides what happens next."""

    MAX_RECONNECTS = 0
    TIMEOUT = 1  # how often the read loop notices it is asked to exit, seconds

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        self.ws_state = WSListenerState.EXITING
        with contextlib.suppress(Exception):
            if self.ws is not None:
                await self.ws.close()  # wakes a read loop blocked in recv()
        try:
            await asyncio.wait_for(self.__aexit__(None, None, None), timeout_s)
        except Exception as e:  # a socket that will not close cleanly is dropped anyway
            log.warning("closing %s%s%s: %s", self._url, self._prefix, (self._path or "")[:80], e)


@dataclass(slots=True)
class ConnectionStats:
    """Counters of one ``StreamConnection``."""

    connects: int = 0
    reconnects: int = 0
    failed_connects: int = 0
    proactive_reconnects: int = 0
    silences: int = 0
    errors: int = 0
    messages: int = 0
    last_error: str | None = None
    connected: bool = False
    last_message_wall_ms: int | None = None
    kind_messages: dict[str, int] = field(default_factory=dict)


class StreamConnection:
    """One supervised combined-stream connection (see the module docstring).

    ``on_message(message, received_wall_ms)`` gets every decoded message; ``on_state(up, first)``
    is awaited when the connection comes up (``first`` for the very first time) and goes down.
    ``silence_s`` maps stream kinds (``kline_1m``, ``markPrice``, …) to the wall seconds without a
    message after which the connection counts as dead; kinds not listed are not watched, and any
    message at all resets ``connection_silence_s``.
    """

    def __init__(
        self,
        name: str,
        ws_url: str,
        category: str,
        streams: Sequence[str],
        on_message: Callable[[dict[str, Any], int], None],
        on_state: Callable[[bool, bool], Awaitable[None]],
        *,
        silence_s: Mapping[str, float],
        connection_silence_s: float,
        backoff_base_s: float,
        backoff_cap_s: float,
        max_age_s: float,
        overlap_s: float = 5.0,
        max_queue_size: int = 100_000,
        seed: int | None = None,
    ) -> None:
        self.name = name
        self._url, self._prefix, self._path = stream_url(ws_url, category, streams)
        self._on_message = on_message
        self._on_state = on_state
        self._silence_s = {k: v for k, v in silence_s.items() if any(stream_kind(s) == k for s in streams)}
        self._connection_silence_s = connection_silence_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._max_age_s = max_age_s
        self._overlap_s = overlap_s
        self._queue_size = max_queue_size
        self._rng = random.Random(seed)
        self._stopping = asyncio.Event()
        self.stats = ConnectionStats()

    @property
    def url(self) -> str:
        return f"{self._url}{self._prefix}{self._path}"

    async def run(self) -> None:
        """Keep the connection up until ``stop``; never gives up."""
        sock = await self._open(reconnect=False)
        if sock is not None:
            await self._on_state(True, True)
        while sock is not None:
            connected_at = time.monotonic()
            pump = asyncio.create_task(self._pump(sock))
            next_sock: _Socket | None = None
            while next_sock is None:
                age_left = self._max_age_s - (time.monotonic() - connected_at)
                done, _ = await asyncio.wait({pump}, timeout=max(age_left, 0.0))
                if done:  # the connection died, went silent or we are stopping
                    reason = pump.result()
                    await sock.shutdown()
                    self.stats.connected = False
                    if self._stopping.is_set():
                        return
                    log.warning("%s: %s; reconnecting", self.name, reason)
                    await self._on_state(False, False)
                    next_sock = await self._open(reconnect=True)
                    if next_sock is None:
                        return
                    await self._on_state(True, False)
                else:  # proactive: open the next connection before closing this one
                    next_sock = await self._open(reconnect=False)
                    if next_sock is None:
                        pump.cancel()
                        await sock.shutdown()
                        return
                    self.stats.proactive_reconnects += 1
                    next_pump = asyncio.create_task(self._pump(next_sock))
                    started = self.stats.messages
                    deadline = time.monotonic() + self._overlap_s
                    while (
                        self.stats.messages == started
                        and time.monotonic() < deadline
                        and not next_pump.done()
                    ):
                        await asyncio.sleep(0.02)
                    pump.cancel()
                    await sock.shutdown()
                    sock, pump, next_sock, connected_at = next_sock, next_pump, None, time.monotonic()
                    self.stats.connected = True
            sock = next_sock

    async def stop(self) -> None:
        """Ask ``run`` to end; it closes the socket and returns."""
        self._stopping.set()

    async def _open(self, *, reconnect: bool) -> _Socket | None:
        attempt = 0
        while not self._stopping.is_set():
            sock = _Socket(
                url=self._url, path=self._path, prefix=self._prefix, max_queue_size=self._queue_size
            )
            try:
                await asyncio.wait_for(sock.connect(), timeout=10.0)
            except Exception as e:
                self.stats.failed_connects += 1
                self.stats.last_error = f"connect: {type(e).__name__}: {e}"[:300]
                await sock.shutdown(timeout_s=1.0)
                wait = backoff_s(attempt, *self._backoff, self._rng)
                attempt += 1
                log.warning("%s: connect failed (%s); retry %d in %.2f s", self.name, e, attempt, wait)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
                continue
            self.stats.connects += 1
            if reconnect:
                self.stats.reconnects += 1
            self.stats.connected = True
            return sock
        return None

    async def _pump(self, sock: _Socket) -> str:
        """Feed messages to ``on_message`` until the socket fails or a watched kind goes silent."""
        opened = time.monotonic()
        last_any = opened
        last_kind = dict.fromkeys(self._silence_s, opened)
        while not self._stopping.is_set():
            try:
                message = await asyncio.wait_for(sock.recv(), timeout=0.25)
            except TimeoutError:
                message = None
            except ReadLoopClosed:
                return "read loop closed"
            now = time.monotonic()
            if message is not None:
                if isinstance(message, dict) and message.get("e") == "error":
                    self.stats.errors += 1
                    self.stats.last_error = f"{message.get('type')}: {message.get('m')}"[:300]
                    return f"socket error {self.stats.last_error}"
                last_any = now
                self.stats.messages += 1
                self.stats.last_message_wall_ms = int(time.time() * 1000)
                stream = message.get("stream") if isinstance(message, dict) else None
                if isinstance(stream, str):
                    kind = stream_kind(stream)
                    self.stats.kind_messages[kind] = self.stats.kind_messages.get(kind, 0) + 1
                    if kind in last_kind:
                        last_kind[kind] = now
                try:
                    self._on_message(message, self.stats.last_message_wall_ms)
                except Exception:  # a handler bug must not take the connection down
                    log.exception("%s: message handler failed", self.name)
            if now - last_any > self._connection_silence_s:
                self.stats.silences += 1
                return f"silent for {now - last_any:.1f} s"
            for kind, seen in last_kind.items():
                if now - seen > self._silence_s[kind]:
                    self.stats.silences += 1
                    return f"no {kind} message for {now - seen:.1f} s"
        return "stopped"
