"""The paper broker's records and their Binance USDⓈ-M shapes: REST answers and user-data events.

Records hold what the venue knows about an order, an algo (conditional) order, a position and a
fill; ``symbol_rules`` turns exchangeInfo into exact Decimal filters (via ``core.sim``'s parser);
the builders render records and the account (``AccountView``) with Binance's field names and string
formatting, checked against the recorded payloads in ``../shared/data/payloads``
(``fixtures/http_json``, ``fixtures/user_data_json``). Quantities are Decimal and shown at the
symbol's ``quantityPrecision``; fill prices carry the simulator's slippage and are shown as the
shortest exact decimal of the float (they need not lie on a tick); money is shown with 8 decimals.
One-way mode, isolated margin: ``positionSide`` is always ``BOTH``, ``marginType`` ``isolated``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from core.sim import DEFAULT_BRACKETS, LeverageBracket, SymbolFilters, parse_symbol_filters

ZERO = Decimal(0)
MARGIN_ASSET = "USDT"
#: Sides as the simulator counts them.
SIDE_SIGN = {"BUY": 1, "SELL": -1}


@dataclass(slots=True)
class Order:
    """A matching-engine order: a MARKET order, or the child MARKET order of a triggered algo order."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str
    orig_qty: Decimal
    reduce_only: bool
    time_ms: int
    orig_type: str = "MARKET"  # the algo's type for a child order
    stop_price: Decimal = ZERO  # the algo's trigger for a child order
    working_type: str = "CONTRACT_PRICE"
    close_position: bool = False
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: float = 0.0
    update_ms: int = 0

    @property
    def avg_price(self) -> float:
        return self.cum_quote / float(self.executed_qty) if self.executed_qty else 0.0


@dataclass(slots=True)
class AlgoOrder:
    """A conditional order held by the algo service until its trigger (``POST /fapi/v1/algoOrder``)."""

    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str  # STOP_MARKET or TAKE_PROFIT_MARKET
    quantity: Decimal  # 0 with close_position
    close_position: bool
    reduce_only: bool
    trigger_price: Decimal
    working_type: str
    price_protect: bool
    time_in_force: str
    create_ms: int
    status: str = "NEW"
    update_ms: int = 0
    trigger_ms: int = 0
    actual_order_id: int | None = None
    executed_qty: Decimal = ZERO
    avg_price: float = 0.0
    reject_reason: str = ""

    def triggered_by(self, price: float) -> bool:
        """Whether ``price`` (mark or last, per workingType) is at or beyond the trigger.

        A sell stop fires at price ≤ trigger and a sell take-profit at price ≥ trigger; mirrored for buys.
        """
        trigger = float(self.trigger_price)
        falling = (self.side == "SELL") == (self.order_type == "STOP_MARKET")
        return price <= trigger if falling else price >= trigger


@dataclass(slots=True)
class PaperPosition:
    """What Binance shows of one symbol's one-way isolated position; ``amount`` signed (base asset), 0
    when flat. The paper broker copies entry, margin, fees, bracket and liquidation from its book."""

    leverage: int
    amount: Decimal = ZERO
    entry_price: float = 0.0
    margin: float = 0.0  # isolated wallet, USDT
    open_fees: float = 0.0  # taker fees paid on the open amount (break-even price)
    realized: float = 0.0  # accumulated realized PnL of the symbol before fees ("cr")
    mmr: float = 0.0  # the bracket's maintenance margin rate and amount, while open
    cum: float = 0.0
    update_ms: int = 0
    liquidation_price: float = 0.0  # the book's, while open

    @property
    def side(self) -> int:
        return (self.amount > 0) - (self.amount < 0)

    def unrealized(self, mark: float) -> float:
        return float(self.amount) * (mark - self.entry_price) if self.amount else 0.0

    def break_even(self, fee_rate: float) -> float:
        """Entry price moved by the open fees and the taker fee of closing at it (0 when flat)."""
        if not self.amount:
            return 0.0
        qty = abs(float(self.amount))
        return self.entry_price + self.side * (self.open_fees / qty + fee_rate * self.entry_price)


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade of an order (``GET /fapi/v1/userTrades``)."""

    trade_id: int
    order_id: int
    symbol: str
    side: str
    qty: Decimal
    price: float
    fee: float
    realized: float
    time_ms: int


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """A symbol's order filters as exact decimals (exchangeInfo), and its leverage brackets."""

    filters: SymbolFilters
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_price: Decimal
    max_price: Decimal
    min_notional: Decimal
    price_precision: int
    quantity_precision: int
    brackets: tuple[LeverageBracket, ...]


