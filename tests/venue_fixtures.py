"""Shared set-up of the tests against the replay venue on loopback (the signed trading client, the user
data stream, the paper broker's orders): Binance's real 2025-12 exchange information, a venue whose
paper broker trades BTCUSDT on the shiftable wall clock, calls on the venue's event loop, and the
signed client of a test's key and secret.

``exchange_info`` is a fixture: a test module that wants it imports it under its own name
(``from venue_fixtures import exchange_info as exchange_info``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from exchange.binance.trading import BinanceTrading, TradingConfig
from exchange.venue import BackgroundServer, Faults, create_app
from exchange.venue.exchange_info import add_routes as add_info_routes
from exchange.venue.exchange_info import filter_exchange_info
from exchange.venue.streams import StreamHub
from exchange.venue.trading import PaperBroker
from storage.lake import Lake

BTC = "BTCUSDT"
BID, ASK, MARK = 60_000.0, 60_000.1, 60_000.0


class Clock:
    """The wall clock shifted by ``shift_ms``, epoch ms."""

    def __init__(self, shift_ms: int = 0) -> None:
        self.shift_ms = shift_ms

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.shift_ms


def load_exchange_info(shared_data: Path) -> dict[str, Any]:
    """Binance's real ``/fapi/v1/exchangeInfo`` of 2025-12, every symbol."""
    return json.loads((shared_data / "payloads" / "rest" / "exchange_info_2025-12.json").read_text())


@pytest.fixture(scope="module")
def exchange_info(shared_data: Path) -> dict[str, Any]:
    """BTCUSDT's real 2025-12 exchange information (tick 0.1, step 0.001, MIN_NOTIONAL 100)."""
    return filter_exchange_info(load_exchange_info(shared_data), [BTC])


@dataclass
class LoopbackVenue:
    """A replay venue served on loopback by a background server, with its paper broker."""

    url: str
    server: BackgroundServer
    broker: PaperBroker

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn(*args)`` on the venue's event loop, as the replay driver does, and wait for it."""

        async def call() -> Any:
            return fn(*args)

        assert self.server._loop is not None
        return asyncio.run_coroutine_threadsafe(call(), self.server._loop).result(10)


@dataclass
class WallClockVenue(LoopbackVenue):
    """A venue (see ``serve_venue``) whose broker trades BTCUSDT on the wall clock ``wall``."""

    faults: Faults
    wall: Clock

    def quote(self, bid: float = BID, ask: float = ASK, mark: float = MARK) -> None:
        """Feed a BTCUSDT book and mark price stamped now (the venue's wall clock)."""
        ts = self.wall()
        self.run(self.broker.on_book, BTC, ts, bid, ask)
        self.run(self.broker.on_mark, BTC, ts, mark, mark)


def serve_venue(
    exchange_info: dict[str, Any], lake_dir: Path, wall: Clock, publish_user: Callable[[dict[str, Any]], None],
    *, key: str, secret: str, faults: Faults, hub: StreamHub | None = None, weight_limit_1m: int | None = None,
    rate_clock_ms: Callable[[], int] | None = None,
) -> tuple[BackgroundServer, PaperBroker]:  # fmt: skip
    """A venue app (not started yet) and its paper broker, both on the wall clock ``wall``: market REST
    over an empty lake, the broker's signed routes for ``key``/``secret``, exchange information and
    mark prices for BTCUSDT, the ``faults`` hooks; with ``hub``, also the ``/private`` WebSocket, its
    listenKey checks and listenKey expiry. ``weight_limit_1m`` None: no 429 answers."""
    broker = PaperBroker(exchange_info, wall, publish_user, api_key=key, api_secret=secret, wall_ms=wall)
    app = create_app(Lake(lake_dir), wall, weight_limit_1m=weight_limit_1m, rate_clock_ms=rate_clock_ms,
                     faults=faults)  # fmt: skip
    if hub is not None:
        hub.listen_key_valid = broker.listen_key_valid
        hub.add_routes(app)
    broker.add_routes(app)
    add_info_routes(
        app, exchange_info, lambda s: {"symbol": s, "markPrice": str(broker.mark_price(s))}, [BTC]
    )
    faults.attach(reject_next=broker.reject_next, hide_algo_orders=broker.hide_algo_orders,
                  expire_listen_keys=None if hub is None else broker.expire_listen_keys)  # fmt: skip
    return BackgroundServer(app), broker


_Venue = TypeVar("_Venue", bound=WallClockVenue)


@contextmanager
def running_venue(
    exchange_info: dict[str, Any], lake_dir: Path, *, key: str, secret: str, cls: type[_Venue] = WallClockVenue,  # type: ignore[assignment]
    publish_user: Callable[[dict[str, Any]], None] | None = None, hub: StreamHub | None = None, **fields: Any,
) -> Iterator[_Venue]:  # fmt: skip
    """A venue of ``serve_venue`` started on loopback as ``cls`` (a ``WallClockVenue``; ``fields`` are a
    subclass's own), with a BTCUSDT quote fed; stopped when the caller is done."""
    wall, faults = Clock(), Faults()
    server, broker = serve_venue(exchange_info, lake_dir, wall, publish_user or (lambda _: None), key=key,
                                 secret=secret, faults=faults, hub=hub)  # fmt: skip
    venue = cls(server.start(), server, broker, faults, wall, **fields)
    venue.quote()
    try:
        yield venue
    finally:
        server.stop()


def signed_client(
    url: str, key: str, secret: str, *, sleep: Callable[[float], None] | None = None,
    wall_clock_ms: Callable[[], int] | None = None, **settings: Any,
) -> BinanceTrading:  # fmt: skip
    """The signed trading client of ``key``/``secret`` for the venue at ``url``; ``settings`` go to its
    ``TradingConfig``."""
    config = TradingConfig(base_url=url, api_key=SecretStr(key), api_secret=SecretStr(secret), **settings)
    return BinanceTrading(config, sleep=sleep, wall_clock_ms=wall_clock_ms)


def started(client: BinanceTrading) -> Iterator[BinanceTrading]:
    """``client`` started, and closed once the caller resumes it: the body of a client fixture."""
    client.start()
    yield client
    client.close()
