"""Bus topics and their message types: what live components publish for each other and for observers.

Each topic carries exactly one message type (``MESSAGE_TYPES``). Messages are frozen msgspec
Structs with keyword-only fields in our domain names and units: symbols in internal form
(``BTCUSDT``), times in epoch milliseconds (``ts_ms``), prices in quote currency (USDT) as float,
quantities in base-asset units as float (signed only where the name says so).

Wire format: MessagePack through msgspec. Chosen over JSON because payloads stay binary-safe in a
Redis stream field, encode and decode about twice as fast and smaller, and float64 round-trips
bit-exactly *including NaN and ±inf* — JSON has no NaN, and a data-quality event must be able to
carry the bad value it reports. A payload never travels without its topic, so it needs no type tag.

Every message checks its fields when it is built and again when it is decoded (``__post_init__``
runs in both cases): a bad value raises ``DataQualityError`` naming the type, the field and the
value. Unknown fields in a payload are ignored, so a producer may add optional fields before its
consumers learn them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal, get_args

import msgspec

from core.errors import DataQualityError, FatalError
from core.symbols import SymbolError, validate_internal
from core.time import INTERVAL_MS


class Topic(StrEnum):
    """Bus topic names. Values are the wire names; a ``Topic`` compares equal to its string."""

    MARKET_CANDLE_CLOSED = "market.candle_closed"
    MARKET_MARK_PRICE = "market.mark_price"
    MARKET_BOOK_TICKER = "market.book_ticker"
    FEATURES_READY = "features.ready"
    SIGNALS_NEW = "signals.new"
    ORDERS_UPDATE = "orders.update"
    FILLS_NEW = "fills.new"
    POSITIONS_UPDATE = "positions.update"
    RISK_EVENT = "risk.event"
    DATA_QUALITY_EVENT = "data_quality.event"
    TRAINING_UPDATE = "training.update"
    SYSTEM_STATUS = "system.status"
    ACCOUNT_UPDATE = "account.update"


Decision = Literal["LONG", "SHORT", "FLAT"]
OrderSide = Literal["BUY", "SELL"]
Severity = Literal["info", "warning", "critical"]


# --- field checks (raise DataQualityError naming type, field and value) -------------------------


def _fail(owner: object, field: str, problem: str, value: object) -> DataQualityError:
    return DataQualityError(f"{type(owner).__name__}.{field} {problem}, got {value!r}")


def _number(owner: object, field: str, value: object, low: str | None = None) -> None:
    """Finite number; ``low`` is ``">0"`` or ``">=0"`` when the field has a lower bound."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(owner, field, "must be a number", value)
    if not math.isfinite(value):
        raise _fail(owner, field, "must be finite", value)
    if low == ">0" and not value > 0:
        raise _fail(owner, field, "must be > 0", value)
    if low == ">=0" and not value >= 0:
        raise _fail(owner, field, "must be >= 0", value)


def _optional_number(owner: object, field: str, value: object, low: str | None = None) -> None:
    if value is not None:
        _number(owner, field, value, low)


