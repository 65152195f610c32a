"""Binance USDⓈ-M market-stream payloads: typed structures with Binance's field names, parsed once.

Each struct mirrors the fields of one event as Binance sends them (``kline``, ``markPriceUpdate``,
``bookTicker``), numbers already checked and converted, and converts to our domain type with
``to_update()`` (``exchange.updates``). ``parse_kline``/``parse_mark``/``parse_book`` do both.
A payload that does not parse raises ``core.errors.MalformedMessage`` naming the field and the
problem, which the caller records as a data-quality event. Binance's field names appear only here
and in ``exchange.binance.rest``.

Signed REST answers (``exchange.binance.trading``) are parsed the same way: ``OrderResponse``
(``/fapi/v1/order``, openOrders rows), ``AlgoOrderResponse`` (``/fapi/v1/algoOrder``, openAlgoOrders
and allAlgoOrders rows), ``PositionRisk``, ``Balance`` and ``UserTrade``; quantities, prices and
money are exact ``Decimal``s, ids accept numbers or digit strings. ``to_update()``/``to_fill()``
convert them to ``core.messages`` types.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from core.errors import MalformedMessage
from core.messages import FillNew, OrderSide, OrderUpdate, PositionUpdate
from core.symbols import SymbolError, to_internal
from core.time import INTERVAL_MS
from exchange.updates import BookUpdate, KlineUpdate, MarkUpdate


@dataclass(frozen=True, slots=True)
class Kline:
    """The ``k`` object of a kline event."""

    t: int  # open time, ms
    T: int  # close time, ms: t + interval − 1
    i: str  # interval
    o: float
    h: float
    l: float  # noqa: E741 - Binance's name of the low
    c: float
    v: float  # volume, base asset
    q: float  # quote volume, USDT (0 when absent)
    n: int  # trade count (0 when absent)
    V: float  # taker buy volume, base asset (0 when absent)
    x: bool  # the bar is closed (final push)


@dataclass(frozen=True, slots=True)
class KlineEvent:
    """``{"e": "kline", "E": event ms, "s": symbol, "k": Kline}``."""

    E: int
    s: str  # symbol as sent; for USDⓈ-M our internal form
    k: Kline

    def to_update(self) -> KlineUpdate:
        """Return the bar in our names and units."""
        k = self.k
        return KlineUpdate(
            symbol=self.s, interval=k.i, open_ms=k.t, event_ms=self.E, open=k.o, high=k.h, low=k.l,
            close=k.c, volume=k.v, quote_volume=k.q, trade_count=k.n, taker_buy_volume=k.V, closed=k.x,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class MarkPriceEvent:
    """``{"e": "markPriceUpdate", "E", "s", "p": mark, "i": index, "r": funding rate, "T": next funding ms}``."""

    E: int
    s: str
    p: float
    i: float  # NaN when absent, blank or zero
    r: float  # NaN when blank
    T: int

    def to_update(self) -> MarkUpdate:
        """Return the mark tick in our names."""
        return MarkUpdate(self.s, self.E, self.p, self.i, self.r, self.T)


@dataclass(frozen=True, slots=True)
class BookTickerEvent:
    """``{"e": "bookTicker", "u": update id, "E", "T": transaction ms, "s", "b", "B", "a", "A"}``."""

    u: int  # 0 when absent
    T: int  # transaction time; the event time ``E`` when absent
    s: str
    b: float
    B: float
    a: float
    A: float

    def to_update(self) -> BookUpdate:
        """Return the best bid and ask in our names."""
        return BookUpdate(self.s, self.T, self.u, self.b, self.B, self.a, self.A)


# --- parsing ----------------------------------------------------------------------------------------


def parse_kline_event(data: Mapping[str, Any], payload: object = None) -> KlineEvent:
    """Parse a ``kline`` event; the bar must lie on its interval's grid and have a consistent OHLC."""
    payload = data if payload is None else payload
    symbol = _symbol(data, payload)
    k = _field(data, "k", "kline", payload, symbol)
    if not isinstance(k, Mapping):
        raise MalformedMessage("bad_shape", "kline: 'k' is not an object", payload, symbol)
    interval = _field(k, "i", "kline", payload, symbol)
    if interval not in INTERVAL_MS:
        raise MalformedMessage("bad_value", f"kline: unknown interval {interval!r}", payload, symbol)
    step = INTERVAL_MS[interval]
    open_ms = _int(_field(k, "t", "kline", payload, symbol), "t", "kline", payload, symbol)
    close_ms = _int(_field(k, "T", "kline", payload, symbol), "T", "kline", payload, symbol)
    if open_ms % step or close_ms != open_ms + step - 1:
        raise MalformedMessage(
            "off_grid", f"kline {interval}: t={open_ms}, T={close_ms} are not a bar of the {step} ms grid",
            payload, symbol,
        )  # fmt: skip
    o, h, lo, c = (
        _price(_field(k, n, "kline", payload, symbol), n, "kline", payload, symbol) for n in "ohlc"
    )
    if h < max(o, c, lo) or lo > min(o, c):
        raise MalformedMessage(
            "ohlc_outside_range", f"kline {interval} at {open_ms}: o={o} h={h} l={lo} c={c}", payload, symbol
        )
    closed = _field(k, "x", "kline", payload, symbol)
    if not isinstance(closed, bool):
        raise MalformedMessage("bad_value", f"kline: x={closed!r} is not a boolean", payload, symbol)
    volume = _price(_field(k, "v", "kline", payload, symbol), "v", "kline", payload, symbol, zero_ok=True)
    return KlineEvent(
        E=_int(_field(data, "E", "kline", payload, symbol), "E", "kline", payload, symbol),
        s=symbol,
        k=Kline(
            t=open_ms, T=close_ms, i=interval, o=o, h=h, l=lo, c=c, v=volume,
            q=_price(k.get("q", 0), "q", "kline", payload, symbol, zero_ok=True),
            n=_int(k.get("n", 0), "n", "kline", payload, symbol),
            V=_price(k.get("V", 0), "V", "kline", payload, symbol, zero_ok=True),
            x=closed,
        ),
    )  # fmt: skip


