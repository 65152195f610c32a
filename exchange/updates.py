"""Market-data updates in our names and units, whichever venue adapter parsed them.

The Binance adapter (``exchange.binance.payloads``) converts its stream payloads into these, and
REST kline frames become closed ``KlineUpdate``s through ``closed_bars``; the ingest actor sees
nothing else. Times are epoch milliseconds of the venue's clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from core.time import INTERVAL_MS


@dataclass(frozen=True, slots=True)
class KlineUpdate:
    """One kline push. ``open_ms`` is the bar's open time; ``closed`` is True on the final push."""

    symbol: str
    interval: str
    open_ms: int
    event_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float  # base asset
    quote_volume: float  # USDT
    trade_count: int
    taker_buy_volume: float  # base asset
    closed: bool

    def row(self) -> dict[str, Any]:
        """Return the candles-table row of this bar."""
        return {
            "symbol": self.symbol, "ts": self.open_ms, "open": self.open, "high": self.high,
            "low": self.low, "close": self.close, "volume": self.volume, "quote_volume": self.quote_volume,
            "trade_count": self.trade_count, "taker_buy_volume": self.taker_buy_volume,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class MarkUpdate:
    """One markPrice push: mark and index price, funding rate estimate and next funding time."""

    symbol: str
    event_ms: int
    mark: float
    index: float  # NaN when the venue sends none
    funding_rate: float
    next_funding_ms: int

    @property
    def premium(self) -> float:
        """Return mark / index − 1 (NaN without an index): the approximation of the premium index
        that online features use in place of Binance's premiumIndexKlines close."""
        return self.mark / self.index - 1.0 if self.index > 0 else math.nan


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """One bookTicker push: best bid and ask (quote currency) with quantities (base asset)."""

    symbol: str
    event_ms: int
    update_id: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float


Update = KlineUpdate | MarkUpdate | BookUpdate


def closed_bars(symbol: str, interval: str, frame: pd.DataFrame) -> list[KlineUpdate]:
    """Return the rows of a candles-layout frame (``core.frames``, e.g. fetched over REST) as closed
    ``KlineUpdate``s whose event time is the bar's end; missing optional columns become NaN or 0."""
    step = INTERVAL_MS[interval]
    cols = {c: frame[c].tolist() for c in frame.columns}
    return [
        KlineUpdate(
            symbol=symbol,
            interval=interval,
            open_ms=int(t),
            event_ms=int(t) + step,
            open=cols["open"][i],
            high=cols["high"][i],
            low=cols["low"][i],
            close=cols["close"][i],
            volume=cols["volume"][i],
            quote_volume=cols.get("quote_volume", [math.nan] * len(frame))[i],
            trade_count=int(cols.get("trade_count", [0] * len(frame))[i]),
            taker_buy_volume=cols.get("taker_buy_volume", [math.nan] * len(frame))[i],
            closed=True,
        )  # fmt: skip
        for i, t in enumerate(cols.get("ts", []))
    ]
