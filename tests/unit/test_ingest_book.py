"""The ingest's minute-closing rules (``IngestBook``) through its public API: when a minute closes,
what is fetched over REST and handed back, which rows are stored, and why a symbol is stale."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import numpy as np
import pytest

from actors.backfill import FundingBook
from actors.ingest_book import FundingRequest, IngestBook, KlineRequest, MarkRequest
from actors.ingest_config import IngestConfig
from core.errors import DataQualityError, MalformedMessage, RejectedError, TransientError
from core.features import build_inputs
from core.features_kernel import INPUT_COLUMNS, NOT_CLOSED, OK
from core.synthetic import generate_market
from exchange.updates import BookUpdate, KlineUpdate, MarkUpdate

MINUTE = 60_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
T0 = 1_736_121_600_000
N_HIST = 300
COL = {name: i for i, name in enumerate(INPUT_COLUMNS)}


@pytest.fixture(scope="module")
def market():
    return generate_market(list(SYMBOLS), T0, N_HIST + 30, seed=5)


def warm_book(market, own=SYMBOLS[1:], **overrides) -> IngestBook:
    """A book warmed on the first N_HIST minutes, both connections up; minute N_HIST closes next."""
    cfg = IngestConfig(group_id=2, symbols=own, rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/",
                       database_url="sqlite://", **overrides)  # fmt: skip
    book = IngestBook(cfg)
    inputs = {
        s: build_inputs(
            market.candles_1m[s], market.mark_1m[s], market.premium_1m[s], market.funding[s]
        ).until(T0 + (N_HIST - 1) * MINUTE)
        for s in book.symbols
    }
    funding = {
        s: FundingBook(market.funding[s]["ts"], market.funding[s]["funding_rate"]) for s in book.symbols
    }
    book.warm(inputs, funding, now_ms=T0 + N_HIST * MINUTE + 500, wall_ms=1)
    book.on_connection("market", True, T0 + N_HIST * MINUTE + 500)
    book.on_connection("public", True, T0 + N_HIST * MINUTE + 500)
    return book


def bar(market, symbol: str, i: int, interval: str = "1m") -> KlineUpdate:
    c = market.candles_1m[symbol]
    t = T0 + i * MINUTE
    return KlineUpdate(
        symbol, interval, t, t + MINUTE, float(c["open"][i]), float(c["high"][i]), float(c["low"][i]),
        float(c["close"][i]), float(c["volume"][i]), 123.0, 7, float(c["taker_buy_volume"][i]), True,
    )  # fmt: skip


def ticks(book: IngestBook, market, i: int, symbols=SYMBOLS, next_funding_ms: int = 0) -> None:
    """Mark ticks covering minute ``i`` (start, middle, end) for ``symbols``."""
    t = T0 + i * MINUTE
    for s in symbols:
        for dt, price in [(0, 100.0), (30_000, 104.0), (59_000, 101.0)]:
            book.on_mark(MarkUpdate(s, t + dt, price, price / 1.001, 0.0001, next_funding_ms))


def test_a_minute_closes_when_every_bar_is_in_and_stores_only_the_groups_own_rows(market):
    book = warm_book(market)
    assert book.symbols == SYMBOLS and book.own == SYMBOLS[1:] == ("ETHUSDT", "SOLUSDT")
    i, t = N_HIST, T0 + N_HIST * MINUTE
    ticks(book, market, i)
    assert book.on_kline(bar(market, "BTCUSDT", i), 11) is None  # streamed for its cross features only
    assert book.on_kline(bar(market, "ETHUSDT", i), 12) == bar(market, "ETHUSDT", i).row()
    assert book.next_close(t + MINUTE + 10) is None  # SOL's bar may still come
    book.on_kline(bar(market, "SOLUSDT", i), 13)
    assert book.on_kline(bar(market, "SOLUSDT", i), 14) is None  # duplicate
    due = book.next_close(t + MINUTE + 10)
    assert due is not None and (due.minute, due.missing) == (t, ())
    assert book.close_requests(t, t + MINUTE + 10) == []  # ticks cover the minute, funding known
    closed = book.close(t, t + MINUTE + 10, wall_ms=99)
    assert [r.symbol for r in closed.rows] == ["ETHUSDT", "SOLUSDT"] and all(
        r.ts_ms == t for r in closed.rows
    )
    e = closed.event
    assert e.group_id == 2 and e.ts_ms == t and e.symbols == SYMBOLS and e.status.tolist() == [OK] * 3
    assert e.received_ms == 13  # the last kline of the minute arrived at wall 13
    assert e.close == {s: float(market.candles_1m[s]["close"][i]) for s in SYMBOLS}
    assert e.quote_volume == dict.fromkeys(SYMBOLS, 123.0)
    np.testing.assert_array_equal(e.inputs[:, COL["mark_high"]], [104.0] * 3)
    np.testing.assert_array_equal(e.inputs[:, COL["mark_close"]], [101.0] * 3)
    assert e.inputs[0, COL["premium_close"]] == pytest.approx(101.0 / (101.0 / 1.001) - 1, rel=1e-12)
    assert book.last_minute == t and book.counts["closes"] == 1 and book.counts["duplicates"] == 1
    assert book.next_close(t + 2 * MINUTE - 1) is None  # the next minute is still forming
    with pytest.raises(ValueError, match="in order"):
        book.close(t + 5 * MINUTE, t + 6 * MINUTE, 0)


def test_after_the_deadline_missing_bars_are_fetched_and_a_bar_still_missing_closes_as_missing(market):
    book = warm_book(market, close_deadline_ms=3000)
    i, t = N_HIST, T0 + N_HIST * MINUTE
    ticks(book, market, i)
    book.on_kline(bar(market, "BTCUSDT", i), 1)
    assert book.next_close(t + MINUTE + 2999) is None
    due = book.next_close(t + MINUTE + 3000)
    assert due is not None and due.missing == ("ETHUSDT", "SOLUSDT")
    requests = book.backfill_requests(due, t + MINUTE + 3000)
    assert requests == [KlineRequest(s, "1m", t, t + 2 * MINUTE + 3000) for s in ("ETHUSDT", "SOLUSDT")]
    # REST has ETH's bar; SOL's never came
    assert book.on_kline(bar(market, "ETHUSDT", i), 2, fill=True) == bar(market, "ETHUSDT", i).row()
    assert book.counts["backfilled_bars"] == 1
    e = book.close(t, t + MINUTE + 3000, wall_ms=5).event
    assert e.status.tolist() == [OK, OK, NOT_CLOSED]
    assert e.stale["SOLUSDT"] == "missing bar" and "SOLUSDT" not in e.close
    assert np.isnan(e.features[2]).all() and np.isnan(e.inputs[2]).all()
    assert book.counts["missing_bars"] == 1
    # SOL's bar arriving late is stored but not featured
    assert book.on_kline(bar(market, "SOLUSDT", i), 6) == bar(market, "SOLUSDT", i).row()
    assert book.counts["late_bars"] == 1


def test_no_minute_closes_while_the_market_stream_is_down_and_a_reconnect_fetches_at_once(market):
    book = warm_book(market, close_deadline_ms=3000)
    i, t = N_HIST, T0 + N_HIST * MINUTE
    book.on_kline(bar(market, "BTCUSDT", i), 1)
    book.on_connection("market", False, t + 30_000)
    assert book.next_close(t + 10 * MINUTE) is None  # long past the deadline: still waits
    assert book.freshness(t + 10 * MINUTE, 0)["BTCUSDT"]["stale"] == "stream silent (market)"
    book.on_connection("market", True, t + 10 * MINUTE)
    due = book.next_close(t + 10 * MINUTE + 1)  # resync: no waiting for the deadline
    assert due is not None and due.minute == t and due.missing == ("ETHUSDT", "SOLUSDT")
    for s in due.missing:
        book.on_kline(bar(market, s, i), 2, fill=True)
    # the ticks of the minute were broken by the disconnect: marks come over REST
    requests = book.close_requests(t, t + 10 * MINUTE + 1)
    assert requests == [MarkRequest(s, t, t + 10 * MINUTE + 1) for s in SYMBOLS]
    for s in SYMBOLS:
        book.add_rest_marks(
            s, {"ts": [t], "high": [9.0], "low": [7.0], "close": [8.0]}, {"ts": [], "close": []}
        )
    e = book.close(t, t + 10 * MINUTE + 1, wall_ms=3).event
    assert e.status.tolist() == [OK] * 3 and book.counts["rest_marks"] == 3
    np.testing.assert_array_equal(e.inputs[:, COL["mark_low"]], [7.0] * 3)
    assert np.isnan(e.inputs[:, COL["premium_close"]]).all()  # REST had no premium bar
    assert set(e.stale.values()) == {"backfilling"}


def test_rest_mark_source_always_asks_for_marks(market):
    book = warm_book(market, mark_source="rest")
    i, t = N_HIST, T0 + N_HIST * MINUTE
    ticks(book, market, i)
    for s in SYMBOLS:
        book.on_kline(bar(market, s, i), 1)
    assert book.close_requests(t, t + MINUTE) == [MarkRequest(s, t, t + MINUTE) for s in SYMBOLS]


def test_a_settlement_the_stream_announced_is_fetched_before_the_close_that_needs_it(market):
    book = warm_book(market)
    i, t = N_HIST, T0 + N_HIST * MINUTE
    assert len(market.funding["ETHUSDT"]["ts"]) == 0  # none settled yet: look back 30 days
    since = t + MINUTE - 30 * 1440 * MINUTE
    ticks(book, market, i, symbols=["ETHUSDT"], next_funding_ms=t + MINUTE)  # settles at this close
    ticks(book, market, i, symbols=["BTCUSDT", "SOLUSDT"])
    for s in SYMBOLS:
        book.on_kline(bar(market, s, i), 1)
    assert book.close_requests(t, t + MINUTE) == [FundingRequest("ETHUSDT", since + 1, t + MINUTE + 1)]
    book.settle_funding("ETHUSDT", [t + MINUTE], [0.00123], t + MINUTE)
    e = book.close(t, t + MINUTE, wall_ms=0).event
    assert e.inputs[1, COL["funding_rate"]] == 0.00123 and e.inputs[1, COL["funding_time_ms"]] == t + MINUTE
    assert book.counts["funding_fetches"] == 1


def test_holes_of_the_longer_intervals_are_requested_once_closed_past_the_deadline(market):
    book = warm_book(market, close_deadline_ms=3000)
    q = 15 * MINUTE
    warm_now = T0 + N_HIST * MINUTE + 500
    last_15m = (warm_now // q) * q - q  # accepted by the warm-up
    # the bar [last + q, last + 2q) closed at last + 2q; until the deadline the stream may still bring it
    assert [r for r in book.gap_requests(last_15m + 2 * q + 2999) if r.interval == "15m"] == []
    want = [KlineRequest(s, "15m", last_15m + q, last_15m + 2 * q) for s in SYMBOLS]
    assert [r for r in book.gap_requests(last_15m + 2 * q + 3000) if r.interval == "15m"] == want
    for s in SYMBOLS:  # fetched and accepted: no hole left
        book.on_kline(replace(bar(market, s, 0), interval="15m", open_ms=last_15m + q), 0, fill=True)
    assert [r for r in book.gap_requests(last_15m + 2 * q + 3000) if r.interval == "15m"] == []


def test_ticks_books_and_freshness(market):
    book = warm_book(market, mark_max_age_ms=5000, book_max_age_ms=30_000)
    t = T0 + N_HIST * MINUTE
    assert book.on_mark(MarkUpdate("BTCUSDT", t + 1000, 100.0, 99.0, 0.0, 0)) is None  # not the group's own
    tick = book.on_mark(MarkUpdate("ETHUSDT", t + 1000, 50.0, 49.0, 0.0, 0))
    assert tick is not None and (tick.symbol, tick.ts_ms, tick.mark) == ("ETHUSDT", t + 1000, 50.0)
    assert math.isnan(tick.bid)
    assert book.on_mark(MarkUpdate("ETHUSDT", t + 1000, 50.0, 49.0, 0.0, 0)) is None  # duplicate
    book.on_book(BookUpdate("ETHUSDT", t + 1500, 10, 49.9, 1.0, 50.1, 2.0))
    book.on_book(BookUpdate("ETHUSDT", t + 1400, 9, 1.0, 1.0, 2.0, 2.0))  # older: ignored
    assert book.counts["ignored_ticks"] == 2
    (early,) = book.with_book_at([tick])  # the only book is after the tick: it keeps its own
    assert math.isnan(early.bid) and early.mark == 50.0
    later = book.on_mark(MarkUpdate("ETHUSDT", t + 2000, 50.5, 49.0, 0.0, 0))
    assert later is not None
    book.on_book(BookUpdate("ETHUSDT", t + 3000, 10, 60.9, 1.0, 61.1, 2.0))  # after both ticks
    priced = book.with_book_at([tick, later])  # handed on late: each at the book of its own time
    assert [(p.bid, p.ask) for p in priced[1:]] == [(49.9, 50.1)] and math.isnan(priced[0].bid)
    book.on_kline(bar(market, "ETHUSDT", N_HIST), 2)
    f = book.freshness(t + MINUTE + 2000, 4000)
    assert f["ETHUSDT"]["last_bar_ms"] == t and f["ETHUSDT"]["kline_wall_age_ms"] == 3998
    assert f["ETHUSDT"]["mark_age_ms"] == MINUTE and f["ETHUSDT"]["book_age_ms"] == MINUTE - 1000
    assert f["ETHUSDT"]["stale"] == "mark older than 5000 ms"
    book.on_mark(MarkUpdate("ETHUSDT", t + MINUTE + 1000, 51.0, 50.0, 0.0, 0))
    assert book.freshness(t + MINUTE + 2000, 0)["ETHUSDT"]["stale"] == "book older than 30000 ms"
    book.on_book(BookUpdate("ETHUSDT", t + MINUTE + 1500, 11, 50.9, 1.0, 51.1, 2.0))
    assert book.freshness(t + MINUTE + 2000, 0)["ETHUSDT"]["stale"] is None
    book.on_connection("public", False, t + MINUTE + 2000)
    assert book.freshness(t + MINUTE + 2000, 0)["ETHUSDT"]["stale"] == "stream silent (public)"
    assert book.freshness(t + MINUTE + 2000, 0)["SOLUSDT"]["stale"] == "mark older than 5000 ms"


def test_a_malformed_message_is_a_rejected_data_quality_error_that_survives_pickling():
    e = MalformedMessage("crossed_book", "bookTicker: bid 2 > ask 1", {"b": "2", "a": "1"}, "BTCUSDT")
    assert isinstance(e, DataQualityError) and isinstance(e, RejectedError)
    assert not isinstance(e, TransientError)
    back = pickle.loads(pickle.dumps(e))
    assert (back.reason, back.detail, back.payload, back.symbol, str(back)) == (
        "crossed_book", "bookTicker: bid 2 > ask 1", {"b": "2", "a": "1"}, "BTCUSDT", str(e),
    )  # fmt: skip
