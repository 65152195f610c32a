"""The replay venue's aiohttp application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from exchange.venue import market_rest
from exchange.venue.state import DEFAULT_WEIGHT_LIMIT_1M, STATE, BinanceError, MarketData, VenueState


@web.middleware
async def _binance_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        response = await handler(request)
    except BinanceError as e:
        response = web.json_response({"code": e.code, "msg": e.msg}, status=e.status, headers=e.headers)
    response.headers["X-MBX-USED-WEIGHT-1M"] = str(state.used_weight_1m)
    return response


def create_app(
    data: MarketData,
    now_ms: Callable[[], int],
    *,
    weight_limit_1m: int | None = DEFAULT_WEIGHT_LIMIT_1M,
    rate_clock_ms: Callable[[], int] | None = None,
) -> web.Application:
    """Build the venue application serving ``data`` up to the replay clock ``now_ms`` (epoch ms).

    REST under /fapi: v1/ping, v1/time, v1/klines, v1/markPriceKlines, v1/premiumIndexKlines,
    v1/fundingRate, in Binance's parameters and response shapes. ``weight_limit_1m`` None disables
    429 answers (the weight header is still sent).
    """
    app = web.Application(middlewares=[_binance_errors])
    app[STATE] = VenueState(data, now_ms, weight_limit_1m, rate_clock_ms)
    market_rest.add_routes(app)
    return app
