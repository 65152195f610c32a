"""The replay venue's WebSocket streams and REST additions, received through python-binance (no patching).

One replay of a synthetic lake (3 symbols, one with 4 h funding, 60 minutes across a funding time
and an hour close) is recorded once per module over /market and /public; the tests check what
arrived against the lake and against Binance's recorded payloads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import typer
import websockets
from binance import AsyncClient, BinanceSocketManager, Client
from binance.exceptions import BinanceAPIException
from typer.testing import CliRunner

from core.synthetic import generate_market
from core.time import HOUR_MS, MINUTE_MS
from exchange.venue import ReplayVenue
from exchange.venue.exchange_info import symbol_filter
from pipelines.market import write_synthetic_market
from storage.lake import Lake

DAY0 = 1748649600000  # 2025-05-31 00:00 UTC
FUNDING_MS = 1748736000000  # 2025-06-01 00:00 UTC: a funding time of every symbol (8 h and 4 h)
START = FUNDING_MS - 30 * MINUTE_MS
END = FUNDING_MS + 30 * MINUTE_MS
SYMBOLS = ("BTCUSDT", "ETHUSDT", "ENAUSDT")  # ENAUSDT settles every 4 h
TICKS = 6
KLINE_UPDATES = 2


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("venue_ws") / "lake")
    market = generate_market(SYMBOLS, DAY0, 2 * 1440, seed=7)
    assert market.meta["ENAUSDT"].funding_interval_hours == 4
    write_synthetic_market(market, lake)
    return lake


@dataclass
class Recording:
    market: list[dict[str, Any]] = field(default_factory=list)
    public: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def _market_streams() -> list[str]:
    names = []
    for s in SYMBOLS:
        low = s.lower()
        names += [f"{low}@kline_1m", f"{low}@kline_15m", f"{low}@kline_1h", f"{low}@markPrice@1s"]
    return [*names, "btcusdt@bookTicker"]  # wrong category on /market: acknowledged, silent


def _public_streams() -> list[str]:
    return [f"{s.lower()}@bookTicker" for s in SYMBOLS] + ["btcusdt@kline_1m"]  # wrong category


async def _record(venue: ReplayVenue) -> Recording:
    urls = venue.start(paused=True)
    client = AsyncClient()
    client.FUTURES_URL = urls.fapi_url
    manager = BinanceSocketManager(client)
    manager.FSTREAM_URL = urls.ws_url
    out = Recording()

    async def drain(socket: Any, into: list[dict[str, Any]]) -> None:
        while True:
            msg = await socket.recv()
            (out.errors if msg.get("e") == "error" else into).append(msg)

    market = await manager.futures_multiplex_socket(_market_streams(), category="market").__aenter__()
    public = await manager.futures_multiplex_socket(_public_streams(), category="public").__aenter__()
    tasks = [
        asyncio.ensure_future(drain(market, out.market)),
        asyncio.ensure_future(drain(public, out.public)),
    ]
    await asyncio.sleep(0.2)  # both connections are registered before the clock runs
    venue.resume()
    await asyncio.to_thread(venue.finished.wait, 30)
    await asyncio.sleep(0.5)  # let the last messages through
    for t in tasks:
        t.cancel()
    out.stats = venue.stats()
    await close_sockets(venue, market, public)
    await client.close_connection()
    return out


async def close_sockets(venue: ReplayVenue, *sockets: Any) -> None:
    """Close python-binance sockets at once: its read loop otherwise waits up to 10 s for a message.

    The sockets are told to exit first, then the venue closes the connections, so the read loops
    end instead of reconnecting.
    """
    exiting = asyncio.gather(*(s.__aexit__(None, None, None) for s in sockets))
    await asyncio.sleep(0.05)
    for channel in ("market", "public", "private"):
        venue.faults.disconnect(channel)
    await asyncio.wait_for(exiting, 10)


@pytest.fixture(scope="module")
def venue(lake: Lake) -> Iterator[ReplayVenue]:
    venue = ReplayVenue(
        lake, SYMBOLS, START, END, speed=1500, mark_ticks_per_minute=TICKS,
        kline_updates_per_minute=KLINE_UPDATES, seed=3,
    )  # fmt: skip
    yield venue
    venue.stop()


@pytest.fixture(scope="module")
def recording(venue: ReplayVenue) -> Recording:
    rec = asyncio.run(_record(venue))
    assert venue.finished.is_set() and venue.driver.error is None
    return rec


def _data(messages: list[dict[str, Any]], stream_suffix: str) -> list[dict[str, Any]]:
    return [m["data"] for m in messages if m["stream"].endswith(stream_suffix)]


def _klines(rec: Recording, symbol: str, interval: str) -> list[dict[str, Any]]:
    return [m["data"] for m in rec.market if m["stream"] == f"{symbol.lower()}@kline_{interval}"]


def _floats(k: dict[str, Any]) -> tuple[float, ...]:
    return tuple(float(k[f]) for f in ("o", "h", "l", "c", "v", "q", "V"))


def test_every_1m_bar_arrives_once_closed_and_equals_the_stored_bar(recording: Recording, lake: Lake) -> None:
    assert recording.errors == []
    for symbol in SYMBOLS:
        stored = lake.read("candles_1m", symbol, START, END)
        closed = [d["k"] for d in _klines(recording, symbol, "1m") if d["k"]["x"]]
        assert [k["t"] for k in closed] == stored["ts"].tolist()
        for k, row in zip(closed, stored.itertuples(), strict=True):
            expected = (
                row.open,
                row.high,
                row.low,
                row.close,
                row.volume,
                row.quote_volume,
                row.taker_buy_volume,
            )
            assert _floats(k) == expected
            assert k["n"] == row.trade_count and k["T"] == row.ts + MINUTE_MS - 1
            assert k["L"] - k["f"] + 1 == row.trade_count


def test_intra_bar_klines_stay_inside_the_bar_and_trade_ids_continue(
    recording: Recording, lake: Lake
) -> None:
    for symbol in SYMBOLS:
        stored = lake.read("candles_1m", symbol, START, END).set_index("ts")
        updates = [d for d in _klines(recording, symbol, "1m") if not d["k"]["x"]]
        assert len(updates) == KLINE_UPDATES * len(stored)
        for d in updates:
            k, bar = d["k"], stored.loc[d["k"]["t"]]
            assert k["t"] < d["E"] < k["t"] + MINUTE_MS
            assert float(k["o"]) == bar.open
            assert bar.low <= float(k["l"]) <= float(k["c"]) <= float(k["h"]) <= bar.high
            assert float(k["v"]) < bar.volume
        closed = [d["k"] for d in _klines(recording, symbol, "1m") if d["k"]["x"]]
        assert all(b["f"] == a["L"] + 1 for a, b in zip(closed, closed[1:], strict=False))


@pytest.mark.parametrize(("interval", "dataset"), [("15m", "candles_15m"), ("1h", "candles_1h")])
def test_higher_timeframe_closes_equal_the_resampled_bars(
    recording: Recording, lake: Lake, interval: str, dataset: str
) -> None:
    for symbol in SYMBOLS:
        got = _klines(recording, symbol, interval)
        assert all(d["k"]["x"] for d in got)
        step = 15 * MINUTE_MS if interval == "15m" else HOUR_MS
        expected = lake.read(dataset, symbol, START - step, END)
        expected = expected[(expected["ts"] + step > START) & (expected["ts"] + step <= END)]
        assert [d["k"]["t"] for d in got] == expected["ts"].tolist()
        assert [d["E"] for d in got] == (expected["ts"] + step).tolist()
        for d, row in zip(got, expected.itertuples(), strict=True):
            assert _floats(d["k"]) == (
                row.open, row.high, row.low, row.close, row.volume, row.quote_volume, row.taker_buy_volume,
            )  # fmt: skip
        assert len(got) == (4 if interval == "15m" else 1)


def test_mark_ticks_of_a_minute_aggregate_to_exactly_its_mark_bar(recording: Recording, lake: Lake) -> None:
    for symbol in SYMBOLS:
        ticks = _data([m for m in recording.market if m["stream"] == f"{symbol.lower()}@markPrice@1s"], "")
        mark = lake.read("mark_1m", symbol, START, END).set_index("ts")
        premium = lake.read("premium_1m", symbol, START, END).set_index("ts")
        assert len(ticks) == TICKS * len(mark)
        by_minute: dict[int, list[float]] = {}
        for d in ticks:
            minute = d["E"] // MINUTE_MS * MINUTE_MS  # Binance's kline convention: [t, t + 59 999]
            assert d["E"] % (MINUTE_MS // TICKS) == MINUTE_MS // TICKS - 1
            bar = mark.loc[minute]
            p = float(d["p"])
            assert bar.low <= p <= bar.high
            by_minute.setdefault(minute, []).append(p)
            # the premium is recoverable from mark and index
            assert p / float(d["i"]) - 1 == pytest.approx(premium.loc[minute].close, abs=1e-7)
            assert d["P"] == d["i"]
        for minute, prices in by_minute.items():
            bar = mark.loc[minute]
            assert len(prices) == TICKS
            assert (prices[0], max(prices), min(prices), prices[-1]) == (
                bar.open,
                bar.high,
                bar.low,
                bar.close,
            )


def test_funding_fields_follow_the_symbols_own_funding_times(recording: Recording, lake: Lake) -> None:
    for symbol in SYMBOLS:
        funding = lake.read("funding", symbol)
        times, rates = funding["ts"].to_numpy(), funding["funding_rate"].to_numpy()
        ticks = [m["data"] for m in recording.market if m["stream"] == f"{symbol.lower()}@markPrice@1s"]
        for d in ticks:
            i = int(np.searchsorted(times, d["E"], side="right"))
            assert d["T"] == times[i]
            assert d["r"] == f"{rates[i - 1]:.8f}"
        before = {d["T"] for d in ticks if d["E"] < FUNDING_MS}
        after = {d["T"] for d in ticks if d["E"] >= FUNDING_MS}
        interval = 4 * HOUR_MS if symbol == "ENAUSDT" else 8 * HOUR_MS
        assert before == {FUNDING_MS} and after == {FUNDING_MS + interval}


def test_book_ticker_quotes_bid_below_ask_around_the_last_price(
    recording: Recording, lake: Lake, venue: ReplayVenue
) -> None:
    for symbol in SYMBOLS:
        book = _data([m for m in recording.public if m["stream"] == f"{symbol.lower()}@bookTicker"], "")
        candles = lake.read("candles_1m", symbol, START, END).set_index("ts")
        tick = symbol_filter(venue.exchange_info, symbol, "PRICE_FILTER", "tickSize")
        step = symbol_filter(venue.exchange_info, symbol, "LOT_SIZE", "stepSize")
        assert len(book) == TICKS * len(candles)
        assert [d["u"] for d in book] == sorted({d["u"] for d in book})  # strictly increasing update ids
        for d in book:
            bid, ask = Decimal(d["b"]), Decimal(d["a"])
            bar = candles.loc[(d["E"] - 1) // MINUTE_MS * MINUTE_MS]
            assert bid < ask and bid % tick == 0 and ask % tick == 0
            assert float(bid) <= bar.high and float(ask) >= bar.low
            assert Decimal(d["B"]) >= step and Decimal(d["A"]) >= step and Decimal(d["B"]) % step == 0
            assert d["E"] == d["T"]


def test_messages_arrive_in_time_order_and_wrong_categories_stay_silent(recording: Recording) -> None:
    for messages in (recording.market, recording.public):
        times = [m["data"]["E"] for m in messages]
        assert times == sorted(times) and len(times) > 0
    assert not [m for m in recording.market if m["stream"].endswith("@bookTicker")]
    assert not [m for m in recording.public if "@kline" in m["stream"]]
    assert recording.stats["market"]["sent"] == len(recording.market)
    assert recording.stats["public"]["sent"] == len(recording.public)
    assert recording.stats["market"]["dropped"] == 0


def test_payload_keys_equal_the_recorded_binance_payloads(recording: Recording, shared_data: Path) -> None:
    fixtures = shared_data / "payloads" / "fixtures" / "market_data_json"

    def keys(name: str) -> dict[str, Any]:
        return json.loads((fixtures / name).read_text())

    mark = _data(recording.market, "@markPrice@1s")[0]
    assert set(mark) == set(keys("mark_price_stream.json"))
    book = _data(recording.public, "@bookTicker")[0]
    assert set(book) == set(keys("book_ticker_stream.json"))
    for name, closed in (("kline_stream_closed.json", True), ("kline_stream_open.json", False)):
        sample = next(d for d in _data(recording.market, "@kline_1m") if d["k"]["x"] is closed)
        recorded = keys(name)
        assert set(sample) == set(recorded) and set(sample["k"]) == set(recorded["k"])
        assert {k: type(v) for k, v in sample["k"].items()} == {k: type(v) for k, v in recorded["k"].items()}
    assert {k: type(v) for k, v in mark.items()} == {
        k: type(v) for k, v in keys("mark_price_stream.json").items()
    }


def test_a_replay_is_identical_for_the_same_seed(lake: Lake) -> None:
    def run(seed: int) -> list[str]:
        venue = ReplayVenue(
            lake, ["ETHUSDT"], START, START + 3 * MINUTE_MS, speed="step", mark_ticks_per_minute=4, seed=seed
        )

        async def collect() -> list[str]:
            urls = venue.start()
            async with websockets.connect(f"{urls.ws_url}public/ws/ethusdt@bookTicker") as ws:
                await asyncio.sleep(0.1)
                await asyncio.to_thread(venue.advance_to, START + 3 * MINUTE_MS, 10)
                return [await asyncio.wait_for(ws.recv(), 5) for _ in range(12)]

        try:
            return asyncio.run(collect())
        finally:
            venue.stop()

    first, again, other = run(1), run(1), run(2)
    assert first == again
    assert [json.loads(m)["b"] for m in first] == [json.loads(m)["b"] for m in other]
    assert [json.loads(m)["B"] for m in first] != [json.loads(m)["B"] for m in other]


def test_subscribe_unsubscribe_and_list_answer_like_binance(venue: ReplayVenue, recording: Recording) -> None:
    assert venue.urls is not None
    url = f"{venue.urls.ws_url}market/ws"

    async def talk() -> list[dict[str, Any]]:
        async with websockets.connect(url) as ws:
            answers = []
            for request in (
                {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m", "btcusdt@bookTicker"], "id": 1},
                {"method": "UNSUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 2},
                {"method": "LIST_SUBSCRIPTIONS", "id": 3},
                {"method": "SUBSCRIBE", "params": "btcusdt@kline_1m", "id": 4},
                {"method": "NOPE", "id": 5},
            ):
                await ws.send(json.dumps(request))
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            await ws.send("not json")
            answers.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            return answers

    answers = asyncio.run(talk())
    assert answers[:3] == [
        {"result": None, "id": 1},
        {"result": None, "id": 2},
        {"result": ["btcusdt@kline_1m"], "id": 3},
    ]
    assert answers[3]["id"] == 4 and answers[3]["error"]["code"] == 1
    assert answers[4]["id"] == 5 and answers[4]["error"]["code"] == 2
    assert answers[5]["error"]["code"] == 3


def test_private_stream_refuses_a_venue_without_a_broker(venue: ReplayVenue, recording: Recording) -> None:
    assert venue.urls is not None

    async def connect() -> int | None:
        async with websockets.connect(f"{venue.urls.ws_url}private/ws?listenKey=abc") as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            return info.value.rcvd.code if info.value.rcvd else None

    assert asyncio.run(connect()) == 1008
    assert venue.stats()["private"]["refused"] >= 1


# REST additions ---------------------------------------------------------------------------------
def _client(venue: ReplayVenue) -> Client:
    assert venue.urls is not None
    client = Client(ping=False)
    client.FUTURES_URL = venue.urls.fapi_url
    return client


def test_exchange_info_serves_the_given_dict_at_the_replay_clock(lake: Lake, shared_data: Path) -> None:
    recorded = json.loads((shared_data / "payloads" / "rest" / "exchange_info_2025-12.json").read_text())
    mine = {**recorded, "symbols": [s for s in recorded["symbols"] if s["symbol"] in SYMBOLS]}
    with ReplayVenue(lake, SYMBOLS, START, END, speed="step", exchange_info=mine) as urls:
        client = Client(ping=False)
        client.FUTURES_URL = urls.fapi_url
        info = client.futures_exchange_info()
    assert set(info) == set(recorded)
    assert info["serverTime"] == START
    assert info["symbols"] == mine["symbols"]
    assert info["rateLimits"] == recorded["rateLimits"]


def test_generated_exchange_info_has_binance_keys_and_filters_from_the_price_level(
    venue: ReplayVenue, recording: Recording, shared_data: Path, lake: Lake
) -> None:
    recorded = json.loads((shared_data / "payloads" / "rest" / "exchange_info_2025-12.json").read_text())
    info = _client(venue).futures_exchange_info()
    assert set(info) == set(recorded)
    assert [s["symbol"] for s in info["symbols"]] == list(SYMBOLS)
    real_btc = next(s for s in recorded["symbols"] if s["symbol"] == "BTCUSDT")
    for entry in info["symbols"]:
        assert set(entry) <= set(real_btc)
        assert {f["filterType"] for f in entry["filters"]} >= {
            "PRICE_FILTER",
            "LOT_SIZE",
            "MARKET_LOT_SIZE",
            "MIN_NOTIONAL",
        }
        price = float(lake.read("candles_1m", entry["symbol"], START, START + MINUTE_MS)["close"].iat[0])
        tick = float(symbol_filter(info, entry["symbol"], "PRICE_FILTER", "tickSize"))
        assert 1e4 <= price / tick < 1e5  # five significant digits
        step = float(symbol_filter(info, entry["symbol"], "LOT_SIZE", "stepSize"))
        assert step in (0.001, 1) or 1 <= step * price < 10


def test_premium_index_shapes_and_values_at_the_clock(
    venue: ReplayVenue, recording: Recording, shared_data: Path
) -> None:
    recorded = json.loads((shared_data / "payloads" / "rest" / "premium_index_all_2025-06.json").read_text())
    client = _client(venue)
    one = client.futures_mark_price(symbol="ETHUSDT")
    every = client.futures_mark_price()
    assert set(one) == set(recorded[0])
    assert {k: type(v) for k, v in one.items()} == {k: type(v) for k, v in recorded[0].items()}
    assert [e["symbol"] for e in every] == list(SYMBOLS)
    last_tick = _data([m for m in recording.market if m["stream"] == "ethusdt@markPrice@1s"], "")[-1]
    assert one["time"] == END and last_tick["E"] == END - 1  # the last tick closes the last minute
    assert float(one["markPrice"]) == pytest.approx(float(last_tick["p"]), abs=1e-8)
    assert one["indexPrice"] == last_tick["i"] and one["lastFundingRate"] == last_tick["r"]
    assert one["nextFundingTime"] == last_tick["T"]
    with pytest.raises(BinanceAPIException) as info:
        client.futures_mark_price(symbol="NOPEUSDT")
    assert info.value.code == -1121


def test_rest_market_data_stops_at_the_replay_clock(venue: ReplayVenue, recording: Recording) -> None:
    rows = requests.get(
        f"{venue.urls.rest_url}/fapi/v1/klines" if venue.urls else "",
        params={"symbol": "BTCUSDT", "interval": "1m", "startTime": END - 2 * MINUTE_MS},
        timeout=5,
    ).json()
    assert [r[0] for r in rows] == [END - 2 * MINUTE_MS, END - MINUTE_MS, END]


# raytrade venue ---------------------------------------------------------------------------------
def _cli() -> typer.Typer:
    from raytrade import cmd_venue

    app = typer.Typer()
    app.command("noop")(lambda: None)  # a second command keeps typer from collapsing the group
    cmd_venue.register(app)
    return app


def test_raytrade_venue_serves_the_lake_until_the_replay_ends(lake: Lake) -> None:
    result = CliRunner().invoke(
        _cli(),
        ["venue", "--lake", str(lake.root), "--symbols", "BTCUSDT,ETHUSDT", "--start", "2025-05-31T23:30",
         "--end", str(START + 10 * MINUTE_MS), "--speed", "6000x", "--port", "0", "--ticks", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    urls = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert urls["rest_url"].startswith("http://127.0.0.1:") and urls["ws_url"].startswith("ws://127.0.0.1:")
    assert "FSTREAM_URL" in result.stderr and "venue stopped" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbols", "NOPEUSDT"], "no candles_1m for NOPEUSDT"),
        (["--speed", "fast"], "replay speed must be a number"),
        (["--start", "yesterday"], "is not an ISO date"),
        (["--start", str(START + 1)], "not on the 1m grid"),
    ],
)
def test_raytrade_venue_names_what_is_wrong(lake: Lake, args: list[str], message: str) -> None:
    result = CliRunner().invoke(_cli(), ["venue", "--lake", str(lake.root), "--port", "0", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
