"""``positions`` rows of a live trade from its ledger fills: the ``entry`` row when it opens and the
``FINAL`` row when it closes, with the paper book's columns and keys (``trade_group_id`` =
``<session>:<symbol>:<decision ts>``), so the decider's ``pnl_result`` and the fill notifications
treat both books alike.

A trade's fills are the ledger's: its entry order's fills and the closing fills that follow them
until the position is flat again (``core.ledger.apply_fill``, the ledger's own rule). Its realized PnL
is the ledger's for those fills, net of their quote-asset fees, as the paper book's is net of fees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from core.ledger import Fill, Position, apply_fill, quote_asset, unique_fills
from storage.schema import positions

__all__ = ["TradeOpen", "entry_row", "final_row", "write_position_row"]


@dataclass(frozen=True, slots=True)
class TradeOpen:
    """What a live trade's rows need besides its fills."""

    trade_group_id: str
    symbol: str
    side: str  # LONG, SHORT
    entry_order_id: int
    leverage: int
    sl_price: float
    tp_price: float
    mode: str


def _trade(fills: Iterable[Fill], t: TradeOpen) -> tuple[Position, list[Fill], list[Fill]] | None:
    """The trade's position over its fills, its entry fills and its closing fills (up to flat)."""
    ordered = [f for f in unique_fills(fills) if f.symbol == t.symbol]
    start = next((k for k, f in enumerate(ordered) if f.order_id == t.entry_order_id), None)
    if start is None:
        return None
    p = Position(t.symbol)
    opened: list[Fill] = []
    closing: list[Fill] = []
    for f in ordered[start:]:
        if f.order_id == t.entry_order_id:
            opened.append(f)
        elif p.qty != 0 and (f.side == "SELL") == (p.qty > 0):
            closing.append(f)
        else:
            continue  # another trade's fill
        p = apply_fill(p, f)
        if closing and p.qty == 0:
            break
    return p, opened, closing


def _avg(fills: list[Fill]) -> float:
    qty = sum((f.qty for f in fills), Decimal(0))
    return float(sum((f.qty * f.price for f in fills), Decimal(0)) / qty)


def entry_row(fills: Iterable[Fill], t: TradeOpen) -> dict[str, Any] | None:
    """The ``entry`` row of trade ``t`` from its entry order's fills; None when the ledger has none."""
    trade = _trade(fills, t)
    if trade is None:
        return None
    _, opened, _ = trade
    qty = sum((f.qty for f in opened), Decimal(0))
    price = _avg(opened)
    return {
        "trade_group_id": t.trade_group_id, "symbol": t.symbol, "ts": min(f.time_ms for f in opened),
        "side": t.side, "event_type": "entry", "mode": t.mode, "amt": float(qty), "entry_price": price,
        "mark_price": price, "leverage": t.leverage, "margin_type": "ISOLATED", "notional": float(qty) * price,
        "sl_price": t.sl_price, "tp_price": t.tp_price, "unrealized_pnl": 0.0,
        "fees": float(sum((f.commission for f in opened if f.commission_asset in (None, quote_asset(t.symbol))),
                          Decimal(0))), "source": t.mode,
    }  # fmt: skip


def final_row(fills: Iterable[Fill], t: TradeOpen, exit_reason: str) -> dict[str, Any] | None:
    """The ``FINAL`` row of trade ``t`` once the ledger's fills bring it back to flat (None before):
    the closing fills' average price, the last one's time, realized PnL net of fees (USDT)."""
    trade = _trade(fills, t)
    if trade is None:
        return None
    p, opened, closing = trade
    if not closing or p.qty != 0:
        return None
    qty = sum((f.qty for f in opened), Decimal(0))
    entry = _avg(opened)
    return {
        "trade_group_id": t.trade_group_id, "symbol": t.symbol, "ts": max(f.time_ms for f in closing),
        "side": t.side, "event_type": "FINAL", "mode": t.mode, "amt": float(qty), "entry_price": entry,
        "exit_price": _avg(closing), "leverage": t.leverage, "margin_type": "ISOLATED",
        "notional": float(qty) * entry, "sl_price": t.sl_price, "tp_price": t.tp_price,
        "realized_pnl": float(p.realized_pnl - p.fees), "fees": float(p.fees), "funding": 0.0,
        "exit_reason": exit_reason, "source": t.mode,
    }  # fmt: skip


def write_position_row(engine: sa.Engine, row: Mapping[str, Any]) -> bool:
    """Insert one ``positions`` row unless its trade group already has a row of that event type;
    return whether it was written."""
    with engine.begin() as conn:
        seen = conn.execute(
            sa.select(sa.func.count()).select_from(positions).where(
                positions.c.trade_group_id == row["trade_group_id"], positions.c.event_type == row["event_type"]
            )
        ).scalar_one()  # fmt: skip
        if seen:
            return False
        conn.execute(positions.insert(), [dict(row)])
    return True
