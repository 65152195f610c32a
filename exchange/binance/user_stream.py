"""The Binance USDⓈ-M user data stream: listenKey upkeep, one supervised private connection, typed events.

``UserStream.run`` keeps the stream up until ``stop``. It creates a listenKey (``POST
/fapi/v1/listenKey``, API key only, through the trading client's ``SignedTransport``), connects to
``<ws_url>private?listenKey=<key>`` (``UserStreamConfig.path``) on python-binance's socket with its
own reconnect off (``exchange.binance.connection``), and keeps the key alive with a ``PUT`` every
``keepalive_s``. Supervision is ours:

- Rotation: a failed keepalive, a keepalive that answers another key, or a ``listenKeyExpired``
  event for our key (after which Binance sends nothing more on it, though the socket stays open)
  creates a new key and reconnects. After any other loss the key is checked with a ``PUT`` first;
  ``-1125`` ("This listenKey does not exist.") or any failure creates a new one.
- Watchdog: we ping every ``ping_interval_s``; a connection with neither a message nor a pong for
  ``silence_s`` counts as dead (a quiet account sends no events for hours, so messages alone
  cannot tell). A closed or silent connection is replaced at once (with backoff when connections
  keep dying young).
- Rollover: after ``max_connection_age_s`` (Binance closes a connection at 24 h) a new connection
  is opened before the old one is closed; for ``overlap_s`` both are read, and a message the new
  one repeats from the old one is passed on once.
- Gaps: Binance replays nothing after a reconnect. Every loss (closed, silence, rotation) emits a
  ``Gap(start_ms, end_ms, reason)`` — from the last sign of life to the new connection, server
  time as estimated by the transport — and then backfills fills over REST: ``userTrades`` of each
  symbol the caller names (``symbols``: those with open positions or orders), since the last trade
  seen of that symbol (the stream's start if none). Order and account states are not replayed: the
  ledger reconciles after a Gap.

Events (``events()`` or the ``on_event`` callback), in arrival order: the payload structures of
``exchange.binance.payloads`` (``OrderTradeUpdateEvent``, ``AlgoUpdateEvent``, ``AccountUpdateEvent``,
``MarginCallEvent``, ``TradeLiteEvent``, ``ListenKeyExpiredEvent``), passed on as received — duplicates
and out-of-order events included: ordering and de-duplicating order states is the ledger's job — and
ours: ``UserFill`` after each ORDER_TRADE_UPDATE that reports a fill and for each backfilled trade,
once per ``(symbol, trade id)`` (a bounded memory of ``remembered_trades``), ``Gap``, and
``MalformedEvent`` for an event that does not parse (an ORDER_TRADE_UPDATE among them triggers a
backfill). Unknown event types are counted (``stats.unknown_events``), logged once per type, and
dropped.

The listenKey is a credential: it appears in no log line of ours or of the socket libraries
(``websockets``, python-binance, ``connection``; a logging filter masks it while ``run`` runs), in no
event ``repr`` and in no stats. REST calls run in a worker thread, one at a time: give the stream its
own ``BinanceTrading`` (the client is not thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import MalformedMessage, RejectedError
from exchange.binance.connection import _Socket, backoff_s
from exchange.binance.payloads import (
    USER_EVENT_PARSERS,
    ListenKeyExpiredEvent,
    OrderTradeUpdateEvent,
    UserEvent,
    UserFill,
    UserTrade,
    parse_user_event,
    user_fill_of_trade,
    user_fill_of_update,
)
from exchange.binance.trading import BinanceTrading

log = logging.getLogger(__name__)

LISTEN_KEY_PATH = "/fapi/v1/listenKey"
#: The longest ``userTrades`` time window Binance answers, ms.
TRADES_WINDOW_MS = 7 * 24 * 3600 * 1000
#: Loggers that may write the private URL, and so the listenKey.
_URL_LOGGERS = (
    "websockets.client",
    "binance.ws.reconnecting_websocket",
    "exchange.binance.connection",
    __name__,
)
#: A connection that lived this long was healthy: the next one is opened without a backoff, s.
_STABLE_S = 10.0
_T = TypeVar("_T")


class UserStreamConfig(BaseModel):
    """Where the user data stream is and how it is kept alive (times in seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ws_url: str = Field(
        "wss://fstream.binance.com/",
        description="WebSocket base (python-binance's FSTREAM_URL) or the venue's",
    )
    path: str = Field(
        "private?listenKey={key}", description="the private stream under ws_url; {key} is the listenKey"
    )
    keepalive_s: float = Field(1800.0, gt=0, description="listenKey keepalive period; a key lives 60 min")
    silence_s: float = Field(30.0, gt=0, description="no message and no pong for this long: connection dead")
    ping_interval_s: float = Field(5.0, gt=0, description="our pings; each pong is a sign of life")
    max_connection_age_s: float = Field(
        23.5 * 3600, gt=0, description="open a new connection after this long (Binance closes at 24 h)"
    )
    overlap_s: float = Field(2.0, ge=0, description="both connections are read this long at a rollover")
    connect_timeout_s: float = Field(10.0, gt=0, description="WebSocket handshake timeout")
    backoff_base_s: float = Field(0.5, gt=0, description="first wait between failed attempts (doubles)")
    backoff_cap_s: float = Field(30.0, gt=0, description="longest wait between failed attempts")
    remembered_trades: int = Field(20_000, ge=100, description="(symbol, trade id) kept against duplicates")
    backfill_limit: int = Field(1000, ge=1, le=1000, description="userTrades rows per request")
    delete_key_on_stop: bool = Field(True, description="DELETE the listenKey when the stream stops")

    @model_validator(mode="after")
    def _check(self) -> UserStreamConfig:
        if "{key}" not in self.path:
            raise ValueError(f"path {self.path!r} must contain {{key}}, where the listenKey goes")
        if self.ping_interval_s >= self.silence_s:
            raise ValueError(
                f"ping_interval_s {self.ping_interval_s} must be below silence_s {self.silence_s}"
            )
        return self


@dataclass(frozen=True, slots=True)
class Gap:
    """The stream may have missed events between ``start_ms`` and ``end_ms`` (server time, ms).

    Backfilled fills follow as ``UserFill``s (``source="backfill"``); order and account states are
    not replayed. ``reason``: ``closed``, ``silence`` or ``rotation``; ``detail`` says more.
    """

    start_ms: int
    end_ms: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class MalformedEvent:
    """A user event that did not parse (record it as a data-quality event); received at ``received_ms``."""

    error: MalformedMessage
    received_ms: int


StreamEvent = UserEvent | UserFill | Gap | MalformedEvent


@dataclass(slots=True)
class UserStreamStats:
    """Counters and state of one ``UserStream`` (no credentials)."""

    connected: bool = False
    connects: int = 0
    failed_connects: int = 0
    reconnects: int = 0
    rotations: int = 0  # listenKeys requested after the first (Binance may answer the same key)
    keepalives: int = 0
    keepalive_failures: int = 0
    rollovers: int = 0
    silences: int = 0
    gaps: int = 0
    messages: int = 0
    events: dict[str, int] = field(default_factory=dict)
    unknown_events: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    overlap_duplicates: int = 0  # messages a rollover's new connection repeated
    fills: int = 0
    duplicate_fills: int = 0  # fills already emitted (backfill and stream, or a repeated event)
    backfills: int = 0
    backfill_failures: int = 0
    last_alive_ms: int | None = None  # server time of the last message or pong
    last_error: str | None = None


def mask(key: str) -> str:
    """A listenKey (or any secret) as it may be shown: its first four characters."""
    return f"{key[:4]}…({len(key)})" if key else "''"


@dataclass(eq=False)
class _Conn:
    number: int
    sock: _Socket
    opened_s: float  # monotonic
    rollover_at_s: float
    alive_s: float
    alive_ms: int
    reader: asyncio.Task[None] | None = None


class _KeyMask(logging.Filter):
    """Mask the stream's listenKeys in log records (the socket libraries log the URL)."""

    def __init__(self, keys: Callable[[], Iterable[str]]) -> None:
        super().__init__()
        self._keys = keys

    def filter(self, record: logging.LogRecord) -> bool:
        keys = [k for k in self._keys() if k]
        if keys:
            try:
                text = record.getMessage()
            except Exception:  # a record that cannot render is left to the handler
                return True
            masked = text
            for key in keys:
                masked = masked.replace(key, mask(key))
            if masked != text:
                record.msg, record.args = masked, None
        return True


class UserStream:
    """The user data stream of one account (module docstring).

    ``symbols()`` returns the symbols with open positions or orders (called before each backfill,
    on the stream's event loop). Events go to ``on_event`` when given, else to ``events()``.
    """

    def __init__(
        self,
        trading: BinanceTrading,
        config: UserStreamConfig,
        symbols: Callable[[], Iterable[str]],
        *,
        on_event: Callable[[StreamEvent], None] | None = None,
        seed: int | None = None,
    ) -> None:
        self.trading = trading
        self.config = config
        self.stats = UserStreamStats()
        self._symbols = symbols
        self._on_event = on_event
        self._rng = random.Random(seed)
        self._queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
        self._inbox: asyncio.Queue[tuple[int, Any, str]] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._rest_lock = asyncio.Lock()
        self._numbers = itertools.count(1)
        self._key = ""
        self._keys: list[str] = []  # every key this stream used, masked in logs
        self._key_refreshed_s = 0.0
        self._rotation: str | None = None
        self._conn: _Conn | None = None
        self._retiring: _Conn | None = None
        self._retire_at_s = 0.0
        self._overlap: dict[str, dict[int, int]] | None = None
        self._overlap_until_s = 0.0
        self._young_deaths = 0
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._client_ids: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._last_trade_ms: dict[str, int] = {}
        self._started_ms = 0
        self._backfill_due = False
        self._backfill_task: asyncio.Task[None] | None = None
        self._filter = _KeyMask(lambda: self._keys)

    def __repr__(self) -> str:
        return f"UserStream(ws_url={self.config.ws_url!r}, listen_key={mask(self._key)})"

    # Public ---------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Keep the stream up until ``stop`` (module docstring); never gives up on transient failures.

        Raises BinanceRejection when Binance refuses to create a listenKey (bad API key, IP, rights).
        """
        for name in _URL_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        keepalive: asyncio.Task[None] | None = None
        try:
            self._started_ms = self._now_ms()
            await self._new_key()
            self._conn = await self._connect()
            if self._conn is None:
                return
            keepalive = asyncio.create_task(self._keepalive_loop())
            while True:
                reason, detail = await self._watch()
                if reason == "stopped":
                    return
                await self._replace(reason, detail)
                if self._conn is None:
                    return
        finally:
            await self._shut_down(keepalive)

    async def stop(self) -> None:
        """Ask ``run`` to end: it closes the connection, deletes the listenKey and returns."""
        self._stopping.set()

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Yield the stream's events until it stops (unused with ``on_event``)."""
        while (event := await self._queue.get()) is not None:
            yield event

    # The connection's life ------------------------------------------------------------------------------
    async def _watch(self) -> tuple[str, str]:
        """Handle messages until the connection must be replaced; return why."""
        assert self._conn is not None
        next_ping_s = time.monotonic() + self.config.ping_interval_s
        while True:
            conn, now = self._conn, time.monotonic()
            if self._stopping.is_set():
                return "stopped", ""
            if self._rotation is not None:
                reason, self._rotation = self._rotation, None
                return "rotation", reason
            if now - conn.alive_s > self.config.silence_s:
                self.stats.silences += 1
                return "silence", f"no message or pong for {now - conn.alive_s:.1f} s"
            if self._retiring is not None and now >= self._retire_at_s:
                await self._close(self._retiring)
                self._retiring = None
            if self._overlap is not None and self._retiring is None and now >= self._overlap_until_s:
                self._overlap = None
            if now >= conn.rollover_at_s and self._retiring is None:
                await self._roll_over(conn)
                continue
            if now >= next_ping_s:
                await self._ping(conn)
                next_ping_s = now + self.config.ping_interval_s
            try:
                number, message, ended = await asyncio.wait_for(
                    self._inbox.get(), max(0.0, min(0.1, next_ping_s - now))
                )
            except TimeoutError:
                continue
            if message is not None:
                self._handle(number, message)
            elif number == conn.number:
                return "closed", ended

    async def _replace(self, reason: str, detail: str) -> None:
        """Close the lost connection, renew or check the key, reconnect, report the gap and backfill."""
        conn = self._conn
        assert conn is not None
        self.stats.connected = False
        log.warning("user stream: %s (%s); reconnecting", reason, self._redact(detail))
        await self._close(conn)
        self._drain()
        if time.monotonic() - conn.opened_s < _STABLE_S:  # connections dying young: back off
            await self._pause(self._young_deaths, f"connection {conn.number} lived < {_STABLE_S:.0f} s")
            self._young_deaths += 1
        else:
            self._young_deaths = 0
        if reason == "rotation":
            await self._new_key()
        else:
            await self._check_key()
        self._conn = await self._connect()
        if self._conn is None:
            return
        self.stats.reconnects += 1
        self._gap(Gap(conn.alive_ms, self._now_ms(), reason, self._redact(detail)))

    async def _roll_over(self, old: _Conn) -> None:
        """Open the next connection before closing ``old`` (Binance's 24 h limit); no gap."""
        try:
            new = await self._open()
        except Exception as e:  # the old connection still works: try again later
            self.stats.failed_connects += 1
            self.stats.last_error = self._redact(f"rollover connect: {type(e).__name__}: {e}")[:300]
            old.rollover_at_s = time.monotonic() + self.config.backoff_cap_s
            log.warning("user stream: %s", self.stats.last_error)
            return
        self.stats.rollovers += 1
        self._retiring, self._retire_at_s, self._conn = old, time.monotonic() + self.config.overlap_s, new
        self._overlap = {}
        self._overlap_until_s = self._retire_at_s + self.config.overlap_s

    async def _connect(self) -> _Conn | None:
        """Open a connection with the current key, retrying with backoff; None when stopping."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                return await self._open()
            except Exception as e:
                self.stats.failed_connects += 1
                self.stats.last_error = self._redact(f"connect: {type(e).__name__}: {e}")[:300]
                await self._pause(attempt, self.stats.last_error)
                attempt += 1
                if attempt % 3 == 0 and not self._stopping.is_set():
                    await self._check_key()
        return None

    async def _open(self) -> _Conn:
        base = self.config.ws_url if self.config.ws_url.endswith("/") else self.config.ws_url + "/"
        path = self.config.path.format(key=self._key)
        sock = _Socket(url=base, prefix="", path=path, max_queue_size=100_000, ping_interval=None)
        try:
            await asyncio.wait_for(sock.connect(), timeout=self.config.connect_timeout_s)
        except BaseException:
            await sock.shutdown(timeout_s=1.0)
            raise
        now = time.monotonic()
        conn = _Conn(
            next(self._numbers), sock, now, now + self.config.max_connection_age_s, now, self._now_ms()
        )
        conn.reader = asyncio.create_task(self._read(conn))
        self.stats.connects += 1
        self.stats.connected = True
        log.info("user stream: connection %d open (listenKey %s)", conn.number, mask(self._key))
        return conn

    async def _read(self, conn: _Conn) -> None:
        while True:
            try:
                message = await conn.sock.recv()
            except Exception as e:  # python-binance's ReadLoopClosed: the socket is gone
                self._inbox.put_nowait((conn.number, None, f"{type(e).__name__}: {e}"))
                return
            if isinstance(message, dict) and message.get("e") == "error":
                self._inbox.put_nowait((conn.number, None, f"{message.get('type')}: {message.get('m')}"))
                return
            self._alive(conn)
            self._inbox.put_nowait((conn.number, message, ""))

    async def _ping(self, conn: _Conn) -> None:
        ws = conn.sock.ws
        if ws is None:
            return
        try:
            waiter = await ws.ping()
        except Exception:  # closed: the reader reports it
            return

        def pong(done: asyncio.Future[float]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._alive(conn)

        waiter.add_done_callback(pong)

    def _alive(self, conn: _Conn) -> None:
        conn.alive_s, conn.alive_ms = time.monotonic(), self._now_ms()
        if conn is self._conn:
            self.stats.last_alive_ms = conn.alive_ms

    async def _close(self, conn: _Conn) -> None:
        if conn.reader is not None:
            conn.reader.cancel()
        await conn.sock.shutdown(timeout_s=2.0)
        if conn.reader is not None:  # a cancel racing a message can be lost (wait_for, 3.11): bounded wait
            await asyncio.wait({conn.reader}, timeout=2.0)

    def _drain(self) -> None:
        """Handle what closed connections delivered before they closed."""
        while not self._inbox.empty():
            number, message, _ = self._inbox.get_nowait()
            if message is not None:
                self._handle(number, message)

    async def _shut_down(self, keepalive: asyncio.Task[None] | None) -> None:
        for task in (keepalive, self._backfill_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for conn in (self._retiring, self._conn):
            if conn is not None:
                await self._close(conn)
        self._conn = self._retiring = None
        self.stats.connected = False
        if self.config.delete_key_on_stop and self._key:
            try:
                await self._rest(functools.partial(self._key_call, "DELETE"))
            except Exception as e:  # the key expires by itself within 60 minutes
                log.warning("user stream: deleting listenKey %s: %s", mask(self._key), self._redact(str(e)))
        self._queue.put_nowait(None)
        for name in _URL_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)

    # listenKeys -----------------------------------------------------------------------------------------
    async def _new_key(self) -> None:
        """Create a listenKey (Binance answers the live one, extended, if any); retry transient failures."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                key = await self._rest(functools.partial(self._key_call, "POST"))
                if key is None:
                    raise MalformedMessage("missing_field", "POST listenKey answered no listenKey", None)
            except RejectedError as e:
                if not isinstance(e, MalformedMessage):
                    raise  # the API key is refused: nothing to retry
                self.stats.last_error = f"listenKey: {e}"
            except Exception as e:
                self.stats.last_error = self._redact(f"listenKey: {type(e).__name__}: {e}")[:300]
            else:
                self.stats.rotations += bool(self._key)
                self._set_key(key)
                return
            await self._pause(attempt, self.stats.last_error)
            attempt += 1

    async def _keepalive(self) -> str | None:
        """PUT the key; None when it is alive, else why it must be replaced."""
        try:
            answered = await self._rest(functools.partial(self._key_call, "PUT"))
        except Exception as e:  # -1125 "This listenKey does not exist.", 5xx, unreachable
            self.stats.keepalive_failures += 1
            reason = self._redact(f"keepalive failed: {e}")[:300]
        else:
            self.stats.keepalives += 1
            if answered in (None, self._key):
                self._key_refreshed_s = time.monotonic()
                return None
            reason = "keepalive answered another listenKey"
        log.warning("user stream: %s (listenKey %s)", reason, mask(self._key))
        return reason

    async def _check_key(self) -> None:
        if await self._keepalive() is not None:
            await self._new_key()

    async def _keepalive_loop(self) -> None:
        while not self._stopping.is_set():
            wait_s = self._key_refreshed_s + self.config.keepalive_s - time.monotonic()
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait_s)
                continue
            reason = await self._keepalive()
            if reason is not None:
                self._rotation = reason
            self._key_refreshed_s = time.monotonic()

    def _key_call(self, method: str) -> str | None:
        """``method`` /fapi/v1/listenKey (API key only, no signature); the key answered, if any."""
        body = self.trading.http.call(method, LISTEN_KEY_PATH, signed=False, action="write")
        key = body.get("listenKey") if isinstance(body, Mapping) else None
        return key if isinstance(key, str) and key else None

    def _set_key(self, key: str) -> None:
        self._key, self._key_refreshed_s = key, time.monotonic()
        if key not in self._keys:
            self._keys = [*self._keys[-7:], key]
        log.info("user stream: listenKey %s", mask(key))

    # Events ---------------------------------------------------------------------------------------------
    def _handle(self, number: int, message: Any) -> None:
        self.stats.messages += 1
        data = message.get("data") if isinstance(message, Mapping) and "stream" in message else message
        if self._overlap is not None and self._repeated(number, data):
            return
        kind = data.get("e") if isinstance(data, Mapping) else None
        if isinstance(data, Mapping) and kind not in USER_EVENT_PARSERS:
            name = str(kind)
            self.stats.unknown_events[name] = self.stats.unknown_events.get(name, 0) + 1
            if self.stats.unknown_events[name] == 1:
                log.warning(
                    "user stream: unknown event type %r ignored (counted in stats.unknown_events)", name
                )
            return
        try:
            event = parse_user_event(data, message)  # type: ignore[arg-type]
        except MalformedMessage as e:
            self.stats.malformed += 1
            log.warning("user stream: malformed %s event: %s", kind, self._redact(e.detail))
            self._emit(MalformedEvent(e, self._now_ms()))
            if kind == "ORDER_TRADE_UPDATE":  # it may have reported a fill
                self._request_backfill()
            return
        self.stats.events[str(kind)] = self.stats.events.get(str(kind), 0) + 1
        self._emit(event)
        if isinstance(event, OrderTradeUpdateEvent):
            self._remember(self._client_ids, (event.o.s, event.o.i), event.o.c)
            fill = user_fill_of_update(event)
            if fill is not None:
                self._emit_fill(fill)
        elif isinstance(event, ListenKeyExpiredEvent) and event.listenKey in ("", self._key):
            self._rotation = "listenKeyExpired"

    def _repeated(self, number: int, data: Any) -> bool:
        """During a rollover: whether this connection repeats a message the other one delivered."""
        assert self._overlap is not None
        counts = self._overlap.setdefault(json.dumps(data, sort_keys=True, default=str), {})
        counts[number] = counts.get(number, 0) + 1
        if counts[number] <= max((n for c, n in counts.items() if c != number), default=0):
            self.stats.overlap_duplicates += 1
            return True
        return False

    def _emit_fill(self, fill: UserFill) -> None:
        key = (fill.symbol, fill.trade_id)
        if key in self._seen:
            self.stats.duplicate_fills += 1
            self._seen.move_to_end(key)
            return
        self._remember(self._seen, key, None)
        self._last_trade_ms[fill.symbol] = max(self._last_trade_ms.get(fill.symbol, 0), fill.ts_ms)
        self.stats.fills += 1
        self._emit(fill)

    def _emit(self, event: StreamEvent) -> None:
        if self._on_event is None:
            self._queue.put_nowait(event)
            return
        try:
            self._on_event(event)
        except Exception:  # a handler bug must not take the stream down
            log.exception("user stream: event handler failed on %s", type(event).__name__)

    def _remember(self, memory: OrderedDict[tuple[str, int], _T], key: tuple[str, int], value: _T) -> None:
        memory[key] = value
        memory.move_to_end(key)
        while len(memory) > self.config.remembered_trades:
            memory.popitem(last=False)

    # Gaps and backfill ----------------------------------------------------------------------------------
    def _gap(self, gap: Gap) -> None:
        self.stats.gaps += 1
        log.warning(
            "user stream: gap of %d ms (%s); backfilling fills", gap.end_ms - gap.start_ms, gap.reason
        )
        self._emit(gap)
        self._request_backfill()

    def _request_backfill(self) -> None:
        self._backfill_due = True
        if self._backfill_task is None or self._backfill_task.done():
            self._backfill_task = asyncio.create_task(self._backfill_loop())

    async def _backfill_loop(self) -> None:
        attempt = 0
        while self._backfill_due and not self._stopping.is_set():
            self._backfill_due = False
            try:
                for symbol in sorted(set(self._symbols())):
                    floor_ms = self._now_ms() - TRADES_WINDOW_MS + 60_000
                    since_ms = max(self._last_trade_ms.get(symbol, self._started_ms), floor_ms)
                    for trade in await self._rest(functools.partial(self._trades_since, symbol, since_ms)):
                        client_id = self._client_ids.get((trade.symbol, trade.orderId))
                        self._emit_fill(user_fill_of_trade(trade, client_id))
                self.stats.backfills += 1
                attempt = 0
            except Exception as e:  # retried until it succeeds; the owner sees it in stats
                self._backfill_due = True
                self.stats.backfill_failures += 1
                self.stats.last_error = self._redact(f"backfill: {type(e).__name__}: {e}")[:300]
                await self._pause(attempt, self.stats.last_error)
                attempt += 1

    def _trades_since(self, symbol: str, since_ms: int) -> list[UserTrade]:
        """Every trade of ``symbol`` from ``since_ms`` on: by time, then by id while pages come full."""
        limit = self.config.backfill_limit
        page = self.trading.user_trades(symbol, start_ms=since_ms, limit=limit)
        trades = list(page)
        while len(page) == limit:
            page = self.trading.user_trades(symbol, from_id=max(t.id for t in page) + 1, limit=limit)
            trades += page
        return trades

    # Helpers --------------------------------------------------------------------------------------------
    async def _pause(self, attempt: int, what: str | None) -> None:
        """Log ``what`` failed and wait the backoff of ``attempt`` (or until stopped)."""
        wait_s = backoff_s(attempt, self.config.backoff_base_s, self.config.backoff_cap_s, self._rng)
        log.warning("user stream: %s; retry %d in %.2f s", what, attempt + 1, wait_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), wait_s)

    async def _rest(self, call: Callable[[], _T]) -> _T:
        async with self._rest_lock:
            return await asyncio.to_thread(call)

    def _now_ms(self) -> int:
        return self.trading.http.now_ms()

    def _redact(self, text: str) -> str:
        for key in self._keys:
            text = text.replace(key, mask(key))
        return text
