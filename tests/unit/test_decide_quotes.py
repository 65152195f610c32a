"""The decider's book tickers for the anomaly monitor (``actors.decide.book_tickers``): one
``market.book_ticker`` message per traded symbol of a close, bad books left out."""

from __future__ import annotations

import math

import numpy as np

from actors.decide import book_tickers
from core.messages import BookTicker, CloseEvent, Topic, check_message


def test_a_close_gives_one_book_ticker_per_traded_symbol_with_a_good_book() -> None:
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
    event = CloseEvent(
        group_id=0, ts_ms=60_000, symbols=symbols, features=np.zeros((4, 1)), status=np.zeros(4, np.int8),
        close={}, quote_volume={}, mark={}, stale={}, received_ms=0, inputs=np.zeros((4, 1)),
        book={"BTCUSDT": (60_000.0, 60_000.1, 119_900), "ETHUSDT": (math.nan, 3_000.0, 119_950),
              "SOLUSDT": (180.0, 0.0, 119_990), "XRPUSDT": (0.5, 0.51, 119_999)},
    )  # fmt: skip
    got = book_tickers(event, ("BTCUSDT", "ETHUSDT", "SOLUSDT"))  # XRPUSDT: a reference symbol
    assert got == [BookTicker(symbol="BTCUSDT", ts_ms=119_900, bid_price=60_000.0, bid_qty=0.0,
                              ask_price=60_000.1, ask_qty=0.0)]  # fmt: skip
    check_message(Topic.MARKET_BOOK_TICKER, got[0])