def symbol_rules(
    exchange_info: Mapping[str, Any], brackets: Mapping[str, tuple[LeverageBracket, ...]] | None = None
) -> dict[str, SymbolRules]:
    """Return the rules of every TRADING symbol of a decoded ``GET /fapi/v1/exchangeInfo``."""
    filters = parse_symbol_filters(exchange_info)
    out: dict[str, SymbolRules] = {}
    for entry in exchange_info["symbols"]:
        symbol = str(entry["symbol"])
        if entry.get("status", "TRADING") != "TRADING" or symbol not in filters:
            continue
        f = filters[symbol]
        out[symbol] = SymbolRules(
            filters=f,
            tick=exact_decimal(f.tick_size),
            step=exact_decimal(f.step_size),
            min_qty=exact_decimal(f.min_qty),
            max_qty=exact_decimal(f.max_qty, Decimal("1e20")),
            min_price=exact_decimal(f.min_price),
            max_price=exact_decimal(f.max_price, Decimal("1e20")),
            min_notional=exact_decimal(f.min_notional_usdt),
            price_precision=int(entry.get("pricePrecision", 8)),
            quantity_precision=int(entry.get("quantityPrecision", 8)),
            brackets=(brackets or {}).get(symbol, DEFAULT_BRACKETS),
        )
    return out


def exact_decimal(value: float, infinite: Decimal = ZERO) -> Decimal:
    # repr is the shortest round-trip decimal, i.e. the exchangeInfo string ("0.001" → 0.001)
    return Decimal(repr(float(value))) if math.isfinite(value) else infinite


# --- formatting ------------------------------------------------------------------------------------
def price_str(value: float) -> str:
    """The shortest exact decimal of a float price ("0" for zero)."""
    return str(np.format_float_positional(float(value), trim="-")) if value else "0"


def money_str(value: float) -> str:
    return f"{float(value) + 0.0:.8f}"  # + 0.0: no "-0.00000000"


def qty_str(value: Decimal, precision: int) -> str:
    return f"{value:.{precision}f}"


def decimal_str(value: Decimal) -> str:
    """A Decimal as sent by the client, without exponent ("0" for zero)."""
    return f"{value:f}" if value else "0"


# --- REST ------------------------------------------------------------------------------------------
def order_json(order: Order, qp: int) -> dict[str, Any]:
    """``/fapi/v1/order`` answer (order_response.json keys plus ``cumQty``)."""
    return {
        "orderId": order.order_id,
        "symbol": order.symbol,
        "status": order.status,
        "clientOrderId": order.client_order_id,
        "price": "0",
        "avgPrice": price_str(order.avg_price),
        "origQty": qty_str(order.orig_qty, qp),
        "executedQty": qty_str(order.executed_qty, qp),
        "cumQty": qty_str(order.executed_qty, qp),
        "cumQuote": money_str(order.cum_quote),
        "timeInForce": "GTC",
        "type": "MARKET",
        "reduceOnly": order.reduce_only,
        "closePosition": order.close_position,
        "side": order.side,
        "positionSide": "BOTH",
        "stopPrice": decimal_str(order.stop_price),
        "workingType": order.working_type,
        "priceProtect": False,
        "origType": order.orig_type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "NONE",
        "goodTillDate": 0,
        "time": order.time_ms,
        "updateTime": order.update_ms or order.time_ms,
    }


def algo_json(algo: AlgoOrder, qp: int) -> dict[str, Any]:
    """``/fapi/v1/algoOrder`` answer: Binance's fields, plus ``type`` as open_algo_orders.json has it."""
    return {
        "algoId": algo.algo_id,
        "clientAlgoId": algo.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": algo.order_type,
        "type": algo.order_type,
        "symbol": algo.symbol,
        "side": algo.side,
        "positionSide": "BOTH",
        "timeInForce": algo.time_in_force,
        "quantity": qty_str(algo.quantity, qp),
        "algoStatus": algo.status,
        "triggerPrice": decimal_str(algo.trigger_price),
        "price": "0",
        "icebergQuantity": None,
        "selfTradePreventionMode": "NONE",
        "workingType": algo.working_type,
        "priceMatch": "NONE",
        "closePosition": algo.close_position,
        "priceProtect": algo.price_protect,
        "reduceOnly": algo.reduce_only,
        "activatePrice": "",
        "callbackRate": "",
        "createTime": algo.create_ms,
        "updateTime": algo.update_ms or algo.create_ms,
        "triggerTime": algo.trigger_ms,
        "goodTillDate": 0,
        "actualOrderId": "" if algo.actual_order_id is None else str(algo.actual_order_id),
        "actualPrice": price_str(algo.avg_price),
        "executedQty": qty_str(algo.executed_qty, qp),
    }


