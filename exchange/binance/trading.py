"""Signed Binance USDⓈ-M trading client: start-up checks, orders, algo orders, account, resolution.

``BinanceTrading`` is the order path's one adapter to Binance (or the testnet, or the replay venue).
It stands on ``exchange.binance.signed`` (signing, clock offset, rate limits, and what a failure
means: ``OrderOutcomeUnknown`` vs ``BinanceRejection``) and ``exchange.binance.orders`` (client ids,
rounding to the filters, Decimal wire values, parameters). python-binance 1.0.37 routes algo orders
too, but the order path needs what it hides: when a request is stamped and signed, whether a failure
came before or after the request left, and the headers of every answer.

Start-up (``start``): sync the clock, refuse hedge mode and Multi-Assets mode unless the config
allows them (``AccountModeError`` naming each), load the symbol filters. ``prepare_symbol`` sets
leverage and the margin type once per symbol (cached; "-4046 no need to change" is success).

Orders. Entries are MARKET with our ``newClientOrderId``; protection is an algo STOP_MARKET /
TAKE_PROFIT_MARKET (``algoType=CONDITIONAL``, ``workingType=MARK_PRICE``, ``priceProtect``,
reduce-only or closePosition, our ``clientAlgoId``). An order request whose outcome is unknown
raises ``OrderOutcomeUnknown``; ``resolve_unknown`` then queries the client id — order by
origClientOrderId, then algo order by clientAlgoId, then ``allAlgoOrders`` — and returns ``Found``
or ``Absent``; only ``Absent`` allows a resend. Binance refuses a reused client id only while that
order is open, so de-duplication is ours: the client remembers the ids it sent, and placing one
again queries first and returns the existing order instead of sending a duplicate; an id whose
outcome was unknown is resent only when the query, made after its recvWindow has passed (Binance
refuses the request after that), finds nothing. After a restart that memory is gone: the ledger
resolves its unknown ids with ``resolve_unknown(..., not_before_ms=...)`` before placing anything.
Not thread-safe: one owner (the execution actor).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, TypeVar

from core.errors import FatalError, MalformedMessage, RejectedError, TransientError
from core.messages import OrderSide
from core.sim import SymbolFilters, parse_symbol_filters
from exchange.binance.orders import (
    OrderSizeError,
    PositionSide,
    Protection,
    client_id,
    entry_quantity,
    floor_quantity,
    market_params,
    protection_params,
    protective_trigger,
    to_decimal,
)
from exchange.binance.payloads import (
    AlgoOrderResponse,
    Balance,
    OrderResponse,
    PositionRisk,
    UserTrade,
    parse_algo_order,
    parse_balance,
    parse_order_response,
    parse_position_risk,
    parse_user_trade,
)
from exchange.binance.signed import (
    FAPI_TESTNET,
    BinanceRejection,
    ClockOffsetError,
    OrderOutcomeUnknown,
    RateLimitedError,
    RateUsage,
    SignedTransport,
    TradingConfig,
)

__all__ = [
    "FAPI_TESTNET",
    "Absent",
    "AccountModeError",
    "AccountModes",
    "BinanceRejection",
    "BinanceTrading",
    "ClockOffsetError",
    "Found",
    "OrderOutcomeUnknown",
    "OrderSizeError",
    "RateLimitedError",
    "RateUsage",
    "TradingConfig",
    "client_id",
]

_PATHS = {"order": "/fapi/v1/order", "algo": "/fapi/v1/algoOrder"}
_Placed = TypeVar("_Placed", OrderResponse, AlgoOrderResponse)
_Row = TypeVar("_Row")


class AccountModeError(FatalError):
    """The account is in a mode the configuration does not accept (hedge mode, Multi-Assets mode)."""


@dataclass(frozen=True, slots=True)
class AccountModes:
    """The account's position mode and asset mode."""

    hedge_mode: bool  # dualSidePosition
    multi_assets_mode: bool


@dataclass(frozen=True, slots=True)
class Found:
    """The venue holds the order; ``source`` says which query found it."""

    order: OrderResponse | AlgoOrderResponse
    source: Literal["order", "algoOrder", "allAlgoOrders"]


