"""Recorded Binance user-data and REST payloads → ``core.ledger`` / ``core.reconcile`` types, for tests.

User events, algo orders and positions go through the client's own parsers (``exchange.binance.
payloads``) and ``exchange.binance.ledger_records``. REST orders are converted here:
``payloads.OrderResponse`` keeps no price or creation time, and the ledger's tests read ccxt-wrapped
order rows (``info``) too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.ledger import AlgoOrderState, Fill, OrderState
from core.reconcile import ExchangePosition
from exchange.binance.ledger_records import algo_of_response, algo_of_update, order_of_update, position_of
from exchange.binance.payloads import (
    parse_algo_order,
    parse_algo_update,
    parse_order_trade_update,
    parse_position_risk,
)

FIXTURES = ("payloads", "fixtures")


def load(shared_data: Path, group: str, name: str) -> Any:
    """A recorded payload: ``group`` is user_data_json or http_json, or orders_2023 (top level)."""
    base = (
        shared_data / "payloads" / group if group == "orders_2023" else shared_data.joinpath(*FIXTURES, group)
    )
    return json.loads((base / f"{name}.json").read_text())


def _id(value: Any) -> int | None:
    return None if value in (None, "", 0, "0") else int(value)


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def order_trade_update(data: Mapping[str, Any]) -> tuple[OrderState, Fill | None]:
    """An ORDER_TRADE_UPDATE: the order's state, and its fill when the event carries one."""
    return order_of_update(parse_order_trade_update(data), raw=data)


def algo_update(data: Mapping[str, Any]) -> AlgoOrderState:
    """An ALGO_UPDATE (``ai`` empty → no child yet)."""
    return algo_of_update(parse_algo_update(data), raw=data)


def rest_order(row: Mapping[str, Any]) -> OrderState:
    """A ``/fapi/v1/order`` answer or openOrders row (ccxt's ``info`` wrapper is unwrapped)."""
    r = row.get("info", row)
    return OrderState(
        symbol=r["symbol"], order_id=int(r["orderId"]), client_order_id=r["clientOrderId"], side=r["side"],
        order_type=r.get("origType") or r["type"], status=r["status"], qty=_dec(r["origQty"]),
        filled_qty=_dec(r["executedQty"]), update_ms=int(r["updateTime"]), price=_dec(r.get("price")),
        stop_price=_dec(r.get("stopPrice")), avg_price=_dec(r.get("avgPrice")), reduce_only=bool(r["reduceOnly"]),
        close_position=bool(r.get("closePosition", False)), working_type=r.get("workingType"),
        created_ms=_id(r.get("time")), raw=r,
    )  # fmt: skip


def rest_algo_order(row: Mapping[str, Any]) -> AlgoOrderState:
    """A ``/fapi/v1/algoOrder`` answer or openAlgoOrders row (``type`` in older examples)."""
    return algo_of_response(parse_algo_order(row), raw=row)


def position_risk(row: Mapping[str, Any]) -> ExchangePosition:
    """A one-way ``positionRisk`` row; a hedge-mode row (LONG/SHORT) is refused."""
    return position_of(parse_position_risk(row))