def trade_json(fill: Fill, qp: int) -> dict[str, Any]:
    """``GET /fapi/v1/userTrades`` row."""
    return {
        "buyer": fill.side == "BUY",
        "commission": money_str(fill.fee),
        "commissionAsset": MARGIN_ASSET,
        "id": fill.trade_id,
        "maker": False,
        "orderId": fill.order_id,
        "price": price_str(fill.price),
        "qty": qty_str(fill.qty, qp),
        "quoteQty": money_str(float(fill.qty) * fill.price),
        "realizedPnl": money_str(fill.realized),
        "side": fill.side,
        "positionSide": "BOTH",
        "symbol": fill.symbol,
        "time": fill.time_ms,
    }


# --- user-data events ------------------------------------------------------------------------------
def order_trade_update(
    order: Order,
    qp: int,
    ts_ms: int,
    execution: str,
    *,
    fill: Fill | None = None,
    client_order_id: str | None = None,
    order_type: str = "MARKET",
    time_in_force: str = "GTC",
) -> dict[str, Any]:
    """ORDER_TRADE_UPDATE (order_update_new/trade.json keys) for ``execution`` NEW, TRADE, EXPIRED, CALCULATED."""
    return {
        "e": "ORDER_TRADE_UPDATE",
        "T": ts_ms,
        "E": ts_ms,
        "o": {
            "s": order.symbol,
            "c": client_order_id or order.client_order_id,
            "S": order.side,
            "o": order_type,
            "f": time_in_force,
            "q": qty_str(order.orig_qty, qp),
            "p": "0",
            "ap": price_str(order.avg_price),
            "sp": decimal_str(order.stop_price),
            "x": execution,
            "X": order.status,
            "i": order.order_id,
            "l": qty_str(fill.qty if fill else ZERO, qp),
            "z": qty_str(order.executed_qty, qp),
            "L": price_str(fill.price) if fill else "0",
            "N": MARGIN_ASSET,
            "n": money_str(fill.fee) if fill else "0",
            "T": ts_ms,
            "t": fill.trade_id if fill else 0,
            "b": "0",
            "a": "0",
            "m": False,
            "R": order.reduce_only,
            "wt": order.working_type,
            "ot": order.orig_type if order_type == "MARKET" else order_type,
            "ps": "BOTH",
            "cp": order.close_position,
            "AP": "0",
            "cr": "0",
            "pP": False,
            "si": 0,
            "ss": 0,
            "rp": money_str(fill.realized) if fill else "0",
            "V": "NONE",
        },
    }


def algo_update(algo: AlgoOrder, qp: int, ts_ms: int) -> dict[str, Any]:
    """ALGO_UPDATE (algo_update_new.json keys); ``ai`` is the child orderId once triggered, else ""."""
    return {
        "e": "ALGO_UPDATE",
        "T": ts_ms,
        "E": ts_ms,
        "o": {
            "caid": algo.client_algo_id,
            "aid": algo.algo_id,
            "at": "CONDITIONAL",
            "o": algo.order_type,
            "s": algo.symbol,
            "S": algo.side,
            "ps": "BOTH",
            "f": algo.time_in_force,
            "q": qty_str(algo.quantity, qp),
            "X": algo.status,
            "ai": "" if algo.actual_order_id is None else str(algo.actual_order_id),
            "ap": price_str(algo.avg_price),
            "aq": qty_str(algo.executed_qty, qp),
            "act": "0",
            "tp": decimal_str(algo.trigger_price),
            "p": "0",
            "V": "NONE",
            "wt": algo.working_type,
            "pm": "NONE",
            "cp": algo.close_position,
            "pP": algo.price_protect,
            "R": algo.reduce_only,
            "tt": algo.trigger_ms,
            "gtd": 0,
            "rm": algo.reject_reason,
        },
    }


def account_update(
    ts_ms: int,
    wallet: float,
    cross_wallet: float,
    positions: list[tuple[str, PaperPosition, float, float, int]],
    reason: str = "ORDER",
) -> dict[str, Any]:
    """ACCOUNT_UPDATE (account_update.json keys); ``positions``: (symbol, position, mark, fee_rate, qp)."""
    return {
        "e": "ACCOUNT_UPDATE",
        "T": ts_ms,
        "E": ts_ms,
        "a": {
            "m": reason,
            "B": [{"a": MARGIN_ASSET, "wb": money_str(wallet), "cw": money_str(cross_wallet), "bc": "0"}],
            "P": [
                {
                    "s": symbol,
                    "pa": qty_str(p.amount, qp),
                    "ep": price_str(p.entry_price),
                    "bep": price_str(p.break_even(fee_rate)),
                    "cr": money_str(p.realized),
                    "up": money_str(p.unrealized(mark)),
                    "mt": "isolated",
                    "iw": money_str(p.margin),
                    "ps": "BOTH",
                }
                for symbol, p, mark, fee_rate, qp in positions
            ],
        },
    }