@dataclass(frozen=True, slots=True)
class Absent:
    """No query found ``client_id`` at server time ``checked_ms``: a resend is allowed."""

    client_id: str
    checked_ms: int


@dataclass(slots=True)
class _Sent:
    kind: Literal["order", "algo"]
    acknowledged: bool
    settled_after_ms: int = 0


class BinanceTrading:
    """Signed USDⓈ-M trading (module docstring). ``sleep`` and ``wall_clock_ms`` are injectable.

    ``filters`` by symbol (``core.sim.parse_symbol_filters``); ``start()`` loads them from
    exchangeInfo when none are given.
    """

    def __init__(
        self,
        config: TradingConfig,
        *,
        filters: Mapping[str, SymbolFilters] | None = None,
        sleep: Callable[[float], None] | None = None,
        wall_clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.http = SignedTransport(config, sleep=sleep, wall_clock_ms=wall_clock_ms)
        self.config = config
        self._filters: dict[str, SymbolFilters] = dict(filters or {})
        self.modes: AccountModes | None = None
        self._leverage: dict[str, int] = {}
        self._margin_set: set[str] = set()
        self._sent: OrderedDict[str, _Sent] = OrderedDict()

    def __repr__(self) -> str:
        return f"BinanceTrading(base_url={self.http.base_url!r}, api_key='**********')"

    def close(self) -> None:
        """Close the HTTP session."""
        self.http.close()

    def __enter__(self) -> BinanceTrading:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def usage(self) -> RateUsage:
        """Request weight and order counts from the last answers, and any Retry-After back-off."""
        return self.http.usage

    # Start-up ---------------------------------------------------------------------------------------
    def start(self) -> AccountModes:
        """Sync the clock, check the account's modes (AccountModeError) and load the symbol filters."""
        if self.config.sync_clock:
            self.http.sync_clock()
        modes = self.account_modes()
        problems = []
        if modes.hedge_mode and not self.config.allow_hedge_mode:
            problems.append("the account is in hedge mode (dualSidePosition=true); switch it to one-way mode")
        if modes.multi_assets_mode and not self.config.allow_multi_assets_mode:
            problems.append("the account is in Multi-Assets mode; switch it to Single-Asset mode")
        if problems:
            allow = " (or allow it in TradingConfig)"
            raise AccountModeError(f"{self.http.base_url}: " + "; ".join(problems) + allow)
        self.modes = modes
        if not self._filters:
            self.load_filters()
        return modes

    def account_modes(self) -> AccountModes:
        """Read the position mode (``positionSide/dual``) and Multi-Assets mode (``multiAssetsMargin``)."""
        dual = self.http.call("GET", "/fapi/v1/positionSide/dual")
        multi = self.http.call("GET", "/fapi/v1/multiAssetsMargin")
        return AccountModes(bool(dual["dualSidePosition"]), bool(multi["multiAssetsMargin"]))

    def load_filters(self) -> dict[str, SymbolFilters]:
        """Load every symbol's order filters from ``/fapi/v1/exchangeInfo``."""
        self._filters = parse_symbol_filters(self.http.call("GET", "/fapi/v1/exchangeInfo", signed=False))
        return dict(self._filters)

    def filters(self, symbol: str) -> SymbolFilters:
        """The order filters of ``symbol``; FatalError when none are loaded for it."""
        if symbol not in self._filters:
            raise FatalError(
                f"no order filters for {symbol}: not traded on {self.http.base_url}, or no start()"
            )
        return self._filters[symbol]

    def prepare_symbol(self, symbol: str, leverage: int) -> None:
        """Set ``symbol``'s leverage and margin type, each once (cached; -4046 "no need to change" is success)."""
        if self._leverage.get(symbol) != leverage:
            params = {"symbol": symbol, "leverage": str(leverage)}
            self.http.call("POST", "/fapi/v1/leverage", params, action="write")
            self._leverage[symbol] = leverage
        if symbol not in self._margin_set:
            params = {"symbol": symbol, "marginType": self.config.margin_type}
            try:
                self.http.call("POST", "/fapi/v1/marginType", params, action="write")
            except BinanceRejection as e:
                if e.code != -4046:
                    raise
            self._margin_set.add(symbol)

    # Orders -----------------------------------------------------------------------------------------
    def place_entry(
        self,
        symbol: str,
        side: OrderSide,
        quantity: Decimal | float,
        client_order_id: str,
        *,
        mark_price: Decimal | float,
    ) -> OrderResponse:
        """Send a MARKET entry of ``quantity`` floored to the step; OrderSizeError below the minimums.

        ``mark_price`` checks MIN_NOTIONAL. Idempotent per ``client_order_id`` (module docstring).
        """
        qty = entry_quantity(self.filters(symbol), quantity, mark_price)
        params = market_params(symbol, side, qty, client_order_id, reduce_only=False, hedge=self._hedge)
        return self._place("order", symbol, client_order_id, params, OrderResponse, parse_order_response)

    def close_position(
        self, symbol: str, side: OrderSide, quantity: Decimal | float, client_order_id: str
    ) -> OrderResponse:
        """Send a reduce-only MARKET order of ``quantity`` (floored to the step) that closes a position."""
        qty = floor_quantity(self.filters(symbol), quantity)
        params = market_params(symbol, side, qty, client_order_id, reduce_only=True, hedge=self._hedge)
        return self._place("order", symbol, client_order_id, params, OrderResponse, parse_order_response)

    def place_protection(
        self,
        symbol: str,
        kind: Protection,
        position: PositionSide,
        trigger_price: Decimal | float,
        entry_price: Decimal | float,
        client_algo_id: str,
        quantity: Decimal | float | None = None,
    ) -> AlgoOrderResponse:
        """Send an algo SL (STOP_MARKET) or TP (TAKE_PROFIT_MARKET) that closes ``position``.

        The trigger rounds to the tick toward ``entry_price``, as the simulator rounds
        (``exchange.binance.orders``; for a stop moved past the entry, pass the price it must not
        fall behind). ``quantity`` (floored to the step) makes it reduce-only, None a closePosition
        order. Idempotent per ``client_algo_id``.
        """
        filters = self.filters(symbol)
        trigger = protective_trigger(filters, trigger_price, entry_price)
        qty = None if quantity is None else floor_quantity(filters, quantity)
        params = protection_params(symbol, kind, position, trigger, client_algo_id, qty, hedge=self._hedge)
        return self._place("algo", symbol, client_algo_id, params, AlgoOrderResponse, parse_algo_order)

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderResponse:
        """Cancel an open order by our client id (OrderOutcomeUnknown when that is unknown)."""
        params = {"symbol": symbol, "origClientOrderId": client_order_id}
        body = self.http.call(
            "DELETE", "/fapi/v1/order", params, action="order", ref=(symbol, client_order_id)
        )
        return parse_order_response(body)

    def cancel_algo_order(self, client_algo_id: str, symbol: str = "") -> None:
        """Cancel an open algo order by our client id (``symbol`` only names it in errors)."""
        params = {"clientAlgoId": client_algo_id}
        self.http.call("DELETE", "/fapi/v1/algoOrder", params, action="order", ref=(symbol, client_algo_id))

    def cancel_all_orders(self, symbol: str) -> None:
        """Cancel every open regular order of ``symbol`` (``allOpenOrders``)."""
        self.http.call(
            "DELETE", "/fapi/v1/allOpenOrders", {"symbol": symbol}, action="order", ref=(symbol, "*")
        )

    def cancel_all_algo_orders(self, symbol: str) -> None:
        """Cancel every open algo order of ``symbol`` (``algoOpenOrders``)."""
        self.http.call(
            "DELETE", "/fapi/v1/algoOpenOrders", {"symbol": symbol}, action="order", ref=(symbol, "*")
        )

    # Queries ----------------------------------------------------------------------------------------
    def server_time_ms(self) -> int:
        """Binance's clock (``/fapi/v1/time``), epoch ms."""
        return int(self.http.call("GET", "/fapi/v1/time", signed=False)["serverTime"])

    def mark_price(self, symbol: str) -> Decimal:
        """The mark price of ``symbol`` (``/fapi/v1/premiumIndex``)."""
        body = self.http.call("GET", "/fapi/v1/premiumIndex", {"symbol": symbol}, signed=False)
        return to_decimal(str(body["markPrice"]))

    def get_order(
        self, symbol: str, client_order_id: str | None = None, *, order_id: int | None = None
    ) -> OrderResponse:
        """Query an order of ``symbol`` by our client id or by the venue's order id, exactly one of them
        (ValueError otherwise); BinanceRejection -2013 when there is none."""
        params: dict[str, str | int] = {"symbol": symbol}
        params.update(
            _one_id(
                "get_order",
                client_order_id=("origClientOrderId", client_order_id),
                order_id=("orderId", order_id),
            )
        )
        return parse_order_response(self.http.call("GET", "/fapi/v1/order", params))

    def get_algo_order(
        self, client_algo_id: str | None = None, *, algo_id: int | None = None
    ) -> AlgoOrderResponse:
        """Query an algo order by our client id or by the venue's algo id, exactly one of them
        (ValueError otherwise); BinanceRejection -2013 when there is none."""
        params = _one_id(
            "get_algo_order", client_algo_id=("clientAlgoId", client_algo_id), algo_id=("algoId", algo_id)
        )
        return parse_algo_order(self.http.call("GET", "/fapi/v1/algoOrder", params))

    def open_orders(self, symbol: str | None = None) -> list[OrderResponse]:
        """Open regular orders, of ``symbol`` or all."""
        return self._list("/fapi/v1/openOrders", parse_order_response, _present(symbol=symbol))

    def open_algo_orders(self, symbol: str | None = None) -> list[AlgoOrderResponse]:
        """Open algo orders, of ``symbol`` or all."""
        return self._list("/fapi/v1/openAlgoOrders", parse_algo_order, _present(symbol=symbol))

    def all_algo_orders(
        self, symbol: str, *, start_ms: int | None = None, end_ms: int | None = None, limit: int = 500
    ) -> list[AlgoOrderResponse]:
        """Algo orders of ``symbol`` in any state: the newest ``limit``, optionally within [start_ms, end_ms]."""
        params = _present(symbol=symbol, startTime=start_ms, endTime=end_ms, limit=limit)
        return self._list("/fapi/v1/allAlgoOrders", parse_algo_order, params)

    def positions(self, symbol: str | None = None) -> list[PositionRisk]:
        """Open positions (``/fapi/v3/positionRisk``), of ``symbol`` or all."""
        return self._list("/fapi/v3/positionRisk", parse_position_risk, _present(symbol=symbol))

    def balances(self) -> list[Balance]:
        """Margin asset balances (``/fapi/v3/balance``)."""
        return self._list("/fapi/v3/balance", parse_balance, {})

    def user_trades(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        from_id: int | None = None,
        limit: int = 500,
    ) -> list[UserTrade]:
        """Our fills of ``symbol`` (backfill after a gap): from trade id ``from_id``, or within [start_ms, end_ms]."""
        params = _present(symbol=symbol, startTime=start_ms, endTime=end_ms, fromId=from_id, limit=limit)
        return self._list("/fapi/v1/userTrades", parse_user_trade, params)

    def resolve_unknown(
        self,
        symbol: str,
        client_id: str,
        *,
        kind: Literal["order", "algo"] | None = None,
        not_before_ms: int | None = None,
    ) -> Found | Absent:
        """Find ``client_id``: the order by origClientOrderId, then the algo order by clientAlgoId, then
        ``allAlgoOrders`` of ``symbol``; ``kind`` limits the search to orders or to algo orders.

        With ``not_before_ms`` (an OrderOutcomeUnknown's ``settled_after_ms``) it first waits until
        server time passes it. A failing query raises: the outcome stays unknown.
        """
        if not_before_ms is not None:
            wait_ms = min(not_before_ms - self.http.now_ms() + 1, self.config.recv_window_ms + 1_000)
            self.http.sleep(wait_ms / 1000)
        found: Found | None = None
        if kind in (None, "order"):
            found = _unless_missing(lambda: Found(self.get_order(symbol, client_id), "order"))
        if found is None and kind in (None, "algo"):
            found = _unless_missing(lambda: Found(self.get_algo_order(client_id), "algoOrder"))
            if found is None:
                match = [a for a in self.all_algo_orders(symbol) if a.clientAlgoId == client_id]
                found = Found(match[-1], "allAlgoOrders") if match else None
        if found is None:
            return Absent(client_id, self.http.now_ms())
        if client_id in self._sent:
            self._sent[client_id].acknowledged = True
        return found

    # Placement and de-duplication -------------------------------------------------------------------
    @property
    def _hedge(self) -> bool:
        return bool(self.modes and self.modes.hedge_mode)

    def _place(
        self,
        kind: Literal["order", "algo"],
        symbol: str,
        client_id: str,
        params: dict[str, str],
        placed_type: type[_Placed],
        parse: Callable[[Any], _Placed],
    ) -> _Placed:
        path = _PATHS[kind]
        sent = self._sent.get(client_id)
        if sent is not None:  # sent before: send again only when a query finds nothing
            settled = None if sent.acknowledged else sent.settled_after_ms
            resolution = self.resolve_unknown(symbol, client_id, kind=kind, not_before_ms=settled)
            if isinstance(resolution, Found) and isinstance(resolution.order, placed_type):
                return resolution.order
            if sent.acknowledged:
                reason = "acknowledged earlier, yet no query finds it"
                raise OrderOutcomeUnknown(path, symbol, client_id, reason, self.http.now_ms())
        self._remember(client_id, _Sent(kind, acknowledged=False))
        try:
            body = self.http.call("POST", path, params, action="order", ref=(symbol, client_id))
        except OrderOutcomeUnknown as e:
            self._sent[client_id].settled_after_ms = e.settled_after_ms
            raise
        except BinanceRejection as e:
            if e.code == -4116:  # the id is held by an open order: ours, from an earlier attempt
                resolution = self.resolve_unknown(symbol, client_id, kind=kind)
                if isinstance(resolution, Found) and isinstance(resolution.order, placed_type):
                    return resolution.order
            self._sent.pop(client_id, None)
            raise
        except (RejectedError, TransientError):
            self._sent.pop(client_id, None)  # surely not placed: refused, rate limited, not connected
            raise
        try:
            placed = parse(body)
        except MalformedMessage as e:
            raise OrderOutcomeUnknown(
                path, symbol, client_id, f"malformed answer: {e}", self.http.now_ms()
            ) from e
        self._sent[client_id].acknowledged = True
        return placed

    def _remember(self, client_id: str, sent: _Sent) -> None:
        self._sent[client_id] = sent
        self._sent.move_to_end(client_id)
        while len(self._sent) > self.config.remembered_ids:
            self._sent.popitem(last=False)

    def _list(self, path: str, parse: Callable[[Any], _Row], params: Mapping[str, str | int]) -> list[_Row]:
        body = self.http.call("GET", path, params)
        if not isinstance(body, list):
            raise MalformedMessage("bad_shape", f"{path}: expected a list, got {type(body).__name__}", body)
        return [parse(row) for row in body]


def _present(**params: str | int | None) -> dict[str, str | int]:
    return {name: value for name, value in params.items() if value is not None}


def _one_id(query: str, **ids: tuple[str, str | int | None]) -> dict[str, str | int]:
    """The one given id among ``ids`` (argument name → (request parameter, value)) as a request
    parameter; ValueError naming the problem when none, both, or an empty or non-positive one is given."""
    given = {arg: pair for arg, pair in ids.items() if pair[1] is not None}
    if len(given) != 1:
        problem = "neither was given" if not given else f"got {' and '.join(given)}"
        raise ValueError(f"{query}: pass exactly one of {' or '.join(ids)}; {problem}")
    [(arg, (param, value))] = given.items()
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{query}: {arg} must be a non-empty id, got ''")
    elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{query}: {arg} must be a positive integer, got {value!r}")
    return {param: value}


def _unless_missing(query: Callable[[], Found]) -> Found | None:
    try:
        return query()
    except BinanceRejection as e:
        if e.code == -2013:  # "Order does not exist."
            return None
        raise
