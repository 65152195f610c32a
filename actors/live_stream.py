"""The live book's user data stream: ``exchange.binance.user_stream.UserStream`` on its own event loop in a
background thread, its events handed over through a thread-safe queue.

The live book is single-threaded: it drains ``take()`` at the start of each of its calls. The stream
gets its own ``BinanceTrading`` (the client is not thread-safe) with the book's clock offset, so both
read the venue's time alike. ``health()`` is a snapshot the book judges against the kill switch's
bounds: whether the stream is connected, how long it has been without a message or a pong, and
whether it ended for good (an error, e.g. a refused API key).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from exchange.binance.signed import TradingConfig
from exchange.binance.trading import BinanceTrading
from exchange.binance.user_stream import StreamEvent, UserStream, UserStreamConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One stream event and when it was handed over (``time.monotonic()`` seconds)."""

    event: StreamEvent
    arrived_s: float


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """The stream at one moment: ``silent_ms`` since its last message or pong (or since it started,
    before any), on the stream client's clock; ``ended`` names the error that stopped it for good."""

    connected: bool
    silent_ms: int
    ended: str | None


class StreamThread:
    """A running ``UserStream`` of ``trading``'s account (module docstring); ``stop`` ends it."""

    def __init__(
        self,
        trading: TradingConfig,
        config: UserStreamConfig,
        symbols: Callable[[], Iterable[str]],
        *,
        clock_offset_ms: int = 0,
    ) -> None:
        self.client = BinanceTrading(trading)
        self.client.http.clock_offset_ms = clock_offset_ms
        self.stream = UserStream(self.client, config, symbols, on_event=self._put)
        self._queue: queue.SimpleQueue[Arrival] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._started_ms = self.client.http.now_ms()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._main, name="live-user-stream", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self.stream.run()

        try:
            asyncio.run(main())
        except BaseException as e:  # the stream gave up (a refused key): the book's kill switch sees it
            self.error = f"{type(e).__name__}: {e}"[:300]
            log.error("live user stream stopped: %s", self.error)
        finally:
            self._ready.set()

    def _put(self, event: StreamEvent) -> None:
        self._queue.put(Arrival(event, time.monotonic()))

    def take(self, timeout_s: float = 0.0) -> list[Arrival]:
        """Every event handed over so far, in arrival order; waits up to ``timeout_s`` for the first."""
        out: list[Arrival] = []
        try:
            out.append(self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get_nowait())
            while True:
                out.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return out

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until the first connection is open (or the stream ended); whether it is."""
        deadline = time.monotonic() + timeout_s
        while not self.stream.stats.connected and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.stream.stats.connected

    def health(self) -> StreamHealth:
        stats = self.stream.stats
        ended = self.error
        if ended is None and not self._thread.is_alive():
            ended = "the stream's thread ended"
        alive_ms = stats.last_alive_ms if stats.last_alive_ms is not None else self._started_ms
        silent_ms = max(0, self.client.http.now_ms() - alive_ms)
        return StreamHealth(stats.connected and ended is None, silent_ms, ended)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the stream (it closes its connection and deletes its listenKey) and close its client."""
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self.stream.stop(), loop).result(timeout_s)
            except Exception as e:  # the loop is closing: the thread ends by itself
                log.warning("live user stream: stop: %s", type(e).__name__)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("live user stream: the stream's thread did not stop within %.1f s", timeout_s)
        self.client.close()