def parse_mark_event(data: Mapping[str, Any], payload: object = None) -> MarkPriceEvent:
    """Parse a ``markPriceUpdate`` event; a missing or zero index price gives index NaN."""
    payload = data if payload is None else payload
    symbol = _symbol(data, payload)
    index_raw = data.get("i")
    index = math.nan
    if index_raw not in (None, ""):
        index = _price(index_raw, "i", "markPrice", payload, symbol, zero_ok=True) or math.nan
    rate_raw = _field(data, "r", "markPrice", payload, symbol)
    try:
        rate = float(rate_raw) if rate_raw != "" else math.nan
    except (TypeError, ValueError):
        raise MalformedMessage(
            "bad_number", f"markPrice: r={rate_raw!r} is not a number", payload, symbol
        ) from None
    return MarkPriceEvent(
        E=_int(_field(data, "E", "markPrice", payload, symbol), "E", "markPrice", payload, symbol),
        s=symbol,
        p=_price(_field(data, "p", "markPrice", payload, symbol), "p", "markPrice", payload, symbol),
        i=index,
        r=rate,
        T=_int(_field(data, "T", "markPrice", payload, symbol), "T", "markPrice", payload, symbol),
    )


def parse_book_event(data: Mapping[str, Any], payload: object = None) -> BookTickerEvent:
    """Parse a ``bookTicker`` event; a crossed book (bid > ask) is malformed."""
    payload = data if payload is None else payload
    symbol = _symbol(data, payload)
    bid = _price(_field(data, "b", "bookTicker", payload, symbol), "b", "bookTicker", payload, symbol)
    ask = _price(_field(data, "a", "bookTicker", payload, symbol), "a", "bookTicker", payload, symbol)
    if bid > ask:
        raise MalformedMessage("crossed_book", f"bookTicker: bid {bid} > ask {ask}", payload, symbol)
    return BookTickerEvent(
        T=_int(data.get("T", data.get("E")), "T", "bookTicker", payload, symbol),
        u=_int(data.get("u", 0), "u", "bookTicker", payload, symbol),
        s=symbol,
        b=bid,
        B=_price(_field(data, "B", "bookTicker", payload, symbol), "B", "bookTicker", payload, symbol, zero_ok=True),
        a=ask,
        A=_price(_field(data, "A", "bookTicker", payload, symbol), "A", "bookTicker", payload, symbol, zero_ok=True),
    )  # fmt: skip


def parse_kline(data: Mapping[str, Any], payload: object = None) -> KlineUpdate:
    """Parse a ``kline`` event (``{"e": "kline", "E": …, "s": …, "k": {…}}``) into a ``KlineUpdate``."""
    return parse_kline_event(data, payload).to_update()


def parse_mark(data: Mapping[str, Any], payload: object = None) -> MarkUpdate:
    """Parse a ``markPriceUpdate`` event into a ``MarkUpdate`` (index NaN when missing or zero)."""
    return parse_mark_event(data, payload).to_update()


def parse_book(data: Mapping[str, Any], payload: object = None) -> BookUpdate:
    """Parse a ``bookTicker`` event into a ``BookUpdate``; a crossed book is malformed."""
    return parse_book_event(data, payload).to_update()


def _field(data: Mapping[str, Any], name: str, what: str, payload: object, symbol: str | None) -> Any:
    if name not in data:
        raise MalformedMessage("missing_field", f"{what}: field {name!r} missing", payload, symbol)
    return data[name]


def _price(
    value: Any, name: str, what: str, payload: object, symbol: str | None, *, zero_ok: bool = False
) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        x = float(value)
    except (TypeError, ValueError):
        raise MalformedMessage(
            "bad_number", f"{what}: {name}={value!r} is not a number", payload, symbol
        ) from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise MalformedMessage(
            "bad_value", f"{what}: {name}={value!r} is not finite and {bound}", payload, symbol
        )
    return x


