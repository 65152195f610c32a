"""The replay venue's REST, driven over real HTTP by the python-binance adapter (no patching)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from binance.exceptions import BinanceAPIException
from history_fixtures import DumpServer, closed_port, random_candles, random_funding

from core.errors import RejectedError, TransientError, UnreachableError
from exchange.binance.rest import BinanceRest
from exchange.dumps import parse_klines_csv
from exchange.venue import BackgroundServer, create_app
from storage.lake import Lake

FEB = 1769904000000  # 2026-02-01 00:00 UTC
MAR = 1772323200000  # 2026-03-01
MINUTE = 60_000
DAY = 86_400_000
YEAR_2025 = 1735689600000


class Clock:
    """A settable replay clock (epoch ms)."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture(scope="module")
def truth(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("venue") / "lake")
    candles = parse_klines_csv((shared_data / "payloads" / "dumps" / "ALGOUSDT-1m-2026-02.csv").read_bytes())
    lake.write("candles_1m", "ALGOUSDT", candles, source="binance-dump")
    mark = random_candles(FEB, MAR, MINUTE, seed=11)[["ts", "open", "high", "low", "close"]]
    lake.write("mark_1m", "ALGOUSDT", mark, source="synthetic")
    lake.write("funding", "ALGOUSDT", random_funding(YEAR_2025, MAR, seed=5), source="synthetic")
    return lake


@pytest.fixture
def clock() -> Clock:
    return Clock(MAR + 30_000)


@pytest.fixture
def venue(truth: Lake, clock: Clock) -> Iterator[str]:
    with BackgroundServer(create_app(truth, clock)) as url:
        yield url


@pytest.fixture
def client(venue: str) -> Iterator[BinanceRest]:
    with BinanceRest(venue, max_attempts=2, backoff_s=0.0) as rest:
        yield rest


def test_server_time_is_the_replay_clock(client: BinanceRest, clock: Clock) -> None:
    assert client.server_time_ms() == MAR + 30_000
    clock.now_ms = FEB + DAY
    assert client.server_time_ms() == FEB + DAY
    client.ping()


def test_klines_page_through_the_venue_and_equal_the_lake(client: BinanceRest, truth: Lake) -> None:
    frame = client.klines("ALGOUSDT", "1m", FEB, MAR)
    assert len(frame) == 40320
    assert frame.equals(truth.read("candles_1m", "ALGOUSDT"))
    assert client.used_weight_1m == 27 * 10 + 1  # 27 pages of 1500 and one /time


def test_client_drops_the_bar_forming_at_server_time(client: BinanceRest, clock: Clock) -> None:
    clock.now_ms = FEB + 10 * DAY + 30_000
    frame = client.klines("ALGOUSDT", "1m", FEB + 10 * DAY - 3 * MINUTE, FEB + 11 * DAY)
    assert frame["ts"].tolist() == [
        FEB + 10 * DAY - 3 * MINUTE,
        FEB + 10 * DAY - 2 * MINUTE,
        FEB + 10 * DAY - MINUTE,
    ]


def test_venue_shows_the_forming_bar_with_its_open_only(venue: str, clock: Clock, truth: Lake) -> None:
    clock.now_ms = FEB + 10 * DAY + 30_000
    rows = requests.get(
        f"{venue}/fapi/v1/klines", params={"symbol": "ALGOUSDT", "interval": "1m", "limit": 2}
    ).json()
    stored = truth.read("candles_1m", "ALGOUSDT", FEB + 10 * DAY - MINUTE, FEB + 10 * DAY + MINUTE)
    closed, forming = rows
    assert closed[0] == FEB + 10 * DAY - MINUTE and float(closed[4]) == stored["close"].iat[0]
    assert forming[0] == FEB + 10 * DAY
    assert float(forming[1]) == stored["open"].iat[1]
    assert forming[2] == forming[3] == forming[4] == forming[1]
    assert forming[5] == "0"


