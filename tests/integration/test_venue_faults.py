"""Fault hooks of the replay venue, observed by real clients (python-binance, websockets, requests).

The venue runs in step mode with one mark tick per minute, so each minute the test advances sends
exactly one ``btcusdt@markPrice@1s`` message: what a fault does to it is then exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import requests
import websockets
from binance import AsyncClient, BinanceSocketManager, Client
from binance.exceptions import BinanceAPIException

from core.synthetic import generate_market
from core.time import MINUTE_MS
from exchange.venue import ReplayVenue
from pipelines.market import write_synthetic_market
from storage.lake import Lake

START = 1748736000000  # 2025-06-01 00:00 UTC
STREAM = "btcusdt@markPrice@1s"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("venue_faults") / "lake")
    write_synthetic_market(generate_market(["BTCUSDT"], START - 60 * MINUTE_MS, 180, seed=5), lake)
    return lake


@pytest.fixture
def stepped(lake: Lake) -> Iterator[ReplayVenue]:
    venue = ReplayVenue(
        lake, ["BTCUSDT"], START, START + 60 * MINUTE_MS, speed="step", mark_ticks_per_minute=1
    )
    venue.start()
    yield venue
    venue.stop()


class Listener:
    """Messages of one python-binance socket, drained in the background."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.times: list[float] = []

    @property
    def data(self) -> list[dict[str, Any]]:
        return [m["data"] for m in self.messages if "data" in m]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("e") == "error"]

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {self.messages}")
            await asyncio.sleep(0.01)


@asynccontextmanager
async def listen(venue: ReplayVenue, streams: list[str], category: str = "market") -> AsyncIterator[Listener]:
    assert venue.urls is not None
    client = AsyncClient()
    client.FUTURES_URL = venue.urls.fapi_url
    manager = BinanceSocketManager(client)
    manager.FSTREAM_URL = venue.urls.ws_url
    socket = await manager.futures_multiplex_socket(streams, category=category).__aenter__()
    listener = Listener()

    async def drain() -> None:
        while True:
            listener.messages.append(await socket.recv())
            listener.times.append(time.monotonic())

    task = asyncio.ensure_future(drain())
    await _until(lambda: venue.hub.connection_count(category) > 0)
    try:
        yield listener
    finally:
        task.cancel()
        # Tell the socket to exit before the venue closes it, or its read loop waits 10 s or reconnects.
        exiting = asyncio.ensure_future(socket.__aexit__(None, None, None))
        await asyncio.sleep(0.05)
        venue.faults.disconnect(category)
        await asyncio.wait_for(exiting, 10)
        await client.close_connection()


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def step(venue: ReplayVenue, minutes: int) -> None:
    """Advance the clock minute by minute, waiting until each minute's messages are out."""
    now = venue.clock.now_ms()
    for i in range(1, minutes + 1):
        assert await asyncio.to_thread(venue.advance_to, now + i * MINUTE_MS, 5)


