"""Pure parts of the replay venue: intra-minute path, book model, funding schedule, clock, faults, payloads."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from exchange.venue.clock import ReplayClock, parse_speed
from exchange.venue.exchange_info import generate_exchange_info, symbol_filter
from exchange.venue.faults import Faults
from exchange.venue.replay import (
    FundingSchedule,
    ReplayConfig,
    bar_path,
    book_quote,
    path_extremes,
    path_prices,
)
from exchange.venue.streams import KlineValues, kline_payload, stream_channel

H = 3_600_000


class FakeWall:
    def __init__(self) -> None:
        self.s = 100.0

    def __call__(self) -> float:
        return self.s


def test_path_visits_the_extreme_nearer_the_open_first() -> None:
    xs, ys = bar_path(100.0, 101.0, 97.0, 99.0)  # high is 1 away, low 3: high first
    assert ys.tolist() == [100.0, 101.0, 97.0, 99.0]
    assert xs.tolist() == [0.0, 1 / 7, 5 / 7, 1.0]  # constant speed: legs of 1, 4 and 2
    _, ys = bar_path(100.0, 104.0, 99.5, 103.0)
    assert ys.tolist() == [100.0, 99.5, 104.0, 103.0]


def test_path_tie_goes_low_first_on_an_up_bar_and_flat_bars_stay_flat() -> None:
    assert bar_path(100.0, 101.0, 99.0, 100.5)[1].tolist() == [100.0, 99.0, 101.0, 100.5]
    assert bar_path(100.0, 101.0, 99.0, 99.5)[1].tolist() == [100.0, 101.0, 99.0, 99.5]
    xs, ys = bar_path(5.0, 5.0, 5.0, 5.0)
    assert path_prices(5.0, 5.0, 5.0, 5.0, np.linspace(0, 1, 7)).tolist() == [5.0] * 7
    assert xs.tolist() == [0.0, 1.0]


def test_path_prices_stay_inside_the_bar_and_end_at_the_close() -> None:
    rng = np.random.default_rng(1)
    fractions = np.arange(1, 61) / 60
    for _ in range(500):
        o, c = rng.uniform(0.001, 70_000, 2)
        h = max(o, c) * (1 + rng.uniform(0, 0.01))
        low = min(o, c) * (1 - rng.uniform(0, 0.01))
        prices = path_prices(o, h, low, c, fractions)
        assert (prices >= low).all() and (prices <= h).all()
        assert prices[-1] == c
        high_seen, low_seen = path_extremes(o, h, low, c, 1.0)
        assert (high_seen, low_seen) == (h, low)


def test_path_extremes_grow_along_the_path() -> None:
    o, h, low, c = 100.0, 101.0, 97.0, 99.0
    assert path_extremes(o, h, low, c, 1 / 14) == (100.5, 100.0)  # halfway up the first leg
    assert path_extremes(o, h, low, c, 3 / 7) == (101.0, 99.0)  # halfway down the second leg
    assert path_extremes(o, h, low, c, 0.9) == (101.0, 97.0)


@pytest.mark.parametrize(
    ("price", "tick", "bps", "bid", "ask"),
    [
        (100.0, "0.01", 1.0, "99.99", "100.01"),  # 1 bp = 0.01
        (100.0, "0.01", 0.0, "99.99", "100.01"),  # at least half a tick each side
        (100.004, "0.01", 0.0, "99.99", "100.01"),
        (60_000.0, "0.1", 2.0, "59988.0", "60012.0"),
        (0.17, "0.00001", 5.0, "0.16991", "0.17009"),
    ],
)
def test_book_quote_rounds_outward_to_the_tick(
    price: float, tick: str, bps: float, bid: str, ask: str
) -> None:
    got_bid, got_ask = book_quote(price, Decimal(tick), bps)
    assert (got_bid, got_ask) == (Decimal(bid), Decimal(ask))
    assert got_bid < Decimal(str(price)) < got_ask


def test_funding_schedule_uses_stored_times_and_extrapolates_past_them() -> None:
    schedule = FundingSchedule(np.array([0, 4 * H, 8 * H], dtype=np.int64), np.array([1e-4, -2e-4, 3e-4]))
    assert schedule.last_rate(-1) == 0.0
    assert schedule.last_rate(4 * H - 1) == 1e-4 and schedule.last_rate(4 * H) == -2e-4
    assert schedule.next_time(0) == 4 * H and schedule.next_time(5 * H) == 8 * H
    assert schedule.next_time(8 * H) == 12 * H and schedule.next_time(13 * H) == 16 * H  # the 4 h spacing
    assert schedule.interval_ms(5 * H) == 4 * H
    lone = FundingSchedule(np.array([8 * H], dtype=np.int64), np.array([1e-4]))
    assert lone.next_time(9 * H) == 16 * H
    empty = FundingSchedule(np.zeros(0, np.int64), np.zeros(0))
    assert empty.next_time(H) == 8 * H and empty.last_rate(H) == 0.0


def test_clock_runs_at_speed_pauses_and_steps() -> None:
    wall = FakeWall()
    clock = ReplayClock(1_000_000, 2_000_000, 10.0, wall_s=wall)
    assert clock.now_ms() == 1_000_000 and clock.paused
    clock.resume()
    wall.s += 2.0
    assert clock.now_ms() == 1_020_000
    assert clock.wall_delay_s(1_030_000) == pytest.approx(1.0)
    clock.pause()
    wall.s += 5.0
    assert clock.now_ms() == 1_020_000 and clock.wall_delay_s(1_030_000) is None
    clock.set_speed("step")
    clock.resume()
    wall.s += 5.0
    assert clock.now_ms() == 1_020_000
    assert clock.advance_ms(500) == 1_020_500
    assert clock.set_ms(5_000_000) == 2_000_000  # never past the end
    with pytest.raises(ValueError, match="does not go back"):
        clock.set_ms(1_000_000)


def test_clock_listeners_hear_every_change() -> None:
    heard: list[int] = []
    clock = ReplayClock(0, 60_000, "step")
    clock.add_listener(lambda: heard.append(clock.now_ms()))
    clock.advance_ms(10)
    clock.resume()
    clock.set_ms(30)
    assert heard == [10, 10, 30]


@pytest.mark.parametrize(("text", "speed"), [("step", "step"), ("60", 60.0), ("60x", 60.0), (" 1.5X ", 1.5)])
def test_parse_speed(text: str, speed: object) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["fast", "0", "-3", "1e9"])
def test_parse_speed_names_bad_values(text: str) -> None:
    with pytest.raises(ValueError, match="speed"):
        parse_speed(text)


def test_replay_config_rejects_off_grid_and_empty_spans() -> None:
    with pytest.raises(ValueError, match="not on the 1m grid"):
        ReplayConfig(symbols=("BTCUSDT",), start_ms=1, end_ms=60_000)
    with pytest.raises(ValueError, match="must be after"):
        ReplayConfig(symbols=("BTCUSDT",), start_ms=60_000, end_ms=60_000)
    with pytest.raises(ValueError, match="symbols repeat"):
        ReplayConfig(symbols=("BTCUSDT", "BTCUSDT"), start_ms=0, end_ms=60_000)


def test_faults_consume_in_order_and_count() -> None:
    wall = FakeWall()
    faults = Faults(wall_s=wall)
    faults.drop("market", 1)
    faults.duplicate("market", 1)
    faults.reorder("public", 1)
    assert faults.delivery("market").copies == 0
    assert faults.delivery("market").copies == 2
    assert faults.delivery("market").copies == 1
    assert faults.delivery("public", can_hold=False).hold is False  # completing a swap never holds
    assert faults.delivery("public").hold is True
    faults.silence("private", 2.0)
    assert faults.delivery("private").copies == 0
    wall.s += 2.5
    assert faults.delivery("private").copies == 1
    faults.delay("market", 0.3, n=1)
    assert faults.delivery("market").delay_s == 0.3 and faults.delivery("market").delay_s == 0.0
    stats = faults.stats()
    assert stats["market"]["dropped"] == 1 and stats["market"]["duplicated"] == 1
    assert stats["private"]["dropped"] == 1 and stats["public"]["reordered"] == 1


def test_rest_faults_match_prefixes_and_run_out() -> None:
    faults = Faults()
    faults.rest_error("/fapi/v1/order", 2)
    assert faults.rest_rule("/fapi/v1/klines") is None
    assert faults.rest_rule("/fapi/v1/order") is not None
    assert faults.rest_rule("/fapi/v1/orderX") is not None  # a prefix, as documented
    assert faults.rest_rule("/fapi/v1/order") is None
    assert faults.rest_rule("/_venue/stats") is None
    with pytest.raises(ValueError, match="5xx"):
        faults.rest_error("/fapi", status=400)
    with pytest.raises(ValueError, match="unknown channel"):
        faults.drop("user")
    with pytest.raises(RuntimeError, match="paper broker"):
        faults.reject_order()


def test_stream_categories_follow_binance_url_split() -> None:
    assert stream_channel("btcusdt@bookTicker") == "public"
    assert stream_channel("btcusdt@depth@100ms") == "public"
    assert stream_channel("btcusdt@kline_1m") == "market"
    assert stream_channel("btcusdt@markPrice@1s") == "market"


def test_kline_payload_shows_the_exact_stored_values() -> None:
    values = KlineValues(0.1038, 0.104, 0.1037, 0.104, 242160.4, 25142.90126, 102, 126196.5)
    k = kline_payload("ALGOUSDT", "1m", 0, 60_000, 60_000, values, True, 7)["k"]
    assert (k["o"], k["h"], k["l"], k["c"], k["v"], k["q"], k["V"]) == (
        "0.1038", "0.104", "0.1037", "0.104", "242160.4", "25142.90126", "126196.5",
    )  # fmt: skip
    assert (k["f"], k["L"], k["n"], k["T"], k["x"]) == (7, 108, 102, 59_999, True)
    empty = kline_payload("ALGOUSDT", "1m", 0, 60_000, 60_000, KlineValues(1, 1, 1, 1, 0, 0, 0, 0), True, 7)[
        "k"
    ]
    assert (empty["f"], empty["L"]) == (-1, -1)


def test_generated_exchange_info_filters_follow_the_price_level() -> None:
    info = generate_exchange_info(["BTCUSDT", "DOGEUSDT", "PEPEUSDT"], {"BTCUSDT": 60_123.4, "DOGEUSDT": 0.17, "PEPEUSDT": 1.05e-5}, 7)  # fmt: skip
    assert info["serverTime"] == 7
    ticks = [symbol_filter(info, s, "PRICE_FILTER", "tickSize") for s in ("BTCUSDT", "DOGEUSDT", "PEPEUSDT")]
    steps = [symbol_filter(info, s, "LOT_SIZE", "stepSize") for s in ("BTCUSDT", "DOGEUSDT", "PEPEUSDT")]
    assert ticks == [Decimal("1"), Decimal("0.00001"), Decimal("0.000000001")]
    assert steps == [Decimal("0.001"), Decimal("1"), Decimal("1")]
    assert [s["pricePrecision"] for s in info["symbols"]] == [0, 5, 9]
    assert info["symbols"][2]["filters"][0]["tickSize"] == "0.000000001"  # never 1E-9
    with pytest.raises(ValueError, match="positive price"):
        generate_exchange_info(["BTCUSDT"], {"BTCUSDT": float("nan")}, 0)


@pytest.mark.parametrize("n", [4, 5, 12, 60])
def test_ticks_on_the_snapped_grid_aggregate_to_exactly_the_bar(n: int) -> None:
    rng = np.random.default_rng(n)
    fractions = np.arange(n) / (n - 1)
    for _ in range(300):
        o, c = rng.uniform(90, 110, 2)
        h = max(o, c) + rng.choice([0.0, rng.uniform(0, 5)])
        low = min(o, c) - rng.choice([0.0, rng.uniform(0, 5)])
        prices = path_prices(o, h, low, c, fractions, n - 1)
        assert (prices[0], prices.max(), prices.min(), prices[-1]) == (o, h, low, c)