def test_kline_arrays_have_binance_field_types(venue: str, truth: Lake) -> None:
    rows = requests.get(
        f"{venue}/fapi/v1/klines",
        params={"symbol": "ALGOUSDT", "interval": "1m", "startTime": FEB, "limit": 3},
    ).json()
    assert len(rows) == 3
    first = rows[0]
    assert [type(v).__name__ for v in first] == ["int", "str", "str", "str", "str", "str", "int", "str", "int", "str", "str", "str"]  # fmt: skip
    assert first[:9] == [
        FEB,
        "0.1038",
        "0.104",
        "0.1037",
        "0.104",
        "242160.4",
        FEB + 59_999,
        "25142.90126",
        102,
    ]
    assert first[9] == "126196.5"


def test_klines_limit_defaults_to_500_and_caps_at_1500(venue: str) -> None:
    url = f"{venue}/fapi/v1/klines"
    base = {"symbol": "ALGOUSDT", "interval": "1m", "startTime": FEB}
    assert len(requests.get(url, params=base).json()) == 500
    assert len(requests.get(url, params={**base, "limit": 1500}).json()) == 1500
    too_many = requests.get(url, params={**base, "limit": 1501})
    assert too_many.status_code == 400
    assert too_many.json() == {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}
    garbage = requests.get(url, params={**base, "limit": "abc"})
    assert garbage.status_code == 400 and garbage.json()["code"] == -1100


def test_klines_without_start_returns_the_latest_bars_up_to_end(venue: str) -> None:
    rows = requests.get(
        f"{venue}/fapi/v1/klines",
        params={"symbol": "ALGOUSDT", "interval": "1m", "endTime": FEB + DAY, "limit": 5},
    ).json()
    assert [r[0] for r in rows] == [FEB + DAY - 4 * MINUTE + i * MINUTE for i in range(5)]


def test_nothing_after_the_replay_clock_is_served(venue: str, clock: Clock) -> None:
    clock.now_ms = FEB + 5 * MINUTE + 1
    rows = requests.get(
        f"{venue}/fapi/v1/klines",
        params={"symbol": "ALGOUSDT", "interval": "1m", "startTime": FEB, "endTime": MAR},
    ).json()
    assert [r[0] for r in rows][-1] == FEB + 5 * MINUTE
    assert len(rows) == 6
    future = requests.get(
        f"{venue}/fapi/v1/klines", params={"symbol": "ALGOUSDT", "interval": "1m", "startTime": FEB + DAY}
    )
    assert future.status_code == 200 and future.json() == []


def test_klines_skip_a_gap_before_the_first_bar_like_binance(venue: str) -> None:
    rows = requests.get(
        f"{venue}/fapi/v1/klines",
        params={"symbol": "ALGOUSDT", "interval": "1m", "startTime": YEAR_2025, "limit": 3},
    ).json()
    assert [r[0] for r in rows] == [FEB, FEB + MINUTE, FEB + 2 * MINUTE]


@pytest.mark.parametrize(
    ("params", "code", "msg"),
    [
        ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121, "Invalid symbol."),
        ({"interval": "1m"}, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
        ({"symbol": "ALGOUSDT", "interval": "7m"}, -1120, "Invalid interval."),
        ({"symbol": "ALGOUSDT", "interval": "1m", "startTime": MAR, "endTime": FEB}, -1128, "Combination of optional parameters invalid."),
    ],
)  # fmt: skip
def test_bad_requests_answer_binance_errors_with_http_400(
    venue: str, params: dict, code: int, msg: str
) -> None:
    response = requests.get(f"{venue}/fapi/v1/klines", params=params)
    assert response.status_code == 400
    assert response.json() == {"code": code, "msg": msg}
    assert "X-MBX-USED-WEIGHT-1M" in response.headers


def test_client_raises_rejected_error_from_the_vendor_exception(client: BinanceRest) -> None:
    with pytest.raises(
        RejectedError, match=r"klines NOPEUSDT: HTTP 400, code -1121: Invalid symbol\."
    ) as info:
        client.klines("NOPEUSDT", "1m", FEB, MAR)
    assert isinstance(info.value.__cause__, BinanceAPIException)


def test_mark_price_klines_roundtrip(client: BinanceRest, truth: Lake) -> None:
    frame = client.mark_price_klines("ALGOUSDT", "1m", FEB + DAY, FEB + 2 * DAY)
    assert frame.equals(truth.read("mark_1m", "ALGOUSDT", FEB + DAY, FEB + 2 * DAY))