def _ts(owner: object, field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(owner, field, "must be epoch milliseconds (int >= 0)", value)


def _text(owner: object, field: str, value: object) -> None:
    if not isinstance(value, str) or value == "":
        raise _fail(owner, field, "must be a non-empty string", value)


def _symbol(owner: object, value: object, field: str = "symbol") -> None:
    try:
        validate_internal(value)  # type: ignore[arg-type]
    except SymbolError as e:
        raise DataQualityError(f"{type(owner).__name__}.{field}: {e}") from None


def _one_of(owner: object, field: str, value: object, allowed: object) -> None:
    choices = get_args(allowed)
    if value not in choices:
        raise _fail(owner, field, f"must be one of {', '.join(choices)}", value)


# --- message types ------------------------------------------------------------------------------


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every bus message. Subclasses repeat ``kw_only=True``: msgspec does not inherit it."""


class CandleClosed(Message, frozen=True, kw_only=True):
    """A kline that has closed. ``ts_ms`` is the bar's open time; the bar covers [ts_ms, ts_ms + interval)."""

    symbol: str
    interval: str
    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float  # base-asset units

    def __post_init__(self) -> None:
        _symbol(self, self.symbol)
        if self.interval not in INTERVAL_MS:
            raise _fail(self, "interval", f"must be one of {', '.join(INTERVAL_MS)}", self.interval)
        _ts(self, "ts_ms", self.ts_ms)
        for name in ("open", "high", "low", "close"):
            _number(self, name, getattr(self, name), ">0")
        _number(self, "volume", self.volume, ">=0")
        if self.high < max(self.open, self.close, self.low) or self.low > min(self.open, self.close):
            raise DataQualityError(
                f"CandleClosed {self.symbol} {self.interval} at {self.ts_ms}: high/low do not bound "
                f"open/close (o={self.open}, h={self.high}, l={self.low}, c={self.close})"
            )


class MarkPrice(Message, frozen=True, kw_only=True):
    """Mark and index price with the current funding rate (fraction per funding interval)."""

    symbol: str
    ts_ms: int
    mark_price: float
    index_price: float
    funding_rate: float
    next_funding_ts_ms: int

    def __post_init__(self) -> None:
        _symbol(self, self.symbol)
        _ts(self, "ts_ms", self.ts_ms)
        _number(self, "mark_price", self.mark_price, ">0")
        _number(self, "index_price", self.index_price, ">0")
        _number(self, "funding_rate", self.funding_rate)
        _ts(self, "next_funding_ts_ms", self.next_funding_ts_ms)


class BookTicker(Message, frozen=True, kw_only=True):
    """Best bid and ask with their quantities (base-asset units)."""

    symbol: str
    ts_ms: int
    bid_price: float
    bid_qty: float
    ask_price: float
    ask_qty: float

    def __post_init__(self) -> None:
        _symbol(self, self.symbol)
        _ts(self, "ts_ms", self.ts_ms)
        _number(self, "bid_price", self.bid_price, ">0")
        _number(self, "ask_price", self.ask_price, ">0")
        _number(self, "bid_qty", self.bid_qty, ">=0")
        _number(self, "ask_qty", self.ask_qty, ">=0")


class FeaturesReady(Message, frozen=True, kw_only=True):
    """Features of ``symbol`` at bar open time ``ts_ms`` are stored, under this feature schema."""

    symbol: str
    ts_ms: int
    schema_version: int
    schema_hash: str

    def __post_init__(self) -> None:
        _symbol(self, self.symbol)
        _ts(self, "ts_ms", self.ts_ms)
        if isinstance(self.schema_version, bool) or not isinstance(self.schema_version, int):
            raise _fail(self, "schema_version", "must be an int", self.schema_version)
        _text(self, "schema_hash", self.schema_hash)


class SignalNew(Message, frozen=True, kw_only=True):
    """A model prediction turned into a decision. EVs are expected returns after costs (fractions).

    ``block_reasons`` are the policy/risk reason codes that blocked an entry (empty when none did).
    Sizing and protection fields are None when the decision is FLAT or not yet sized.
    """

    symbol: str
    ts_ms: int
    decision: Decision
    ev_long: float
    ev_short: float
    model_version: str
    block_reasons: list[str] = []
    size_notional_usdt: float | None = None
    leverage: int | None = None
    sl_price: float | None = None
    tp_price: float | None = None

    def __post_init__(self) -> None:
        _symbol(self, self.symbol)
        _ts(self, "ts_ms", self.ts_ms)
        _one_of(self, "decision", self.decision, Decision)
        _number(self, "ev_long", self.ev_long)
        _number(self, "ev_short", self.ev_short)
        _text(self, "model_version", self.model_version)
        _optional_number(self, "size_notional_usdt", self.size_notional_usdt, ">=0")
        _optional_number(self, "leverage", self.leverage, ">0")
        _optional_number(self, "sl_price", self.sl_price, ">0")
        _optional_number(self, "tp_price", self.tp_price, ">0")


class OrderUpdate(Message, frozen=True, kw_only=True):
    """The state of one order after a change (ours or the venue's).

    ``order_id`` is the venue's id as text (Binance ``orderId``, or ``algoId`` of a conditional
    order) and None before the venue acknowledged it; ``client_order_id`` is ours and always set.
    ``status`` is the venue's status word (NEW, PARTIALLY_FILLED, FILLED, CANCELED, REJECTED,
    EXPIRED, …) or UNKNOWN while the outcome of a request is unknown.
    """

    symbol: str
    ts_ms: int
    client_order_id: str
    order_id: str | None
    side: OrderSide
    order_type: str
    status: str
    qty: float
    filled_qty: float = 0.0
    price: float | None = None
    stop_price: float | None = None
    avg_fill_price: float | None = None
    reduce_only: bool = False
    reason: str | None = None

    def __post_init__(self) -> None:
        _symbol(self, self.symbol)
        _ts(self, "ts_ms", self.ts_ms)
        _text(self, "client_order_id", self.client_order_id)
        _one_of(self, "side", self.side, OrderSide)
        _text(self, "order_type", self.order_type)
        _text(self, "status", self.status)
        _number(self, "qty", self.qty, ">=0")
        _number(self, "filled_qty", self.filled_qty, ">=0")
        _optional_number(self, "price", self.price, ">=0")
        _optional_number(self, "stop_price", self.stop_price, ">=0")
        _optional_number(self, "avg_fill_price", self.avg_fill_price, ">=0")


class FillNew(Message, frozen=True, kw_only=True):
    """One execution (the primary fact). ``trade_id`` is unique per symbol at the venue.

    ``fee`` is in ``fee_asset`` (negative for a rebate); ``realized_pnl`` in USDT when the venue
    reports it.
    """

    symbol: str
    ts_ms: int
    trade_id: str
    order_id: str
    client_order_id: str | None
    side: OrderSide
    price: float
    qty: float
    fee: float
    fee_asset: str
    is_maker: bool = False
    realized_pnl: float | None = None

    def __post_init__(self) -> None:
        _symbol(self, self.symbol)
        _ts(self, "ts_ms", self.ts_ms)
        _text(self, "trade_id", self.trade_id)
        _text(self, "order_id", self.order_id)
        _one_of(self, "side", self.side, OrderSide)
        _number(self, "price", self.price, ">0")
        _number(self, "qty", self.qty, ">0")
        _number(self, "fee", self.fee)
        _text(self, "fee_asset", self.fee_asset)
        _optional_number(self, "realized_pnl", self.realized_pnl)


class PositionUpdate(Message, frozen=True, kw_only=True):
    """A position after a change. ``qty`` is signed (long > 0, short < 0, 0 when flat), base units."""

    symbol: str
    ts_ms: int
    qty: float
    entry_price: float
    unrealized_pnl: float
    mark_price: float | None = None
    leverage: int | None = None
    liquidation_price: float | None = None

    def __post_init__(self) -> None:
        _symbol(self, self.symbol)
        _ts(self, "ts_ms", self.ts_ms)
        _number(self, "qty", self.qty)
        _number(self, "entry_price", self.entry_price, ">=0")
        _number(self, "unrealized_pnl", self.unrealized_pnl)
        _optional_number(self, "mark_price", self.mark_price, ">0")
        _optional_number(self, "leverage", self.leverage, ">0")
        _optional_number(self, "liquidation_price", self.liquidation_price, ">=0")


class RiskEvent(Message, frozen=True, kw_only=True):
    """Something the risk layer did or saw (kill-switch, guard tripped, naked position closed, …)."""

    ts_ms: int
    event_type: str
    symbol: str | None
    severity: Severity
    message: str
    details: dict[str, Any] = {}

    def __post_init__(self) -> None:
        _ts(self, "ts_ms", self.ts_ms)
        _text(self, "event_type", self.event_type)
        _one_of(self, "severity", self.severity, Severity)


class DataQualityEvent(Message, frozen=True, kw_only=True):
    """Bad input that was set aside. ``symbol`` and ``payload`` are kept as received, unvalidated."""

    ts_ms: int
    source: str
    symbol: str | None
    reason: str
    payload: dict[str, Any] = {}

    def __post_init__(self) -> None:
        _ts(self, "ts_ms", self.ts_ms)
        _text(self, "source", self.source)
        _text(self, "reason", self.reason)


class TrainingUpdate(Message, frozen=True, kw_only=True):
    """Progress of a training job; ``progress`` is a fraction in [0, 1]."""

    ts_ms: int
    job_id: str
    status: str
    progress: float
    message: str = ""

    def __post_init__(self) -> None:
        _ts(self, "ts_ms", self.ts_ms)
        _text(self, "job_id", self.job_id)
        _text(self, "status", self.status)
        _number(self, "progress", self.progress, ">=0")
        if self.progress > 1:
            raise _fail(self, "progress", "must be <= 1", self.progress)


class SystemStatus(Message, frozen=True, kw_only=True):
    """Health of one component at ``ts_ms``."""

    ts_ms: int
    component: str
    ok: bool
    details: dict[str, Any] = {}

    def __post_init__(self) -> None:
        _ts(self, "ts_ms", self.ts_ms)
        _text(self, "component", self.component)


class AccountUpdate(Message, frozen=True, kw_only=True):
    """A book's account after its equity changed (USDT). ``source`` names the book
    (``execution:<mode>:<session>``); ``available`` is equity less the margin in use."""

    ts_ms: int
    source: str
    mode: str
    wallet: float
    equity: float
    available: float
    unrealized_pnl: float
    margin_used: float
    positions: int

    def __post_init__(self) -> None:
        _ts(self, "ts_ms", self.ts_ms)
        _text(self, "source", self.source)
        _text(self, "mode", self.mode)
        for name in ("wallet", "equity", "available", "unrealized_pnl"):
            _number(self, name, getattr(self, name))
        _number(self, "margin_used", self.margin_used, ">=0")
        if isinstance(self.positions, bool) or not isinstance(self.positions, int) or self.positions < 0:
            raise _fail(self, "positions", "must be an int >= 0", self.positions)


#: The one message type each topic carries.
MESSAGE_TYPES: Mapping[Topic, type[Message]] = MappingProxyType(
    {
        Topic.MARKET_CANDLE_CLOSED: CandleClosed,
        Topic.MARKET_MARK_PRICE: MarkPrice,
        Topic.MARKET_BOOK_TICKER: BookTicker,
        Topic.FEATURES_READY: FeaturesReady,
        Topic.SIGNALS_NEW: SignalNew,
        Topic.ORDERS_UPDATE: OrderUpdate,
        Topic.FILLS_NEW: FillNew,
        Topic.POSITIONS_UPDATE: PositionUpdate,
        Topic.RISK_EVENT: RiskEvent,
        Topic.DATA_QUALITY_EVENT: DataQualityEvent,
        Topic.TRAINING_UPDATE: TrainingUpdate,
        Topic.SYSTEM_STATUS: SystemStatus,
        Topic.ACCOUNT_UPDATE: AccountUpdate,
    }
)


# --- encoding -----------------------------------------------------------------------------------


def _enc_hook(obj: Any) -> Any:
    # numpy scalars and arrays turn up in details/payload dicts; numpy is not imported for this.
    item = getattr(obj, "item", None)
    tolist = getattr(obj, "tolist", None)
    if getattr(obj, "shape", None) == () and callable(item):
        return item()
    if callable(tolist):
        return tolist()
    raise NotImplementedError(f"cannot encode objects of type {type(obj).__name__}")


# Encoders and decoders keep no state between calls: sharing them across threads is safe.
_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_DECODERS: Mapping[Topic, msgspec.msgpack.Decoder[Any]] = MappingProxyType(
    {topic: msgspec.msgpack.Decoder(t) for topic, t in MESSAGE_TYPES.items()}
)


def as_topic(topic: str) -> Topic:
    """Return the ``Topic`` named by ``topic``; raise FatalError naming the known topics if none is."""
    try:
        return Topic(topic)
    except ValueError:
        known = ", ".join(t.value for t in Topic)
        raise FatalError(f"unknown bus topic {topic!r}; known: {known}") from None


def message_type(topic: str) -> type[Message]:
    """Return the message type that ``topic`` carries."""
    return MESSAGE_TYPES[as_topic(topic)]


def check_message(topic: str, msg: object) -> Topic:
    """Return the topic if ``msg`` is exactly the type ``topic`` carries; raise FatalError otherwise.

    A wrong type is a wiring bug in the producer, so it stops rather than being recorded as bad data.
    """
    t = as_topic(topic)
    expected = MESSAGE_TYPES[t]
    if type(msg) is not expected:
        raise FatalError(f"topic {t.value} carries {expected.__name__}, not {type(msg).__name__}")
    return t


def encode(msg: Message) -> bytes:
    """Encode a message as MessagePack. Raise DataQualityError if a field holds an unencodable value."""
    try:
        return _ENCODER.encode(msg)
    except (msgspec.EncodeError, TypeError, NotImplementedError, OverflowError) as e:
        raise DataQualityError(f"{type(msg).__name__} cannot be encoded: {e}") from None


def decode(topic: str, data: bytes | bytearray | memoryview) -> Message:
    """Decode a payload of ``topic`` into its message type.

    Raise DataQualityError naming the topic and the problem when the bytes are not MessagePack, a
    field is missing or of the wrong type, or a value fails the message's checks.
    """
    t = as_topic(topic)
    try:
        msg: Message = _DECODERS[t].decode(data)
    except (msgspec.DecodeError, DataQualityError) as e:
        raise DataQualityError(
            f"topic {t.value}: payload does not decode as {MESSAGE_TYPES[t].__name__}: {e}"
        ) from None
    return msg


def encode_for(topic: str, msg: Message) -> bytes:
    """Check ``msg`` against ``topic`` and encode it, proving that its consumers can decode it.

    Raise FatalError for a message of the wrong type, DataQualityError (naming the topic) for a
    message whose fields would not decode — e.g. a string where a float belongs, since msgspec
    checks types when decoding, not when building a Struct.
    """
    t = check_message(topic, msg)
    try:
        data = encode(msg)
    except DataQualityError as e:
        raise DataQualityError(f"topic {t.value}: {e}") from None
    decode(t, data)
    return data