# --- account and positions (REST) ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AccountView:
    """What the account endpoints read: wallet (isolated margins included), marks, rules, time."""

    wallet: float
    fee_rate: float
    positions: Mapping[str, PaperPosition]
    rules: Mapping[str, SymbolRules]
    mark: Callable[[str], float]
    now_ms: int

    @property
    def used_margin(self) -> float:
        return sum(p.margin for p in self.positions.values())

    @property
    def unrealized(self) -> float:
        return sum(p.unrealized(self.mark(s)) for s, p in self.positions.items())

    @property
    def available(self) -> float:
        """Cross wallet: the wallet less the isolated margins (isolated PnL does not count)."""
        return self.wallet - self.used_margin

    def initial_margin(self, symbol: str, p: PaperPosition) -> float:
        return abs(float(p.amount)) * self.mark(symbol) / p.leverage

    def maint_margin(self, symbol: str, p: PaperPosition) -> float:
        return max(abs(float(p.amount)) * self.mark(symbol) * p.mmr - p.cum, 0.0) if p.amount else 0.0

    def liquidation(self, p: PaperPosition) -> float:
        return max(p.liquidation_price, 0.0) if p.amount else 0.0

    def max_notional(self, symbol: str, leverage: int) -> float:
        caps = [b.notional_cap_usdt for b in self.rules[symbol].brackets if b.max_leverage >= leverage]
        return max(caps, default=0.0)


def number_str(value: float) -> str:
    """An integral amount as Binance shows caps ("250000"); others as the shortest decimal."""
    return str(int(value)) if float(value).is_integer() else price_str(value)


def _totals(view: AccountView) -> dict[str, Any]:
    initial = sum(view.initial_margin(s, p) for s, p in view.positions.items())
    maint = sum(view.maint_margin(s, p) for s, p in view.positions.items())
    return {
        "totalInitialMargin": money_str(initial),
        "totalMaintMargin": money_str(maint),
        "totalWalletBalance": money_str(view.wallet),
        "totalUnrealizedProfit": money_str(view.unrealized),
        "totalMarginBalance": money_str(view.wallet + view.unrealized),
        "totalPositionInitialMargin": money_str(initial),
        "totalOpenOrderInitialMargin": "0.00000000",
        "totalCrossWalletBalance": money_str(view.available),
        "totalCrossUnPnl": "0.00000000",
        "availableBalance": money_str(view.available),
        "maxWithdrawAmount": money_str(view.available),
    }


def _asset(view: AccountView) -> dict[str, Any]:
    totals = _totals(view)
    return {
        "asset": MARGIN_ASSET,
        "walletBalance": totals["totalWalletBalance"],
        "unrealizedProfit": totals["totalUnrealizedProfit"],
        "marginBalance": totals["totalMarginBalance"],
        "maintMargin": totals["totalMaintMargin"],
        "initialMargin": totals["totalInitialMargin"],
        "positionInitialMargin": totals["totalPositionInitialMargin"],
        "openOrderInitialMargin": "0.00000000",
        "crossWalletBalance": totals["totalCrossWalletBalance"],
        "crossUnPnl": "0.00000000",
        "availableBalance": totals["availableBalance"],
        "maxWithdrawAmount": totals["maxWithdrawAmount"],
        "marginAvailable": True,
        "updateTime": view.now_ms,
    }


def account_v2(view: AccountView, positions: Mapping[str, PaperPosition]) -> dict[str, Any]:
    """``GET /fapi/v2/account`` (account_info_v2.json keys); ``positions``: every symbol's, flat ones too."""
    return {
        "feeTier": 0,
        "canTrade": True,
        "canDeposit": True,
        "canWithdraw": True,
        "updateTime": 0,
        "multiAssetsMargin": False,
        "tradeGroupId": -1,
        **_totals(view),
        "assets": [_asset(view)],
        "positions": [
            {
                "symbol": s,
                "initialMargin": money_str(view.initial_margin(s, p)),
                "maintMargin": money_str(view.maint_margin(s, p)),
                "unrealizedProfit": money_str(p.unrealized(view.mark(s))),
                "positionInitialMargin": money_str(view.initial_margin(s, p)),
                "openOrderInitialMargin": "0",
                "leverage": str(p.leverage),
                "isolated": True,
                "entryPrice": price_str(p.entry_price),
                "maxNotional": number_str(view.max_notional(s, p.leverage)),
                "bidNotional": "0",
                "askNotional": "0",
                "positionSide": "BOTH",
                "positionAmt": qty_str(p.amount, view.rules[s].quantity_precision),
                "updateTime": p.update_ms,
            }
            for s, p in positions.items()
        ],
    }


