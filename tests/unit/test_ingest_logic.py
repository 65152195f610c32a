"""Pure logic of the ingest actor: stream names, parsing, routing, dedupe, gaps, mark aggregation,
funding, backoff, data-quality events, and online features equal to the offline batch kernels."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from actors.backfill import BarSequence, FundingBook, MarkMinutes, Verdict, missing_range
from actors.ingest import MALFORMED_KIND, quality_event_row
from actors.ingest_book import IngestBook
from actors.ingest_config import IngestConfig
from core.errors import MalformedMessage
from core.features import build_inputs, compute_features, funding_in_force
from core.synthetic import generate_market
from exchange.binance.connection import backoff_s
from exchange.binance.payloads import parse_book, parse_kline, parse_mark
from exchange.binance.streams import StreamRouter, stream_names, stream_url
from exchange.updates import BookUpdate, KlineUpdate, MarkUpdate

FIXTURES = Path("payloads/fixtures/market_data_json")
RECORDING = Path("payloads/ws/market_streams_recording_2021-07.txt")
MINUTE = 60_000


def load(shared_data: Path, name: str) -> dict:
    return json.loads((shared_data / FIXTURES / name).read_text())


# --- stream names and URLs --------------------------------------------------------------------------


def test_klines_and_mark_go_to_market_and_book_ticker_to_public():
    names = stream_names(["BTCUSDT", "1000PEPEUSDT"], ["1m", "15m", "1h"])
    assert names["market"] == [
        "btcusdt@kline_1m", "btcusdt@kline_15m", "btcusdt@kline_1h", "btcusdt@markPrice@1s",
        "1000pepeusdt@kline_1m", "1000pepeusdt@kline_15m", "1000pepeusdt@kline_1h", "1000pepeusdt@markPrice@1s",
    ]  # fmt: skip
    assert names["public"] == ["btcusdt@bookTicker", "1000pepeusdt@bookTicker"]
    url, prefix, path = stream_url("wss://fstream.binance.com/", "public", names["public"])
    assert (
        url + prefix + path
        == "wss://fstream.binance.com/public/stream?streams=btcusdt@bookTicker/1000pepeusdt@bookTicker"
    )
    assert stream_url("ws://127.0.0.1:9/", "market", ["a"])[0] == "ws://127.0.0.1:9/market/"
    with pytest.raises(ValueError, match="category"):
        stream_url("ws://x/", "private", ["a"])


# --- parsing against recorded payloads --------------------------------------------------------------


def test_closed_kline_fixture_parses_into_our_names(shared_data):
    k = parse_kline(load(shared_data, "kline_stream_closed.json"))
    assert k == KlineUpdate(
        symbol="BTCUSDT", interval="1m", open_ms=1638747660000, event_ms=1638747660000, open=0.001, high=0.0025,
        low=0.001, close=0.002, volume=1000.0, quote_volume=1.0, trade_count=100, taker_buy_volume=500.0,
        closed=True,
    )  # fmt: skip
    assert k.row()["ts"] == 1638747660000 and k.row()["taker_buy_volume"] == 500.0


def test_open_kline_fixture_with_low_above_open_is_malformed(shared_data):
    with pytest.raises(MalformedMessage) as e:
        parse_kline(load(shared_data, "kline_stream_open.json"))
    assert e.value.reason == "ohlc_outside_range" and e.value.symbol == "BTCUSDT"


def test_mark_and_book_fixtures_parse(shared_data):
    m = parse_mark(load(shared_data, "mark_price_stream.json"))
    assert m == MarkUpdate("BTCUSDT", 1562305380000, 11794.15, 11784.62659091, 0.00038167, 1562306400000)
    assert m.premium == pytest.approx(11794.15 / 11784.62659091 - 1, rel=1e-15)
    b = parse_book(load(shared_data, "book_ticker_stream.json"))
    assert b == BookUpdate("BNBUSDT", 1568014460891, 400900217, 25.3519, 31.21, 25.3652, 40.66)


def test_recorded_session_routes_klines_and_book_tickers_and_rejects_unsubscribed_streams(shared_data):
    lines = (shared_data / RECORDING).read_text().splitlines()[1:]
    messages = [json.loads(line.split(": ", 1)[1]) for line in lines if ": " in line]
    router = StreamRouter(["SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"], ["1m"])
    routed: dict[str, int] = {}
    unknown = 0
    for msg in messages:
        try:
            update = router.route(msg)
        except MalformedMessage as e:
            assert e.reason == "unknown_stream", e  # aggTrade and depth were not asked for
            unknown += 1
            continue
        assert update is not None
        routed[type(update).__name__] = routed.get(type(update).__name__, 0) + 1
    assert routed == {"KlineUpdate": 67, "BookUpdate": 613}
    assert unknown == 91 + 764
    closed = [router.route(m) for m in messages if "kline" in m["stream"] and m["data"]["k"]["x"]]
    assert closed and all(isinstance(k, KlineUpdate) and k.open_ms % MINUTE == 0 for k in closed)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.pop("p"), "missing_field"),
        (lambda d: d.update(p="abc"), "bad_number"),
        (lambda d: d.update(p="NaN"), "bad_value"),
        (lambda d: d.update(p="-1"), "bad_value"),
        (lambda d: d.update(E="1"), "bad_number"),
        (lambda d: d.update(s="btcusdt"), "bad_symbol"),
        (lambda d: d.update(s="ETHUSDT"), "wrong_symbol"),
        (lambda d: d.update(e="kline"), "wrong_event"),
    ],
)
def test_bad_mark_payloads_are_malformed_with_a_reason(shared_data, mutate, reason):
    data = load(shared_data, "mark_price_stream.json")
    mutate(data)
    router = StreamRouter(["BTCUSDT"], ["1m"])
    with pytest.raises(MalformedMessage) as e:
        router.route({"stream": "btcusdt@markPrice@1s", "data": data})
    assert e.value.reason == reason


def test_router_rejects_crossed_books_wrong_intervals_and_non_objects(shared_data):
    router = StreamRouter(["BNBUSDT"], ["1m", "15m"])
    book = load(shared_data, "book_ticker_stream.json")
    book["b"] = "26"
    with pytest.raises(MalformedMessage, match="crossed_book"):
        router.route({"stream": "bnbusdt@bookTicker", "data": book})
    kline = load(shared_data, "kline_stream_closed.json") | {"s": "BNBUSDT"}
    kline["k"] = kline["k"] | {"s": "BNBUSDT"}
    with pytest.raises(MalformedMessage, match="wrong_interval"):
        router.route({"stream": "bnbusdt@kline_15m", "data": kline})
    assert isinstance(router.route({"stream": "bnbusdt@kline_1m", "data": kline}), KlineUpdate)
    with pytest.raises(MalformedMessage, match="bad_shape"):
        router.route(["not", "an", "object"])
    assert router.route({"result": None, "id": 1}) is None


# --- sequence, gaps and dedupe ----------------------------------------------------------------------


def test_bar_sequence_ignores_duplicates_and_older_bars_and_reports_gaps():
    seq = BarSequence()
    t0 = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE
    assert seq.verdict("BTCUSDT", "1m", t0) is Verdict.NEW
    seq.accept("BTCUSDT", "1m", t0)
    assert seq.verdict("BTCUSDT", "1m", t0) is Verdict.DUPLICATE
    assert seq.verdict("BTCUSDT", "1m", t0 - MINUTE) is Verdict.OUT_OF_ORDER
    assert seq.gap("BTCUSDT", "1m", t0 + MINUTE, MINUTE) is None
    assert seq.gap("BTCUSDT", "1m", t0 + 4 * MINUTE, MINUTE) == (t0 + MINUTE, t0 + 4 * MINUTE)
    # a hole is filled by fetched bars, wherever they fall, once
    seq.accept("BTCUSDT", "1m", t0 + 4 * MINUTE)
    assert seq.verdict("BTCUSDT", "1m", t0 + 2 * MINUTE) is Verdict.OUT_OF_ORDER  # streamed: ignored
    assert seq.verdict("BTCUSDT", "1m", t0 + 2 * MINUTE, fill=True) is Verdict.NEW
    seq.accept("BTCUSDT", "1m", t0 + 2 * MINUTE)
    assert seq.verdict("BTCUSDT", "1m", t0 + 2 * MINUTE, fill=True) is Verdict.DUPLICATE
    assert seq.verdict("BTCUSDT", "1m", t0 + 4 * MINUTE, fill=True) is Verdict.DUPLICATE
    assert seq.last[("BTCUSDT", "1m")] == t0 + 4 * MINUTE  # never moves back
    small = BarSequence(keep=3)
    for i in range(10):
        small.accept("ETHUSDT", "1m", t0 + i * MINUTE)
    assert len(small.seen[("ETHUSDT", "1m")]) <= 6
    assert small.verdict("ETHUSDT", "1m", t0, fill=True) is Verdict.OUT_OF_ORDER  # too old to judge
    assert seq.verdict("BTCUSDT", "15m", t0) is Verdict.NEW  # per interval


def test_missing_range_covers_closed_bars_only():
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % (15 * MINUTE)
    assert missing_range(None, t0 + 10 * MINUTE, MINUTE) is None
    assert missing_range(t0, t0 + MINUTE + 59_999, MINUTE) is None  # t0+1m still forming
    assert missing_range(t0, t0 + 2 * MINUTE, MINUTE) == (t0 + MINUTE, t0 + 2 * MINUTE)
    assert missing_range(t0, t0 + 5 * MINUTE + 1, MINUTE) == (t0 + MINUTE, t0 + 5 * MINUTE)
    assert missing_range(t0, t0 + 31 * MINUTE, 15 * MINUTE) == (t0 + 15 * MINUTE, t0 + 30 * MINUTE)


# --- mark aggregation -------------------------------------------------------------------------------


def test_mark_minutes_aggregate_high_low_close_and_ignore_duplicates_and_older_ticks():
    t = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE
    marks = MarkMinutes(["BTCUSDT"])
    for dt, price in [(0, 100.0), (15_000, 103.0), (30_000, 98.0), (59_000, 101.0), (60_000, 107.0)]:
        assert marks.add("BTCUSDT", t + dt, price, price / 1e4)
    assert not marks.add("BTCUSDT", t + 30_000, 50.0, 0.0)  # reordered: older than the last tick
    assert not marks.add("BTCUSDT", t + 60_000, 107.0, 0.0)  # duplicate
    assert marks.take("BTCUSDT", t, 2000) == (103.0, 98.0, 101.0, 101.0 / 1e4)
    assert marks.take("BTCUSDT", t, 2000) is None  # taken
    # a disconnect breaks coverage: the next minute is only partly covered by the ticks after it
    marks.break_coverage()
    assert marks.add("BTCUSDT", t + 90_000, 108.0, 0.0)
    assert marks.take("BTCUSDT", t + MINUTE, 2000) is None
    marks.add("BTCUSDT", t + 120_500, 109.0, 0.0)
    assert marks.take("BTCUSDT", t + 2 * MINUTE, 2000) == (109.0, 109.0, 109.0, 0.0)


# --- funding ----------------------------------------------------------------------------------------


def test_funding_book_matches_funding_in_force_and_asks_for_settlements_the_stream_announced():
    h8 = 8 * 3_600_000
    base = 1_700_006_400_000 - 1_700_006_400_000 % h8
    ts = np.array([base, base + h8, base + 2 * h8 + 3], dtype=np.int64)  # Binance stamps some a few ms late
    rates = np.array([1e-4, -2e-4, 3e-4])
    book = FundingBook(ts[:2], rates[:2])
    book.expect(int(base + h8))  # already settled: ignored
    book.expect(int(base + 2 * h8))
    bars = np.arange(base - 5 * MINUTE, base + 2 * h8 + 5 * MINUTE, MINUTE, dtype=np.int64)
    assert book.due(int(base + 2 * h8 - 1)) == []
    assert book.due(int(base + 2 * h8)) == [base + 2 * h8]
    book.settle([], [], int(base + 2 * h8))  # REST has nothing yet (stamped 3 ms late): still due
    assert book.due(int(base + 2 * h8 + MINUTE)) == [base + 2 * h8]
    book.settle([int(ts[2])], [float(rates[2])], int(base + 2 * h8 + MINUTE))
    assert book.due(int(base + 3 * h8)) == []
    want_rate, want_time = funding_in_force(bars, ts, rates)
    got = np.array([book.in_force(int(t) + MINUTE) for t in bars])
    np.testing.assert_array_equal(got[:, 0], want_rate)
    np.testing.assert_array_equal(got[:, 1], want_time)
    book.expect(int(base + 3 * h8))
    book.settle([], [], int(base + 3 * h8 + FundingBook.SETTLE_WINDOW_MS))  # never came: given up
    assert book.due(int(base + 4 * h8)) == []


# --- reconnect backoff ------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap_and_never_gives_up():
    rng = random.Random(7)
    waits = [backoff_s(a, 0.5, 30.0, rng) for a in range(200)]
    for a, w in enumerate(waits):
        d = min(30.0, 0.5 * 2**a)
        assert d / 2 <= w <= d
    assert len(set(waits[10:])) > 100  # jittered, not a fixed schedule
    assert max(waits) <= 30.0


# --- data-quality events ----------------------------------------------------------------------------


def test_a_malformed_message_becomes_an_events_row_with_reason_and_raw_payload(shared_data):
    router = StreamRouter(["BTCUSDT"], ["1m"])
    data = load(shared_data, "mark_price_stream.json") | {"p": "NaN"}
    with pytest.raises(MalformedMessage) as e:
        router.route({"stream": "btcusdt@markPrice@1s", "data": data})
    row = quality_event_row("ingest.g3", e.value, 1_700_000_000_000)
    assert row["kind"] == MALFORMED_KIND and row["source"] == "ingest.g3" and row["symbol"] == "BTCUSDT"
    assert row["ts"] == 1_700_000_000_000
    assert row["payload"]["reason"] == "bad_value" and "p='NaN'" in row["payload"]["detail"]
    assert row["payload"]["message"]["data"]["p"] == "NaN"
    json.dumps(row["payload"], allow_nan=False)  # storable as JSON


# --- online features through the message path equal the offline batch kernels -----------------------


def _kline_msg(symbol: str, c: dict, i: int, closed: bool = True) -> dict:
    t = int(c["ts"][i])
    return {
        "stream": f"{symbol.lower()}@kline_1m",
        "data": {"e": "kline", "E": t + MINUTE, "s": symbol, "k": {
            "t": t, "T": t + MINUTE - 1, "s": symbol, "i": "1m", "f": 1, "L": 2,
            "o": repr(float(c["open"][i])), "h": repr(float(c["high"][i])), "l": repr(float(c["low"][i])),
            "c": repr(float(c["close"][i])), "v": repr(float(c["volume"][i])), "n": 2, "x": closed,
            "q": repr(float(c["quote_volume"][i])) if "quote_volume" in c else "0",
            "V": repr(float(c["taker_buy_volume"][i])), "Q": "0", "B": "0"}},
    }  # fmt: skip


def _mark_msg(symbol: str, event_ms: int, mark: float, index: float, next_funding_ms: int) -> dict:
    return {
        "stream": f"{symbol.lower()}@markPrice@1s",
        "data": {"e": "markPriceUpdate", "E": event_ms, "s": symbol, "p": repr(mark), "i": repr(index),
                 "P": repr(index), "r": "0.0001", "T": next_funding_ms},
    }  # fmt: skip


def test_online_features_from_stream_messages_equal_offline_features(tmp_path):
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    n_hist, n_live = 600, 90
    market = generate_market(symbols, 1_736_121_600_000, n_hist + n_live, seed=3)
    cfg = IngestConfig(group_id=0, symbols=tuple(symbols), rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/",
                       database_url=f"sqlite:///{tmp_path / 'x.db'}")  # fmt: skip
    book = IngestBook(cfg)
    router = StreamRouter(book.symbols, cfg.intervals)
    # expected premium: what the stream gives (mark / index − 1) with index = mark / (1 + premium)
    premium_online: dict[str, np.ndarray] = {}
    for s in symbols:
        mark_c = market.mark_1m[s]["close"]
        index = mark_c / (1 + market.premium_1m[s]["close"])
        premium_online[s] = np.array([float(m) / float(i) - 1 for m, i in zip(mark_c, index, strict=True)])
    full = {
        s: build_inputs(market.candles_1m[s], market.mark_1m[s],
                        {**market.premium_1m[s], "close": premium_online[s]}, market.funding[s])
        for s in symbols
    }  # fmt: skip
    offline = compute_features(full)
    last_hist = int(full["BTCUSDT"].ts_ms[n_hist - 1])
    hist = {s: full[s].until(last_hist) for s in symbols}
    # the whole funding history is known: no REST call is needed
    funding = {s: FundingBook(market.funding[s]["ts"], market.funding[s]["funding_rate"]) for s in symbols}
    book.warm(hist, funding, now_ms=last_hist + MINUTE + 1_000, wall_ms=0)
    assert book.last_minute == last_hist
    book.on_connection("market", True, last_hist + MINUTE + 1_000)
    book.on_connection("public", True, last_hist + MINUTE + 1_000)
    events = []
    rng = random.Random(1)
    for i in range(n_hist, n_hist + n_live):
        t = int(market.candles_1m["BTCUSDT"]["ts"][i])
        msgs = []
        for s in symbols:
            m = market.mark_1m[s]
            nf = t + 8 * 3_600_000
            for dt, col in [(0, "open"), (20_000, "high"), (40_000, "low"), (59_000, "close")]:
                price = float(m[col][i])
                index = (
                    float(m["close"][i] / (1 + market.premium_1m[s]["close"][i])) if col == "close" else price
                )
                msgs.append(_mark_msg(s, t + dt, price, index, nf))
        msgs.sort(key=lambda m: m["data"]["E"])
        klines = [_kline_msg(s, market.candles_1m[s], i) for s in symbols]
        rng.shuffle(klines)
        msgs += [klines[0], klines[0]] + klines[1:]  # a duplicate
        if i > n_hist:
            msgs.append(_kline_msg("ETHUSDT", market.candles_1m["ETHUSDT"], i - 1))  # a late, older bar
        for msg in msgs:
            update = router.route(msg)
            if isinstance(update, KlineUpdate):
                book.on_kline(update, 0)
            elif isinstance(update, MarkUpdate):
                book.on_mark(update)
        now = t + 2 * MINUTE  # the next minute is well under way
        while (due := book.next_close(now)) is not None:
            assert due.missing == () and book.close_requests(due.minute, now) == []
            events.append(book.close(due.minute, now, wall_ms=0).event)
    assert len(events) == n_live
    assert (
        book.counts["duplicates"] == 2 * n_live - 1  # the repeated bar and the re-sent older one
        and book.counts["out_of_order"] == 0
        and book.counts["rest_marks"] == 0
    )
    for k, s in enumerate(events[0].symbols):
        got = np.stack([e.features[k] for e in events])
        np.testing.assert_array_equal(got, offline[s].values[n_hist:], err_msg=s)
    assert all(
        (e.status == 0).all() and not any(v == "missing bar" for v in e.stale.values()) for e in events
    )
    assert events[-1].close == {s: float(market.candles_1m[s]["close"][-1]) for s in symbols}
    assert not math.isnan(events[-1].features[0, 0])
