"""Pure pieces of a Binance USDⓈ-M order: our client ids, exact wire values, filters and parameters.

Quantities floor to MARKET_LOT_SIZE's step; trigger prices round to the tick toward the entry price;
both with the simulator's own kernel helpers (``core.sim.kernel``), so live orders round as the
backtest does, then made exact Decimals at the filter's decimals. Toward the entry means: a long's
stop rounds up and its take-profit down, a short's stop down and its take-profit up. A stop thus
never lies further from the entry than intended (the loss is at most the planned one) and a
take-profit is reached no later than planned. Wire values are plain decimals without exponent.
"""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal
from typing import Literal

from core.errors import RejectedError
from core.messages import OrderSide
from core.sim import SymbolFilters
from core.sim.kernel import floor_to_step, round_toward

CLIENT_ID_MAX_CHARS = 36
ROLE_CODES = {"entry": "e", "sl": "sl", "tp": "tp", "close": "x"}
Role = Literal["entry", "sl", "tp", "close"]
Protection = Literal["SL", "TP"]
PositionSide = Literal["LONG", "SHORT"]


class OrderSizeError(RejectedError):
    """An order below the symbol's minimum quantity or notional, or above its maximum, after rounding."""


def client_id(decision_key: str, role: Role = "entry") -> str:
    """Return our deterministic client id of ``decision_key`` for an order's ``role``.

    ``rt-<role>-<sha256 hex>``, 36 characters of Binance's ``^[.A-Z:/a-z0-9_-]{1,36}$``: the same
    decision gives the same id, so a retry reuses it; entry, SL, TP and close ids of one decision differ.
    """
    prefix = f"rt-{ROLE_CODES[role]}-"
    return prefix + hashlib.sha256(decision_key.encode()).hexdigest()[: CLIENT_ID_MAX_CHARS - len(prefix)]


def wire(value: Decimal) -> str:
    """Format a Decimal for the wire: plain digits, no exponent (``Decimal('1E+1')`` → ``'10'``)."""
    return f"{value:f}" if value else "0"


def to_decimal(value: Decimal | float | str) -> Decimal:
    """Return ``value`` as a Decimal; a float becomes its shortest round-trip decimal (0.1 → 0.1)."""
    if isinstance(value, Decimal):
        return value
    return Decimal(repr(value) if isinstance(value, float) else value)


def floor_quantity(filters: SymbolFilters, quantity: Decimal | float) -> Decimal:
    """Floor ``quantity`` (base asset) to MARKET_LOT_SIZE's step, as the simulator does."""
    return _on_grid(floor_to_step(float(quantity), filters.step_size), filters.step_size)


def entry_quantity(filters: SymbolFilters, quantity: Decimal | float, mark_price: Decimal | float) -> Decimal:
    """Return an entry's quantity floored to the step.

    OrderSizeError below minQty, above maxQty, or below MIN_NOTIONAL at ``mark_price`` (USDT).
    """
    qty = floor_quantity(filters, quantity)
    mark = to_decimal(mark_price)
    if qty <= 0 or qty < to_decimal(filters.min_qty):
        raise OrderSizeError(
            f"quantity {quantity} floors to {wire(qty)}, below the minimum {filters.min_qty}"
        )
    if not math.isinf(filters.max_qty) and qty > to_decimal(filters.max_qty):
        raise OrderSizeError(f"quantity {wire(qty)} is above the maximum {filters.max_qty}")
    if qty * mark < to_decimal(filters.min_notional_usdt):
        raise OrderSizeError(
            f"notional {wire(qty)} x mark {wire(mark)} = {wire(qty * mark)} USDT is below MIN_NOTIONAL "
            f"{filters.min_notional_usdt}"
        )
    return qty


def protective_trigger(
    filters: SymbolFilters, price: Decimal | float, entry_price: Decimal | float
) -> Decimal:
    """Round a stop or take-profit trigger price to the tick toward ``entry_price`` (module docstring)."""
    return _on_grid(round_toward(float(price), filters.tick_size, float(entry_price)), filters.tick_size)


def market_params(
    symbol: str, side: OrderSide, quantity: Decimal, client_order_id: str, *, reduce_only: bool, hedge: bool
) -> dict[str, str]:
    """Return the parameters of a MARKET order (``newOrderRespType=RESULT``: the answer shows the fill).

    One-way mode: ``reduceOnly`` when asked. Hedge mode: ``positionSide`` of the position the order
    opens, or closes when ``reduce_only`` (Binance takes no reduceOnly there).
    """
    params = {"symbol": symbol, "side": side, "type": "MARKET", "quantity": wire(quantity),
              "newClientOrderId": client_order_id, "newOrderRespType": "RESULT"}  # fmt: skip
    if hedge:
        params["positionSide"] = "LONG" if (side == "BUY") != reduce_only else "SHORT"
    elif reduce_only:
        params["reduceOnly"] = "true"
    return params


def protection_params(
    symbol: str,
    kind: Protection,
    position: PositionSide,
    trigger_price: Decimal,
    client_algo_id: str,
    quantity: Decimal | None,
    *,
    hedge: bool,
) -> dict[str, str]:
    """Return the algo order parameters of an SL (STOP_MARKET) or TP (TAKE_PROFIT_MARKET) closing ``position``.

    Triggered by the mark price, with priceProtect; ``quantity`` makes it reduce-only (in one-way
    mode), None a closePosition order.
    """
    params = {
        "algoType": "CONDITIONAL", "symbol": symbol, "side": "SELL" if position == "LONG" else "BUY",
        "type": "STOP_MARKET" if kind == "SL" else "TAKE_PROFIT_MARKET", "triggerPrice": wire(trigger_price),
        "workingType": "MARK_PRICE", "priceProtect": "TRUE", "clientAlgoId": client_algo_id,
    }  # fmt: skip
    if hedge:
        params["positionSide"] = position
    if quantity is None:
        params["closePosition"] = "true"
    else:
        params["quantity"] = wire(quantity)
        if not hedge:
            params["reduceOnly"] = "true"
    return params


def _on_grid(value: float, increment: float) -> Decimal:
    # the kernel's float result, cleaned of float noise at the increment's decimals
    if not increment > 0:
        return to_decimal(value)
    places = max(0, -int(to_decimal(increment).normalize().as_tuple().exponent))
    return to_decimal(value).quantize(Decimal(1).scaleb(-places))