def account_v3(view: AccountView) -> dict[str, Any]:
    """``GET /fapi/v3/account``: the totals, the USDT asset and the open positions only."""
    return {
        **_totals(view),
        "assets": [_asset(view)],
        "positions": [
            {
                "symbol": s,
                "positionSide": "BOTH",
                "positionAmt": qty_str(p.amount, view.rules[s].quantity_precision),
                "unrealizedProfit": money_str(p.unrealized(view.mark(s))),
                "isolatedMargin": money_str(p.margin + p.unrealized(view.mark(s))),
                "notional": money_str(float(p.amount) * view.mark(s)),
                "isolatedWallet": money_str(p.margin),
                "initialMargin": money_str(view.initial_margin(s, p)),
                "maintMargin": money_str(view.maint_margin(s, p)),
                "updateTime": p.update_ms,
            }
            for s, p in view.positions.items()
            if p.amount
        ],
    }


def position_risk_v2(view: AccountView, symbol: str, p: PaperPosition) -> dict[str, Any]:
    """``GET /fapi/v2/positionRisk`` row (position_risk.json keys plus ``isolated``, ``adlQuantile``)."""
    mark = view.mark(symbol)
    return {
        "symbol": symbol,
        "positionAmt": qty_str(p.amount, view.rules[symbol].quantity_precision),
        "entryPrice": price_str(p.entry_price),
        "breakEvenPrice": price_str(p.break_even(view.fee_rate)),
        "markPrice": price_str(mark),
        "unRealizedProfit": money_str(p.unrealized(mark)),
        "liquidationPrice": price_str(view.liquidation(p)),
        "leverage": str(p.leverage),
        "maxNotionalValue": number_str(view.max_notional(symbol, p.leverage)),
        "marginType": "isolated",
        "isolatedMargin": money_str(p.margin + p.unrealized(mark)),
        "isAutoAddMargin": "false",
        "positionSide": "BOTH",
        "notional": money_str(float(p.amount) * mark),
        "isolatedWallet": money_str(p.margin),
        "updateTime": p.update_ms,
        "isolated": True,
        "adlQuantile": 0,
    }


def position_risk_v3(view: AccountView, symbol: str, p: PaperPosition) -> dict[str, Any]:
    """``GET /fapi/v3/positionRisk`` row (Binance's v3 fields)."""
    mark = view.mark(symbol)
    return {
        "symbol": symbol,
        "positionSide": "BOTH",
        "positionAmt": qty_str(p.amount, view.rules[symbol].quantity_precision),
        "entryPrice": price_str(p.entry_price),
        "breakEvenPrice": price_str(p.break_even(view.fee_rate)),
        "markPrice": price_str(mark),
        "unRealizedProfit": money_str(p.unrealized(mark)),
        "liquidationPrice": price_str(view.liquidation(p)),
        "isolatedMargin": money_str(p.margin + p.unrealized(mark)),
        "notional": money_str(float(p.amount) * mark),
        "marginAsset": MARGIN_ASSET,
        "isolatedWallet": money_str(p.margin),
        "initialMargin": money_str(view.initial_margin(symbol, p)),
        "maintMargin": money_str(view.maint_margin(symbol, p)),
        "positionInitialMargin": money_str(view.initial_margin(symbol, p)),
        "openOrderInitialMargin": "0",
        "adl": 0,
        "bidNotional": "0",
        "askNotional": "0",
        "updateTime": p.update_ms,
    }


def balance(view: AccountView) -> list[dict[str, Any]]:
    """``GET /fapi/v2|v3/balance`` (balance.json keys)."""
    return [
        {
            "accountAlias": "replay",
            "asset": MARGIN_ASSET,
            "balance": money_str(view.wallet),
            "crossWalletBalance": money_str(view.available),
            "crossUnPnl": "0.00000000",
            "availableBalance": money_str(view.available),
            "maxWithdrawAmount": money_str(view.available),
            "marginAvailable": True,
            "updateTime": view.now_ms,
        }
    ]
