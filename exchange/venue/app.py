"""The replay venue's aiohttp application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from exchange.venue import faults as faults_module
from exchange.venue import market_rest
from exchange.venue.faults import Faults
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
    faults: Faults | None = None,
) -> web.Application:
    """Build the venue application serving ``data`` up to the replay clock ``now_ms`` (epoch ms).

    REST under /fapi: v1/ping, v1/time, v1/klines, v1/markPriceKlines, v1/premiumIndexKlines,
    v1/fundingRate, in Binance's parameters and response shapes. ``weight_limit_1m`` None disables
    429 answers (the weight header is still sent). With ``faults`` the REST fault hooks apply to
    every request (before weight is charged) and the admin routes ``/_venue/faults`` and
    ``/_venue/stats`` are added.
    """
    middlewares = [_binance_errors] if faults is None else [faults_module.middleware, _binance_errors]
    app = web.Application(middlewares=middlewares)
    app[STATE] = VenueState(data, now_ms, weight_limit_1m, rate_clock_ms)
    market_rest.add_routes(app)
    if faults is not None:
        faults_module.install(app, faults)
    return app
