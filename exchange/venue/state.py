"""The replay venue's state: data source, replay clock, request-weight window, Binance-style errors."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import pandas as pd
from aiohttp import web

#: Request weight per IP and minute before the venue answers 429 (Binance's /fapi default).
DEFAULT_WEIGHT_LIMIT_1M = 2400


class MarketData(Protocol):
    """What the venue reads market data from (``storage.lake.Lake`` satisfies it)."""

    def read(
        self, dataset: str, symbol: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> pd.DataFrame: ...

    def symbols(self, dataset: str) -> list[str]: ...


class BinanceError(Exception):
    """An error answered in Binance's shape: ``{"code": -1121, "msg": "Invalid symbol."}``."""

    def __init__(self, code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}


class VenueState:
    """The venue's data source, replay clock and request-weight window.

    ``now_ms`` is the replay clock: the venue serves nothing after it. ``rate_clock_ms`` times the
    request-weight window (default: the wall clock), kept apart so a fast replay is not throttled
    by replay time.
    """

    def __init__(
        self,
        data: MarketData,
        now_ms: Callable[[], int],
        weight_limit_1m: int | None = DEFAULT_WEIGHT_LIMIT_1M,
        rate_clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.data = data
        self.now_ms = now_ms
        self.weight_limit_1m = weight_limit_1m
        self.rate_clock_ms = rate_clock_ms or (lambda: int(time.time() * 1000))
        self._minute = -1
        self.used_weight_1m = 0
        #: Requests served, by path: tests and reports read it.
        self.requests: dict[str, int] = {}

    def charge(self, path: str, weight: int) -> None:
        """Add ``weight`` to the current minute or raise a 429 BinanceError with Retry-After."""
        now = self.rate_clock_ms()
        minute = now // 60_000
        if minute != self._minute:
            self._minute, self.used_weight_1m = minute, 0
        if self.weight_limit_1m is not None and self.used_weight_1m + weight > self.weight_limit_1m:
            retry_after_s = max(1, math.ceil(((minute + 1) * 60_000 - now) / 1000))
            raise BinanceError(
                -1003,
                f"Too many requests; current limit of IP(127.0.0.1) is {self.weight_limit_1m} requests "
                "per minute. Please use the websocket for live updates to avoid polling the API.",
                status=429,
                headers={"Retry-After": str(retry_after_s)},
            )
        self.used_weight_1m += weight
        self.requests[path] = self.requests.get(path, 0) + 1


STATE: web.AppKey[VenueState] = web.AppKey("venue_state", VenueState)