def _event_minutes(listener: Listener) -> list[int]:
    return [(d["E"] + 1 - START) // MINUTE_MS for d in listener.data]  # the minute boundary it closes


def test_drop_loses_the_next_messages(stepped: ReplayVenue) -> None:
    async def scenario() -> Listener:
        async with listen(stepped, [STREAM]) as got:
            stepped.faults.drop("market", 2)
            await step(stepped, 4)
            await got.wait_for(lambda: len(got.data) >= 2)
            await asyncio.sleep(0.1)
            return got

    got = asyncio.run(scenario())
    assert _event_minutes(got) == [3, 4]
    stats = stepped.stats()["market"]
    assert stats["dropped"] == 2 and stats["sent"] == 2


def test_drop_probability_is_seeded_and_counted(stepped: ReplayVenue) -> None:
    async def scenario() -> Listener:
        async with listen(stepped, [STREAM]) as got:
            stepped.faults.drop_probability("market", 0.5, seed=4)
            await step(stepped, 20)
            await asyncio.sleep(0.2)
            return got

    got = asyncio.run(scenario())
    stats = stepped.stats()["market"]
    assert 0 < stats["dropped"] < 20
    assert len(got.data) == stats["sent"] == 20 - stats["dropped"]


def test_duplicate_sends_a_message_twice(stepped: ReplayVenue) -> None:
    async def scenario() -> Listener:
        async with listen(stepped, [STREAM]) as got:
            stepped.faults.duplicate("market", 1)
            await step(stepped, 2)
            await got.wait_for(lambda: len(got.data) >= 3)
            await asyncio.sleep(0.1)
            return got

    got = asyncio.run(scenario())
    assert _event_minutes(got) == [1, 1, 2]
    assert got.data[0] == got.data[1]
    assert stepped.stats()["market"]["duplicated"] == 1


def test_reorder_swaps_the_next_pair(stepped: ReplayVenue) -> None:
    async def scenario() -> tuple[int, Listener]:
        async with listen(stepped, [STREAM]) as got:
            stepped.faults.reorder("market", 1)
            await step(stepped, 1)
            await asyncio.sleep(0.2)
            held = len(got.data)
            await step(stepped, 2)
            await got.wait_for(lambda: len(got.data) >= 3)
            return held, got

    held, got = asyncio.run(scenario())
    assert held == 0  # the first of the pair waits for the second
    assert _event_minutes(got) == [2, 1, 3]


def test_delay_holds_messages_back(stepped: ReplayVenue) -> None:
    async def scenario() -> tuple[float, float]:
        async with listen(stepped, [STREAM]) as got:
            stepped.faults.delay("market", 0.5, n=1)
            sent = time.monotonic()
            await step(stepped, 1)
            await got.wait_for(lambda: len(got.data) >= 1)
            late = got.times[-1] - sent
            sent = time.monotonic()
            await step(stepped, 1)
            await got.wait_for(lambda: len(got.data) >= 2)
            return late, got.times[-1] - sent

    late, prompt = asyncio.run(scenario())
    assert late >= 0.5 and prompt < 0.4


def test_silence_keeps_the_connection_open_and_loses_its_messages(stepped: ReplayVenue) -> None:
    async def scenario() -> tuple[Listener, dict[str, int]]:
        async with listen(stepped, [STREAM]) as got:
            stepped.faults.silence("market", 0.5)
            await step(stepped, 2)
            await asyncio.sleep(0.7)
            await step(stepped, 1)
            await got.wait_for(lambda: len(got.data) >= 1)
            await asyncio.sleep(0.1)
            return got, stepped.stats()["market"]

    got, stats = asyncio.run(scenario())
    assert _event_minutes(got) == [3]
    assert got.errors == []
    assert stats["dropped"] == 2 and stats["connections"] == 1 and stats["disconnects"] == 0


def test_disconnect_closes_connections_and_python_binance_reconnects(stepped: ReplayVenue) -> None:
    async def scenario() -> Listener:
        async with listen(stepped, [STREAM]) as got:
            await step(stepped, 1)
            await got.wait_for(lambda: len(got.data) >= 1)
            stepped.faults.disconnect("market")
            await got.wait_for(lambda: len(got.errors) >= 1)
            await _until(lambda: stepped.stats()["market"]["connections"] == 2, timeout_s=8)
            await step(stepped, 1)
            await got.wait_for(lambda: len(got.data) >= 2)
            return got

    got = asyncio.run(scenario())
    assert _event_minutes(got) == [1, 2]
    assert got.errors[0]["type"] in ("ConnectionClosedOK", "ConnectionClosedError")
    assert stepped.stats()["market"]["disconnects"] >= 1


def test_a_client_that_cannot_keep_up_is_disconnected(lake: Lake) -> None:
    venue = ReplayVenue(
        lake,
        ["BTCUSDT"],
        START,
        START + 60 * MINUTE_MS,
        speed="step",
        mark_ticks_per_minute=4,
        send_queue_size=10,
    )
    urls = venue.start()

    async def scenario() -> int | None:
        async with websockets.connect(f"{urls.ws_url}market/ws/{STREAM}") as ws:
            await _until(lambda: venue.hub.connection_count("market") == 1)
            venue.faults.delay("market", 30)  # nothing leaves the queue: it fills like a stalled reader's
            await asyncio.to_thread(venue.advance_to, START + 5 * MINUTE_MS, 5)
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            return info.value.rcvd.code if info.value.rcvd else None

    try:
        assert asyncio.run(scenario()) == 1008
        stats = venue.stats()["market"]
        assert stats["slow_disconnects"] == 1 and stats["sent"] == 0
    finally:
        venue.stop()


def test_public_and_market_faults_are_separate(stepped: ReplayVenue) -> None:
    async def scenario() -> tuple[Listener, Listener]:
        async with (
            listen(stepped, [STREAM]) as market,
            listen(stepped, ["btcusdt@bookTicker"], "public") as public,
        ):
            stepped.faults.drop("public", 1)
            await step(stepped, 2)
            await market.wait_for(lambda: len(market.data) >= 2)
            await public.wait_for(lambda: len(public.data) >= 1)
            await asyncio.sleep(0.1)
            return market, public

    market, public = asyncio.run(scenario())
    assert _event_minutes(market) == [1, 2] and _event_minutes(public) == [2]


# REST faults ------------------------------------------------------------------------------------
def _client(venue: ReplayVenue, timeout_s: float = 5.0) -> Client:
    assert venue.urls is not None
    client = Client(ping=False, requests_params={"timeout": timeout_s})
    client.FUTURES_URL = venue.urls.fapi_url
    return client


def test_rest_error_answers_binance_5xx_for_the_next_requests(stepped: ReplayVenue) -> None:
    client = _client(stepped)
    stepped.faults.rest_error("/fapi/v1/klines", 2)
    for _ in range(2):
        with pytest.raises(BinanceAPIException) as info:
            client.futures_klines(symbol="BTCUSDT", interval="1m", limit=5)
        assert info.value.status_code == 500 and info.value.code == -1000
        assert info.value.message == "An unknown error occured while processing the request."
    assert len(client.futures_klines(symbol="BTCUSDT", interval="1m", limit=5)) == 5
    assert client.futures_time()["serverTime"] == START  # other paths were never affected
    stepped.faults.rest_error("/fapi/v1/time", status=503, code=-1001, msg="Internal error; unable to process your request. Please try again.")  # fmt: skip
    with pytest.raises(BinanceAPIException) as info:
        client.futures_time()
    assert info.value.status_code == 503 and info.value.code == -1001
    assert stepped.stats()["rest"]["errors"] == 3


def test_rest_timeout_holds_the_answer_past_the_client_timeout(lake: Lake) -> None:
    venue = ReplayVenue(lake, ["BTCUSDT"], START, START + 60 * MINUTE_MS, speed="step")
    venue.start()
    client = _client(venue, timeout_s=0.5)
    venue.faults.rest_timeout("/fapi/v1/time", 1, sleep_s=20)
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.futures_time()
    assert client.futures_time()["serverTime"] == START
    assert venue.stats()["rest"]["timeouts"] == 1
    began = time.monotonic()
    venue.stop()  # the held request does not keep the venue from stopping
    assert time.monotonic() - began < 5


def test_admin_endpoint_switches_faults_and_reports_counters(stepped: ReplayVenue) -> None:
    assert stepped.urls is not None
    admin = f"{stepped.urls.rest_url}/_venue"

    async def scenario() -> Listener:
        async with listen(stepped, [STREAM]) as got:
            answer = await asyncio.to_thread(
                requests.post,
                f"{admin}/faults",
                json={"fault": "drop", "channel": "market", "n": 1},
                timeout=5,
            )
            assert answer.status_code == 200 and answer.json()["ok"] is True
            await asyncio.to_thread(
                requests.post,
                f"{admin}/clock",
                json={"action": "advance", "to_ms": START + 2 * MINUTE_MS},
                timeout=5,
            )
            await got.wait_for(lambda: len(got.data) >= 1)
            await asyncio.sleep(0.1)
            return got

    got = asyncio.run(scenario())
    assert _event_minutes(got) == [2]
    stats = requests.get(f"{admin}/stats", timeout=5).json()
    assert stats["market"]["dropped"] == 1 and stats["market"]["sent"] == 1
    missing = requests.post(f"{admin}/faults", json={"fault": "drop"}, timeout=5)
    assert missing.status_code == 400 and "channel" in missing.json()["error"]
    unknown = requests.post(f"{admin}/faults", json={"fault": "drop", "channel": "nope"}, timeout=5)
    assert unknown.status_code == 400 and "unknown channel 'nope'" in unknown.json()["error"]
    bad = requests.post(f"{admin}/faults", json={"fault": "explode"}, timeout=5)
    assert bad.status_code == 400 and "rest_error" in bad.json()["error"]
    no_broker = requests.post(f"{admin}/faults", json={"fault": "reject_order"}, timeout=5)
    assert no_broker.status_code == 400 and "paper broker" in no_broker.json()["error"]
    rest = requests.post(
        f"{admin}/faults", json={"fault": "rest_error", "prefix": "/fapi/v1/ping"}, timeout=5
    )
    assert rest.status_code == 200
    assert requests.get(f"{stepped.urls.rest_url}/fapi/v1/ping", timeout=5).status_code == 500


# Private stream and broker wiring ---------------------------------------------------------------
def test_private_stream_delivers_user_data_and_rejections_reach_the_broker(lake: Lake) -> None:
    venue = ReplayVenue(
        lake, ["BTCUSDT"], START, START + 60 * MINUTE_MS, speed="step", mark_ticks_per_minute=1,
        api_key="test-key", api_secret="test-secret",
    )  # fmt: skip
    urls = venue.start()

    async def scenario() -> tuple[list[dict[str, Any]], int, int | None]:
        client = AsyncClient(api_key="test-key", api_secret="test-secret")
        client.FUTURES_URL = urls.fapi_url
        manager = BinanceSocketManager(client)
        manager.FSTREAM_URL = urls.ws_url
        socket = await manager.futures_user_socket().__aenter__()
        await _until(lambda: venue.hub.connection_count("private") == 1)
        received: list[dict[str, Any]] = []
        await asyncio.to_thread(venue.advance_to, START + MINUTE_MS, 5)
        await asyncio.to_thread(venue.hub.publish_user, {"e": "TEST_EVENT", "E": START})
        received.append(await asyncio.wait_for(socket.recv(), 5))
        venue.faults.reject_order(-2019, "Margin is insufficient.", 1)
        with pytest.raises(BinanceAPIException) as info:
            await client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
        rejected = info.value.code
        async with websockets.connect(f"{urls.ws_url}private/ws?listenKey=not-a-key") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        exiting = asyncio.ensure_future(socket.__aexit__(None, None, None))
        await asyncio.sleep(0.05)
        venue.faults.disconnect("private")
        await asyncio.wait_for(exiting, 10)
        await client.close_connection()
        return received, rejected, closed.value.rcvd.code if closed.value.rcvd else None

    try:
        received, rejected, refused_code = asyncio.run(scenario())
    finally:
        venue.stop()
    assert received == [{"e": "TEST_EVENT", "E": START}]
    assert rejected == -2019
    assert refused_code == 1008
    stats = venue.stats()["private"]
    assert stats["sent"] >= 1 and stats["refused"] == 1
