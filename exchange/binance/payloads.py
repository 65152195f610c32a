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
from collections.abc import Mapping
from dataclasses import dataclass
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
