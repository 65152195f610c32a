"""Recorded Binance user-data and REST payloads → ``core.ledger`` / ``core.reconcile`` types, for tests.

``exchange.binance.payloads`` has no ORDER_TRADE_UPDATE / ALGO_UPDATE parser yet, and its REST
parsers (being written with the trading client) convert to the bus messages of ``core.messages``
(floats), not to the ledger's Decimal records. Until the client converts to the ledger's types, the
ledger's tests read the recorded payloads through these small conversions, which keep Binance's
field names here, in tests, and nowhere in ``core`` or ``storage``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.ledger import AlgoOrderState, Fill, OrderState
from core.reconcile import ExchangePosition

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
    o = data["o"]
    order = OrderState(
        symbol=o["s"], order_id=int(o["i"]), client_order_id=o["c"] or None, side=o["S"],
        order_type=o.get("ot") or o["o"], status=o["X"], qty=_dec(o["q"]), filled_qty=_dec(o["z"]),
        update_ms=int(o["T"]), price=_dec(o["p"]), stop_price=_dec(o["sp"]), avg_price=_dec(o["ap"]),
        reduce_only=bool(o["R"]), close_position=bool(o.get("cp", False)), working_type=o.get("wt"), raw=data,
    )  # fmt: skip
    fill = None
    if int(o.get("t") or 0) and _dec(o["l"]) > 0:
        fill = Fill(
            symbol=o["s"], trade_id=int(o["t"]), order_id=int(o["i"]), side=o["S"], price=_dec(o["L"]),
            qty=_dec(o["l"]), commission=_dec(o.get("n")), commission_asset=o.get("N"), time_ms=int(o["T"]),
            client_order_id=o["c"] or None, realized_pnl=_dec(o.get("rp")), is_maker=bool(o["m"]), raw=data,
        )  # fmt: skip
    return order, fill


def algo_update(data: Mapping[str, Any]) -> AlgoOrderState:
    """An ALGO_UPDATE (``ai`` empty → no child yet)."""
    o = data["o"]
    return AlgoOrderState(
        symbol=o["s"], algo_id=int(o["aid"]), client_algo_id=o["caid"], side=o["S"], order_type=o["o"],
        status=o["X"], qty=_dec(o["q"]), trigger_price=_dec(o["tp"]), update_ms=int(data["T"]),
        close_position=bool(o["cp"]), reduce_only=bool(o["R"]), price_protect=bool(o["pP"]),
        working_type=o["wt"], price=_dec(o["p"]), child_order_id=_id(o["ai"]), executed_qty=_dec(o["aq"]),
        avg_price=_dec(o["ap"]), triggered_ms=_id(o.get("tt")), reject_reason=o.get("rm", ""),
        algo_type=o["at"], raw=data,
    )  # fmt: skip


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
    return AlgoOrderState(
        symbol=row["symbol"], algo_id=int(row["algoId"]), client_algo_id=row["clientAlgoId"], side=row["side"],
        order_type=row.get("orderType") or row["type"], status=row["algoStatus"], qty=_dec(row.get("quantity")),
        trigger_price=_dec(row["triggerPrice"]), update_ms=int(row.get("updateTime") or row["createTime"]),
        close_position=bool(row.get("closePosition", False)), reduce_only=bool(row.get("reduceOnly", False)),
        price_protect=bool(row.get("priceProtect", False)), working_type=row.get("workingType"),
        child_order_id=_id(row.get("actualOrderId")), created_ms=int(row["createTime"]),
        algo_type=row.get("algoType", "CONDITIONAL"), raw=row,
    )  # fmt: skip


def user_trade(row: Mapping[str, Any]) -> Fill:
    """A ``/fapi/v1/userTrades`` row (no client order id)."""
    return Fill(
        symbol=row["symbol"], trade_id=int(row["id"]), order_id=int(row["orderId"]), side=row["side"],
        price=_dec(row["price"]), qty=_dec(row["qty"]), commission=_dec(row["commission"]),
        commission_asset=row["commissionAsset"], time_ms=int(row["time"]), realized_pnl=_dec(row["realizedPnl"]),
        is_maker=bool(row["maker"]), raw=row,
    )  # fmt: skip


def position_risk(row: Mapping[str, Any]) -> ExchangePosition:
    """A one-way ``positionRisk`` row; a hedge-mode row (LONG/SHORT) is refused, as the client refuses
    a hedge-mode account."""
    if row.get("positionSide", "BOTH") != "BOTH":
        raise ValueError(f"hedge-mode position row ({row['positionSide']}): the ledger is one-way only")
    return ExchangePosition(
        symbol=row["symbol"], qty=_dec(row["positionAmt"]), entry_price=_dec(row["entryPrice"]),
        update_ms=int(row["updateTime"]),
    )  # fmt: skip
