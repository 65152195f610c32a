"""Market-data REST of the replay venue, in Binance USDⓈ-M shapes.

Nothing after the replay clock is served. Binance includes the bar still forming at "now" in
kline answers; the venue does too, but shows it with its open price only (high = low = close =
open, zero volume), because the stored bar is the finished one and its later values would leak the
future into a replay. Fields the lake does not hold (the taker buy quote volume always, volumes of
data imported without them) are answered as "0"; prices are the shortest exact decimal of the
stored float, not Binance's fixed per-symbol precision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np
import pandas as pd
from aiohttp import web

from core.time import DAY_MS, INTERVAL_MS
from exchange.venue.state import STATE, BinanceError, VenueState

KLINES_DEFAULT_LIMIT = 500
KLINES_MAX_LIMIT = 1500
FUNDING_DEFAULT_LIMIT = 100
FUNDING_MAX_LIMIT = 1000
#: Nothing is looked for before this (epoch ms, 2015-01-01): USDⓈ-M futures started in 2019.
_EARLIEST_MS = 1_420_070_400_000

_KLINE_DATASETS = {
    "/fapi/v1/klines": "candles",
    "/fapi/v1/markPriceKlines": "mark",
    "/fapi/v1/premiumIndexKlines": "premium",
}
_SYMBOL_DATASETS = (
    "candles_1m",
    "candles_15m",
    "candles_1h",
    "mark_1m",
    "mark_1h",
    "mark_8h",
    "premium_1m",
    "funding",
)


def add_routes(app: web.Application) -> None:
    """Add the market-data routes to the venue application."""
    app.router.add_get("/fapi/v1/ping", _ping)
    app.router.add_get("/fapi/v1/time", _time)
    for path in _KLINE_DATASETS:
        app.router.add_get(path, _klines)
    app.router.add_get("/fapi/v1/fundingRate", _funding_rate)


def _state(request: web.Request) -> VenueState:
    return request.app[STATE]


async def _ping(request: web.Request) -> web.Response:
    _state(request).charge(request.path, 1)
    return web.json_response({})


async def _time(request: web.Request) -> web.Response:
    state = _state(request)
    state.charge(request.path, 1)
    return web.json_response({"serverTime": int(state.now_ms())})


async def _klines(request: web.Request) -> web.Response:
    state = _state(request)
    query = request.query
    symbol = _required(query, "symbol")
    interval = _required(query, "interval")
    limit = _int(query, "limit", KLINES_DEFAULT_LIMIT)
    if not 1 <= limit <= KLINES_MAX_LIMIT:
        raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
    start_ms = _optional_int(query, "startTime")
    end_ms = _optional_int(query, "endTime")
    state.charge(request.path, _klines_weight(limit))
    await _check_symbol(state, symbol)
    if interval not in INTERVAL_MS:
        raise BinanceError(-1120, "Invalid interval.")
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise BinanceError(-1128, "Combination of optional parameters invalid.")
    step_ms = INTERVAL_MS[interval]
    dataset = f"{_KLINE_DATASETS[request.path]}_{interval}"
    now_ms = int(state.now_ms())
    upper_ms = now_ms if end_ms is None else min(end_ms, now_ms)
    chunk_ms = max(limit * step_ms, 31 * DAY_MS)
    frame = await asyncio.to_thread(_select, state, dataset, symbol, start_ms, upper_ms + 1, limit, chunk_ms)
    rows = kline_rows(frame, step_ms, now_ms, with_volumes=dataset.startswith("candles"))
    return web.json_response(rows)


async def _funding_rate(request: web.Request) -> web.Response:
    state = _state(request)
    query = request.query
    symbol = _required(query, "symbol")
    limit = _int(query, "limit", FUNDING_DEFAULT_LIMIT)
    if not 1 <= limit <= FUNDING_MAX_LIMIT:
        raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
    start_ms = _optional_int(query, "startTime")
    end_ms = _optional_int(query, "endTime")
    state.charge(request.path, 1)
    await _check_symbol(state, symbol)
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise BinanceError(-1128, "Combination of optional parameters invalid.")
    now_ms = int(state.now_ms())
    upper_ms = now_ms if end_ms is None else min(end_ms, now_ms)
    frame = await asyncio.to_thread(
        _select, state, "funding", symbol, start_ms, upper_ms + 1, limit, 366 * DAY_MS
    )
    return web.json_response(funding_rows(frame, symbol))


def kline_rows(frame: pd.DataFrame, step_ms: int, now_ms: int, with_volumes: bool) -> list[list[object]]:
    """Render stored bars as Binance kline arrays; the bar forming at ``now_ms`` shows its open only.

    ``with_volumes`` False renders the mark/premium shape (volumes "0", the count field set to the interval in seconds).
    """
    n = len(frame)
    if n == 0:
        return []
    ts = frame["ts"].to_numpy(np.int64)
    forming = ts + step_ms > now_ms
    open_ = frame["open"].to_numpy(np.float64)
    high = np.where(forming, open_, frame["high"].to_numpy(np.float64))
    low = np.where(forming, open_, frame["low"].to_numpy(np.float64))
    close = np.where(forming, open_, frame["close"].to_numpy(np.float64))
    zeros = np.zeros(n)
    if with_volumes:
        volume, quote, count, taker = (
            np.where(forming, 0.0, np.nan_to_num(_column(frame, name, zeros), nan=0.0))
            for name in ("volume", "quote_volume", "trade_count", "taker_buy_volume")
        )
        count = count.astype(np.int64)
    rows: list[list[object]] = []
    for i in range(n):
        if with_volumes:
            tail: list[object] = [_fmt(volume[i]), int(ts[i]) + step_ms - 1, _fmt(quote[i]), int(count[i])]
            tail += [_fmt(taker[i]), "0", "0"]
        else:
            tail = ["0", int(ts[i]) + step_ms - 1, "0", step_ms // 1000, "0", "0", "0"]
        rows.append([int(ts[i]), _fmt(open_[i]), _fmt(high[i]), _fmt(low[i]), _fmt(close[i]), *tail])
    return rows


def funding_rows(frame: pd.DataFrame, symbol: str) -> list[dict[str, object]]:
    """Render stored funding events as Binance fundingRate objects (markPrice "" when unknown)."""
    mark = _column(frame, "mark_price", np.full(len(frame), np.nan))
    return [
        {
            "symbol": symbol,
            "fundingRate": f"{rate:.8f}",
            "fundingTime": int(ts),
            "markPrice": "" if not np.isfinite(m) else f"{m:.8f}",
        }
        for ts, rate, m in zip(frame["ts"].to_numpy(), frame["funding_rate"].to_numpy(), mark, strict=True)
    ]


# Helpers ------------------------------------------------------------------------------------------
def _select(
    state: VenueState,
    dataset: str,
    symbol: str,
    start_ms: int | None,
    stop_ms: int,
    limit: int,
    chunk_ms: int,
) -> pd.DataFrame:
    """Return the first ``limit`` rows in [start_ms, stop_ms), or the last ``limit`` before stop_ms.

    As Binance does, a gap (before a listing, an outage) is skipped, not answered with nothing.
    Reads chunk by chunk, so a long gap costs directory listings rather than reading everything.
    """
    parts: list[pd.DataFrame] = []
    rows = 0
    if start_ms is not None:
        lo = start_ms
        while lo < stop_ms and rows < limit:
            hi = min(stop_ms, lo + chunk_ms)
            parts.append(state.data.read(dataset, symbol, lo, hi))
            rows += len(parts[-1])
            lo = hi
        return _concat(parts).iloc[:limit]
    hi = stop_ms
    while hi > _EARLIEST_MS and rows < limit:
        lo = max(_EARLIEST_MS, hi - chunk_ms)
        parts.insert(0, state.data.read(dataset, symbol, lo, hi))
        rows += len(parts[0])
        hi = lo
    return _concat(parts).iloc[-limit:]


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    filled = [p for p in parts if len(p)]
    if len(filled) > 1:
        return pd.concat(filled, ignore_index=True)
    return (filled or parts or [pd.DataFrame({"ts": pd.Series([], dtype="int64")})])[0].reset_index(drop=True)


async def _check_symbol(state: VenueState, symbol: str) -> None:
    def known() -> bool:
        return any(symbol in state.data.symbols(d) for d in _SYMBOL_DATASETS)

    if not await asyncio.to_thread(known):
        raise BinanceError(-1121, "Invalid symbol.")


def _required(query: Mapping[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return str(value)


def _optional_int(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    return _parse_int(name, value)


def _int(query: Mapping[str, str], name: str, default: int) -> int:
    value = _optional_int(query, name)
    return default if value is None else value


def _parse_int(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 20:
        raise BinanceError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        )
    return int(value)


def _klines_weight(limit: int) -> int:
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def _column(frame: pd.DataFrame, name: str, default: np.ndarray) -> np.ndarray:
    """Return a stored column as float64 (nulls as NaN), or ``default`` when the lake lacks it."""
    return frame[name].to_numpy(np.float64, na_value=np.nan) if name in frame.columns else default


def _fmt(value: float) -> str:
    return np.format_float_positional(float(value), trim="-")
