"""Fault hooks of the replay venue: what a client must survive, switched on by tests or over HTTP.

Per WebSocket channel (``market``, ``public``, ``private``): drop the next N messages or each one
with a probability (seeded), delay messages by D seconds, duplicate the next N, swap the next N
pairs, close every connection now, go silent for S seconds (connections stay open, the messages
of that time are lost), or hang the connections open now for S seconds (``stall``: silent too, and
no pong answers a ping, as a half-open connection). ``expire_listen_keys`` ends every live listenKey
as Binance's expiry does: listenKeyExpired on its connections, then nothing more, and -1125 to a
keepalive. Faults count per delivery: one message to one connection. Per REST path
prefix: answer the next N requests with a 5xx in Binance's shape (not carried out, unless
``apply=True``: the order is placed and the answer is still the 5xx), hold them past the client's
timeout (carried out unless ``apply=False``), or reset the connection without an answer (carried
out unless ``apply=False``) — each an unknown outcome for the client, as on Binance.
``reject_order`` makes the paper broker refuse the next orders; ``hide_algo_orders`` makes it
acknowledge the next algo orders and then answer their queries -2013 (and leave them out of the open
and all lists) for S seconds of the venue clock.

Every method is thread-safe: tests call them from their own thread while the venue's event loop
consults them. ``stats()`` returns the counters. ``add_admin_routes`` exposes all of it as
``POST /_venue/faults`` (JSON) and ``GET /_venue/stats`` for ``raytrade venue`` users.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CHANNELS = ("market", "public", "private")
#: Counters kept per channel.
CHANNEL_COUNTERS = (
    "sent",
    "dropped",
    "duplicated",
    "reordered",
    "delayed",
    "connections",
    "disconnects",
    "slow_disconnects",
    "refused",
    "stalled",
)
UNKNOWN_ERROR_CODE = -1000
UNKNOWN_ERROR_MSG = "An unknown error occured while processing the request."
UNKNOWN_ERROR: dict[str, Any] = {"code": UNKNOWN_ERROR_CODE, "msg": UNKNOWN_ERROR_MSG}
#: The ``stats()["rest"]`` counter of each kind of REST fault.
_REST_COUNTERS = {"error": "errors", "timeout": "timeouts", "reset": "resets"}
#: Admin paths are never faulted nor charged.
ADMIN_PREFIX = "/_venue/"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What to do with one message to one connection: ``copies`` 0 drops it, 2 duplicates it.

    ``delay_s`` holds it back (wall seconds); ``hold`` keeps it until the connection's next message
    has been sent (a swapped pair).
    """

    copies: int = 1
    delay_s: float = 0.0
    hold: bool = False


@dataclass(slots=True)
class _ChannelState:
    drop_next: int = 0
    drop_probability: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    delay_s: float = 0.0
    delay_next: int | None = None
    duplicate_next: int = 0
    reorder_next: int = 0
    silent_until_s: float = 0.0


@dataclass(slots=True)
class _RestRule:
    prefix: str
    kind: str  # "error", "timeout" or "reset"
    remaining: int
    status: int = 500
    body: dict[str, Any] = field(default_factory=lambda: dict(UNKNOWN_ERROR))
    sleep_s: float = 30.0
    apply: bool = True