def test_funding_rates_page_by_1000_and_keep_mark_price(client: BinanceRest, truth: Lake) -> None:
    frame = client.funding_rates("ALGOUSDT", YEAR_2025, MAR)
    stored = truth.read("funding", "ALGOUSDT")
    assert len(frame) == len(stored) > 1000
    assert frame["ts"].tolist() == stored["ts"].tolist()
    assert np.allclose(frame["funding_rate"], stored["funding_rate"], rtol=0, atol=1e-12)
    assert np.allclose(frame["mark_price"], stored["mark_price"], rtol=0, atol=1e-12)


def test_client_waits_retry_after_when_the_venue_answers_429(truth: Lake, clock: Clock) -> None:
    rate_clock = Clock(MAR + 5_000)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        rate_clock.now_ms += int(seconds * 1000)

    app = create_app(truth, clock, weight_limit_1m=25, rate_clock_ms=rate_clock)
    with BackgroundServer(app) as url, BinanceRest(url, sleep=sleep, backoff_s=0.0) as rest:
        frame = rest.klines("ALGOUSDT", "1m", FEB, FEB + 4500 * MINUTE)
    assert len(frame) == 4500
    assert waits == [55.0]  # /time 1 + two pages of 10, the third page waits for the next minute


def test_client_throttles_itself_from_the_weight_header_before_a_429(truth: Lake, clock: Clock) -> None:
    rate_clock = Clock(MAR + 5_000)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        rate_clock.now_ms += int(seconds * 1000)

    app = create_app(truth, clock, weight_limit_1m=None, rate_clock_ms=rate_clock)
    with (
        BackgroundServer(app) as url,
        BinanceRest(url, sleep=sleep, weight_limit_1m=25, weight_headroom=0.8, wall_clock_s=lambda: rate_clock.now_ms / 1000) as rest,
    ):  # fmt: skip
        frame = rest.klines("ALGOUSDT", "1m", FEB, FEB + 4500 * MINUTE)
    assert len(frame) == 4500
    assert waits == [pytest.approx(55.25)]


def test_client_retries_5xx_then_raises_transient_error() -> None:
    server = DumpServer()
    server.status["/fapi/v1/time"] = 503
    waits: list[float] = []
    with (
        server.running() as url,
        BinanceRest(url, max_attempts=3, backoff_s=0.5, sleep=waits.append) as rest,
        pytest.raises(TransientError, match="time: failed after 3 attempt"),
    ):
        rest.server_time_ms()
    assert server.requests == ["/fapi/v1/time"] * 3
    assert waits == [0.5, 1.0, 2.0]


def test_unreachable_venue_raises_unreachable_error() -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    with (
        BinanceRest(dead, max_attempts=2, sleep=lambda s: None) as rest,
        pytest.raises(UnreachableError, match="cannot reach .* after 2 attempt.*connection refused") as info,
    ):
        rest.klines("ALGOUSDT", "1m", FEB, MAR)
    assert isinstance(info.value.__cause__, requests.ConnectionError)


def test_background_server_stops_cleanly_and_frees_its_port(truth: Lake, clock: Clock) -> None:
    server = BackgroundServer(create_app(truth, clock))
    url = server.start()
    assert requests.get(f"{url}/fapi/v1/ping").json() == {}
    server.stop()
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/fapi/v1/ping", timeout=2)


def test_funding_rate_objects_have_binance_fields_and_8_decimals(venue: str) -> None:
    rows = requests.get(
        f"{venue}/fapi/v1/fundingRate", params={"symbol": "ALGOUSDT", "startTime": FEB, "limit": 2}
    ).json()
    assert [sorted(r) for r in rows] == [["fundingRate", "fundingTime", "markPrice", "symbol"]] * 2
    assert rows[0]["symbol"] == "ALGOUSDT" and rows[0]["fundingTime"] == FEB
    assert pd.Series([r["fundingRate"] for r in rows]).str.match(r"^-?\d+\.\d{8}$").all()
