"""Binance USDⓈ-M market-stream payloads: typed structures with Binance's field names, parsed once.

Each struct mirrors the fields of one event as Binance sends them (``kline``, ``markPriceUpdate``,
``bookTicker``), numbers already checked and converted, and converts to our domain type with
``to_update()`` (``exchange.updates``). ``parse_kline``/``parse_mark``/``parse_book`` do both.
A payload that does not parse raises ``core.errors.MalformedMessage`` naming the field and the
problem, which the caller records as a data-quality event. Binance's field names appear only here
and in ``exchange.binance.rest``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import MalformedMessage
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