class Faults:
    """Switchable faults and the delivery counters of one venue (see the module docstring)."""

    def __init__(self, wall_s: Callable[[], float] = time.monotonic) -> None:
        self._wall_s = wall_s
        self._lock = threading.Lock()
        self._channels = {c: _ChannelState() for c in CHANNELS}
        self._rest: list[_RestRule] = []
        self._counters = {c: dict.fromkeys(CHANNEL_COUNTERS, 0) for c in CHANNELS}
        self._rest_counters = dict.fromkeys(_REST_COUNTERS.values(), 0)
        self._disconnect: Callable[[str], None] | None = None
        self._reject: Callable[[int, str, int, str | None], None] | None = None
        self._stall: Callable[[str, float], None] | None = None
        self._expire: Callable[[], list[str]] | None = None
        self._hide: Callable[[float, int], None] | None = None

    # Wiring (the venue sets these) -----------------------------------------------------------
    def attach(
        self,
        disconnect: Callable[[str], None] | None = None,
        reject_next: Callable[[int, str, int, str | None], None] | None = None,
        stall: Callable[[str, float], None] | None = None,
        expire_listen_keys: Callable[[], list[str]] | None = None,
        hide_algo_orders: Callable[[float, int], None] | None = None,
    ) -> None:
        """Connect the hooks that act elsewhere: closing or hanging a channel's connections (the stream
        hub), the broker's rejections, hidden algo orders and listenKey expiry."""
        with self._lock:
            if disconnect is not None:
                self._disconnect = disconnect
            if reject_next is not None:
                self._reject = reject_next
            if stall is not None:
                self._stall = stall
            if expire_listen_keys is not None:
                self._expire = expire_listen_keys
            if hide_algo_orders is not None:
                self._hide = hide_algo_orders

    # WebSocket faults ------------------------------------------------------------------------
    def drop(self, channel: str, n: int = 1) -> None:
        """Drop the next ``n`` messages on ``channel``."""
        with self._lock:
            self._state(channel).drop_next += _positive(n, "n")

    def drop_probability(self, channel: str, probability: float, seed: int = 0) -> None:
        """Drop each message on ``channel`` with ``probability`` (0 stops), drawn from a ``seed``ed generator."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"drop probability must be in [0, 1], got {probability}")
        with self._lock:
            state = self._state(channel)
            state.drop_probability = float(probability)
            state.rng = random.Random(seed)

    def delay(self, channel: str, seconds: float, n: int | None = None) -> None:
        """Send messages on ``channel`` ``seconds`` late: the next ``n``, or all until ``delay(channel, 0)``."""
        if seconds < 0:
            raise ValueError(f"delay must be >= 0 s, got {seconds}")
        with self._lock:
            state = self._state(channel)
            state.delay_s = float(seconds)
            state.delay_next = None if n is None else _positive(n, "n")

    def duplicate(self, channel: str, n: int = 1) -> None:
        """Send each of the next ``n`` messages on ``channel`` twice."""
        with self._lock:
            self._state(channel).duplicate_next += _positive(n, "n")

    def reorder(self, channel: str, pairs: int = 1) -> None:
        """Swap the next ``pairs`` pairs of consecutive messages (per connection) on ``channel``."""
        with self._lock:
            self._state(channel).reorder_next += _positive(pairs, "pairs")

    def silence(self, channel: str, seconds: float) -> None:
        """Send nothing on ``channel`` for ``seconds`` (wall time); connections stay open, messages are lost."""
        if seconds < 0:
            raise ValueError(f"silence must be >= 0 s, got {seconds}")
        with self._lock:
            self._state(channel).silent_until_s = self._wall_s() + seconds

    def disconnect(self, channel: str) -> None:
        """Close every open connection on ``channel`` now (clients may reconnect)."""
        self._state(channel)
        with self._lock:
            hook = self._disconnect
        if hook is None:
            raise RuntimeError("no stream hub is attached to these faults: the venue is not running")
        hook(channel)

    def stall(self, channel: str, seconds: float) -> None:
        """Hang every connection open on ``channel`` now for ``seconds``: it stays open but sends nothing,
        not even a pong to a client's ping (a half-open TCP connection), and its messages of that time
        are lost. Connections opened later are not affected."""
        if seconds <= 0:
            raise ValueError(f"stall must be > 0 s, got {seconds}")
        self._state(channel)
        with self._lock:
            hook = self._stall
        if hook is None:
            raise RuntimeError("no stream hub is attached to these faults: the venue is not running")
        hook(channel, float(seconds))

    def expire_listen_keys(self) -> list[str]:
        """Expire every live listenKey now (the broker's ``expire_listen_keys``); return them."""
        with self._lock:
            hook = self._expire
        if hook is None:
            raise RuntimeError("the venue has no paper broker (start it with api_key and api_secret)")
        return hook()

    # REST faults -----------------------------------------------------------------------------
    def rest_error(
        self,
        prefix: str,
        n: int = 1,
        *,
        status: int = 500,
        code: int = UNKNOWN_ERROR_CODE,
        msg: str = UNKNOWN_ERROR_MSG,
        apply: bool = False,
    ) -> None:
        """Answer the next ``n`` requests whose path starts with ``prefix`` with HTTP ``status`` and ``{code, msg}``.

        With ``apply`` the request is carried out first (an order is placed) and its answer replaced
        by the error: Binance's "5xx, yet the order exists".
        """
        if not 500 <= status <= 599:
            raise ValueError(f"rest_error status must be a 5xx, got {status}")
        with self._lock:
            body = {"code": code, "msg": msg}
            self._rest.append(
                _RestRule(_prefix(prefix), "error", _positive(n, "n"), status, body, apply=apply)
            )

    def rest_timeout(self, prefix: str, n: int = 1, *, sleep_s: float = 30.0, apply: bool = True) -> None:
        """Hold the next ``n`` requests under ``prefix`` for ``sleep_s`` before answering (past a client's timeout).

        With ``apply`` the request is carried out first (an order is placed; the answer comes late),
        otherwise it is not carried out at all and the late answer is a 503.
        """
        if sleep_s <= 0:
            raise ValueError(f"rest_timeout sleep_s must be > 0, got {sleep_s}")
        with self._lock:
            self._rest.append(
                _RestRule(_prefix(prefix), "timeout", _positive(n, "n"), sleep_s=float(sleep_s), apply=apply)
            )

    def rest_reset(self, prefix: str, n: int = 1, *, apply: bool = True) -> None:
        """Close the connection of the next ``n`` requests under ``prefix`` without an answer.

        With ``apply`` the request is carried out first (a connection reset after the order was sent).
        """
        with self._lock:
            self._rest.append(_RestRule(_prefix(prefix), "reset", _positive(n, "n"), apply=apply))

    def reject_order(
        self,
        code: int = -2010,
        msg: str = "Order would immediately trigger.",
        n: int = 1,
        kind: str | None = None,
    ) -> None:
        """Make the paper broker reject the next ``n`` new orders with Binance error ``code``/``msg``:
        any order, or only regular orders (``kind="order"``) or only algo orders (``kind="algo"``)."""
        with self._lock:
            hook = self._reject
        if hook is None:
            raise RuntimeError("the venue has no paper broker (start it with api_key and api_secret)")
        hook(code, msg, _positive(n, "n"), kind)

    def hide_algo_orders(self, seconds: float, n: int = 1) -> None:
        """Make the paper broker place and acknowledge the next ``n`` new algo orders as usual (they
        trigger as usual too), but answer ``GET /fapi/v1/algoOrder`` for them with -2013 "Order does
        not exist." and leave them out of ``openAlgoOrders`` and ``allAlgoOrders`` until ``seconds`` of
        the venue clock have passed since each was placed: Binance's query side lagging."""
        if not seconds > 0:
            raise ValueError(f"hide_algo_orders seconds must be > 0, got {seconds}")
        with self._lock:
            hook = self._hide
        if hook is None:
            raise RuntimeError("the venue has no paper broker (start it with api_key and api_secret)")
        hook(float(seconds), _positive(n, "n"))

    def clear(self) -> None:
        """Switch every fault off (counters are kept)."""
        with self._lock:
            self._channels = {c: _ChannelState() for c in CHANNELS}
            self._rest = []

    # Consulted by the venue ------------------------------------------------------------------
    def delivery(self, channel: str, can_hold: bool = True) -> Delivery:
        """Decide the fate of one message to one connection on ``channel`` (consumes the faults).

        ``can_hold`` False: the connection already holds a message, so this one completes a swap.
        """
        with self._lock:
            state = self._channels[channel]
            counters = self._counters[channel]
            if state.silent_until_s and self._wall_s() < state.silent_until_s:
                counters["dropped"] += 1
                return Delivery(copies=0)
            if state.drop_next > 0:
                state.drop_next -= 1
                counters["dropped"] += 1
                return Delivery(copies=0)
            if state.drop_probability and state.rng.random() < state.drop_probability:
                counters["dropped"] += 1
                return Delivery(copies=0)
            copies = 1
            if state.duplicate_next > 0:
                state.duplicate_next -= 1
                counters["duplicated"] += 1
                copies = 2
            delay_s = 0.0
            if state.delay_s > 0 and (state.delay_next is None or state.delay_next > 0):
                delay_s = state.delay_s
                counters["delayed"] += 1
                if state.delay_next is not None:
                    state.delay_next -= 1
            hold = False
            if can_hold and state.reorder_next > 0:
                state.reorder_next -= 1
                counters["reordered"] += 1
                hold = True
            return Delivery(copies=copies, delay_s=delay_s, hold=hold)

    def count(self, channel: str, counter: str, n: int = 1) -> None:
        """Add ``n`` to a channel counter (``sent``, ``connections``, ``disconnects`` …)."""
        with self._lock:
            self._counters[channel][counter] += n

    def rest_rule(self, path: str) -> _RestRule | None:
        """Return (and consume one use of) the first REST fault matching ``path``, if any."""
        if path.startswith(ADMIN_PREFIX):
            return None
        with self._lock:
            for rule in self._rest:
                if path.startswith(rule.prefix) and rule.remaining > 0:
                    rule.remaining -= 1
                    self._rest_counters[_REST_COUNTERS[rule.kind]] += 1
                    if rule.remaining == 0:
                        self._rest.remove(rule)
                    return rule
        return None

    def stats(self) -> dict[str, dict[str, int]]:
        """Return a copy of the counters: one dict per channel, and ``rest`` (errors, timeouts, resets)."""
        with self._lock:
            out = {c: dict(v) for c, v in self._counters.items()}
            out["rest"] = dict(self._rest_counters)
            return out

    def _state(self, channel: str) -> _ChannelState:
        if channel not in self._channels:
            raise ValueError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
        return self._channels[channel]


def _positive(n: int, name: str) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n}")
    return int(n)


