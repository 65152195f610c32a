"""USDⓈ-M market-data REST on python-binance: klines, mark/premium klines and funding history.

A thin adapter for the recent tail of history that no dump holds yet. It points python-binance's
``Client`` at a configurable base (Binance, the testnet or the local replay venue), pages through
``startTime``/``endTime`` windows, respects the request weight (``X-MBX-USED-WEIGHT-1M``, 429/418
with ``Retry-After``), backs off on transient failures and translates vendor exceptions into
``core.errors`` at this boundary. Responses become ``core.frames`` layouts here; Binance's field
names appear nowhere outside ``exchange.binance``. A response of the wrong shape raises
``core.errors.MalformedMessage``. Only closed bars are returned.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import requests
from binance.client import Client
from binance.exceptions import BinanceAPIException, BinanceRequestException

from core.errors import MalformedMessage, RejectedError, TransientError, UnreachableError
from core.symbols import validate_internal
from core.time import interval_ms
from exchange.net import describe, is_unreachable

FAPI_MAINNET = "https://fapi.binance.com"
#: Most klines Binance returns per request (the default is 500).
KLINES_LIMIT = 1500
#: Most funding events Binance returns per request.
FUNDING_LIMIT = 1000
#: Binance's request-weight budget per minute and IP for /fapi (exchangeInfo rateLimits).
WEIGHT_LIMIT_1M = 2400
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"

_KLINE_ENDPOINTS = {
    "klines": "futures_klines",
    "markPriceKlines": "futures_mark_price_klines",
    "premiumIndexKlines": "futures_premium_index_klines",
}


def futures_url(base_url: str) -> str:
    """Return python-binance's ``FUTURES_URL`` (``<base>/fapi``) for a REST base such as ``https://fapi.binance.com``."""
    base = base_url.rstrip("/")
    return base if base.endswith("/fapi") else base + "/fapi"


