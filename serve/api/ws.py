"""WebSocket ``GET /ws``: the channels of spec 001 §19.2 fed from the bus, with heartbeat and resume.

Protocol (JSON text frames):

- Authenticate with ``?token=``, an ``Authorization: Bearer`` header, or a first message
  ``{"op": "auth", "token": ...}`` within ``auth_timeout_s``; anything else closes with 4401.
  Browsers cannot set headers on a WebSocket; prefer the first message to the query string, which
  proxies may log. The server answers ``{"op": "ready", "channels": [...]}``.
- ``{"op": "subscribe", "channels": [...], "resume_from": {channel: last_id}}`` starts one reader
  per channel; the server answers ``{"op": "subscribed", "channels": [...]}`` once every reader is
  in place (messages published from then on are delivered). A channel in ``resume_from`` gets every
  message still in its bus topic after ``last_id`` first, so a client that reconnects with the last
  id it saw misses nothing the bus still holds. An unknown channel or a bad id gets
  ``{"op": "error", "channel": name, "error": ...}``. ``{"op": "unsubscribe", "channels": [...]}``
  stops readers.
- Data: ``{"channel": name, "id": bus entry id, "data": message}``; ids increase within a channel.
  Messages are the ``core.messages`` structs as JSON (NaN as null, ±inf as "inf"/"-inf").
- Heartbeat: ``{"op": "ping", "ts": epoch ms}`` every ``heartbeat_s``; the client answers
  ``{"op": "pong", "ts": ...}``. A client silent for ``pong_timeout_s`` is closed with 4408.

Each connection reads the bus through its own consumer groups (one per channel, ``ws-<uuid>``) in
its own small thread pool, so a blocking read never holds the event loop or the default executor.
When the connection closes its groups are deleted (``Bus.delete_group``, in that pool, without
waiting; on Redis XGROUP DESTROY), so no group outlives its client; an unsubscribed
channel's group is deleted at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import MappingProxyType
from typing import Any

import msgspec
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from core.errors import DataQualityError, FatalError, TransientError
from core.jsonsafe import dumps_json
from core.messages import Topic
from storage.bus import Bus, Delivery, open_bus

__all__ = ["CHANNELS", "CLOSE_HEARTBEAT", "CLOSE_UNAUTHORIZED", "compare_tokens", "ws_router"]

log = logging.getLogger(__name__)

#: WebSocket channel → bus topic (spec 001 §19.2; fills have their own channel).
CHANNELS: Mapping[str, Topic] = MappingProxyType(
    {
        "signal_updates": Topic.SIGNALS_NEW,
        "position_updates": Topic.POSITIONS_UPDATE,
        "order_updates": Topic.ORDERS_UPDATE,
        "fill_updates": Topic.FILLS_NEW,
        "risk_events": Topic.RISK_EVENT,
        "status_updates": Topic.SYSTEM_STATUS,
        "training_updates": Topic.TRAINING_UPDATE,
        "account_updates": Topic.ACCOUNT_UPDATE,
    }
)

CLOSE_UNAUTHORIZED = 4401
CLOSE_HEARTBEAT = 4408
CLOSE_BUS_FAILED = 1011
_CONSUMER = "ws"
_ID = re.compile(r"^\d+-\d+$")


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def _given_token(websocket: WebSocket) -> str | None:
    """The token of the query string or the Authorization header (possibly empty); None when neither."""
    if "token" in websocket.query_params:
        return websocket.query_params["token"]
    header = websocket.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


class _Connection:
    """One authenticated client: its readers, heartbeat and the single writer lock of its socket."""

    def __init__(self, websocket: WebSocket, bus: Bus, heartbeat_s: float, pong_timeout_s: float,
                 read_block_ms: int) -> None:  # fmt: skip
        self.ws = websocket
        self.bus = bus
        self.heartbeat_s = heartbeat_s
        self.pong_timeout_s = pong_timeout_s
        self.read_block_ms = read_block_ms
        self.group = f"ws-{uuid.uuid4().hex}"
        self.readers: dict[str, asyncio.Task[None]] = {}
        self.executor = ThreadPoolExecutor(max_workers=len(CHANNELS) + 1, thread_name_prefix="ws-bus")
        self.send_lock = asyncio.Lock()
        self.last_heard = time.monotonic()
        self.end = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""

    async def send(self, payload: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_text(dumps_json(payload))

    async def error(self, message: str, channel: str | None = None) -> None:
        await self.send({"op": "error", "error": message} | ({"channel": channel} if channel else {}))

    def finish(self, code: int, reason: str) -> None:
        if not self.end.is_set():
            self.close_code, self.close_reason = code, reason
            self.end.set()

    async def _io(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args, **kwargs))

    # --- client messages ---

    async def receive_loop(self) -> None:
        while True:
            try:
                text = await self.ws.receive_text()
            except WebSocketDisconnect:
                return
            self.last_heard = time.monotonic()
            try:
                msg = json.loads(text)
            except ValueError:
                await self.error("message is not JSON")
                continue
            op = msg.get("op") if isinstance(msg, dict) else None
            if op == "subscribe":
                await self.subscribe(msg.get("channels"), msg.get("resume_from") or {})
            elif op == "unsubscribe":
                await self.unsubscribe(msg.get("channels"))
            elif op == "ping":
                await self.send({"op": "pong", "ts": msg.get("ts")})
            elif op not in ("pong", "auth"):
                await self.error(f"unknown op {op!r}: use subscribe, unsubscribe, pong or ping")

    async def _channels(self, channels: object) -> list[str] | None:
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            await self.error("channels must be a list of channel names")
            return None
        known: list[str] = []
        for c in channels:
            if c in CHANNELS:
                known.append(c)
            else:
                await self.error(f"unknown channel {c!r}; channels are: {', '.join(CHANNELS)}", c)
        return known

    async def subscribe(self, channels: object, resume_from: object) -> None:
        known = await self._channels(channels)
        if known is None:
            return
        if not isinstance(resume_from, dict):
            await self.error("resume_from must map channel names to the last id seen")
            return
        for c, last in resume_from.items():
            if c not in known:
                await self.error(f"resume_from names channel {c!r}, which this subscribe does not add", c)
            elif not isinstance(last, str) or not _ID.match(last):
                await self.error(
                    f"resume_from[{c!r}] must be a bus id like '1700000000000-0', got {last!r}", c
                )
                known.remove(c)
        started: list[str] = []
        for c in known:
            if c in self.readers:
                started.append(c)  # already streaming: a second subscribe changes nothing
                continue
            last = resume_from.get(c)
            try:
                await self._io(self.bus.subscribe, CHANNELS[c], f"{self.group}-{c}", _CONSUMER,
                               start="earliest" if last else "latest")  # fmt: skip
            except (TransientError, FatalError) as e:
                await self.error(f"cannot subscribe to the bus: {e}", c)
                continue
            task = asyncio.create_task(self.read_loop(c, _id_key(last) if last else None))
            task.add_done_callback(_retrieve)
            self.readers[c] = task
            started.append(c)
        await self.send({"op": "subscribed", "channels": started})

    async def unsubscribe(self, channels: object) -> None:
        known = await self._channels(channels)
        for c in known or []:
            task = self.readers.pop(c, None)
            if task is not None:
                task.cancel()  # a read still blocked finds no group and ends; its result is dropped
                with contextlib.suppress(TransientError, FatalError):
                    await self._io(self.bus.delete_group, CHANNELS[c], f"{self.group}-{c}")
        await self.send({"op": "unsubscribed", "channels": known or []})

    # --- bus → client ---

    async def read_loop(self, channel: str, after: tuple[int, int] | None) -> None:
        topic, group = CHANNELS[channel], f"{self.group}-{channel}"
        while True:
            try:
                batch: list[Delivery] = await self._io(
                    self.bus.read, topic, group, _CONSUMER, count=200, block_ms=self.read_block_ms
                )
            except DataQualityError as e:  # set aside by the bus; the good messages follow
                await self.error(str(e), channel)
                continue
            except TransientError as e:
                await self.error(f"bus unavailable, retrying: {e}", channel)
                await asyncio.sleep(1.0)
                continue
            except FatalError as e:
                self.finish(CLOSE_BUS_FAILED, f"bus failed: {e}"[:120])
                return
            for d in batch:
                if after is not None and _id_key(d.id) <= after:
                    continue
                data = msgspec.to_builtins(d.message)
                await self.send({"channel": channel, "id": d.id, "data": data})
            if batch:
                after = None  # ids only increase from here
                await self._io(self.bus.ack, topic, group, [d.id for d in batch])

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if time.monotonic() - self.last_heard > self.pong_timeout_s:
                self.finish(CLOSE_HEARTBEAT, "no pong from the client")
                return
            await self.send({"op": "ping", "ts": time.time_ns() // 1_000_000})

    def stop(self) -> None:
        # Synchronous on purpose: it also runs while the endpoint is being cancelled, when an await
        # would take the cancellation meant for the endpoint.
        for t in self.readers.values():
            t.cancel()
        groups = [(CHANNELS[c], f"{self.group}-{c}") for c in self.readers]
        self.readers.clear()
        if groups:
            # A read still blocked (it returns within read_block_ms) finds no group and ends; its result
            # goes to a cancelled reader.
            with contextlib.suppress(RuntimeError):
                self.executor.submit(_delete_groups, self.bus, groups)
        self.executor.shutdown(wait=False, cancel_futures=False)


def _delete_groups(bus: Bus, groups: list[tuple[Topic, str]]) -> None:
    """Delete a closed connection's consumer groups; a failure is logged, not raised (nobody waits)."""
    for topic, group in groups:
        try:
            bus.delete_group(topic, group)
        except (TransientError, FatalError) as e:
            log.warning("WebSocket: consumer group %s of %s not deleted: %s", group, topic.value, e)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Done callback: mark a task's exception as seen (a client gone while sending is normal)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("WebSocket task ended: %r", task.exception())


