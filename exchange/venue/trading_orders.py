"""The paper account's order state: MARKET orders (the user's, triggered algos' children, liquidations'
autoclose orders), their fills, ids, and the order and trade endpoints that read them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from exchange.venue import trading_protocol as proto
from exchange.venue.state import BinanceError
from exchange.venue.trading_events import Fill, Order, SymbolRules, order_json, order_trade_update, trade_json
from exchange.venue.trading_protocol import Params

OPEN = ("NEW", "PARTIALLY_FILLED")


class OrderState:
    """Orders by orderId (client ids by symbol) and the fills in trade order; new ids count up."""

    def __init__(
        self,
        rules: Mapping[str, SymbolRules],
        now_ms: Callable[[], int],
        publish_user: Callable[[dict[str, Any]], None],
    ) -> None:
        self.rules = rules
        self.now_ms = now_ms
        self.publish_user = publish_user
        self.orders: dict[int, Order] = {}
        self.fills: list[Fill] = []
        self._by_client: dict[tuple[str, str], int] = {}
        self.next_order_id = 8_000_000_001
        self._next_trade_id = 500_000_001

    def client_id_open(self, client_id: str) -> bool:
        """Whether an open order holds ``client_id`` (client ids are unique among open orders only)."""
        return any(o.client_order_id == client_id and o.status in OPEN for o in self.orders.values())

    def add_fill(
        self, order: Order, qty: Decimal, price: float, fee_usdt: float, realized_usdt: float, ts_ms: int
    ) -> Fill:
        """Record a fill of ``order`` under the next trade id and return it."""
        fill = Fill(self._next_trade_id, order.order_id, order.symbol, order.side, qty, price, fee_usdt,
                    realized_usdt, ts_ms)  # fmt: skip
        self._next_trade_id += 1
        self.fills.append(fill)
        return fill

    def new_order_id(self) -> int:
        order_id = self.next_order_id
        self.next_order_id += 1
        return order_id

    def register(self, order: Order, ts_ms: int) -> None:
        """Keep ``order`` and publish its NEW event."""
        self.orders[order.order_id] = order
        self._by_client[(order.symbol, order.client_order_id)] = order.order_id
        self.publish_user(
            order_trade_update(order, self.rules[order.symbol].quantity_precision, ts_ms, "NEW")
        )

    def _find(self, p: Params) -> Order:
        symbol, _ = proto.symbol_param(p, self.rules)
        order_id = p.get("orderId")
        client_id = p.get("origClientOrderId")
        if not order_id and not client_id:
            raise BinanceError(
                -1102, "Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!"
            )
        key = (
            proto.parse_int("orderId", order_id)
            if order_id
            else self._by_client.get((symbol, str(client_id)))
        )
        order = self.orders.get(key) if key is not None else None
        if order is None or order.symbol != symbol or (client_id and order.client_order_id != client_id):
            raise BinanceError(-2013, "Order does not exist.")
        return order

    def get(self, p: Params) -> dict[str, Any]:
        order = self._find(p)
        return order_json(order, self.rules[order.symbol].quantity_precision)

    def cancel(self, p: Params) -> dict[str, Any]:
        order = self._find(p)
        if order.status not in OPEN:
            raise BinanceError(-2011, "Unknown order sent.")
        return self._cancel(order)  # MARKET orders fill at once: nothing reaches this today

    def _cancel(self, order: Order) -> dict[str, Any]:
        now = int(self.now_ms())
        order.status, order.update_ms = "CANCELED", now
        qp = self.rules[order.symbol].quantity_precision
        self.publish_user(order_trade_update(order, qp, now, "CANCELED"))
        return order_json(order, qp)

    def open(self, p: Params) -> list[dict[str, Any]]:
        symbol = proto.symbol_param(p, self.rules)[0] if p.get("symbol") else None
        return [order_json(o, self.rules[o.symbol].quantity_precision) for o in self.orders.values()
                if o.status in OPEN and symbol in (None, o.symbol)]  # fmt: skip

    def all(self, p: Params) -> list[dict[str, Any]]:
        symbol, rules = proto.symbol_param(p, self.rules)
        rows = [o for o in self.orders.values() if o.symbol == symbol]
        return [order_json(o, rules.quantity_precision) for o in rows[-proto.limit(p, 500, 1000) :]]

    def cancel_all(self, p: Params) -> dict[str, Any]:
        symbol, _ = proto.symbol_param(p, self.rules)
        for order in [o for o in self.orders.values() if o.symbol == symbol and o.status in OPEN]:
            self._cancel(order)
        return dict(proto.CANCEL_ALL)

    def user_trades(self, p: Params) -> list[dict[str, Any]]:
        """``GET /fapi/v1/userTrades``: from trade id ``fromId`` (the first ``limit``), else the newest
        ``limit`` within ``startTime``/``endTime``."""
        symbol, rules = proto.symbol_param(p, self.rules)
        limit = proto.limit(p, 500, 1000)
        rows = [f for f in self.fills if f.symbol == symbol]
        if p.get("fromId"):
            from_id = proto.int_param(p, "fromId")
            rows = [f for f in rows if f.trade_id >= from_id][:limit]
        else:
            start, end = proto.int_param(p, "startTime", 0), proto.int_param(p, "endTime", 2**62)
            rows = [f for f in rows if start <= f.time_ms <= end][-limit:]
        return [trade_json(f, rules.quantity_precision) for f in rows]
