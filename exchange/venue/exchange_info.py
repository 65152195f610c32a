"""``GET /fapi/v1/exchangeInfo`` and ``GET /fapi/v1/premiumIndex`` of the replay venue.

exchangeInfo answers a given Binance exchangeInfo dict (a recorded one filtered to the replayed
symbols) with ``serverTime`` set to the replay clock, or one generated for the replayed symbols by
``generate_exchange_info``. Generated filters follow the price level at the replay start:

- tickSize = 10^(floor(log10 price) − 4) (about five significant digits, as Binance lists most
  symbols and as ``core.synthetic`` rounds symbols it has no reference for);
- stepSize = min(1, max(0.001, 10^floor(log10(10 / price)))) (one step is worth 1–10 USDT, never
  finer than 0.001 nor coarser than 1); minQty = stepSize; MIN_NOTIONAL 5 USDT;
- PRICE_FILTER minPrice = tickSize, maxPrice = 10^6 × price rounded to the tick; PERCENT_PRICE ±5 %.

premiumIndex is answered by a provider the replay driver supplies (mark, index, funding at the
clock); one symbol gives an object, none gives the list, as on Binance.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from aiohttp import web

from exchange.venue.state import STATE, BinanceError

#: ``provider(symbol) -> premiumIndex object`` at the replay clock; raise BinanceError(-1121) if unknown.
PremiumProvider = Callable[[str], dict[str, Any]]

EXCHANGE_INFO: web.AppKey[dict[str, Any]] = web.AppKey("venue_exchange_info")
PREMIUM: web.AppKey[PremiumProvider] = web.AppKey("venue_premium_index")
SYMBOLS: web.AppKey[tuple[str, ...]] = web.AppKey("venue_symbols")

_QUOTES = ("USDT", "USDC", "BUSD", "FDUSD")


def generate_exchange_info(
    symbols: Sequence[str], prices: Mapping[str, float], server_time_ms: int, weight_limit_1m: int = 2400
) -> dict[str, Any]:
    """Return an exchangeInfo dict for ``symbols`` with filters derived from ``prices`` (USDT; see module doc)."""
    out = []
    for symbol in symbols:
        price = prices.get(symbol)
        if price is None or not math.isfinite(price) or price <= 0:
            raise ValueError(f"exchangeInfo for {symbol}: need a positive price level, got {price}")
        tick = _power_of_ten(math.floor(math.log10(price)) - 4)
        step = _power_of_ten(min(0, max(-3, math.floor(math.log10(10.0 / price)))))
        quote = next((q for q in _QUOTES if symbol.endswith(q) and len(symbol) > len(q)), "USDT")
        max_price = (Decimal(repr(price)) * 1_000_000 / tick).to_integral_value() * tick
        out.append(
            {
                "symbol": symbol,
                "pair": symbol,
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000,
                "status": "TRADING",
                "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000",
                "baseAsset": symbol[: -len(quote)],
                "quoteAsset": quote,
                "marginAsset": quote,
                "pricePrecision": _decimals(tick),
                "quantityPrecision": _decimals(step),
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "triggerProtect": "0.0500",
                "liquidationFee": "0.012500",
                "marketTakeBound": "0.05",
                "maxMoveOrderLimit": 10000,
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": _plain(tick), "minPrice": _plain(tick), "maxPrice": _plain(max_price)},
                    {"filterType": "LOT_SIZE", "maxQty": "1000000", "minQty": _plain(step), "stepSize": _plain(step)},
                    {"filterType": "MARKET_LOT_SIZE", "maxQty": "100000", "minQty": _plain(step), "stepSize": _plain(step)},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                    {"filterType": "MIN_NOTIONAL", "notional": "5"},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"},
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            }
        )  # fmt: skip
    return {
        "timezone": "UTC",
        "serverTime": int(server_time_ms),
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit_1m,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-100"}],
        "symbols": out,
    }


def filter_exchange_info(info: Mapping[str, Any], symbols: Sequence[str]) -> dict[str, Any]:
    """Return ``info`` keeping only ``symbols``; raise ValueError naming any symbol it lacks."""
    listed = {s["symbol"]: s for s in info.get("symbols", [])}
    missing = [s for s in symbols if s not in listed]
    if missing:
        raise ValueError(f"exchangeInfo has no entry for {', '.join(missing)}")
    return {**info, "symbols": [listed[s] for s in symbols]}


def symbol_filter(info: Mapping[str, Any], symbol: str, filter_type: str, key: str) -> Decimal:
    """Return one filter value (e.g. PRICE_FILTER tickSize) of ``symbol`` as a Decimal; ValueError if absent."""
    for entry in info.get("symbols", []):
        if entry.get("symbol") == symbol:
            for f in entry.get("filters", []):
                if f.get("filterType") == filter_type and key in f:
                    return Decimal(str(f[key]))
            raise ValueError(f"exchangeInfo of {symbol} has no {filter_type}.{key}")
    raise ValueError(f"exchangeInfo has no symbol {symbol}")


def add_routes(
    app: web.Application, info: dict[str, Any], premium: PremiumProvider, symbols: Sequence[str]
) -> None:
    """Serve ``info`` as exchangeInfo and ``premium(symbol)`` as premiumIndex for ``symbols``."""
    app[EXCHANGE_INFO] = info
    app[PREMIUM] = premium
    app[SYMBOLS] = tuple(symbols)
    app.router.add_get("/fapi/v1/exchangeInfo", _exchange_info)
    app.router.add_get("/fapi/v1/premiumIndex", _premium_index)


async def _exchange_info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.charge(request.path, 1)
    info: dict[str, Any] = request.app[EXCHANGE_INFO]
    return web.json_response({**info, "serverTime": int(state.now_ms())})


async def _premium_index(request: web.Request) -> web.Response:
    state = request.app[STATE]
    provider: PremiumProvider = request.app[PREMIUM]
    symbol = request.query.get("symbol")
    state.charge(request.path, 1 if symbol else 10)
    if symbol:
        if symbol not in request.app[SYMBOLS]:
            raise BinanceError(-1121, "Invalid symbol.")
        return web.json_response(await asyncio.to_thread(provider, symbol))
    symbols = request.app[SYMBOLS]
    return web.json_response(await asyncio.to_thread(lambda: [provider(s) for s in symbols]))


def _plain(value: Decimal) -> str:
    return format(value, "f")


def _power_of_ten(exponent: int) -> Decimal:
    return Decimal(1).scaleb(exponent)


def _decimals(step: Decimal) -> int:
    return max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]