def ws_router(
    bus: Bus | str | None,
    token_check: Callable[[str], bool],
    *,
    heartbeat_s: float = 15.0,
    pong_timeout_s: float | None = None,
    auth_timeout_s: float = 10.0,
    read_block_ms: int = 1000,
) -> APIRouter:
    """Return the router of ``GET /ws`` (protocol in the module docstring).

    ``bus`` is the running system's bus, or its Redis URL (opened here and closed with the app;
    None opens an in-process bus of this process only). ``token_check(token)`` says whether a token
    is valid. ``pong_timeout_s`` (default ``3 * heartbeat_s``) is how long a client may stay silent.
    """
    if heartbeat_s <= 0 or auth_timeout_s <= 0 or read_block_ms < 1:
        raise ValueError("heartbeat_s and auth_timeout_s must be > 0 and read_block_ms >= 1")
    timeout_s = 3 * heartbeat_s if pong_timeout_s is None else pong_timeout_s
    owned = not isinstance(bus, Bus)
    the_bus: Bus = open_bus(bus) if not isinstance(bus, Bus) else bus

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                the_bus.close()

    router = APIRouter(lifespan=lifespan)

    def valid(token: object) -> bool:
        return isinstance(token, str) and token != "" and bool(token_check(token))

    async def authenticate(websocket: WebSocket) -> bool:
        token = _given_token(websocket)
        if token is not None:
            return valid(token)
        try:
            first = json.loads(await asyncio.wait_for(websocket.receive_text(), auth_timeout_s))
        except (TimeoutError, ValueError):
            return False
        return isinstance(first, dict) and first.get("op") == "auth" and valid(first.get("token"))

    @router.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            authorized = await authenticate(websocket)
        except WebSocketDisconnect:
            return
        if not authorized:
            await websocket.close(CLOSE_UNAUTHORIZED, "unauthorized: send a valid token")
            return
        conn = _Connection(websocket, the_bus, heartbeat_s, timeout_s, read_block_ms)
        receive = asyncio.create_task(conn.receive_loop())
        heartbeat = asyncio.create_task(conn.heartbeat())
        ended = asyncio.create_task(conn.end.wait())
        for t in (receive, heartbeat):
            t.add_done_callback(_retrieve)
        try:
            await conn.send({"op": "ready", "channels": list(CHANNELS)})
            await asyncio.wait({receive, ended}, return_when=asyncio.FIRST_COMPLETED)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away while we were sending
        finally:
            receive.cancel()
            heartbeat.cancel()
            ended.cancel()
            conn.stop()
        if conn.end.is_set():
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await websocket.close(conn.close_code, conn.close_reason)

    return router


def compare_tokens(expected: str) -> Callable[[str], bool]:
    """Return a ``token_check`` that compares in constant time with ``expected``."""
    return lambda token: hmac.compare_digest(token.encode(), expected.encode())
