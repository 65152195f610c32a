"""Binance REST payloads → core.frames layouts (Binance's documented examples; no network)."""

from __future__ import annotations

import math

import pytest

from core.errors import MalformedMessage, RejectedError
from exchange.binance.rest import BinanceRest, funding_frame, futures_url, klines_frame

#: GET /fapi/v1/klines, from Binance's documentation.
KLINES = [
    [
        1499040000000,
        "0.01634790",
        "0.80000000",
        "0.01575800",
        "0.01577100",
        "148976.11427815",
        1499644799999,
        "2434.19055334",
        308,
        "1756.87402397",
        "28.46694368",
        "17928899.62484339",
    ]
]
#: GET /fapi/v1/markPriceKlines, from Binance's documentation.
MARK_KLINES = [[1591256400000, "9653.69440000", "9653.69640000", "9651.38600000", "9651.55200000", "0", 1591256459999, "0", 60, "0", "0", "0"]]  # fmt: skip
#: GET /fapi/v1/fundingRate, from Binance's documentation (old records have a blank markPrice).
FUNDING = [
    {
        "symbol": "BTCUSDT",
        "fundingRate": "-0.03750000",
        "fundingTime": 1570608000000,
        "markPrice": "34287.54619963",
    },
    {"symbol": "BTCUSDT", "fundingRate": "0.00010000", "fundingTime": 1570636800000, "markPrice": ""},
]


def test_klines_payload_becomes_candles_layout() -> None:
    frame = klines_frame(KLINES, "klines")
    row = frame.iloc[0]
    assert list(frame.columns) == [
        "ts", "open", "high", "low", "close", "volume", "quote_volume", "trade_count", "taker_buy_volume",
    ]  # fmt: skip
    assert row["ts"] == 1499040000000
    assert (row["open"], row["high"], row["low"], row["close"]) == (0.0163479, 0.8, 0.015758, 0.015771)
    assert row["volume"] == 148976.11427815
    assert row["quote_volume"] == 2434.19055334
    assert row["trade_count"] == 308
    assert row["taker_buy_volume"] == 1756.87402397


def test_mark_price_klines_payload_keeps_ohlc_only() -> None:
    frame = klines_frame(MARK_KLINES, "markPriceKlines")
    assert list(frame.columns) == ["ts", "open", "high", "low", "close"]
    assert frame["close"].iat[0] == 9651.552


def test_empty_klines_payload_gives_empty_typed_frame() -> None:
    frame = klines_frame([], "klines")
    assert len(frame) == 0
    assert frame["ts"].dtype == "int64"


def test_short_kline_arrays_are_rejected() -> None:
    with pytest.raises(RejectedError, match="3 fields") as e:
        klines_frame([[1, "2", "3"]], "klines")
    assert isinstance(e.value, MalformedMessage) and e.value.reason == "bad_shape"
    assert e.value.payload == [[1, "2", "3"]]


def test_funding_payload_blank_mark_price_becomes_nan() -> None:
    frame = funding_frame(FUNDING)
    assert frame["ts"].tolist() == [1570608000000, 1570636800000]
    assert frame["funding_rate"].tolist() == [-0.0375, 0.0001]
    assert frame["mark_price"].iat[0] == 34287.54619963
    assert math.isnan(frame["mark_price"].iat[1])


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://fapi.binance.com", "https://fapi.binance.com/fapi"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/fapi"),
        ("http://127.0.0.1:8080/fapi", "http://127.0.0.1:8080/fapi"),
    ],
)
def test_futures_url_points_python_binance_at_the_base(base: str, expected: str) -> None:
    assert futures_url(base) == expected
    client = BinanceRest(base)
    try:
        assert expected == client._client.FUTURES_URL
        assert client._client._create_futures_api_uri("klines") == expected + "/v1/klines"
    finally:
        client.close()