def _int(value: Any, name: str, what: str, payload: object, symbol: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedMessage("bad_number", f"{what}: {name}={value!r} is not an int >= 0", payload, symbol)
    return value


def _symbol(data: Mapping[str, Any], payload: object) -> str:
    raw = data.get("s")
    try:
        return to_internal(raw, "rest")  # type: ignore[arg-type]
    except SymbolError as e:
        raise MalformedMessage("bad_symbol", str(e), payload, raw if isinstance(raw, str) else None) from None


# --- signed REST answers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderResponse:
    """An order as ``/fapi/v1/order`` answers it (POST, GET, DELETE) and openOrders lists it."""

    orderId: int
    clientOrderId: str
    symbol: str
    status: str  # NEW, PARTIALLY_FILLED, FILLED, CANCELED, REJECTED, EXPIRED, …
    side: OrderSide
    type: str
    origType: str
    positionSide: str
    reduceOnly: bool
    closePosition: bool
    origQty: Decimal
    executedQty: Decimal
    avgPrice: Decimal  # 0 before a fill
    cumQuote: Decimal
    stopPrice: Decimal
    workingType: str
    updateTime: int

    def to_update(self) -> OrderUpdate:
        """Return the order's state in our names."""
        return OrderUpdate(
            symbol=self.symbol, ts_ms=self.updateTime, client_order_id=self.clientOrderId,
            order_id=str(self.orderId), side=self.side, order_type=self.origType, status=self.status,
            qty=float(self.origQty), filled_qty=float(self.executedQty),
            stop_price=float(self.stopPrice) if self.stopPrice else None,
            avg_fill_price=float(self.avgPrice) if self.avgPrice else None,
            reduce_only=self.reduceOnly or self.closePosition,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AlgoOrderResponse:
    """A conditional order as ``/fapi/v1/algoOrder`` answers it and open/allAlgoOrders list it."""

    algoId: int
    clientAlgoId: str
    algoType: str  # CONDITIONAL
    orderType: str  # STOP_MARKET, TAKE_PROFIT_MARKET, … (``type`` in older documentation examples)
    symbol: str
    side: OrderSide
    positionSide: str
    quantity: Decimal  # 0 for closePosition
    algoStatus: str  # NEW, TRIGGERING, TRIGGERED, FINISHED, CANCELED, REJECTED, EXPIRED
    triggerPrice: Decimal
    workingType: str
    reduceOnly: bool
    closePosition: bool  # False when absent
    priceProtect: bool  # False when absent
    actualOrderId: int | None  # the triggered child order; None before (Binance sends "")
    createTime: int
    updateTime: int

    def to_update(self) -> OrderUpdate:
        """Return the algo order's state in our names (``order_id`` is the algoId)."""
        return OrderUpdate(
            symbol=self.symbol, ts_ms=self.updateTime, client_order_id=self.clientAlgoId,
            order_id=str(self.algoId), side=self.side, order_type=self.orderType, status=self.algoStatus,
            qty=float(self.quantity), stop_price=float(self.triggerPrice),
            reduce_only=self.reduceOnly or self.closePosition,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PositionRisk:
    """A row of ``GET /fapi/v2|v3/positionRisk``: one position (v3 omits ``leverage``, ``marginType``)."""

    symbol: str
    positionSide: str
    positionAmt: Decimal  # signed, base asset
    entryPrice: Decimal
    markPrice: Decimal
    unRealizedProfit: Decimal
    liquidationPrice: Decimal
    isolatedMargin: Decimal
    notional: Decimal
    leverage: int | None
    marginType: str  # "" when absent (v3)
    updateTime: int

    def to_update(self, ts_ms: int | None = None) -> PositionUpdate:
        """Return the position in our names, at ``ts_ms`` (default: its updateTime)."""
        return PositionUpdate(
            symbol=self.symbol, ts_ms=self.updateTime if ts_ms is None else ts_ms, qty=float(self.positionAmt),
            entry_price=float(self.entryPrice), unrealized_pnl=float(self.unRealizedProfit),
            mark_price=float(self.markPrice) or None, leverage=self.leverage,
            liquidation_price=float(self.liquidationPrice) or None,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Balance:
    """A row of ``GET /fapi/v2|v3/balance``: one margin asset."""

    asset: str
    balance: Decimal  # wallet balance
    availableBalance: Decimal
    crossWalletBalance: Decimal
    updateTime: int


@dataclass(frozen=True, slots=True)
class UserTrade:
    """A row of ``GET /fapi/v1/userTrades``: one fill of one of our orders."""

    id: int  # trade id, unique per symbol
    orderId: int
    symbol: str
    side: OrderSide
    positionSide: str
    price: Decimal
    qty: Decimal
    quoteQty: Decimal
    commission: Decimal
    commissionAsset: str
    realizedPnl: Decimal
    maker: bool
    time: int

    def to_fill(self, client_order_id: str | None = None) -> FillNew:
        """Return the fill in our names (userTrades carries no client id: pass it when known)."""
        return FillNew(
            symbol=self.symbol, ts_ms=self.time, trade_id=str(self.id), order_id=str(self.orderId),
            client_order_id=client_order_id, side=self.side, price=float(self.price), qty=float(self.qty),
            fee=float(self.commission), fee_asset=self.commissionAsset, is_maker=self.maker,
            realized_pnl=float(self.realizedPnl),
        )  # fmt: skip


def parse_order_response(data: Mapping[str, Any], payload: object = None) -> OrderResponse:
    """Parse an order answer of ``/fapi/v1/order`` (ids as numbers or digit strings)."""
    r = _Reader(data, "order", payload)
    return OrderResponse(
        orderId=r.identifier("orderId"), clientOrderId=r.text("clientOrderId"), symbol=r.symbol,
        status=r.text("status"), side=r.side(), type=r.text("type"), origType=r.text("origType", r.text("type")),
        positionSide=r.text("positionSide", "BOTH"), reduceOnly=r.flag("reduceOnly"),
        closePosition=r.flag("closePosition", False), origQty=r.decimal("origQty"),
        executedQty=r.decimal("executedQty"), avgPrice=r.decimal("avgPrice", Decimal(0)),
        cumQuote=r.decimal("cumQuote", Decimal(0)), stopPrice=r.decimal("stopPrice", Decimal(0)),
        workingType=r.text("workingType", "CONTRACT_PRICE"), updateTime=r.identifier("updateTime", r.get("time")),
    )  # fmt: skip


def parse_algo_order(data: Mapping[str, Any], payload: object = None) -> AlgoOrderResponse:
    """Parse an algo order answer of ``/fapi/v1/algoOrder`` (``orderType``, or ``type`` in older examples)."""
    r = _Reader(data, "algoOrder", payload)
    actual = r.get("actualOrderId")
    return AlgoOrderResponse(
        algoId=r.identifier("algoId"), clientAlgoId=r.text("clientAlgoId"), algoType=r.text("algoType"),
        orderType=r.text("orderType", r.get("type")), symbol=r.symbol, side=r.side(),
        positionSide=r.text("positionSide", "BOTH"), quantity=r.decimal("quantity", Decimal(0)),
        algoStatus=r.text("algoStatus"), triggerPrice=r.decimal("triggerPrice"),
        workingType=r.text("workingType", "CONTRACT_PRICE"), reduceOnly=r.flag("reduceOnly", False),
        closePosition=r.flag("closePosition", False), priceProtect=r.flag("priceProtect", False),
        actualOrderId=None if actual in (None, "", 0, "0") else r.identifier("actualOrderId"),
        createTime=r.identifier("createTime"), updateTime=r.identifier("updateTime", r.get("createTime")),
    )  # fmt: skip


def parse_position_risk(data: Mapping[str, Any], payload: object = None) -> PositionRisk:
    """Parse a ``positionRisk`` row (v2 or v3)."""
    r = _Reader(data, "positionRisk", payload)
    leverage = r.get("leverage")
    return PositionRisk(
        symbol=r.symbol, positionSide=r.text("positionSide", "BOTH"),
        positionAmt=r.decimal("positionAmt", signed=True), entryPrice=r.decimal("entryPrice"),
        markPrice=r.decimal("markPrice"), unRealizedProfit=r.decimal("unRealizedProfit", signed=True),
        liquidationPrice=r.decimal("liquidationPrice", Decimal(0)),
        isolatedMargin=r.decimal("isolatedMargin", Decimal(0), signed=True),
        notional=r.decimal("notional", Decimal(0), signed=True),
        leverage=None if leverage is None else r.identifier("leverage"), marginType=r.text("marginType", ""),
        updateTime=r.identifier("updateTime", 0),
    )  # fmt: skip


def parse_balance(data: Mapping[str, Any], payload: object = None) -> Balance:
    """Parse a ``balance`` row."""
    r = _Reader(data, "balance", payload, with_symbol=False)
    return Balance(
        asset=r.text("asset"), balance=r.decimal("balance", signed=True),
        availableBalance=r.decimal("availableBalance", signed=True),
        crossWalletBalance=r.decimal("crossWalletBalance", Decimal(0), signed=True),
        updateTime=r.identifier("updateTime", 0),
    )  # fmt: skip


def parse_user_trade(data: Mapping[str, Any], payload: object = None) -> UserTrade:
    """Parse a ``userTrades`` row."""
    r = _Reader(data, "userTrade", payload)
    return UserTrade(
        id=r.identifier("id"), orderId=r.identifier("orderId"), symbol=r.symbol, side=r.side(),
        positionSide=r.text("positionSide", "BOTH"), price=r.decimal("price"), qty=r.decimal("qty"),
        quoteQty=r.decimal("quoteQty", Decimal(0)), commission=r.decimal("commission", signed=True),
        commissionAsset=r.text("commissionAsset"), realizedPnl=r.decimal("realizedPnl", Decimal(0), signed=True),
        maker=r.flag("maker", False), time=r.identifier("time"),
    )  # fmt: skip


_MISSING = object()


class _Reader:
    """Typed access to one REST object's fields; a bad or missing field raises MalformedMessage."""

    def __init__(
        self, data: Mapping[str, Any], what: str, payload: object, *, with_symbol: bool = True
    ) -> None:
        if not isinstance(data, Mapping):
            raise MalformedMessage(
                "bad_shape", f"{what}: expected an object, got {type(data).__name__}", payload
            )
        self.data, self.what = data, what
        self.payload = data if payload is None else payload
        self.symbol = self._symbol() if with_symbol else ""

    def _symbol(self) -> str:
        raw = self.data.get("symbol")
        try:
            if not isinstance(raw, str):
                raise SymbolError(f"{self.what}: symbol={raw!r} is not a string")
            return to_internal(raw, "rest")
        except SymbolError as e:
            raise MalformedMessage(
                "bad_symbol", str(e), self.payload, raw if isinstance(raw, str) else None
            ) from None

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def _value(self, name: str, default: object) -> Any:
        value = self.data.get(name, _MISSING)
        if value is _MISSING or (value is None and default is not _MISSING):
            if default is _MISSING:
                raise MalformedMessage("missing_field", f"{self.what}: field {name!r} missing", self.payload,
                                       self.symbol or None)  # fmt: skip
            return default
        return value

    def _bad(self, reason: str, name: str, value: object, expected: str) -> MalformedMessage:
        return MalformedMessage(reason, f"{self.what}: {name}={value!r} is not {expected}", self.payload,
                                self.symbol or None)  # fmt: skip

    def text(self, name: str, default: object = _MISSING) -> str:
        value = self._value(name, default)
        if not isinstance(value, str) or (value == "" and default is _MISSING):
            raise self._bad("bad_value", name, value, "a non-empty string")
        return value

    def side(self) -> OrderSide:
        value = self.text("side")
        if value not in ("BUY", "SELL"):
            raise self._bad("bad_value", "side", value, "BUY or SELL")
        return "BUY" if value == "BUY" else "SELL"

    def flag(self, name: str, default: object = _MISSING) -> bool:
        value = self._value(name, default)
        if isinstance(value, str) and value in ("true", "false"):
            return value == "true"
        if not isinstance(value, bool):
            raise self._bad("bad_value", name, value, "a boolean")
        return value

    def identifier(self, name: str, default: object = _MISSING) -> int:
        value = self._value(name, default)
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._bad("bad_number", name, value, "an int >= 0")
        return value

    def decimal(self, name: str, default: object = _MISSING, *, signed: bool = False) -> Decimal:
        value = self._value(name, default)
        if isinstance(value, Decimal):
            number = value
        else:
            try:
                if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                    raise TypeError
                number = Decimal(str(value))
            except (TypeError, ValueError, InvalidOperation):
                raise self._bad("bad_number", name, value, "a number") from None
        if not number.is_finite() or (number < 0 and not signed):
            raise self._bad("bad_value", name, value, "finite" + ("" if signed else " and >= 0"))
        return number


# --- user data stream events ------------------------------------------------------------------------
# ORDER_TRADE_UPDATE, ALGO_UPDATE, ACCOUNT_UPDATE, MARGIN_CALL, TRADE_LITE and listenKeyExpired
# (``exchange.binance.user_stream``), as recorded in ../shared/data/payloads/fixtures/user_data_json.
# Quantities, prices and money are exact Decimals; times and ids accept numbers or digit strings.


@dataclass(frozen=True, slots=True)
class OrderTradeUpdateOrder:
    """The ``o`` object of ORDER_TRADE_UPDATE: one order's state after one execution."""

    s: str  # symbol
    c: str  # client order id (the clientAlgoId for a triggered algo order's child)
    S: OrderSide
    o: str  # order type (MARKET, LIMIT, …)
    f: str  # time in force
    q: Decimal  # original quantity
    p: Decimal  # price
    ap: Decimal  # average fill price (0 before a fill)
    sp: Decimal  # stop price
    x: str  # execution type: NEW, TRADE, CANCELED, EXPIRED, CALCULATED (liquidation, ADL), AMENDMENT
    X: str  # order status: NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, NEW_INSURANCE, NEW_ADL, …
    i: int  # order id
    l: Decimal  # noqa: E741 - Binance's name: quantity of this execution (last filled)
    z: Decimal  # cumulative filled quantity
    L: Decimal  # price of this execution
    N: str  # commission asset ("" when the event carries none)
    n: Decimal  # commission of this execution (negative: a rebate)
    T: int  # trade time
    t: int  # trade id (0 when the execution is no fill)
    m: bool  # maker side
    R: bool  # reduce only
    wt: str  # working type
    ot: str  # original order type (STOP_MARKET, … for a triggered algo order's child)
    ps: str  # position side
    cp: bool  # close position
    rp: Decimal  # realized profit of this execution

    @property
    def is_fill(self) -> bool:
        """Whether this execution is a fill: TRADE, or CALCULATED (liquidation, ADL) with a trade."""
        return self.x in ("TRADE", "CALCULATED") and self.t > 0 and self.l > 0


@dataclass(frozen=True, slots=True)
class OrderTradeUpdateEvent:
    """``{"e": "ORDER_TRADE_UPDATE", "E": event ms, "T": transaction ms, "o": {…}}``."""

    E: int
    T: int
    o: OrderTradeUpdateOrder

    def to_update(self) -> OrderUpdate:
        """Return the order's state in our names."""
        o = self.o
        return OrderUpdate(
            symbol=o.s, ts_ms=self.T, client_order_id=o.c, order_id=str(o.i), side=o.S, order_type=o.ot,
            status=o.X, qty=float(o.q), filled_qty=float(o.z), price=float(o.p) or None,
            stop_price=float(o.sp) or None, avg_fill_price=float(o.ap) or None, reduce_only=o.R or o.cp,
            reason=None if o.x in ("NEW", "TRADE") else o.x,
        )  # fmt: skip

    def to_fill(self) -> FillNew | None:
        """Return this execution's fill in our names, None when it is no fill (``o.is_fill``)."""
        o = self.o
        if not o.is_fill:
            return None
        return FillNew(
            symbol=o.s, ts_ms=o.T, trade_id=str(o.t), order_id=str(o.i), client_order_id=o.c, side=o.S,
            price=float(o.L), qty=float(o.l), fee=float(o.n), fee_asset=o.N, is_maker=o.m,
            realized_pnl=float(o.rp),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AlgoUpdateOrder:
    """The ``o`` object of ALGO_UPDATE: one conditional order's state."""

    caid: str  # clientAlgoId
    aid: int  # algoId
    at: str  # algo type: CONDITIONAL
    o: str  # order type: STOP_MARKET, TAKE_PROFIT_MARKET, …
    s: str
    S: OrderSide
    ps: str
    f: str
    q: Decimal  # quantity (0 for closePosition)
    X: str  # NEW, CANCELED, TRIGGERING, TRIGGERED, FINISHED, REJECTED, EXPIRED
    ai: int | None  # the triggered child's order id; None for "" (before the trigger, and at times after)
    ap: Decimal  # average fill price of the child
    aq: Decimal  # executed quantity of the child
    tp: Decimal  # trigger price
    p: Decimal  # price
    wt: str  # working type
    cp: bool  # close position
    pP: bool  # price protect
    R: bool  # reduce only
    tt: int  # trigger time (0 before)
    rm: str  # reason of a rejection or cancel ("" when none)

    def to_update(self, ts_ms: int) -> OrderUpdate:
        """Return the algo order's state in our names at ``ts_ms`` (``order_id`` is the algoId)."""
        return OrderUpdate(
            symbol=self.s, ts_ms=ts_ms, client_order_id=self.caid, order_id=str(self.aid), side=self.S,
            order_type=self.o, status=self.X, qty=float(self.q), filled_qty=float(self.aq),
            price=float(self.p) or None, stop_price=float(self.tp),
            avg_fill_price=float(self.ap) or None, reduce_only=self.R or self.cp, reason=self.rm or None,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AlgoUpdateEvent:
    """``{"e": "ALGO_UPDATE", "E", "T", "o": {…}}``."""

    E: int
    T: int
    o: AlgoUpdateOrder

    def to_update(self) -> OrderUpdate:
        """Return the algo order's state in our names."""
        return self.o.to_update(self.T)


@dataclass(frozen=True, slots=True)
class AccountBalance:
    """A row of ACCOUNT_UPDATE's ``B``: one margin asset."""

    a: str  # asset
    wb: Decimal  # wallet balance
    cw: Decimal  # cross wallet balance
    bc: Decimal  # balance change except PnL and commission


@dataclass(frozen=True, slots=True)
class AccountPosition:
    """A row of ACCOUNT_UPDATE's ``P``: one position."""

    s: str
    pa: Decimal  # position amount, signed
    ep: Decimal  # entry price
    bep: Decimal  # break-even price
    cr: Decimal  # accumulated realized PnL (pre-fee)
    up: Decimal  # unrealized PnL
    mt: str  # margin type: isolated or cross
    iw: Decimal  # isolated wallet
    ps: str  # position side

    def to_update(self, ts_ms: int) -> PositionUpdate:
        """Return the position in our names at ``ts_ms``."""
        return PositionUpdate(
            symbol=self.s, ts_ms=ts_ms, qty=float(self.pa), entry_price=float(self.ep),
            unrealized_pnl=float(self.up),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AccountUpdateData:
    """ACCOUNT_UPDATE's ``a``: the reason (``m``) and the changed balances and positions."""

    m: str  # ORDER, FUNDING_FEE, DEPOSIT, WITHDRAW, ADJUSTMENT, MARGIN_TRANSFER, INSURANCE_CLEAR, …
    B: tuple[AccountBalance, ...]
    P: tuple[AccountPosition, ...]


@dataclass(frozen=True, slots=True)
class AccountUpdateEvent:
    """``{"e": "ACCOUNT_UPDATE", "E", "T", "a": {"m", "B": […], "P": […]}}``."""

    E: int
    T: int
    a: AccountUpdateData

    def to_updates(self) -> list[PositionUpdate]:
        """Return the changed positions in our names."""
        return [p.to_update(self.T) for p in self.a.P]


@dataclass(frozen=True, slots=True)
class MarginCallPosition:
    """A row of MARGIN_CALL's ``p``."""

    s: str
    ps: str
    pa: Decimal  # position amount, signed
    mt: str  # margin type
    iw: Decimal  # isolated wallet
    mp: Decimal  # mark price
    up: Decimal  # unrealized PnL
    mm: Decimal  # maintenance margin required


@dataclass(frozen=True, slots=True)
class MarginCallEvent:
    """``{"e": "MARGIN_CALL", "E", "cw": cross wallet (crossed margin calls only), "p": […]}``."""

    E: int
    cw: Decimal | None
    p: tuple[MarginCallPosition, ...]


@dataclass(frozen=True, slots=True)
class TradeLiteEvent:
    """``{"e": "TRADE_LITE", …}``: a fill announced early, without commission or realized PnL."""

    E: int
    T: int
    s: str
    c: str
    S: OrderSide
    q: Decimal  # original quantity
    p: Decimal  # original price
    i: int  # order id
    l: Decimal  # noqa: E741 - Binance's name: last filled quantity
    L: Decimal  # last filled price
    t: int  # trade id
    m: bool  # maker side


@dataclass(frozen=True, slots=True)
class ListenKeyExpiredEvent:
    """``{"e": "listenKeyExpired", "E", "listenKey"}``: the stream's key expired; nothing more comes on it.

    The key is a credential: it is kept out of ``repr``.
    """

    E: int
    listenKey: str = field(repr=False)  # "" when the event names none


UserEvent = (
    OrderTradeUpdateEvent
    | AlgoUpdateEvent
    | AccountUpdateEvent
    | MarginCallEvent
    | TradeLiteEvent
    | ListenKeyExpiredEvent
)


class _EventReader(_Reader):
    """``_Reader`` for stream events, whose symbol is ``s``."""

    def __init__(self, data: Mapping[str, Any], what: str, payload: object) -> None:
        super().__init__(data, what, payload, with_symbol=False)

    def event_symbol(self) -> str:
        raw = self.data.get("s")
        try:
            if not isinstance(raw, str):
                raise SymbolError(f"{self.what}: s={raw!r} is not a string")
            self.symbol = to_internal(raw, "rest")
        except SymbolError as e:
            raise MalformedMessage(
                "bad_symbol", str(e), self.payload, raw if isinstance(raw, str) else None
            ) from None
        return self.symbol

    def side_of(self, name: str) -> OrderSide:
        value = self.text(name)
        if value not in ("BUY", "SELL"):
            raise self._bad("bad_value", name, value, "BUY or SELL")
        return "BUY" if value == "BUY" else "SELL"

    def obj(self, name: str) -> Mapping[str, Any]:
        value = self._value(name, _MISSING)
        if not isinstance(value, Mapping):
            raise self._bad("bad_shape", name, value, "an object")
        return value

    def rows(self, name: str, default: object = _MISSING) -> list[Mapping[str, Any]]:
        value = self._value(name, default)
        if not isinstance(value, list) or not all(isinstance(row, Mapping) for row in value):
            raise self._bad("bad_shape", name, value, "a list of objects")
        return value

    def times(self) -> tuple[int, int]:
        """(E, T); T defaults to E."""
        event_ms = self.identifier("E")
        return event_ms, self.identifier("T", event_ms)


def parse_order_trade_update(data: Mapping[str, Any], payload: object = None) -> OrderTradeUpdateEvent:
    """Parse an ORDER_TRADE_UPDATE event."""
    payload = data if payload is None else payload
    event = _EventReader(data, "ORDER_TRADE_UPDATE", payload)
    event_ms, transaction_ms = event.times()
    r = _EventReader(event.obj("o"), "ORDER_TRADE_UPDATE", payload)
    order_type = r.text("o")
    return OrderTradeUpdateEvent(
        E=event_ms, T=transaction_ms,
        o=OrderTradeUpdateOrder(
            s=r.event_symbol(), c=r.text("c"), S=r.side_of("S"), o=order_type, f=r.text("f", ""),
            q=r.decimal("q"), p=r.decimal("p", Decimal(0)), ap=r.decimal("ap", Decimal(0)),
            sp=r.decimal("sp", Decimal(0)), x=r.text("x"), X=r.text("X"), i=r.identifier("i"),
            l=r.decimal("l", Decimal(0)), z=r.decimal("z", Decimal(0)), L=r.decimal("L", Decimal(0)),
            N=r.text("N", ""), n=r.decimal("n", Decimal(0), signed=True), T=r.identifier("T", transaction_ms),
            t=r.identifier("t", 0), m=r.flag("m", False), R=r.flag("R", False),
            wt=r.text("wt", "CONTRACT_PRICE"), ot=r.text("ot", order_type), ps=r.text("ps", "BOTH"),
            cp=r.flag("cp", False), rp=r.decimal("rp", Decimal(0), signed=True),
        ),
    )  # fmt: skip


def parse_algo_update(data: Mapping[str, Any], payload: object = None) -> AlgoUpdateEvent:
    """Parse an ALGO_UPDATE event; ``ai`` "" (no child order yet, or none shown) becomes None."""
    payload = data if payload is None else payload
    event = _EventReader(data, "ALGO_UPDATE", payload)
    event_ms, transaction_ms = event.times()
    r = _EventReader(event.obj("o"), "ALGO_UPDATE", payload)
    child = r.get("ai")
    return AlgoUpdateEvent(
        E=event_ms, T=transaction_ms,
        o=AlgoUpdateOrder(
            caid=r.text("caid"), aid=r.identifier("aid"), at=r.text("at", "CONDITIONAL"), o=r.text("o"),
            s=r.event_symbol(), S=r.side_of("S"), ps=r.text("ps", "BOTH"), f=r.text("f", ""),
            q=r.decimal("q", Decimal(0)), X=r.text("X"),
            ai=None if child in (None, "", 0, "0") else r.identifier("ai"),
            ap=r.decimal("ap", Decimal(0)), aq=r.decimal("aq", Decimal(0)), tp=r.decimal("tp", Decimal(0)),
            p=r.decimal("p", Decimal(0)), wt=r.text("wt", "CONTRACT_PRICE"), cp=r.flag("cp", False),
            pP=r.flag("pP", False), R=r.flag("R", False), tt=r.identifier("tt", 0), rm=r.text("rm", ""),
        ),
    )  # fmt: skip


def parse_account_update(data: Mapping[str, Any], payload: object = None) -> AccountUpdateEvent:
    """Parse an ACCOUNT_UPDATE event (balances and positions that changed, and why)."""
    payload = data if payload is None else payload
    event = _EventReader(data, "ACCOUNT_UPDATE", payload)
    event_ms, transaction_ms = event.times()
    a = _EventReader(event.obj("a"), "ACCOUNT_UPDATE", payload)
    balances = []
    for row in a.rows("B", []):
        b = _EventReader(row, "ACCOUNT_UPDATE", payload)
        balances.append(AccountBalance(
            a=b.text("a"), wb=b.decimal("wb", signed=True), cw=b.decimal("cw", Decimal(0), signed=True),
            bc=b.decimal("bc", Decimal(0), signed=True),
        ))  # fmt: skip
    positions = []
    for row in a.rows("P", []):
        p = _EventReader(row, "ACCOUNT_UPDATE", payload)
        positions.append(AccountPosition(
            s=p.event_symbol(), pa=p.decimal("pa", signed=True), ep=p.decimal("ep", Decimal(0)),
            bep=p.decimal("bep", Decimal(0)), cr=p.decimal("cr", Decimal(0), signed=True),
            up=p.decimal("up", Decimal(0), signed=True), mt=p.text("mt", ""),
            iw=p.decimal("iw", Decimal(0), signed=True), ps=p.text("ps", "BOTH"),
        ))  # fmt: skip
    return AccountUpdateEvent(
        E=event_ms, T=transaction_ms, a=AccountUpdateData(a.text("m"), tuple(balances), tuple(positions))
    )


def parse_margin_call(data: Mapping[str, Any], payload: object = None) -> MarginCallEvent:
    """Parse a MARGIN_CALL event."""
    payload = data if payload is None else payload
    r = _EventReader(data, "MARGIN_CALL", payload)
    cross = r.get("cw")
    positions = []
    for row in r.rows("p"):
        p = _EventReader(row, "MARGIN_CALL", payload)
        positions.append(MarginCallPosition(
            s=p.event_symbol(), ps=p.text("ps", "BOTH"), pa=p.decimal("pa", signed=True), mt=p.text("mt", ""),
            iw=p.decimal("iw", Decimal(0), signed=True), mp=p.decimal("mp"), up=p.decimal("up", signed=True),
            mm=p.decimal("mm", Decimal(0)),
        ))  # fmt: skip
    return MarginCallEvent(
        E=r.identifier("E"),
        cw=None if cross in (None, "") else r.decimal("cw", signed=True),
        p=tuple(positions),
    )


def parse_trade_lite(data: Mapping[str, Any], payload: object = None) -> TradeLiteEvent:
    """Parse a TRADE_LITE event."""
    payload = data if payload is None else payload
    r = _EventReader(data, "TRADE_LITE", payload)
    event_ms, transaction_ms = r.times()
    return TradeLiteEvent(
        E=event_ms, T=transaction_ms, s=r.event_symbol(), c=r.text("c"), S=r.side_of("S"),
        q=r.decimal("q"), p=r.decimal("p", Decimal(0)), i=r.identifier("i"), l=r.decimal("l"),
        L=r.decimal("L"), t=r.identifier("t"), m=r.flag("m", False),
    )  # fmt: skip


def parse_listen_key_expired(data: Mapping[str, Any], payload: object = None) -> ListenKeyExpiredEvent:
    """Parse a listenKeyExpired event (``E`` may be a digit string; ``listenKey`` may be absent)."""
    r = _EventReader(data, "listenKeyExpired", data if payload is None else payload)
    return ListenKeyExpiredEvent(E=r.identifier("E"), listenKey=r.text("listenKey", ""))


#: The parser of each user data event type (``e``).
USER_EVENT_PARSERS: dict[str, Callable[[Mapping[str, Any], object], UserEvent]] = {
    "ORDER_TRADE_UPDATE": parse_order_trade_update,
    "ALGO_UPDATE": parse_algo_update,
    "ACCOUNT_UPDATE": parse_account_update,
    "MARGIN_CALL": parse_margin_call,
    "TRADE_LITE": parse_trade_lite,
    "listenKeyExpired": parse_listen_key_expired,
}


def parse_user_event(data: Mapping[str, Any], payload: object = None) -> UserEvent:
    """Parse one user data event by its type ``e``; an unknown type raises MalformedMessage (unknown_event)."""
    payload = data if payload is None else payload
    if not isinstance(data, Mapping):
        raise MalformedMessage("bad_shape", f"user event is a {type(data).__name__}, not an object", payload)
    parse = USER_EVENT_PARSERS.get(data.get("e"))  # type: ignore[arg-type]
    if parse is None:
        raise MalformedMessage("unknown_event", f"user event type {data.get('e')!r} is not known", payload)
    return parse(data, payload)


@dataclass(frozen=True, slots=True)
class UserFill:
    """One fill of ours in our names with exact Decimals, from the stream or from ``userTrades``.

    ``(symbol, trade_id)`` identifies it. ``source`` is ``stream`` (ORDER_TRADE_UPDATE) or ``backfill``
    (userTrades after a gap, which carries no client id: ``client_order_id`` is None unless known).
    """

    symbol: str
    trade_id: int
    order_id: int
    client_order_id: str | None
    side: OrderSide
    price: Decimal
    qty: Decimal
    fee: Decimal  # commission in fee_asset; negative for a rebate
    fee_asset: str
    realized_pnl: Decimal
    is_maker: bool
    ts_ms: int
    source: str

    def to_fill(self) -> FillNew:
        """Return the fill as the bus carries it (``core.messages.FillNew``)."""
        return FillNew(
            symbol=self.symbol, ts_ms=self.ts_ms, trade_id=str(self.trade_id), order_id=str(self.order_id),
            client_order_id=self.client_order_id, side=self.side, price=float(self.price), qty=float(self.qty),
            fee=float(self.fee), fee_asset=self.fee_asset, is_maker=self.is_maker,
            realized_pnl=float(self.realized_pnl),
        )  # fmt: skip


def user_fill_of_update(event: OrderTradeUpdateEvent) -> UserFill | None:
    """Return the fill an ORDER_TRADE_UPDATE reports (``o.is_fill``), None when it reports none."""
    o = event.o
    if not o.is_fill:
        return None
    return UserFill(o.s, o.t, o.i, o.c, o.S, o.L, o.l, o.n, o.N, o.rp, o.m, o.T, "stream")


def user_fill_of_trade(trade: UserTrade, client_order_id: str | None = None) -> UserFill:
    """Return a ``userTrades`` row as a backfilled fill."""
    t = trade
    return UserFill(t.symbol, t.id, t.orderId, client_order_id, t.side, t.price, t.qty, t.commission,
                    t.commissionAsset, t.realizedPnl, t.maker, t.time, "backfill")  # fmt: skip
