"""The replay venue's algo service: conditional orders held until their trigger (``/fapi/v1/algoOrder``).

STOP_MARKET / TAKE_PROFIT_MARKET orders (``algoType=CONDITIONAL``) trigger on the mark
(``workingType=MARK_PRICE``) or the last price (``CONTRACT_PRICE``, Binance's default) at or beyond
``triggerPrice``; the paper broker watches the marks and places the triggered algo's child MARKET
order with a new orderId (``ai`` in ALGO_UPDATE; its clientOrderId is the clientAlgoId). Statuses go
NEW → TRIGGERING → TRIGGERED → FINISHED, or CANCELED (by the user), REJECTED (the child was refused:
no position to reduce, margin) or EXPIRED. Choices where Binance is not explicit:

- closePosition algo orders are GTE_GTC: when the position of their symbol goes flat (a fill, a
  trigger, a liquidation) the remaining ones are EXPIRED (``expire_close_position``), as Binance
  documents for GTE_GTC. An order placed while flat only expires after a position opened and closed.
- reduceOnly algo orders with a quantity stay NEW when the position closes; at trigger they reduce
  at most the position (the rest of the child EXPIRES) or are REJECTED when there is nothing to reduce.
- clientAlgoId must be unique among open algo orders only (-4116).

Fault: ``hide_next(seconds, n)`` makes the next ``n`` algo orders placed (acknowledged and
triggering as usual) invisible to queries until ``seconds`` of the venue clock have passed since
their placement: ``GET /fapi/v1/algoOrder`` answers -2013 "Order does not exist." and
``openAlgoOrders``/``allAlgoOrders`` leave them out, as Binance's query side lagging its matching
side. Cancels still reach them.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from exchange.venue import trading_protocol as proto
from exchange.venue.state import BinanceError
from exchange.venue.trading_events import ZERO, AlgoOrder, SymbolRules, algo_json, algo_update
from exchange.venue.trading_protocol import Params

ALGO_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
_NAN = math.nan


class AlgoOrders:
    """The conditional orders of the paper account, by algoId (module docstring).

    ``marks`` is the broker's live map symbol → (mark, last) (an order that would trigger at once is
    refused, -2021); ``rejections`` the broker's queue of errors for the next new orders.
    """

    def __init__(
        self,
        rules: Mapping[str, SymbolRules],
        now_ms: Callable[[], int],
        publish_user: Callable[[dict[str, Any]], None],
        marks: Mapping[str, tuple[float, float]],
        rejections: proto.Rejections,
    ) -> None:
        self.rules = rules
        self.now_ms = now_ms
        self.publish_user = publish_user
        self.marks = marks
        self.rejections = rejections
        self.algos: dict[int, AlgoOrder] = {}
        self._by_client: dict[str, int] = {}
        self._next_algo_id = 1_000_000_001
        self._hide_queue: deque[int] = deque()  # ms each of the next placed orders stays hidden
        self._hide_lock = threading.Lock()  # faults arrive from other threads
        self._hidden_until: dict[int, int] = {}  # algoId → venue ms from which queries show it

    def hide_next(self, seconds: float, n: int = 1) -> None:
        """Hide the next ``n`` placed algo orders from queries for ``seconds`` of the venue clock
        (module docstring). Thread-safe."""
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"hide seconds must be > 0, got {seconds}")
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        with self._hide_lock:
            self._hide_queue.extend([round(seconds * 1000)] * int(n))

    def hidden(self, algo: AlgoOrder) -> bool:
        """Whether queries do not show ``algo`` yet (the hide fault)."""
        until = self._hidden_until.get(algo.algo_id)
        if until is None:
            return False
        if int(self.now_ms()) >= until:
            del self._hidden_until[algo.algo_id]
            return False
        return True

    def open_of(self, symbol: str) -> list[AlgoOrder]:
        """The NEW algo orders of ``symbol``, in the order they were placed."""
        return [a for a in self.algos.values() if a.symbol == symbol and a.status == "NEW"]

    def expire_close_position(self, symbol: str, ts_ms: int) -> None:
        """End ``symbol``'s NEW closePosition orders as EXPIRED: its position went flat (GTE_GTC)."""
        for algo in [a for a in self.open_of(symbol) if a.close_position]:
            self.end(algo, "EXPIRED", ts_ms)

    def new(self, p: Params) -> dict[str, Any]:
        self.rejections.take("algo")
        if proto.required(p, "algoType") != "CONDITIONAL":
            raise BinanceError(
                -1130, "Data sent for parameter 'algoType' is not valid; only CONDITIONAL is supported."
            )
        symbol, rules = proto.symbol_param(p, self.rules)
        side = proto.side_param(p)
        order_type = proto.required(p, "type")
        if order_type not in ALGO_TYPES:
            raise BinanceError(
                -1116, f"Invalid orderType. The replay venue's algo orders are {' and '.join(ALGO_TYPES)}."
            )
        proto.check_position_side(p)
        working_type = p.get("workingType", "CONTRACT_PRICE")
        if working_type not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise BinanceError(-4031, f"Invalid parameter working type: {working_type}")
        close_position = proto.bool_param(p, "closePosition")
        reduce_only = proto.bool_param(p, "reduceOnly")
        if close_position and p.get("quantity"):
            raise BinanceError(-1106, "Parameter 'quantity' sent when not required.")
        if close_position and reduce_only:
            raise BinanceError(-1106, "Parameter 'reduceOnly' sent when not required.")
        qty = ZERO if close_position else proto.quantity(p, rules)
        trigger = proto.trigger_price(p, rules)
        client_id = proto.client_id(p, "clientAlgoId")
        if any(a.client_algo_id == client_id and a.status == "NEW" for a in self.algos.values()):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        now = int(self.now_ms())
        algo = AlgoOrder(
            self._next_algo_id, client_id, symbol, side, order_type, qty, close_position, reduce_only, trigger,
            working_type, proto.bool_param(p, "priceProtect"), "GTE_GTC" if close_position else p.get("timeInForce", "GTC"),
            now, update_ms=now,
        )  # fmt: skip
        mark, last = self.marks.get(symbol, (_NAN, _NAN))
        current = mark if working_type == "MARK_PRICE" else last
        if math.isfinite(current) and algo.triggered_by(current):
            raise BinanceError(-2021, "Order would immediately trigger.")
        if qty and not reduce_only and qty * trigger < rules.min_notional:
            raise BinanceError(-4164, proto.notional_msg(rules))
        self._next_algo_id += 1
        self.algos[algo.algo_id] = algo
        self._by_client[client_id] = algo.algo_id
        with self._hide_lock:
            hide_ms = self._hide_queue.popleft() if self._hide_queue else None
        if hide_ms is not None:
            self._hidden_until[algo.algo_id] = now + hide_ms
        self.publish_user(algo_update(algo, rules.quantity_precision, now))
        return algo_json(algo, rules.quantity_precision)

    def _find(self, p: Params) -> AlgoOrder:
        algo_id, client_id = p.get("algoId"), p.get("clientAlgoId")
        if not algo_id and not client_id:
            raise BinanceError(
                -1102, "Param 'algoId' or 'clientAlgoId' must be sent, but both were empty/null!"
            )
        key = proto.parse_int("algoId", algo_id) if algo_id else self._by_client.get(str(client_id))
        algo = self.algos.get(key) if key is not None else None
        if algo is None or (client_id and algo.client_algo_id != client_id):
            raise BinanceError(-2013, "Order does not exist.")
        return algo

    def get(self, p: Params) -> dict[str, Any]:
        algo = self._find(p)
        if self.hidden(algo):
            raise BinanceError(-2013, "Order does not exist.")
        return algo_json(algo, self.rules[algo.symbol].quantity_precision)

    def cancel(self, p: Params) -> dict[str, Any]:
        algo = self._find(p)
        if algo.status != "NEW":
            raise BinanceError(-2011, "Unknown order sent.")
        self.end(algo, "CANCELED", int(self.now_ms()))
        return {"algoId": algo.algo_id, "clientAlgoId": algo.client_algo_id, "code": "200", "msg": "success"}

    def open(self, p: Params) -> list[dict[str, Any]]:
        symbol = proto.symbol_param(p, self.rules)[0] if p.get("symbol") else None
        return [algo_json(a, self.rules[a.symbol].quantity_precision) for a in self.algos.values()
                if a.status == "NEW" and symbol in (None, a.symbol) and not self.hidden(a)]  # fmt: skip

    def all(self, p: Params) -> list[dict[str, Any]]:
        symbol, rules = proto.symbol_param(p, self.rules)
        rows = [a for a in self.algos.values() if a.symbol == symbol and not self.hidden(a)]
        return [algo_json(a, rules.quantity_precision) for a in rows[-proto.limit(p, 500, 1000) :]]

    def cancel_all(self, p: Params) -> dict[str, Any]:
        symbol, _ = proto.symbol_param(p, self.rules)
        now = int(self.now_ms())
        for algo in [a for a in self.algos.values() if a.symbol == symbol and a.status == "NEW"]:
            self.end(algo, "CANCELED", now)
        return dict(proto.CANCEL_ALL)

    def end(self, algo: AlgoOrder, status: str, ts_ms: int, reason: str = "") -> None:
        algo.status, algo.update_ms, algo.reject_reason = status, ts_ms, reason
        self.publish_user(algo_update(algo, self.rules[algo.symbol].quantity_precision, ts_ms))
