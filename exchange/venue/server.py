"""Run an aiohttp application on 127.0.0.1 in a background thread (the replay venue, tests)."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from core.errors import FatalError


class BackgroundServer:
    """An aiohttp application served from its own event loop in a daemon thread.

    ``start()`` binds ``host`` on ``port`` (0: a free port) and returns the base URL
    (``http://127.0.0.1:<port>``); ``stop()`` closes connections and joins the thread. Also a
    context manager yielding the base URL.
    """

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout_s: float = 10.0) -> str:
        """Start serving and return the base URL; raise FatalError if the server cannot start."""
        if self.url is not None:
            return self.url
        self._thread = threading.Thread(target=self._run, name="venue-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise FatalError(f"venue server did not start within {timeout_s} s")
        if self._error is not None:
            raise FatalError(
                f"venue server could not start on {self.host}:{self.port}: {self._error}"
            ) from self._error
        assert self.url is not None
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving, close open connections and join the thread. Safe to call twice."""
        loop, runner, thread = self._loop, self._runner, self._thread
        if loop is None or thread is None:
            return
        if runner is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            future.result(timeout_s)
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._loop = self._runner = self._thread = None
        self.url = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._setup())
        except BaseException as e:  # reported to start(), which raises it in the caller's thread
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _setup(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = f"http://{self.host}:{port}"