def _prefix(prefix: str) -> str:
    if not prefix.startswith("/"):
        raise ValueError(f"REST fault prefix must be a path starting with '/', got {prefix!r}")
    return prefix


# aiohttp glue -----------------------------------------------------------------------------------
FAULTS: web.AppKey[Faults] = web.AppKey("venue_faults", Faults)
_SLEEPERS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("venue_fault_sleepers")


def install(app: web.Application, faults: Faults) -> None:
    """Put ``faults`` on ``app``: REST faults (via ``middleware``, which must be in the app's list) and admin routes."""
    app[FAULTS] = faults
    app[_SLEEPERS] = set()
    app.on_shutdown.append(_wake_sleepers)
    app.router.add_post("/_venue/faults", _admin_faults)
    app.router.add_get("/_venue/stats", _admin_stats)


@web.middleware
async def middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Apply REST faults before the request reaches the venue (outermost middleware)."""
    faults = request.app.get(FAULTS)
    rule = faults.rest_rule(request.path) if faults is not None else None
    if rule is None:
        return await handler(request)
    response: web.StreamResponse = web.json_response(UNKNOWN_ERROR, status=503)
    if rule.apply:
        response = await handler(request)
    if rule.kind == "error":
        return web.json_response(rule.body, status=rule.status)
    if rule.kind == "reset":
        if request.transport is not None:
            request.transport.abort()  # the client sees the connection closed without an answer
        return response
    task = asyncio.ensure_future(asyncio.sleep(rule.sleep_s))
    request.app[_SLEEPERS].add(task)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():  # the request itself was cancelled (the client went away)
            raise
    finally:
        request.app[_SLEEPERS].discard(task)
    return response


async def _wake_sleepers(app: web.Application) -> None:
    sleepers: set[asyncio.Task[Any]] = app[_SLEEPERS]
    for task in list(sleepers):
        task.cancel()


_CHANNEL_ACTIONS: dict[str, Callable[[Faults, dict[str, Any]], None]] = {
    "drop": lambda f, b: f.drop(b["channel"], b.get("n", 1)),
    "drop_probability": lambda f, b: f.drop_probability(b["channel"], b["probability"], b.get("seed", 0)),
    "delay": lambda f, b: f.delay(b["channel"], b["seconds"], b.get("n")),
    "duplicate": lambda f, b: f.duplicate(b["channel"], b.get("n", 1)),
    "reorder": lambda f, b: f.reorder(b["channel"], b.get("pairs", b.get("n", 1))),
    "silence": lambda f, b: f.silence(b["channel"], b["seconds"]),
    "disconnect": lambda f, b: f.disconnect(b["channel"]),
    "stall": lambda f, b: f.stall(b["channel"], b["seconds"]),
    "expire_listen_keys": lambda f, b: _expire_listen_keys(f),
    "rest_error": lambda f, b: f.rest_error(
        b["prefix"],
        b.get("n", 1),
        status=b.get("status", 500),
        code=b.get("code", UNKNOWN_ERROR["code"]),
        msg=b.get("msg", UNKNOWN_ERROR["msg"]),
        apply=b.get("apply", False),
    ),  # fmt: skip
    "rest_reset": lambda f, b: f.rest_reset(b["prefix"], b.get("n", 1), apply=b.get("apply", True)),
    "rest_timeout": lambda f, b: f.rest_timeout(
        b["prefix"], b.get("n", 1), sleep_s=b.get("sleep_s", 30.0), apply=b.get("apply", True)
    ),
    "reject_order": lambda f, b: f.reject_order(
        b.get("code", -2010), b.get("msg", "Order would immediately trigger."), b.get("n", 1), b.get("kind")
    ),
    "hide_algo_orders": lambda f, b: f.hide_algo_orders(b["seconds"], b.get("n", 1)),
    "clear": lambda f, b: f.clear(),
}


def _expire_listen_keys(faults: Faults) -> None:
    faults.expire_listen_keys()  # the keys are credentials: the admin route does not answer them


async def _admin_faults(request: web.Request) -> web.Response:
    """``POST /_venue/faults`` with ``{"fault": "drop", "channel": "market", "n": 3}`` (see ``_CHANNEL_ACTIONS``)."""
    faults = request.app[FAULTS]
    try:
        body = await request.json()
    except ValueError as e:
        return web.json_response({"error": f"body is not JSON: {e}"}, status=400)
    if not isinstance(body, dict) or body.get("fault") not in _CHANNEL_ACTIONS:
        return web.json_response(
            {"error": f"expected a JSON object with 'fault' one of {', '.join(_CHANNEL_ACTIONS)}"}, status=400
        )
    try:
        _CHANNEL_ACTIONS[body["fault"]](faults, body)
    except KeyError as e:
        return web.json_response({"error": f"fault {body['fault']!r} needs field {e.args[0]!r}"}, status=400)
    except (ValueError, TypeError, RuntimeError) as e:
        return web.json_response({"error": f"fault {body['fault']!r}: {e}"}, status=400)
    return web.json_response({"ok": True, "stats": faults.stats()})


async def _admin_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[FAULTS].stats())
