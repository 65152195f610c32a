"""Parsed Binance payloads (``exchange.binance.payloads``) → the ledger's records (``core.ledger``,
``core.reconcile``): the one place where Binance's field names become the order/fill ledger's.

Each function takes what ``payloads`` parsed (Decimals already, ``ai`` "" already None) and the raw
mapping it came from, which the ledger keeps beside the record (``raw``, not compared).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.ledger import AlgoOrderState, Fill, OrderState
from core.reconcile import ExchangePosition
from exchange.binance.payloads import (
    AlgoOrderResponse,
    AlgoUpdateEvent,
    OrderResponse,
    OrderTradeUpdateEvent,
    PositionRisk,
    UserTrade,
)


def order_of_update(
    event: OrderTradeUpdateEvent, raw: Mapping[str, Any] | None = None
) -> tuple[OrderState, Fill | None]:
    """An ORDER_TRADE_UPDATE: the order's state, and its fill when the event carries one (a trade id and
    a quantity executed)."""
    o = event.o
    order = OrderState(
        symbol=o.s, order_id=o.i, client_order_id=o.c or None, side=o.S, order_type=o.ot or o.o, status=o.X,
        qty=o.q, filled_qty=o.z, update_ms=o.T, price=o.p, stop_price=o.sp, avg_price=o.ap, reduce_only=o.R,
        close_position=o.cp, working_type=o.wt or None, raw=raw,
    )  # fmt: skip
    fill = None
    if o.t and o.l > 0:
        fill = Fill(
            symbol=o.s, trade_id=o.t, order_id=o.i, side=o.S, price=o.L, qty=o.l, commission=o.n,
            commission_asset=o.N or None, time_ms=o.T, client_order_id=o.c or None, realized_pnl=o.rp,
            is_maker=o.m, raw=raw,
        )  # fmt: skip
    return order, fill


def algo_of_update(event: AlgoUpdateEvent, raw: Mapping[str, Any] | None = None) -> AlgoOrderState:
    """An ALGO_UPDATE (no child order while ``ai`` is empty; no trigger time while ``tt`` is 0)."""
    o = event.o
    return AlgoOrderState(
        symbol=o.s, algo_id=o.aid, client_algo_id=o.caid, side=o.S, order_type=o.o, status=o.X, qty=o.q,
        trigger_price=o.tp, update_ms=event.T, close_position=o.cp, reduce_only=o.R, price_protect=o.pP,
        working_type=o.wt or None, price=o.p, child_order_id=o.ai, executed_qty=o.aq, avg_price=o.ap,
        triggered_ms=o.tt or None, reject_reason=o.rm, algo_type=o.at, raw=raw,
    )  # fmt: skip


def algo_of_response(row: AlgoOrderResponse, raw: Mapping[str, Any] | None = None) -> AlgoOrderState:
    """A ``/fapi/v1/algoOrder`` answer or an openAlgoOrders row."""
    return AlgoOrderState(
        symbol=row.symbol, algo_id=row.algoId, client_algo_id=row.clientAlgoId, side=row.side,
        order_type=row.orderType, status=row.algoStatus, qty=row.quantity, trigger_price=row.triggerPrice,
        update_ms=row.updateTime or row.createTime, close_position=row.closePosition, reduce_only=row.reduceOnly,
        price_protect=row.priceProtect, working_type=row.workingType or None, child_order_id=row.actualOrderId,
        created_ms=row.createTime, algo_type=row.algoType or "CONDITIONAL", raw=raw,
    )  # fmt: skip


def order_of_response(row: OrderResponse, raw: Mapping[str, Any] | None = None) -> OrderState:
    """A ``/fapi/v1/order`` answer or openOrders row (``OrderResponse`` keeps no limit price and no
    creation time: price 0, created at ``updateTime``)."""
    return OrderState(
        symbol=row.symbol, order_id=row.orderId, client_order_id=row.clientOrderId or None, side=row.side,
        order_type=row.origType or row.type, status=row.status, qty=row.origQty, filled_qty=row.executedQty,
        update_ms=row.updateTime, stop_price=row.stopPrice, avg_price=row.avgPrice, reduce_only=row.reduceOnly,
        close_position=row.closePosition, working_type=row.workingType or None, raw=raw,
    )  # fmt: skip


def fill_of_trade(row: UserTrade, client_order_id: str | None = None) -> Fill:
    """A ``userTrades`` row (which carries no client id: pass it when known)."""
    return Fill(
        symbol=row.symbol, trade_id=row.id, order_id=row.orderId, side=row.side, price=row.price, qty=row.qty,
        commission=row.commission, commission_asset=row.commissionAsset or None, time_ms=row.time,
        client_order_id=client_order_id, realized_pnl=row.realizedPnl, is_maker=row.maker,
    )  # fmt: skip


def position_of(row: PositionRisk) -> ExchangePosition:
    """A one-way ``positionRisk`` row; a hedge-mode row (LONG/SHORT) is refused, as the trading client
    refuses a hedge-mode account."""
    if row.positionSide not in ("BOTH", ""):
        raise ValueError(f"hedge-mode position row ({row.positionSide}): the ledger is one-way only")
    return ExchangePosition(
        symbol=row.symbol, qty=row.positionAmt, entry_price=row.entryPrice, update_ms=row.updateTime
    )
