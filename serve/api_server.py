"""The API served by uvicorn inside one Ray actor, on loopback, without Serve's HTTP proxy.

Through Serve's proxy a state request costs 9–13 ms of CPU (the proxy's uvicorn and router, a Ray actor
call, the replica's ASGI bridge; bench/RESULTS.md #16); the same app under plain uvicorn costs about
what the app itself costs (1–2.5 ms). ``ApiServer`` is a Ray actor (``num_cpus=0``) that builds the
same app as the Serve ingress (``serve.ingress.build_api``: REST, ``/ws``, ``/predict``, dashboard) and
runs uvicorn (uvloop and httptools when installed) in a thread of its own on ``config.bind_host``
(127.0.0.1 by default), behind ``ReadCache``: a state read is answered from the same request's answer
of the last 250 ms, so 200 req/s over the state endpoints cost ~40 queries a second, not 200. ``/predict`` still goes through the Predictor's Serve deployment handle, so
inference stays batched by ``@serve.batch`` with the realtime path's.

``start_api_server(config, port)`` starts the actor and waits until uvicorn listens (a port in use is
an ``OSError`` naming it); ``stop_api_server(actor)`` stops uvicorn gracefully (open WebSockets are
closed, the port is freed) and ends the actor.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import threading
import time
from typing import Any

import ray

from serve.api.app import ApiConfig

__all__ = ["API_SERVER_NAME", "ApiServer", "ReadCache", "start_api_server", "stop_api_server"]

API_SERVER_NAME = "raytrade-api-server"

log = logging.getLogger(__name__)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class ReadCache:
    """ASGI middleware: a successful ``GET /api/...`` answer is replayed to the same request (path, query
    and ``Authorization`` header) for ``ttl_s``; any other method clears the cache before and after it
    runs, so a mutation made through this server is seen by the next read.

    At 200 req/s over the state endpoints most reads then cost uvicorn and this lookup (~0.5 ms of CPU)
    instead of the queries and DTOs (1–8 ms). Answers are at most ``ttl_s`` old (what other processes
    change shows after that); a request with another or no token is never answered from an entry of a
    token it did not send, so token auth is unchanged. Only complete, non-streamed 200 answers without
    ``Cache-Control: no-store`` are kept; at most ``max_entries`` (expired entries dropped first).
    """

    def __init__(self, app: Any, ttl_s: float, max_entries: int = 4096) -> None:
        self.app = app
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.entries: dict[tuple[str, bytes, bytes], tuple[float, dict[str, Any], bytes]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.ttl_s <= 0:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "GET":
            if scope["method"] not in ("HEAD", "OPTIONS"):
                self.entries.clear()
            try:
                await self.app(scope, receive, send)
            finally:
                if scope["method"] not in ("HEAD", "OPTIONS"):
                    self.entries.clear()
            return
        if not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        key = (scope["path"], scope.get("query_string", b""), auth)
        now = time.monotonic()
        hit = self.entries.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            await send(hit[1])
            await send({"type": "http.response.body", "body": hit[2], "more_body": False})
            return
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []
        complete = False

        async def capture(message: dict[str, Any]) -> None:
            nonlocal start, complete
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                complete = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, capture)
        if start is None or start["status"] != 200 or not complete or len(chunks) != 1:
            return
        if any(k == b"cache-control" and b"no-store" in v.lower() for k, v in start.get("headers", [])):
            return
        if len(self.entries) >= self.max_entries:
            self.entries = {k: v for k, v in self.entries.items() if now - v[0] < self.ttl_s}
            if len(self.entries) >= self.max_entries:
                self.entries.clear()
        self.entries[key] = (now, start, chunks[0])


class ApiServer:
    """uvicorn serving the API app in a thread of this actor (see the module docstring)."""

    def __init__(
        self, config: ApiConfig, port: int, graceful_s: float = 5.0, cache_ttl_s: float = 0.25
    ) -> None:
        import uvicorn

        from serve.ingress import build_api

        self.config = config
        # bind here, in the constructor: a port in use fails the start with the OSError that names it
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((config.bind_host, int(port)))
        except OSError as e:
            self.sock.close()
            raise OSError(
                e.errno, f"the API cannot listen on {config.bind_host}:{port}: {e.strerror}"
            ) from None
        self.port = int(self.sock.getsockname()[1])
        self.sock.set_inheritable(True)
        self.server = uvicorn.Server(
            uvicorn.Config(
                ReadCache(build_api(config), cache_ttl_s), host=config.bind_host, port=self.port,
                loop="uvloop" if _installed("uvloop") else "asyncio",
                http="httptools" if _installed("httptools") else "h11",
                ws="websockets", lifespan="on", access_log=False, log_level="warning",
                timeout_graceful_shutdown=graceful_s, ws_ping_interval=None,
            )
        )  # fmt: skip
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="api-uvicorn", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as e:  # SystemExit from a failed startup included: the caller asks for it
            self.error = e

    def wait_started(self, timeout_s: float = 30.0) -> str:
        """Wait until uvicorn accepts connections; its base URL."""
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start: {self.error!r}")
            time.sleep(0.02)
        return f"http://{self.config.bind_host}:{self.port}"

    def stop(self, timeout_s: float = 15.0) -> bool:
        """Stop uvicorn (graceful: open requests finish, WebSockets are closed) and free the port."""
        self.server.should_exit = True
        self.thread.join(timeout_s)
        stopped = not self.thread.is_alive()
        if not stopped:
            self.server.force_exit = True
            self.thread.join(5)
        self.sock.close()
        return stopped


def start_api_server(
    config: ApiConfig,
    port: int,
    *,
    name: str = API_SERVER_NAME,
    cache_ttl_s: float = 0.25,
    timeout_s: float = 60.0,
) -> tuple[Any, str]:
    """Start the ``ApiServer`` actor (``num_cpus=0``, named ``name``) and wait until it listens on
    ``config.bind_host:port``; return the actor handle and the base URL. ``cache_ttl_s``: how long a
    state answer is replayed (``ReadCache``; 0: never)."""
    actor = (
        ray.remote(ApiServer)
        .options(name=name, num_cpus=0, max_restarts=0)
        .remote(config, port, 5.0, cache_ttl_s)
    )
    try:
        url: str = ray.get(actor.wait_started.remote(), timeout=timeout_s)
    except ray.exceptions.RayActorError as e:  # the constructor failed: raise its cause (the port in use)
        ray.kill(actor)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        bind = next((line for line in lines if "the API cannot listen" in line), None)
        if bind is not None:
            raise OSError(bind.partition("OSError: ")[2] or bind) from None
        raise RuntimeError(
            f"the API server did not start: {lines[-1] if lines else type(e).__name__}"
        ) from None
    except BaseException:
        ray.kill(actor)
        raise
    return actor, url


def stop_api_server(actor: Any, timeout_s: float = 30.0) -> None:
    """Stop the server gracefully, then end the actor."""
    try:
        ray.get(actor.stop.remote(), timeout=timeout_s)
    except Exception as e:  # already gone or stuck: ended below either way
        log.warning("the API server did not stop cleanly: %s", type(e).__name__)
    finally:
        ray.kill(actor, no_restart=True)
