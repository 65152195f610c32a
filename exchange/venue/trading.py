"""The replay venue's order side: a paper broker speaking Binance USDⓈ-M's signed REST and user data.

``PaperBroker`` is protocol and order state over one book: its USDT account of one-way isolated
positions is a ``core.sim.FillSimulator`` (``broker.book``), the same kernel the backtester, the
shadow book and the RL environment run. A MARKET order is the book's ``fill_order``: a BUY fills at
the best ask, a SELL at the best bid, each worse by ``fill_slippage`` (no ATR part, the impact part on
an unknown bar volume, i.e. ``impact_k``), paying ``fee_rate`` of the fill's notional as taker fee; it
reduces an opposite position (all of it, or a part), then opens or adds the rest (an add averages the
entry price; a larger order flips the position); isolated margin is notional / leverage, the bracket
and liquidation price are the kernel's, realized PnL ``side·qty·(exit − entry)``. Marks go to the
book's ``on_mark``, which liquidates at the liquidation price as the simulator does. A round trip
therefore books exactly the simulator's trade PnL for the same prices. The broker keeps what Binance
shows besides: position amounts as exact Decimals, each symbol's leverage setting, the realized PnL
per symbol ("cr"), orders, algo orders and fills, and the user-data events.

Orders. ``/fapi/v1/order`` takes MARKET only: conditional types answer -4120 as Binance does since
2025-12, LIMIT is refused (the venue has best bid/ask, not a book to rest an order in). A reduceOnly
MARKET order larger than the position fills the position and EXPIRES the rest. newOrderRespType
defaults to ACK as on Binance: the answer shows the order NEW, before its fill. Client ids must be
unique among open orders only (-4116). Conditional orders (``exchange.venue.trading_algos``) trigger
on the mark or the last price; the broker places each triggered one's child MARKET order in the book.

Account modes. One-way and single-asset by default; ``/fapi/v1/positionSide/dual`` and
``/fapi/v1/multiAssetsMargin`` read and switch them (``trading_protocol.AccountModes``), and in hedge
mode every new order is refused (-4061) since the book is one-way. Order placements answer the
order-rate headers ``X-MBX-ORDER-COUNT-10S``/``-1M``.

Authentication, listenKeys and parameters: ``exchange.venue.trading_protocol``. User-data events
(ORDER_TRADE_UPDATE, ALGO_UPDATE, ACCOUNT_UPDATE after every fill) go to ``publish_user`` stamped with
the venue clock. Funding is not settled here. Everything runs on the venue's event loop, except
``reject_next``, ``hide_algo_orders`` and ``expire_listen_keys``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web

from core.sim import FillSimulator, LeverageBracket, SimConfig
from core.sim import SymbolRules as BookRules
from core.sim.orders import OrderFill
from exchange.venue import trading_events as acct
from exchange.venue import trading_protocol as proto
from exchange.venue.state import STATE, BinanceError
from exchange.venue.trading_algos import AlgoOrders
from exchange.venue.trading_events import (
    SIDE_SIGN,
    ZERO,
    AlgoOrder,
    Fill,
    Order,
    PaperPosition,
    SymbolRules,
    account_update,
    algo_update,
    exact_decimal,
    order_json,
    order_trade_update,
    symbol_rules,
)
from exchange.venue.trading_orders import OrderState
from exchange.venue.trading_protocol import SIGNED, USER_STREAM, Params

CONDITIONAL_TYPES = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
#: The book's exit reason of an order's closing part, by the order's (or its algo's) type.
_EXIT_REASON = {"STOP_MARKET": "SL", "TAKE_PROFIT_MARKET": "TP"}
#: The book's refusals as Binance answers them, in the order Binance checks.
_REFUSALS = (
    ("INSUFFICIENT_MARGIN", -2019, "Margin is insufficient."),
    ("LEVERAGE_BRACKET", -2027, "Exceeded the maximum allowable position at current leverage."),
    ("INVALID_ORDER", -2022, "ReduceOnly Order is rejected."),
)


@dataclass(frozen=True, slots=True)
class _Plan:
    # an order checked against the filters and the book, not filled yet
    qty: Decimal  # what fills: the order's quantity, or what a reduce-only order can close
    reference: float  # the touch it fills at before slippage: the ask for a BUY, the bid for a SELL
    mark: float | None


class PaperBroker:
    """Binance USDⓈ-M's account and order endpoints over one ``core.sim`` book (module docstring).

    ``now_ms`` is the venue (replay) clock that stamps orders and events; ``publish_user`` receives
    each user-data event. ``wall_ms`` (default: the system clock) times recvWindow and listenKeys.
    ``leverage_brackets`` by symbol (default ``DEFAULT_BRACKETS``). ``book`` is the account: a
    ``FillSimulator`` of every TRADING symbol holding ``initial_usdt``.
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
        self.config = (sim_config or SimConfig()).model_copy(
            update={"initial_equity_usdt": float(initial_usdt)}
        )
        self.book = FillSimulator(
            list(self.rules), self.config,
            rules={s: BookRules(filters=r.filters, brackets=r.brackets) for s, r in self.rules.items()},
        )  # fmt: skip
        wall = wall_ms or (lambda: int(time.time() * 1000))
        self._auth = proto.RequestAuth(api_key, api_secret, wall)
        self._listen_keys = proto.ListenKeys(wall)
        self._rejections = proto.Rejections()
        self.modes = proto.AccountModes(self._exposure)
        self._order_counts = proto.OrderCounts(wall)
        self.marks: dict[str, tuple[float, float]] = {}  # symbol → (mark, last)
        self.algo_orders = AlgoOrders(self.rules, now_ms, publish_user, self.marks, self._rejections)
        self.positions: dict[str, PaperPosition] = {}
        self.quotes: dict[str, tuple[float, float]] = {}  # symbol → (bid, ask)
        self.order_state = OrderState(self.rules, now_ms, publish_user)
        self._book_ms = 0  # the book takes events in time order; venue clock and ticks may interleave

    # --- the market side's hooks -------------------------------------------------------------------
    def on_book(self, symbol: str, ts_ms: int, bid: float, ask: float) -> None:
        """Take ``symbol``'s best bid/ask (the prices MARKET orders fill at); bad quotes are ignored."""
        if symbol in self.rules and 0 < bid <= ask and math.isfinite(ask):
            self.quotes[symbol] = (float(bid), float(ask))

    def on_mark(self, symbol: str, ts_ms: int, mark: float, last: float) -> None:
        """Take a mark/last update at ``ts_ms``: the book's liquidation first, then algo triggers.

        MARK_PRICE algo orders compare ``mark`` with their trigger, CONTRACT_PRICE ones ``last``;
        triggered orders run in the order they were placed. Non-positive or NaN prices are ignored.
        """
        if symbol not in self.rules or not (mark > 0 and math.isfinite(mark)):
            return
        if not (last > 0 and math.isfinite(last)):
            last = self.marks.get(symbol, (mark, mark))[1]
        self.marks[symbol] = (float(mark), float(last))
        held = bool(self._position(symbol).amount)
        if held and self.book.on_mark(symbol, self._book_time(int(ts_ms)), float(mark)) == "LIQUIDATION":
            self._liquidated(symbol, int(ts_ms))
        for algo in self.algo_orders.open_of(symbol):
            if algo.status == "NEW" and algo.triggered_by(
                mark if algo.working_type == "MARK_PRICE" else last
            ):
                self._trigger(algo, int(ts_ms))

    def listen_key_valid(self, key: str) -> bool:
        """Whether ``key`` is a live listenKey (created, not closed, kept alive within 60 minutes)."""
        return self._listen_keys.valid(key)

    def expire_listen_keys(self) -> list[str]:
        """Expire every live listenKey now (thread-safe): each key's connections get ``listenKeyExpired``
        (``E`` a digit string, as Binance documents it) and nothing more; a keepalive answers -1125."""
        keys = self._listen_keys.expire_all()
        for key in keys:
            self.publish_user({"e": "listenKeyExpired", "E": str(int(self.now_ms())), "listenKey": key})
        return keys

    def reject_next(self, code: int, msg: str, n: int = 1, kind: str | None = None) -> None:
        """Answer the next ``n`` new orders (order and algoOrder) with Binance error ``code``/``msg``.

        Thread-safe. Codes of unknown execution status (-1000, -1001, -1006, -1007, -1008) answer
        HTTP 503, -1003/-1015 HTTP 429, others 400. The order is not placed.
        """
        self._rejections.add(code, msg, n, kind)

    def hide_algo_orders(self, seconds: float, n: int = 1) -> None:
        """Place the next ``n`` new algo orders as usual, but hide each from ``GET /fapi/v1/algoOrder``
        (-2013), ``openAlgoOrders`` and ``allAlgoOrders`` until ``seconds`` of the venue clock have passed
        since it was placed (``trading_algos``). Thread-safe."""
        self.algo_orders.hide_next(seconds, n)

    # --- routes ------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        """Add the account, order, algo order and listenKey routes to the venue application."""
        routes: tuple[tuple[str, str, Callable[[Params], Any], int, int], ...] = (
            ("POST", "/fapi/v1/order", self._new_order, 0, SIGNED),
            ("GET", "/fapi/v1/order", self.order_state.get, 1, SIGNED),
            ("DELETE", "/fapi/v1/order", self.order_state.cancel, 1, SIGNED),
            ("GET", "/fapi/v1/openOrders", self.order_state.open, 1, SIGNED),
            ("GET", "/fapi/v1/allOrders", self.order_state.all, 5, SIGNED),
            ("DELETE", "/fapi/v1/allOpenOrders", self.order_state.cancel_all, 1, SIGNED),
            ("GET", "/fapi/v1/userTrades", self.order_state.user_trades, 5, SIGNED),
            ("POST", "/fapi/v1/algoOrder", self.algo_orders.new, 0, SIGNED),
            ("GET", "/fapi/v1/algoOrder", self.algo_orders.get, 1, SIGNED),
            ("DELETE", "/fapi/v1/algoOrder", self.algo_orders.cancel, 1, SIGNED),
            ("GET", "/fapi/v1/openAlgoOrders", self.algo_orders.open, 1, SIGNED),
            ("GET", "/fapi/v1/allAlgoOrders", self.algo_orders.all, 5, SIGNED),
            ("DELETE", "/fapi/v1/algoOpenOrders", self.algo_orders.cancel_all, 1, SIGNED),
            ("GET", "/fapi/v2/positionRisk", self._position_risk_v2, 5, SIGNED),
            ("GET", "/fapi/v3/positionRisk", self._position_risk_v3, 5, SIGNED),
            ("GET", "/fapi/v2/account", self._account_v2, 5, SIGNED),
            ("GET", "/fapi/v3/account", self._account_v3, 5, SIGNED),
            ("GET", "/fapi/v2/balance", self._balance, 5, SIGNED),
            ("GET", "/fapi/v3/balance", self._balance, 5, SIGNED),
            ("POST", "/fapi/v1/leverage", self._leverage, 1, SIGNED),
            ("POST", "/fapi/v1/marginType", self._margin_type, 1, SIGNED),
            ("GET", "/fapi/v1/positionSide/dual", self.modes.get_dual, 30, SIGNED),
            ("POST", "/fapi/v1/positionSide/dual", self.modes.set_dual, 1, SIGNED),
            ("GET", "/fapi/v1/multiAssetsMargin", self.modes.get_multi_assets, 30, SIGNED),
            ("POST", "/fapi/v1/multiAssetsMargin", self.modes.set_multi_assets, 1, SIGNED),
            ("POST", "/fapi/v1/listenKey", self._listen_keys.new, 1, USER_STREAM),
            ("PUT", "/fapi/v1/listenKey", self._listen_keys.keepalive, 1, USER_STREAM),
            ("DELETE", "/fapi/v1/listenKey", self._listen_keys.close, 1, USER_STREAM),
        )
        for method, path, handler, weight, security in routes:
            placement = method == "POST" and path in ("/fapi/v1/order", "/fapi/v1/algoOrder")
            app.router.add_route(method, path, self._endpoint(handler, weight, security, placement))

    def _endpoint(
        self, handler: Callable[[Params], Any], weight: int, security: int, placement: bool = False
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            if STATE in request.app:
                request.app[STATE].charge(request.path, weight)
            params = await self._auth.params(request, security)
            if not placement:
                return web.json_response(handler(params))
            counts = self._order_counts.add()
            try:
                self.modes.check_order()
                response = web.json_response(handler(params))
            except BinanceError as e:
                e.headers = {**e.headers, **counts}
                raise
            response.headers.update(counts)
            return response

        return serve

    def _exposure(self) -> tuple[bool, bool]:
        has_position = any(p.amount for p in self.positions.values())
        has_orders = any(o.status in ("NEW", "PARTIALLY_FILLED") for o in self.orders.values()) or any(
            a.status == "NEW" for a in self.algos.values()
        )
        return has_position, has_orders

    # --- orders ------------------------------------------------------------------------------------
    def _new_order(self, p: Params) -> dict[str, Any]:
        self._rejections.take("order")
        symbol, rules = self._symbol(p)
        side = proto.side_param(p)
        order_type = proto.required(p, "type")
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
        proto.check_position_side(p)
        if proto.bool_param(p, "closePosition"):
            raise BinanceError(-1106, "Parameter 'closePosition' sent when not required.")
        client_id = proto.client_id(p, "newClientOrderId")
        if self.order_state.client_id_open(client_id):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        qty = proto.quantity(p, rules)
        response_type = p.get("newOrderRespType", "ACK")
        if response_type not in ("ACK", "RESULT"):
            raise BinanceError(-1130, "Data sent for parameter 'newOrderRespType' is not valid.")
        now = int(self.now_ms())
        order = Order(
            self.order_state.new_order_id(),
            client_id,
            symbol,
            side,
            qty,
            proto.bool_param(p, "reduceOnly"),
            now,
        )
        plan = self._plan(order)
        ack = order_json(order, rules.quantity_precision)
        self.order_state.register(order, now)
        self._apply(order, plan, now)
        return ack if response_type == "ACK" else order_json(order, rules.quantity_precision)

    def _trigger(self, algo: AlgoOrder, ts_ms: int) -> None:
        """Fire ``algo``: TRIGGERING, then its child MARKET order (TRIGGERED with ``ai``), then FINISHED."""
        qp = self.rules[algo.symbol].quantity_precision
        algo.trigger_ms = ts_ms
        self.algo_orders.end(algo, "TRIGGERING", ts_ms)
        position = self._position(algo.symbol)
        qty = abs(position.amount) if algo.close_position else algo.quantity
        child = Order(
            self.order_state.next_order_id, algo.client_algo_id, algo.symbol, algo.side, qty,
            algo.reduce_only or algo.close_position, ts_ms, orig_type=algo.order_type,
            stop_price=algo.trigger_price, working_type=algo.working_type, close_position=algo.close_position,
        )  # fmt: skip
        try:
            if not qty:
                raise BinanceError(-2022, "ReduceOnly Order is rejected.")
            plan = self._plan(child)
        except BinanceError as e:
            self.algo_orders.end(algo, "REJECTED", ts_ms, e.msg)
            return
        self.order_state.new_order_id()
        algo.actual_order_id = child.order_id
        self.algo_orders.end(algo, "TRIGGERED", ts_ms)
        self.order_state.register(child, ts_ms)
        self._apply(child, plan, ts_ms)
        algo.executed_qty, algo.avg_price = child.executed_qty, child.avg_price
        algo.status, algo.update_ms = "FINISHED", ts_ms
        self.publish_user(algo_update(algo, qp, ts_ms))

    # --- fills -------------------------------------------------------------------------------------
    def _plan(self, order: Order) -> _Plan:
        """Check ``order`` against the filters and (dry) the book; raise what Binance would answer.

        Changes nothing.
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
        mark = self.marks[order.symbol][0] if order.symbol in self.marks else None
        if (
            not order.reduce_only
            and qty * exact_decimal(reference if mark is None else mark) < rules.min_notional
        ):
            raise BinanceError(-4164, proto.notional_msg(rules))
        plan = _Plan(qty, reference, mark)
        result = self._fill(order, plan, int(self.now_ms()), dry_run=True)
        for code, binance_code, msg in _REFUSALS:
            if code in result.codes:
                raise BinanceError(binance_code, msg)
        return plan

    def _fill(self, order: Order, plan: _Plan, ts_ms: int, *, dry_run: bool) -> OrderFill:
        return self.book.fill_order(
            order.symbol, SIDE_SIGN[order.side], self._book_time(ts_ms), float(plan.qty), plan.reference,
            reduce_only=order.reduce_only, leverage=self._position(order.symbol).leverage, mark_price=plan.mark,
            reason=_EXIT_REASON.get(order.orig_type, "SIGNAL"), dry_run=dry_run,
        )  # fmt: skip

    def _apply(self, order: Order, plan: _Plan, ts_ms: int) -> None:
        """Fill a planned order in the book; record the fill; publish TRADE and ACCOUNT_UPDATE events."""
        result = self._fill(order, plan, ts_ms, dry_run=False)
        if not result.filled:  # the plan's dry run saw the same book
            raise RuntimeError(
                f"paper broker: planned order {order.order_id} refused by the book: {result.codes}"
            )
        rules = self.rules[order.symbol]
        position = self._position(order.symbol)
        was_open = bool(position.amount)
        position.amount += SIDE_SIGN[order.side] * plan.qty
        position.realized += result.realized_pnl_usdt
        position.update_ms = ts_ms
        self._sync(order.symbol)
        fill = self.order_state.add_fill(order, plan.qty, result.price, result.fee_usdt, result.realized_pnl_usdt,
                                         ts_ms)  # fmt: skip
        order.executed_qty, order.cum_quote, order.update_ms = plan.qty, float(plan.qty) * result.price, ts_ms
        order.status = "FILLED" if plan.qty == order.orig_qty else "PARTIALLY_FILLED"
        qp = rules.quantity_precision
        self.publish_user(order_trade_update(order, qp, ts_ms, "TRADE", fill=fill))
        if order.status == "PARTIALLY_FILLED":  # a reduce-only order larger than the position
            order.status = "EXPIRED"
            self.publish_user(order_trade_update(order, qp, ts_ms, "EXPIRED"))
        self._publish_account(order.symbol, ts_ms)
        if was_open and not position.amount:
            self.algo_orders.expire_close_position(order.symbol, ts_ms)

    def _liquidated(self, symbol: str, ts_ms: int) -> None:
        """Record the book's liquidation of ``symbol`` (filled at the liquidation price; the clearance
        fee takes the margin left there): an autoclose order, its fill and the CALCULATED event."""
        liquidation = self.book.last_exit()
        if liquidation is None or liquidation.symbol != symbol or liquidation.reason != "LIQUIDATION":
            raise RuntimeError(f"paper broker: the book liquidated {symbol} but logged no liquidation fill")
        position = self._position(symbol)
        qty = abs(position.amount)
        order = Order(
            self.order_state.new_order_id(), f"autoclose-{ts_ms}", symbol, "SELL" if position.amount > 0 else "BUY", qty,
            True, ts_ms, orig_type="LIMIT", status="FILLED", executed_qty=qty,
            cum_quote=liquidation.qty * liquidation.price, update_ms=ts_ms,
        )  # fmt: skip
        fill = self.order_state.add_fill(order, qty, liquidation.price, liquidation.fee_usdt,
                                         liquidation.realized_pnl_usdt, ts_ms)  # fmt: skip
        self.order_state.orders[order.order_id] = order
        position.realized += liquidation.realized_pnl_usdt
        position.amount = ZERO
        position.update_ms = ts_ms
        self._sync(symbol)
        qp = self.rules[symbol].quantity_precision
        self.publish_user(order_trade_update(order, qp, ts_ms, "CALCULATED", fill=fill, order_type="LIMIT",
                                             time_in_force="IOC"))  # fmt: skip
        self._publish_account(symbol, ts_ms)
        self.algo_orders.expire_close_position(symbol, ts_ms)

    def _sync(self, symbol: str) -> None:
        """Copy the book's position of ``symbol`` into the view Binance's endpoints show."""
        position = self._position(symbol)
        held = self.book.position(symbol)
        terms = self.book.margin_terms(symbol)
        if (held is None) != (not position.amount):
            raise RuntimeError(f"paper broker: {symbol} amount {position.amount} but the book holds {held}")
        if held is None or terms is None:
            position.entry_price = position.margin = position.open_fees = position.liquidation_price = 0.0
            return
        position.entry_price, position.margin = held.entry_price, held.margin_usdt
        position.open_fees, position.liquidation_price = held.entry_fee_usdt, held.liquidation_price
        position.mmr, position.cum = terms.maint_margin_rate, terms.maint_amount_usdt

    def _book_time(self, ts_ms: int) -> int:
        self._book_ms = max(self._book_ms, int(ts_ms))
        return self._book_ms

    # --- account -----------------------------------------------------------------------------------
    @property
    def orders(self) -> dict[int, Order]:
        """The orders by orderId."""
        return self.order_state.orders

    @property
    def fills(self) -> list[Fill]:
        """Every fill, in trade order."""
        return self.order_state.fills

    @property
    def algos(self) -> dict[int, AlgoOrder]:
        """The algo (conditional) orders by algoId."""
        return self.algo_orders.algos

    @property
    def wallet(self) -> float:
        """Wallet balance of the book: initial + realized PnL − fees, USDT (isolated margins included)."""
        return self.book.wallet

    @property
    def used_margin(self) -> float:
        """Isolated margin of the open positions, USDT."""
        return self.book.used_margin

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
        account = acct.account_v2(self._view(), {s: self._position(s) for s in self.rules})
        return account | {"multiAssetsMargin": self.modes.multi_assets}

    def _account_v3(self, p: Params) -> dict[str, Any]:
        return acct.account_v3(self._view())

    def _balance(self, p: Params) -> list[dict[str, Any]]:
        return acct.balance(self._view())

    def _leverage(self, p: Params) -> dict[str, Any]:
        symbol, rules = self._symbol(p)
        leverage = proto.int_param(p, "leverage")
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
        margin_type = proto.required(p, "marginType")
        if margin_type == "ISOLATED":
            raise BinanceError(-4046, "No need to change margin type.")
        raise BinanceError(-1130, "Data sent for parameter 'marginType' is not valid. "
                                  "The replay venue models isolated margin only.")  # fmt: skip

    def _symbol(self, p: Params) -> tuple[str, SymbolRules]:
        return proto.symbol_param(p, self.rules)