class BinanceRest:
    """Binance USDⓈ-M public market-data REST with paging, rate limiting and error translation.

    ``sleep`` and ``wall_clock_s`` are injectable so tests run without waiting.
    """

    def __init__(
        self,
        base_url: str = FAPI_MAINNET,
        api_key: str | None = None,
        api_secret: str | None = None,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        weight_limit_1m: int = WEIGHT_LIMIT_1M,
        weight_headroom: float = 0.9,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock_s: Callable[[], float] = time.time,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url
        self._client = Client(
            api_key, api_secret, ping=False, requests_params={"timeout": (min(timeout_s, 5.0), timeout_s)}
        )
        self._client.FUTURES_URL = futures_url(base_url)
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._weight_budget = int(weight_limit_1m * weight_headroom)
        self._sleep = sleep
        self._wall_clock_s = wall_clock_s
        #: Request weight used in the current minute, from the last response (None before the first).
        self.used_weight_1m: int | None = None
        #: Seconds spent waiting for rate limits and backoff, for reporting.
        self.waited_s = 0.0

    def close(self) -> None:
        """Close the HTTP session."""
        self._client.session.close()

    def __enter__(self) -> BinanceRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Endpoints ------------------------------------------------------------------------------------
    def ping(self) -> None:
        """Check that the REST base answers (GET /fapi/v1/ping)."""
        self._call("futures_ping")

    def server_time_ms(self) -> int:
        """Return the server's clock (GET /fapi/v1/time), epoch ms."""
        return int(self._call("futures_time")["serverTime"])

    def exchange_info(self) -> dict[str, Any]:
        """Return the decoded instrument list and filters (GET /fapi/v1/exchangeInfo)."""
        return dict(self._call("futures_exchange_info"))

    def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Return the closed trade klines with open time in [start_ms, end_ms), candles layout.

        A bar still forming at the server's time (read before the first page) is dropped.
        """
        return self._klines("klines", symbol, interval, start_ms, end_ms)

    def mark_price_klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Return closed mark-price klines with open time in [start_ms, end_ms): ts, open, high, low, close."""
        return self._klines("markPriceKlines", symbol, interval, start_ms, end_ms)

    def premium_index_klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Return closed premium-index klines with open time in [start_ms, end_ms): ts, open, high, low, close."""
        return self._klines("premiumIndexKlines", symbol, interval, start_ms, end_ms)

    def funding_rates(self, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Return funding events with funding time in [start_ms, end_ms): ts, funding_rate, mark_price."""
        validate_internal(symbol)
        rows: list[dict[str, Any]] = []
        cursor = start_ms
        while cursor < end_ms:
            page = self._call(
                "futures_funding_rate",
                symbol=symbol,
                startTime=cursor,
                endTime=end_ms - 1,
                limit=FUNDING_LIMIT,
            )
            if not page:
                break
            rows.extend(page)
            cursor = int(page[-1]["fundingTime"]) + 1
            if len(page) < FUNDING_LIMIT:
                break
        frame = funding_frame(rows)
        keep = (frame["ts"] >= start_ms) & (frame["ts"] < end_ms)
        return frame.loc[keep].drop_duplicates("ts", keep="last").reset_index(drop=True)

    def _klines(self, kind: str, symbol: str, interval: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        validate_internal(symbol)
        step_ms = interval_ms(interval)
        now_ms = self.server_time_ms()
        stop_ms = min(end_ms, now_ms)
        rows: list[Sequence[Any]] = []
        cursor = start_ms
        while cursor < stop_ms:
            page = self._call(
                _KLINE_ENDPOINTS[kind],
                symbol=symbol,
                interval=interval,
                startTime=cursor,
                endTime=stop_ms - 1,
                limit=KLINES_LIMIT,
            )
            if not page:
                break
            rows.extend(page)
            cursor = int(page[-1][0]) + step_ms
            if len(page) < KLINES_LIMIT:
                break
        frame = klines_frame(rows, kind)
        ts = frame["ts"].to_numpy()
        keep = (ts >= start_ms) & (ts < end_ms) & (ts + step_ms <= now_ms)
        return frame.loc[keep].drop_duplicates("ts", keep="last").reset_index(drop=True)

    # Transport ------------------------------------------------------------------------------------
    def _call(self, method: str, **params: Any) -> Any:
        what = f"{method.removeprefix('futures_')} {params.get('symbol', '')}".strip()
        last: Exception | None = None
        unreachable = False
        for attempt in range(self._max_attempts):
            self._respect_weight()
            try:
                result = getattr(self._client, method)(**params)
            except BinanceAPIException as e:
                self._note_weight(e.response)
                status = int(e.status_code)
                if status in (418, 429):
                    last, unreachable = e, False
                    self._wait(_retry_after_s(e.response) or self._backoff(attempt))
                    continue
                if status >= 500:
                    last, unreachable = e, False
                    self._wait(self._backoff(attempt))
                    continue
                raise RejectedError(f"{what}: HTTP {status}, code {e.code}: {e.message}") from e
            except BinanceRequestException as e:
                last, unreachable = e, False
                self._wait(self._backoff(attempt))
                continue
            except requests.RequestException as e:
                last, unreachable = e, is_unreachable(e)
                if attempt + 1 < self._max_attempts:
                    self._wait(self._backoff(attempt))
                continue
            self._note_weight(self._client.response)
            return result
        if unreachable:
            raise UnreachableError(
                f"{what}: cannot reach {self.base_url} after {self._max_attempts} attempt(s): {_short(last)}"
            ) from last
        raise TransientError(
            f"{what}: failed after {self._max_attempts} attempt(s): {_short(last)}"
        ) from last

    def _respect_weight(self) -> None:
        if self.used_weight_1m is not None and self.used_weight_1m >= self._weight_budget:
            now_s = self._wall_clock_s()
            self._wait(60.0 - now_s % 60.0 + 0.25)
            self.used_weight_1m = None

    def _note_weight(self, response: Any) -> None:
        headers = getattr(response, "headers", None) or {}
        value = headers.get(WEIGHT_HEADER)
        if value is not None:
            with contextlib.suppress(ValueError):
                self.used_weight_1m = int(value)

    def _backoff(self, attempt: int) -> float:
        return min(self._backoff_s * 2**attempt, self._max_backoff_s)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.waited_s += seconds
            self._sleep(seconds)


# Payload parsers (pure) ---------------------------------------------------------------------------
def klines_frame(rows: Sequence[Sequence[Any]], kind: str = "klines") -> pd.DataFrame:
    """Convert Binance kline arrays (12 fields, prices as strings) into a core.frames layout.

    ``klines`` gives the candles layout; ``markPriceKlines``/``premiumIndexKlines`` give ts and OHLC.
    """
    if kind not in _KLINE_ENDPOINTS:
        raise ValueError(f"unknown kline kind {kind!r}")
    n = len(rows)
    arr = np.asarray(rows, dtype=object).reshape(n, -1) if n else np.empty((0, 12), dtype=object)
    if arr.shape[1] < 11:
        raise MalformedMessage(
            "bad_shape", f"{kind}: kline arrays have {arr.shape[1]} fields, expected 12", list(rows[:1])
        )
    columns: dict[str, np.ndarray] = {
        "ts": arr[:, 0].astype(np.int64),
        "open": arr[:, 1].astype(np.float64),
        "high": arr[:, 2].astype(np.float64),
        "low": arr[:, 3].astype(np.float64),
        "close": arr[:, 4].astype(np.float64),
    }
    if kind == "klines":
        columns |= {
            "volume": arr[:, 5].astype(np.float64),
            "quote_volume": arr[:, 7].astype(np.float64),
            "trade_count": arr[:, 8].astype(np.int64),
            "taker_buy_volume": arr[:, 9].astype(np.float64),
        }
    return pd.DataFrame(columns)


def funding_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Convert Binance funding-rate history objects into the funding layout (mark_price NaN when blank)."""
    return pd.DataFrame(
        {
            "ts": np.array([int(r["fundingTime"]) for r in rows], dtype=np.int64),
            "funding_rate": np.array([float(r["fundingRate"]) for r in rows], dtype=np.float64),
            "mark_price": np.array([_float_or_nan(r.get("markPrice")) for r in rows], dtype=np.float64),
        }
    )


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _retry_after_s(response: Any) -> float | None:
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def _short(error: Exception | None) -> str:
    if error is None:
        return "no attempt made"
    if isinstance(error, BinanceAPIException):
        return f"HTTP {error.status_code}, code {error.code}: {error.message}"
    return describe(error)
