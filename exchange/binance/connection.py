"""A supervised python-binance combined-stream connection: reconnect forever, silence watchdog, renewal.

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
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from binance.exceptions import ReadLoopClosed
from binance.ws.constants import WSListenerState
from binance.ws.reconnecting_websocket import ReconnectingWebsocket

from exchange.binance.streams import stream_kind, stream_url

log = logging.getLogger(__name__)


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
