"""The replay venue's order side: a paper broker speaking Binance USDⓈ-M's signed REST and user data.

``PaperBroker`` keeps one USDT account of one-way isolated positions and fills orders by the rules
of ``core.sim`` (the same kernel functions the backtester and ``FillSimulator`` use): a BUY fills at
the best ask, a SELL at the best bid, each worse by ``fill_slippage`` (no ATR part, the impact part
on an unknown bar volume, i.e. ``impact_k``), paying ``fee_rate`` of the fill's notional as taker fee;
isolated margin is notional / leverage, the liquidation price is the kernel's for the position's
leverage bracket, realized PnL ``side·qty·(exit − entry)``. A round trip therefore books exactly the
simulator's trade PnL for the same prices.

Orders. ``/fapi/v1/order`` takes MARKET only: conditional types answer -4120 as Binance does since
2025-12, LIMIT is refused (the venue has best bid/ask, not a book to rest an order in). Conditional
STOP_MARKET / TAKE_PROFIT_MARKET orders go to ``/fapi/v1/algoOrder`` (``algoType=CONDITIONAL``) and
trigger on the mark (``workingType=MARK_PRICE``) or the last price (``CONTRACT_PRICE``, Binance's
default) at or beyond ``triggerPrice``; the triggered algo places a child MARKET order with a new
orderId (``ai`` in ALGO_UPDATE; its clientOrderId is the clientAlgoId). Algo statuses go NEW →
TRIGGERING → TRIGGERED → FINISHED, or CANCELED (by the user), REJECTED (the child was refused: no
position to reduce, margin) or EXPIRED. Choices where Binance is not explicit:

- closePosition algo orders are GTE_GTC: when the position of their symbol goes flat (a fill, a
  trigger, a liquidation) the remaining ones are EXPIRED, as Binance documents for GTE_GTC. An order
  placed while flat is accepted and only expires after a position has been open and closed.
- reduceOnly algo orders with a quantity stay NEW when the position closes; at trigger they reduce
  at most the position (the rest of the child EXPIRES) or are REJECTED when there is nothing to reduce.
- A reduceOnly MARKET order larger than the position fills the position and EXPIRES the rest.
- newOrderRespType defaults to ACK as on Binance: the answer shows the order NEW, before its fill.
- Client ids (newClientOrderId, clientAlgoId) must be unique among open orders only (-4116).

Signed endpoints check X-MBX-APIKEY (-2014 missing, -2015 wrong), ``timestamp`` against the *wall
clock* with ``recvWindow`` (-1021; python-binance stamps wall time, not the replay clock) and the
HMAC-SHA256 ``signature`` over the query string and body (-1022). The listenKey lives 60 wall
minutes; PUT extends it; an unknown or expired key is -1125. User-data events (ORDER_TRADE_UPDATE,
ALGO_UPDATE, ACCOUNT_UPDATE after every fill) go to ``publish_user`` stamped with the venue clock.
Funding is not settled here. Everything runs on the venue's event loop, except ``reject_next``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web

from core.costs import entry_fill_price
from core.sim import LeverageBracket, SimConfig
from core.sim.kernel import fill_slippage, liquidation_price
from core.sim.rules import bracket_for
from exchange.venue import trading_events as acct
from exchange.venue.state import STATE, BinanceError
from exchange.venue.trading_events import (
    SIDE_SIGN,
    ZERO,
    AlgoOrder,
    Fill,
    Order,
    PaperPosition,
    SymbolRules,
    account_update,
    algo_json,
    algo_update,
    exact_decimal,
    order_json,
    order_trade_update,
    symbol_rules,
    trade_json,
)

LISTEN_KEY_LIFE_MS = 60 * 60_000
DEFAULT_RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000
ALGO_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
CONDITIONAL_TYPES = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
_CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_DECIMAL = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_OPEN = ("NEW", "PARTIALLY_FILLED")
_CANCEL_ALL = {"code": 200, "msg": "The operation of cancel all open order is done."}
_UNKNOWN_OUTCOME_CODES = (-1000, -1001, -1006, -1007, -1008)
_NAN = math.nan

Params = Mapping[str, str]
_PUBLIC, _USER_STREAM, _SIGNED = 0, 1, 2


class PaperBroker:
    """Binance USDⓈ-M's account and order endpoints over the ``core.sim`` fill rules (module docstring).

    ``now_ms`` is the venue (replay) clock that stamps orders and events; ``publish_user`` receives
    each user-data event. ``wall_ms`` (default: the system clock) times recvWindow and listenKeys.
    ``leverage_brackets`` by symbol (default ``DEFAULT_BRACKETS``).
    """

    def __init__(
        self,
        exchange_info: dict[str, Any],
        now_ms: Callable[[], int],
        publish_user: Callable[[dict[str, Any]], None],
        *,
        api_key: str,
        api_secret: str,
        initial_usdt: float = 10_000.0,
        sim_config: SimConfig | None = None,
        leverage_brackets: Mapping[str, tuple[LeverageBracket, ...]] | None = None,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("PaperBroker needs a non-empty api_key and api_secret")
        if not (initial_usdt > 0 and math.isfinite(initial_usdt)):
            raise ValueError(f"initial_usdt must be a positive amount, got {initial_usdt!r}")
        self.rules = symbol_rules(exchange_info, leverage_brackets)
        self.now_ms = now_ms
        self.publish_user = publish_user
        self.config = sim_config or SimConfig()
        self.wallet = float(initial_usdt)
        self._api_key = api_key
        self._secret = api_secret.encode()
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self.positions: dict[str, PaperPosition] = {}
        self.quotes: dict[str, tuple[float, float]] = {}  # symbol → (bid, ask)
        self.marks: dict[str, tuple[float, float]] = {}  # symbol → (mark, last)
        self.orders: dict[int, Order] = {}
        self.algos: dict[int, AlgoOrder] = {}
        self.fills: list[Fill] = []
        self._order_by_client: dict[tuple[str, str], int] = {}
        self._algo_by_client: dict[str, int] = {}
        self._listen_keys: dict[str, int] = {}  # key → expiry, wall ms
        self._rejections: list[tuple[int, str]] = []
        self._rejections_lock = threading.Lock()
        self._next_order_id = 8_000_000_001
        self._next_algo_id = 1_000_000_001
        self._next_trade_id = 500_000_001

    # --- the market side's hooks -------------------------------------------------------------------
    def on_book(self, symbol: str, ts_ms: int, bid: float, ask: float) -> None:
        """Take ``symbol``'s best bid/ask (the prices MARKET orders fill at); bad quotes are ignored."""
        if symbol in self.rules and 0 < bid <= ask and math.isfinite(ask):
            self.quotes[symbol] = (float(bid), float(ask))

    def on_mark(self, symbol: str, ts_ms: int, mark: float, last: float) -> None:
        """Take a mark/last update at ``ts_ms``: liquidation first (as the simulator), then algo triggers.

        MARK_PRICE algo orders compare ``mark`` with their trigger, CONTRACT_PRICE ones ``last``;
        triggered orders run in the order they were placed. Non-positive or NaN prices are ignored.
        """
        if symbol not in self.rules or not (mark > 0 and math.isfinite(mark)):
            return
        if not (last > 0 and math.isfinite(last)):
            last = self.marks.get(symbol, (mark, mark))[1]
        self.marks[symbol] = (float(mark), float(last))
        self._check_liquidation(symbol, int(ts_ms), float(mark))
        for algo in [a for a in self.algos.values() if a.symbol == symbol and a.status == "NEW"]:
            if algo.status == "NEW" and algo.triggered_by(
                mark if algo.working_type == "MARK_PRICE" else last
            ):
                self._trigger(algo, int(ts_ms))

    def listen_key_valid(self, key: str) -> bool:
        """Whether ``key`` is a live listenKey (created, not closed, kept alive within 60 minutes)."""
        expiry = self._listen_keys.get(key)
        return expiry is not None and expiry > self._wall_ms()

    def reject_next(self, code: int, msg: str, n: int = 1) -> None:
        """Answer the next ``n`` new orders (order and algoOrder) with Binance error ``code``/``msg``.

        Thread-safe. Codes of unknown execution status (-1000, -1001, -1006, -1007, -1008) answer
        HTTP 503, -1003/-1015 HTTP 429, others 400. The order is not placed.
        """
        if n < 0:
            raise ValueError(f"n must be ≥ 0, got {n}")
        with self._rejections_lock:
            self._rejections.extend([(int(code), str(msg))] * n)

    # --- routes ------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        """Add the account, order, algo order and listenKey routes to the venue application."""
        routes: tuple[tuple[str, str, Callable[[Params], Any], int, int], ...] = (
            ("POST", "/fapi/v1/order", self._new_order, 0, _SIGNED),
            ("GET", "/fapi/v1/order", self._get_order, 1, _SIGNED),
            ("DELETE", "/fapi/v1/order", self._cancel_order, 1, _SIGNED),
            ("GET", "/fapi/v1/openOrders", self._open_orders, 1, _SIGNED),
            ("GET", "/fapi/v1/allOrders", self._all_orders, 5, _SIGNED),
            ("DELETE", "/fapi/v1/allOpenOrders", self._cancel_all_orders, 1, _SIGNED),
            ("GET", "/fapi/v1/userTrades", self._user_trades, 5, _SIGNED),
            ("POST", "/fapi/v1/algoOrder", self._new_algo, 0, _SIGNED),
            ("GET", "/fapi/v1/algoOrder", self._get_algo, 1, _SIGNED),
            ("DELETE", "/fapi/v1/algoOrder", self._cancel_algo, 1, _SIGNED),
            ("GET", "/fapi/v1/openAlgoOrders", self._open_algos, 1, _SIGNED),
            ("GET", "/fapi/v1/allAlgoOrders", self._all_algos, 5, _SIGNED),
            ("DELETE", "/fapi/v1/algoOpenOrders", self._cancel_all_algos, 1, _SIGNED),
            ("GET", "/fapi/v2/positionRisk", self._position_risk_v2, 5, _SIGNED),
            ("GET", "/fapi/v3/positionRisk", self._position_risk_v3, 5, _SIGNED),
            ("GET", "/fapi/v2/account", self._account_v2, 5, _SIGNED),
            ("GET", "/fapi/v3/account", self._account_v3, 5, _SIGNED),
            ("GET", "/fapi/v2/balance", self._balance, 5, _SIGNED),
            ("GET", "/fapi/v3/balance", self._balance, 5, _SIGNED),
            ("POST", "/fapi/v1/leverage", self._leverage, 1, _SIGNED),
            ("POST", "/fapi/v1/marginType", self._margin_type, 1, _SIGNED),
            ("POST", "/fapi/v1/listenKey", self._listen_key_new, 1, _USER_STREAM),
            ("PUT", "/fapi/v1/listenKey", self._listen_key_keepalive, 1, _USER_STREAM),
            ("DELETE", "/fapi/v1/listenKey", self._listen_key_close, 1, _USER_STREAM),
        )
        for method, path, handler, weight, security in routes:
            app.router.add_route(method, path, self._endpoint(handler, weight, security))

    def _endpoint(
        self, handler: Callable[[Params], Any], weight: int, security: int
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            if STATE in request.app:
                request.app[STATE].charge(request.path, weight)
            params = await self._authenticate(request, security)
            return web.json_response(handler(params))

        return serve

    async def _authenticate(self, request: web.Request, security: int) -> dict[str, str]:
        query = request.rel_url.raw_query_string
        body = await request.text() if request.can_read_body else ""
        params = dict(parse_qsl(body, keep_blank_values=True))
        params.update(parse_qsl(query, keep_blank_values=True))  # the query string wins, as on Binance
        if security == _PUBLIC:
            return params
        key = request.headers.get("X-MBX-APIKEY", "")
        if not key:
            raise BinanceError(-2014, "API-key format invalid.", status=401)
        if not hmac.compare_digest(key.encode(), self._api_key.encode()):
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", status=401)
        if security == _USER_STREAM:
            return params
        timestamp = _int_param(params, "timestamp")
        recv_window = _int_param(params, "recvWindow", DEFAULT_RECV_WINDOW_MS)
        if recv_window > MAX_RECV_WINDOW_MS:
            raise BinanceError(-1131, f"recvWindow must be less than {MAX_RECV_WINDOW_MS}.")
        now = self._wall_ms()
        if timestamp >= now + 1000:
            raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - timestamp > recv_window:
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
        signature = _required(params, "signature")
        payload = _strip_signature(query) + _strip_signature(body)
        digests = {
            hmac.new(self._secret, p.encode(), hashlib.sha256).hexdigest()
            for p in (payload, unquote_plus(payload))
        }
        if not any(hmac.compare_digest(signature.lower(), d) for d in digests):
            raise BinanceError(-1022, "Signature for this request is not valid.")
        return params

    # --- orders ------------------------------------------------------------------------------------
    def _new_order(self, p: Params) -> dict[str, Any]:
        self._take_rejection()
        symbol, rules = self._symbol(p)
        side = _side(p)
        order_type = _required(p, "type")
        if order_type in CONDITIONAL_TYPES:
            raise BinanceError(
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
            )
        if order_type == "LIMIT":
            raise BinanceError(-1116, "Invalid orderType. The replay venue fills MARKET orders only: it models "
                                      "best bid/ask, not a book for LIMIT orders to rest in.")  # fmt: skip
        if order_type != "MARKET":
            raise BinanceError(-1116, "Invalid orderType.")
        _position_side(p)
        if _bool(p, "closePosition"):
            raise BinanceError(-1106, "Parameter 'closePosition' sent when not required.")
        client_id = self._client_id(p, "newClientOrderId")
        if any(o.client_order_id == client_id and o.status in _OPEN for o in self.orders.values()):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        qty = _quantity(p, rules)
        response_type = p.get("newOrderRespType", "ACK")
        if response_type not in ("ACK", "RESULT"):
            raise BinanceError(-1130, "Data sent for parameter 'newOrderRespType' is not valid.")
        now = int(self.now_ms())
        order = Order(self._new_order_id(), client_id, symbol, side, qty, _bool(p, "reduceOnly"), now)
        plan = self._plan(order)
        ack = order_json(order, rules.quantity_precision)
        self._register(order, now)
        self._apply(order, plan, now)
        return ack if response_type == "ACK" else order_json(order, rules.quantity_precision)

    def _find_order(self, p: Params) -> Order:
        symbol, _ = self._symbol(p)
        order_id = p.get("orderId")
        client_id = p.get("origClientOrderId")
        if not order_id and not client_id:
            raise BinanceError(
                -1102, "Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!"
            )
        key = (
            _parse_int("orderId", order_id)
            if order_id
            else self._order_by_client.get((symbol, str(client_id)))
        )
        order = self.orders.get(key) if key is not None else None
        if order is None or order.symbol != symbol or (client_id and order.client_order_id != client_id):
            raise BinanceError(-2013, "Order does not exist.")
        return order

    def _get_order(self, p: Params) -> dict[str, Any]:
        order = self._find_order(p)
        return order_json(order, self.rules[order.symbol].quantity_precision)

    def _cancel_order(self, p: Params) -> dict[str, Any]:
        order = self._find_order(p)
        if order.status not in _OPEN:
            raise BinanceError(-2011, "Unknown order sent.")
        return self._cancel(order)  # MARKET orders fill at once: nothing reaches this today

    def _cancel(self, order: Order) -> dict[str, Any]:
        now = int(self.now_ms())
        order.status, order.update_ms = "CANCELED", now
        qp = self.rules[order.symbol].quantity_precision
        self.publish_user(order_trade_update(order, qp, now, "CANCELED"))
        return order_json(order, qp)

    def _open_orders(self, p: Params) -> list[dict[str, Any]]:
        symbol = self._symbol(p)[0] if p.get("symbol") else None
        return [order_json(o, self.rules[o.symbol].quantity_precision) for o in self.orders.values()
                if o.status in _OPEN and symbol in (None, o.symbol)]  # fmt: skip

    def _all_orders(self, p: Params) -> list[dict[str, Any]]:
        symbol, rules = self._symbol(p)
        rows = [o for o in self.orders.values() if o.symbol == symbol]
        return [order_json(o, rules.quantity_precision) for o in rows[-_limit(p, 500, 1000) :]]

    def _cancel_all_orders(self, p: Params) -> dict[str, Any]:
        symbol, _ = self._symbol(p)
        for order in [o for o in self.orders.values() if o.symbol == symbol and o.status in _OPEN]:
            self._cancel(order)
        return dict(_CANCEL_ALL)

    def _user_trades(self, p: Params) -> list[dict[str, Any]]:
        symbol, rules = self._symbol(p)
        rows = [f for f in self.fills if f.symbol == symbol]
        return [trade_json(f, rules.quantity_precision) for f in rows[-_limit(p, 500, 1000) :]]

    # --- algo orders -------------------------------------------------------------------------------
    def _new_algo(self, p: Params) -> dict[str, Any]:
        self._take_rejection()
        if _required(p, "algoType") != "CONDITIONAL":
            raise BinanceError(
                -1130, "Data sent for parameter 'algoType' is not valid; only CONDITIONAL is supported."
            )
        symbol, rules = self._symbol(p)
        side = _side(p)
        order_type = _required(p, "type")
        if order_type not in ALGO_TYPES:
            raise BinanceError(
                -1116, f"Invalid orderType. The replay venue's algo orders are {' and '.join(ALGO_TYPES)}."
            )
        _position_side(p)
        working_type = p.get("workingType", "CONTRACT_PRICE")
        if working_type not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise BinanceError(-4031, f"Invalid parameter working type: {working_type}")
        close_position = _bool(p, "closePosition")
        reduce_only = _bool(p, "reduceOnly")
        if close_position and p.get("quantity"):
            raise BinanceError(-1106, "Parameter 'quantity' sent when not required.")
        if close_position and reduce_only:
            raise BinanceError(-1106, "Parameter 'reduceOnly' sent when not required.")
        qty = ZERO if close_position else _quantity(p, rules)
        trigger = _trigger_price(p, rules)
        client_id = self._client_id(p, "clientAlgoId")
        if any(a.client_algo_id == client_id and a.status == "NEW" for a in self.algos.values()):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        now = int(self.now_ms())
        algo = AlgoOrder(
            self._next_algo_id, client_id, symbol, side, order_type, qty, close_position, reduce_only, trigger,
            working_type, _bool(p, "priceProtect"), "GTE_GTC" if close_position else p.get("timeInForce", "GTC"),
            now, update_ms=now,
        )  # fmt: skip
        mark, last = self.marks.get(symbol, (_NAN, _NAN))
        current = mark if working_type == "MARK_PRICE" else last
        if math.isfinite(current) and algo.triggered_by(current):
            raise BinanceError(-2021, "Order would immediately trigger.")
        if qty and not reduce_only and qty * trigger < rules.min_notional:
            raise BinanceError(-4164, _notional_msg(rules))
        self._next_algo_id += 1
        self.algos[algo.algo_id] = algo
        self._algo_by_client[client_id] = algo.algo_id
        self.publish_user(algo_update(algo, rules.quantity_precision, now))
        return algo_json(algo, rules.quantity_precision)

    def _find_algo(self, p: Params) -> AlgoOrder:
        algo_id, client_id = p.get("algoId"), p.get("clientAlgoId")
        if not algo_id and not client_id:
            raise BinanceError(
                -1102, "Param 'algoId' or 'clientAlgoId' must be sent, but both were empty/null!"
            )
        key = _parse_int("algoId", algo_id) if algo_id else self._algo_by_client.get(str(client_id))
        algo = self.algos.get(key) if key is not None else None
        if algo is None or (client_id and algo.client_algo_id != client_id):
            raise BinanceError(-2013, "Order does not exist.")
        return algo

    def _get_algo(self, p: Params) -> dict[str, Any]:
        algo = self._find_algo(p)
        return algo_json(algo, self.rules[algo.symbol].quantity_precision)

    def _cancel_algo(self, p: Params) -> dict[str, Any]:
        algo = self._find_algo(p)
        if algo.status != "NEW":
            raise BinanceError(-2011, "Unknown order sent.")
        self._end_algo(algo, "CANCELED", int(self.now_ms()))
        return {"algoId": algo.algo_id, "clientAlgoId": algo.client_algo_id, "code": "200", "msg": "success"}

    def _open_algos(self, p: Params) -> list[dict[str, Any]]:
        symbol = self._symbol(p)[0] if p.get("symbol") else None
        return [algo_json(a, self.rules[a.symbol].quantity_precision) for a in self.algos.values()
                if a.status == "NEW" and symbol in (None, a.symbol)]  # fmt: skip

    def _all_algos(self, p: Params) -> list[dict[str, Any]]:
        symbol, rules = self._symbol(p)
        rows = [a for a in self.algos.values() if a.symbol == symbol]
        return [algo_json(a, rules.quantity_precision) for a in rows[-_limit(p, 500, 1000) :]]

    def _cancel_all_algos(self, p: Params) -> dict[str, Any]:
        symbol, _ = self._symbol(p)
        now = int(self.now_ms())
        for algo in [a for a in self.algos.values() if a.symbol == symbol and a.status == "NEW"]:
            self._end_algo(algo, "CANCELED", now)
        return dict(_CANCEL_ALL)

    def _end_algo(self, algo: AlgoOrder, status: str, ts_ms: int, reason: str = "") -> None:
        algo.status, algo.update_ms, algo.reject_reason = status, ts_ms, reason
        self.publish_user(algo_update(algo, self.rules[algo.symbol].quantity_precision, ts_ms))

    def _trigger(self, algo: AlgoOrder, ts_ms: int) -> None:
        """Fire ``algo``: TRIGGERING, then its child MARKET order (TRIGGERED with ``ai``), then FINISHED."""
        qp = self.rules[algo.symbol].quantity_precision
        algo.trigger_ms = ts_ms
        self._end_algo(algo, "TRIGGERING", ts_ms)
        position = self._position(algo.symbol)
        qty = abs(position.amount) if algo.close_position else algo.quantity
        child = Order(
            self._next_order_id, algo.client_algo_id, algo.symbol, algo.side, qty,
            algo.reduce_only or algo.close_position, ts_ms, orig_type=algo.order_type,
            stop_price=algo.trigger_price, working_type=algo.working_type, close_position=algo.close_position,
        )  # fmt: skip
        try:
            if not qty:
                raise BinanceError(-2022, "ReduceOnly Order is rejected.")
            plan = self._plan(child)
        except BinanceError as e:
            self._end_algo(algo, "REJECTED", ts_ms, e.msg)
            return
        self._new_order_id()
        algo.actual_order_id = child.order_id
        self._end_algo(algo, "TRIGGERED", ts_ms)
        self._register(child, ts_ms)
        self._apply(child, plan, ts_ms)
        algo.executed_qty, algo.avg_price = child.executed_qty, child.avg_price
        algo.status, algo.update_ms = "FINISHED", ts_ms
        self.publish_user(algo_update(algo, qp, ts_ms))

    # --- fills -------------------------------------------------------------------------------------
    def _plan(self, order: Order) -> tuple[Decimal, Decimal, float]:
        """Check ``order`` against the book, filters and margin; return (closing qty, opening qty, fill price).

        Raises the BinanceError Binance would answer; changes nothing.
        """
        rules = self.rules[order.symbol]
        quote = self.quotes.get(order.symbol)
        if quote is None:
            raise BinanceError(
                -2020, f"Unable to fill. The replay venue has no bid/ask for {order.symbol} yet."
            )
        d = SIDE_SIGN[order.side]
        reference = quote[1] if d > 0 else quote[0]
        position = self._position(order.symbol)
        closing = min(order.orig_qty, abs(position.amount)) if position.amount * d < 0 else ZERO
        if order.reduce_only and not closing:
            raise BinanceError(-2022, "ReduceOnly Order is rejected.")
        qty = closing if order.reduce_only else order.orig_qty
        opening = qty - closing
        mark = self.marks.get(order.symbol, (reference, reference))[0]
        if not order.reduce_only and qty * exact_decimal(mark) < rules.min_notional:
            raise BinanceError(-4164, _notional_msg(rules))
        price = self._fill_price(reference, d, float(qty))
        if opening:
            fee = self.config.fee_rate * float(qty) * price
            released = position.margin * float(closing) / abs(float(position.amount)) if closing else 0.0
            realized = -d * float(closing) * (price - position.entry_price) if closing else 0.0
            available = self.wallet - self.used_margin + released + realized - fee
            if float(opening) * price / position.leverage > available:
                raise BinanceError(-2019, "Margin is insufficient.")
            bracket = bracket_for(rules.brackets, float(abs(position.amount + d * qty)) * price)
            if bracket is None or position.leverage > bracket.max_leverage:
                raise BinanceError(-2027, "Exceeded the maximum allowable position at current leverage.")
        return closing, opening, price

    def _fill_price(self, reference: float, d: int, qty: float) -> float:
        # the simulator's realtime fill: no ATR part, impact on an unknown bar volume (participation 1)
        s = fill_slippage(0.0, self.config.impact_k, qty * reference, _NAN)
        return float(entry_fill_price(reference, d, s))

    def _apply(self, order: Order, plan: tuple[Decimal, Decimal, float], ts_ms: int) -> None:
        """Book a planned fill: position, margin, wallet, fill log; then TRADE and ACCOUNT_UPDATE events."""
        closing, opening, price = plan
        rules = self.rules[order.symbol]
        position = self._position(order.symbol)
        d = SIDE_SIGN[order.side]
        qty = closing + opening
        fee = self.config.fee_rate * float(qty) * price
        realized = -d * float(closing) * (price - position.entry_price) if closing else 0.0
        was_open = bool(position.amount)
        if closing:
            left = float(abs(position.amount) - closing) / float(abs(position.amount))
            position.margin *= left
            position.open_fees *= left
            position.amount += d * closing
            if not position.amount:
                position.entry_price = position.margin = position.open_fees = 0.0
        if opening:
            held = float(abs(position.amount))
            position.entry_price = (held * position.entry_price + float(opening) * price) / (
                held + float(opening)
            )
            position.amount += d * opening
            position.margin += float(opening) * price / position.leverage
            position.open_fees += fee * float(opening) / float(qty)
        self._set_bracket(order.symbol, position)
        position.realized += realized
        position.update_ms = ts_ms
        self.wallet += realized - fee
        fill = Fill(
            self._next_trade_id, order.order_id, order.symbol, order.side, qty, price, fee, realized, ts_ms
        )
        self._next_trade_id += 1
        self.fills.append(fill)
        order.executed_qty, order.cum_quote, order.update_ms = qty, float(qty) * price, ts_ms
        order.status = "FILLED" if qty == order.orig_qty else "PARTIALLY_FILLED"
        qp = rules.quantity_precision
        self.publish_user(order_trade_update(order, qp, ts_ms, "TRADE", fill=fill))
        if order.status == "PARTIALLY_FILLED":  # a reduce-only order larger than the position
            order.status = "EXPIRED"
            self.publish_user(order_trade_update(order, qp, ts_ms, "EXPIRED"))
        self._publish_account(order.symbol, ts_ms)
        if was_open and not position.amount:
            self._expire_close_position(order.symbol, ts_ms)

    def _check_liquidation(self, symbol: str, ts_ms: int, mark: float) -> None:
        position = self._position(symbol)
        side = position.side
        if not side:
            return
        qty = abs(float(position.amount))
        liq = float(
            liquidation_price(side, qty, position.entry_price, position.margin, position.mmr, position.cum)
        )
        if (side > 0 and mark > liq) or (side < 0 and mark < liq):
            return
        # the simulator's liquidation: filled at the liquidation price, the clearance fee takes what
        # margin is left there, so the wallet loses exactly the position's isolated margin
        realized = side * qty * (liq - position.entry_price)
        clearance = max(position.margin + realized, 0.0)
        order = Order(
            self._new_order_id(), f"autoclose-{ts_ms}", symbol, "SELL" if side > 0 else "BUY",
            abs(position.amount), True, ts_ms, orig_type="LIMIT", status="FILLED",
            executed_qty=abs(position.amount), cum_quote=qty * liq, update_ms=ts_ms,
        )  # fmt: skip
        fill = Fill(self._next_trade_id, order.order_id, symbol, order.side, order.orig_qty, liq, clearance,
                    realized, ts_ms)  # fmt: skip
        self._next_trade_id += 1
        self.fills.append(fill)
        self.orders[order.order_id] = order
        self.wallet += realized - clearance
        position.realized += realized
        position.amount = ZERO
        position.entry_price = position.margin = position.open_fees = 0.0
        position.update_ms = ts_ms
        qp = self.rules[symbol].quantity_precision
        self.publish_user(order_trade_update(order, qp, ts_ms, "CALCULATED", fill=fill, order_type="LIMIT",
                                             time_in_force="IOC"))  # fmt: skip
        self._publish_account(symbol, ts_ms)
        self._expire_close_position(symbol, ts_ms)

    def _expire_close_position(self, symbol: str, ts_ms: int) -> None:
        for algo in [
            a for a in self.algos.values() if a.symbol == symbol and a.status == "NEW" and a.close_position
        ]:
            self._end_algo(algo, "EXPIRED", ts_ms)

    def _set_bracket(self, symbol: str, position: PaperPosition) -> None:
        notional = float(abs(position.amount)) * position.entry_price
        bracket = bracket_for(self.rules[symbol].brackets, notional) or self.rules[symbol].brackets[-1]
        position.mmr, position.cum = bracket.maint_margin_rate, bracket.maint_amount_usdt

    # --- account -----------------------------------------------------------------------------------
    @property
    def used_margin(self) -> float:
        """Isolated margin of the open positions, USDT."""
        return sum(p.margin for p in self.positions.values())

    def mark_price(self, symbol: str) -> float:
        """The last mark of ``symbol``; without one the mid of the book, else 0."""
        if symbol in self.marks:
            return self.marks[symbol][0]
        bid, ask = self.quotes.get(symbol, (0.0, 0.0))
        return (bid + ask) / 2

    def _position(self, symbol: str) -> PaperPosition:
        position = self.positions.get(symbol)
        if position is None:
            position = self.positions[symbol] = PaperPosition(leverage=self.config.default_leverage)
        return position

    def _publish_account(self, symbol: str, ts_ms: int) -> None:
        position = self._position(symbol)
        rules = self.rules[symbol]
        row = (symbol, position, self.mark_price(symbol), self.config.fee_rate, rules.quantity_precision)
        self.publish_user(account_update(ts_ms, self.wallet, self.wallet - self.used_margin, [row]))

    def _view(self) -> acct.AccountView:
        return acct.AccountView(self.wallet, self.config.fee_rate, self.positions, self.rules, self.mark_price,
                                int(self.now_ms()))  # fmt: skip

    def _position_risk_v2(self, p: Params) -> list[dict[str, Any]]:
        symbols = [self._symbol(p)[0]] if p.get("symbol") else list(self.rules)
        view = self._view()
        return [acct.position_risk_v2(view, s, self._position(s)) for s in symbols]

    def _position_risk_v3(self, p: Params) -> list[dict[str, Any]]:
        symbols = [self._symbol(p)[0]] if p.get("symbol") else list(self.positions)
        view = self._view()
        return [acct.position_risk_v3(view, s, self.positions[s]) for s in symbols
                if s in self.positions and self.positions[s].amount]  # fmt: skip

    def _account_v2(self, p: Params) -> dict[str, Any]:
        return acct.account_v2(self._view(), {s: self._position(s) for s in self.rules})

    def _account_v3(self, p: Params) -> dict[str, Any]:
        return acct.account_v3(self._view())

    def _balance(self, p: Params) -> list[dict[str, Any]]:
        return acct.balance(self._view())

    def _leverage(self, p: Params) -> dict[str, Any]:
        symbol, rules = self._symbol(p)
        leverage = _int_param(p, "leverage")
        position = self._position(symbol)
        notional = float(abs(position.amount)) * self.mark_price(symbol)
        allowed = [b for b in rules.brackets if b.max_leverage >= leverage and b.notional_cap_usdt > notional]
        if not 1 <= leverage <= 125 or not allowed:
            raise BinanceError(-4028, f"Leverage {leverage} is not valid")
        position.leverage = leverage  # margin of an open position is kept; new opens use the new leverage
        cap = max(b.notional_cap_usdt for b in allowed)
        return {"leverage": leverage, "maxNotionalValue": acct.number_str(cap), "symbol": symbol}

    def _margin_type(self, p: Params) -> dict[str, Any]:
        self._symbol(p)
        margin_type = _required(p, "marginType")
        if margin_type == "ISOLATED":
            raise BinanceError(-4046, "No need to change margin type.")
        raise BinanceError(-1130, "Data sent for parameter 'marginType' is not valid. "
                                  "The replay venue models isolated margin only.")  # fmt: skip

    # --- listenKey ---------------------------------------------------------------------------------
    def _listen_key_new(self, p: Params) -> dict[str, Any]:
        now = self._wall_ms()
        live = [k for k, expiry in self._listen_keys.items() if expiry > now]
        key = live[0] if live else secrets.token_hex(32)  # Binance answers the live key, extended
        self._listen_keys[key] = now + LISTEN_KEY_LIFE_MS
        return {"listenKey": key}

    def _listen_key_keepalive(self, p: Params) -> dict[str, Any]:
        now = self._wall_ms()
        key = p.get("listenKey") or next((k for k, e in self._listen_keys.items() if e > now), "")
        if not self.listen_key_valid(key):
            raise BinanceError(-1125, "This listenKey does not exist.")
        self._listen_keys[key] = now + LISTEN_KEY_LIFE_MS
        return {"listenKey": key}

    def _listen_key_close(self, p: Params) -> dict[str, Any]:
        key = p.get("listenKey")
        if key:
            self._listen_keys.pop(key, None)
        else:
            self._listen_keys.clear()
        return {}

    # --- helpers -----------------------------------------------------------------------------------
    def _take_rejection(self) -> None:
        with self._rejections_lock:
            if not self._rejections:
                return
            code, msg = self._rejections.pop(0)
        status = 503 if code in _UNKNOWN_OUTCOME_CODES else 429 if code in (-1003, -1015) else 400
        raise BinanceError(code, msg, status=status)

    def _symbol(self, p: Params) -> tuple[str, SymbolRules]:
        symbol = _required(p, "symbol")
        rules = self.rules.get(symbol)
        if rules is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return symbol, rules

    def _client_id(self, p: Params, name: str) -> str:
        client_id = p.get(name) or f"venue-{secrets.token_hex(11)}"
        if not _CLIENT_ID.match(client_id):
            raise BinanceError(
                -4015, f"Client order id is not valid: {name} must match ^[.A-Z:/a-z0-9_-]{{1,36}}$."
            )
        return client_id

    def _new_order_id(self) -> int:
        order_id = self._next_order_id
        self._next_order_id += 1
        return order_id

    def _register(self, order: Order, ts_ms: int) -> None:
        self.orders[order.order_id] = order
        self._order_by_client[(order.symbol, order.client_order_id)] = order.order_id
        self.publish_user(
            order_trade_update(order, self.rules[order.symbol].quantity_precision, ts_ms, "NEW")
        )


# --- parameters ------------------------------------------------------------------------------------
def _required(p: Params, name: str) -> str:
    value = p.get(name)
    if value is None or value == "":
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return str(value)


def _parse_int(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 20:
        raise BinanceError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        )
    return int(value)


def _int_param(p: Params, name: str, default: int | None = None) -> int:
    if default is not None and not p.get(name):
        return default
    return _parse_int(name, _required(p, name))


def _limit(p: Params, default: int, maximum: int) -> int:
    limit = _int_param(p, "limit", default)
    if not 1 <= limit <= maximum:
        raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
    return limit


def _bool(p: Params, name: str) -> bool:
    value = p.get(name, "false").lower()
    if value not in ("true", "false"):
        raise BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")
    return value == "true"


def _side(p: Params) -> str:
    side = _required(p, "side")
    if side not in SIDE_SIGN:
        raise BinanceError(-1117, "Invalid side.")
    return side


def _position_side(p: Params) -> None:
    if p.get("positionSide", "BOTH") != "BOTH":
        raise BinanceError(-4061, "Order's position side does not match user's setting.")


def _decimal(p: Params, name: str) -> Decimal:
    raw = _required(p, name)
    if not _DECIMAL.match(raw):
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                  "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")  # fmt: skip
    try:
        return Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.") from None


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _quantity(p: Params, rules: SymbolRules) -> Decimal:
    """Parse ``quantity`` and check it against MARKET_LOT_SIZE and quantityPrecision."""
    qty = _decimal(p, "quantity")
    if qty <= 0:
        raise BinanceError(-4003, "Quantity less than or equal to zero.")
    if _places(qty) > rules.quantity_precision:
        raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
    if qty < rules.min_qty:
        raise BinanceError(-4004, f"Quantity less than min quantity ({rules.min_qty}).")
    if qty > rules.max_qty:
        raise BinanceError(-4005, f"Quantity greater than max quantity ({rules.max_qty}).")
    if rules.step and (qty - rules.min_qty) % rules.step:
        raise BinanceError(-4023, f"Qty not increased by step size ({rules.step}).")
    return qty


def _trigger_price(p: Params, rules: SymbolRules) -> Decimal:
    """Parse ``triggerPrice`` and check it against PRICE_FILTER and pricePrecision."""
    price = _decimal(p, "triggerPrice")
    if price <= 0:
        raise BinanceError(-4006, "Stop price less than zero.")
    if _places(price) > rules.price_precision:
        raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
    if price < rules.min_price:
        raise BinanceError(-4013, f"Price less than min price ({rules.min_price}).")
    if price > rules.max_price:
        raise BinanceError(-4007, f"Stop price greater than max price ({rules.max_price}).")
    if rules.tick and (price - rules.min_price) % rules.tick:
        raise BinanceError(-4014, f"Price not increased by tick size ({rules.tick}).")
    return price


def _notional_msg(rules: SymbolRules) -> str:
    return f"Order's notional must be no smaller than {rules.min_notional:f} (unless you choose reduce only)."


def _strip_signature(raw: str) -> str:
    return "&".join(part for part in raw.split("&") if part and not part.startswith("signature="))
