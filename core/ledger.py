"""The order/fill ledger of spec 004, pure: typed events, their precedence, positions from fills.

Fills are the primary fact. Orders and algo (conditional) orders are records that events update;
positions, realized PnL and fees are recomputed from fills (and funding from income records), never
edited. Every rule here is written once and used by both the in-memory ``LedgerBook`` and the
database ledger (``storage.ledger``):

- Fills are keyed by (symbol, trade id): a trade seen twice (stream and REST backfill, or a replayed
  stream) counts once (``unique_fills``).
- An order update never overwrites a newer one (``merge_order``): a known status beats UNKNOWN (our
  own "outcome unknown" record, or a stub made for a fill whose order we have not seen), a terminal
  status beats an open one, then the venue's update time, the cumulative filled quantity and the
  status rank decide. Link fields (client id, parent algo id, trade group, engine) are never lost.
- NOT_FOUND (our record of a query the venue answered "no such order", -2013, stamped with the
  query's time) is the one exception to that order, because the venue's query side can lag its
  matching side (an order acknowledged, then invisible for a while): any venue state that arrives
  after a NOT_FOUND replaces it, whatever its time; a NOT_FOUND replaces a venue state only when that
  state is open and not later than the query (``order_supersedes``/``algo_supersedes``), so it never
  erases what the venue showed after the query, nor a final status (an old order the venue forgot).
- Algo orders follow the same rule with their own statuses (NEW → TRIGGERING → TRIGGERED →
  FINISHED, or CANCELED / EXPIRED / REJECTED). When one triggers, the child order has a new order id
  that ALGO_UPDATE gives as ``ai``, which may be empty on TRIGGERED, and the child's fill may arrive
  before FINISHED: ``links_child`` joins the child to its algo by that id, or, while it is unknown, by
  the client id (the venue gives the child the algo's client id).

Money and quantities are Decimal; times are venue epoch milliseconds. One-way mode only: a fill's
side alone says whether it opens or closes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from core.errors import DataQualityError
from core.symbols import QUOTE_ASSETS

ZERO = Decimal(0)
Side = Literal["BUY", "SELL"]
SIDES = ("BUY", "SELL")

#: Our status for an order whose outcome is unknown (timeout, 5xx) or that we only know from a fill.
UNKNOWN = "UNKNOWN"
#: Our terminal status for an order the venue confirmed it does not have (queried: -2013).
NOT_FOUND = "NOT_FOUND"

ORDER_TERMINAL = frozenset({"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED", NOT_FOUND})
_ORDER_RANK = {UNKNOWN: 0, "NEW": 1, "NEW_ADL": 1, "NEW_INSURANCE": 1, "PARTIALLY_FILLED": 2}
ALGO_TERMINAL = frozenset({"FINISHED", "CANCELED", "EXPIRED", "REJECTED", NOT_FOUND})
_ALGO_RANK = {UNKNOWN: 0, "NEW": 1, "TRIGGERING": 2, "TRIGGERED": 3}
#: Algo statuses after which no child order can appear.
_ALGO_CHILDLESS = frozenset({"CANCELED", "EXPIRED", "REJECTED", NOT_FOUND})


class Applied(StrEnum):
    """What applying one event did to the ledger."""

    INSERTED = "inserted"  # a record the ledger did not have
    UPDATED = "updated"  # newer than the stored record, or it added a link the record lacked
    DUPLICATE = "duplicate"  # the same as the stored record (a replay)
    STALE = "stale"  # older than the stored record: ignored


def _check(ok: bool, owner: object, problem: str) -> None:
    if not ok:
        raise DataQualityError(f"{type(owner).__name__}: {problem}")


def _check_side(owner: object, side: str) -> None:
    _check(side in SIDES, owner, f"side {side!r} is not BUY or SELL")


@dataclass(frozen=True, slots=True)
class OrderState:
    """The state of one regular order (or the child order of a triggered algo order) at ``update_ms``.

    ``order_type`` is the original type (STOP_MARKET for the child of a stop); ``qty`` the original
    quantity (0 for a closePosition order), ``filled_qty`` the cumulative filled quantity, prices 0
    when not applicable; ``created_ms`` defaults to ``update_ms`` (the first time we know of). ``parent_algo_id`` is the algo order a child came from; ``trade_group_id``
    and ``engine`` are ours. ``raw`` is the venue payload as received (kept, never compared).
    """

    symbol: str
    order_id: int
    client_order_id: str | None
    side: Side
    order_type: str
    status: str
    qty: Decimal
    filled_qty: Decimal
    update_ms: int
    price: Decimal = ZERO
    stop_price: Decimal = ZERO
    avg_price: Decimal = ZERO
    reduce_only: bool = False
    close_position: bool = False
    working_type: str | None = None
    created_ms: int | None = None
    parent_algo_id: int | None = None
    trade_group_id: str | None = None
    engine: str | None = None
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_side(self, self.side)
        _check(bool(self.status), self, "status is empty")
        _check(self.qty >= 0 and self.filled_qty >= 0, self, f"qty {self.qty}, filled {self.filled_qty}")
        _check(self.update_ms >= 0, self, f"update_ms {self.update_ms} < 0")
        if self.created_ms is None:  # first seen: the earliest time we know of
            object.__setattr__(self, "created_ms", self.update_ms)

    @property
    def key(self) -> tuple[str, int]:
        return self.symbol, self.order_id

    @property
    def is_open(self) -> bool:
        """Not in a terminal status (UNKNOWN counts as open: it must be resolved)."""
        return self.status not in ORDER_TERMINAL


@dataclass(frozen=True, slots=True)
class AlgoOrderState:
    """The state of one algo (conditional) order at ``update_ms`` (ALGO_UPDATE, ``/fapi/v1/algoOrder``).

    ``qty`` is 0 for a closePosition order; ``child_order_id`` is the order placed when it triggered
    (None until the venue says which); ``executed_qty``/``avg_price`` are the child's.
    """

    symbol: str
    algo_id: int
    client_algo_id: str
    side: Side
    order_type: str
    status: str
    qty: Decimal
    trigger_price: Decimal
    update_ms: int
    close_position: bool = False
    reduce_only: bool = False
    price_protect: bool = False
    working_type: str | None = None
    price: Decimal = ZERO
    child_order_id: int | None = None
    executed_qty: Decimal = ZERO
    avg_price: Decimal = ZERO
    created_ms: int | None = None
    triggered_ms: int | None = None
    reject_reason: str = ""
    algo_type: str = "CONDITIONAL"
    trade_group_id: str | None = None
    engine: str | None = None
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_side(self, self.side)
        _check(bool(self.status), self, "status is empty")
        _check(
            self.qty >= 0 and self.executed_qty >= 0, self, f"qty {self.qty}, executed {self.executed_qty}"
        )
        _check(self.update_ms >= 0, self, f"update_ms {self.update_ms} < 0")
        if self.created_ms is None:
            object.__setattr__(self, "created_ms", self.update_ms)

    @property
    def key(self) -> tuple[str, int]:
        return self.symbol, self.algo_id

    @property
    def is_open(self) -> bool:
        """Resting or triggering: not FINISHED, CANCELED, EXPIRED or REJECTED."""
        return self.status not in ALGO_TERMINAL


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade of one order: the primary fact. ``commission`` is in ``commission_asset`` (None when
    the venue sent none; negative for a rebate); ``realized_pnl`` as the venue reported it."""

    symbol: str
    trade_id: int
    order_id: int
    side: Side
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str | None
    time_ms: int
    client_order_id: str | None = None
    realized_pnl: Decimal | None = None
    is_maker: bool = False
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_side(self, self.side)
        _check(self.price > 0 and self.qty > 0, self, f"price {self.price} and qty {self.qty} must be > 0")
        _check(self.trade_id >= 0 and self.time_ms >= 0, self, "trade_id and time_ms must be >= 0")

    @property
    def key(self) -> tuple[str, int]:
        return self.symbol, self.trade_id

    @property
    def signed_qty(self) -> Decimal:
        return self.qty if self.side == "BUY" else -self.qty


@dataclass(frozen=True, slots=True)
class Income:
    """One income record (``/fapi/v1/income``): ``amount`` signed, in ``asset``; ``symbol`` "" when the
    record is the account's (a transfer). Keyed by (kind, tran_id, asset, symbol)."""

    symbol: str
    kind: str  # FUNDING_FEE, REALIZED_PNL, COMMISSION, INSURANCE_CLEAR, TRANSFER, …
    amount: Decimal
    asset: str
    time_ms: int
    tran_id: int
    trade_id: int | None = None
    info: str = ""
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, int, str, str]:
        return self.kind, self.tran_id, self.asset, self.symbol


@dataclass(frozen=True, slots=True)
class EngineSignal:
    """Why we traded (``engine_signals``): written before the order, so that an order the venue has
    and the ledger lacks can be mapped back to its signal by ``client_order_id`` (spec 004 §3 A)."""

    ts_ms: int
    symbol: str
    side: str  # LONG, SHORT (entries) or the side a restoration/close concerns
    engine: str
    reason: str | None = None
    trade_group_id: str | None = None
    client_order_id: str | None = None
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SyncCursor:
    """How far a symbol's trades are known to be complete in the ledger: every venue trade with an id
    up to ``last_trade_id`` is in ``fills``. Advanced only from REST backfills that are contiguous
    with it, never from the stream (a stream gap would be skipped)."""

    symbol: str
    last_trade_id: int
    last_trade_ms: int


# --- precedence --------------------------------------------------------------------------------------


def order_precedence(o: OrderState) -> tuple[bool, bool, int, Decimal, int]:
    """Sort key of an order's states: the greater is the newer (module docstring); NOT_FOUND against a
    venue status is decided by ``order_supersedes`` instead."""
    return (
        o.status != UNKNOWN,
        o.status in ORDER_TERMINAL,
        o.update_ms,
        o.filled_qty,
        _ORDER_RANK.get(o.status, 3),
    )


def algo_precedence(a: AlgoOrderState) -> tuple[bool, bool, int, int]:
    """Sort key of an algo order's states: the greater is the newer."""
    return (a.status != UNKNOWN, a.status in ALGO_TERMINAL, a.update_ms, _ALGO_RANK.get(a.status, 4))


def _not_found_supersedes(
    stored_status: str, stored_ms: int, incoming_status: str, incoming_ms: int, final: frozenset[str]
) -> bool | None:
    """The NOT_FOUND exception (module docstring): whether the incoming state replaces the stored one
    when one of them is NOT_FOUND and the other a venue status; None when the usual order decides."""
    if stored_status == NOT_FOUND and incoming_status not in (UNKNOWN, NOT_FOUND):
        return True  # the venue shows the order after saying it had none: its query side lagged
    if incoming_status == NOT_FOUND and stored_status not in (UNKNOWN, NOT_FOUND):
        return stored_status not in final and stored_ms <= incoming_ms
    return None


def order_supersedes(stored: OrderState, incoming: OrderState) -> bool:
    """Whether ``incoming`` replaces ``stored`` as the order's state: the greater ``order_precedence``,
    except for NOT_FOUND (module docstring). Depends on arrival order only where NOT_FOUND is involved."""
    rule = _not_found_supersedes(
        stored.status, stored.update_ms, incoming.status, incoming.update_ms, ORDER_TERMINAL - {NOT_FOUND}
    )
    return order_precedence(incoming) > order_precedence(stored) if rule is None else rule


def algo_supersedes(stored: AlgoOrderState, incoming: AlgoOrderState) -> bool:
    """Whether ``incoming`` replaces ``stored`` as the algo order's state (as ``order_supersedes``)."""
    rule = _not_found_supersedes(
        stored.status, stored.update_ms, incoming.status, incoming.update_ms, ALGO_TERMINAL - {NOT_FOUND}
    )
    return algo_precedence(incoming) > algo_precedence(stored) if rule is None else rule


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _earliest(a: int | None, b: int | None) -> int | None:
    return min(a, b) if a is not None and b is not None else _first(a, b)


def merge_order(stored: OrderState | None, incoming: OrderState) -> OrderState:
    """Return the ledger's record after ``incoming``: the newer state, with links and the largest
    filled quantity of both (an older update still teaches a missing client id or parent)."""
    if stored is None:
        return incoming
    if stored.key != incoming.key:
        raise ValueError(f"merge_order: {stored.key} and {incoming.key} are different orders")
    newer, older = (incoming, stored) if order_supersedes(stored, incoming) else (stored, incoming)
    return replace(
        newer,
        client_order_id=_first(newer.client_order_id, older.client_order_id),
        parent_algo_id=_first(newer.parent_algo_id, older.parent_algo_id),
        trade_group_id=_first(newer.trade_group_id, older.trade_group_id),
        engine=_first(newer.engine, older.engine),
        created_ms=_earliest(newer.created_ms, older.created_ms),
        filled_qty=max(newer.filled_qty, older.filled_qty),
        raw=newer.raw if newer.raw is not None else older.raw,
    )


def merge_algo(stored: AlgoOrderState | None, incoming: AlgoOrderState) -> AlgoOrderState:
    """Return the ledger's algo record after ``incoming``: the newer state; the child order id, once
    known, is kept (a TRIGGERED with an empty ``ai`` does not erase it)."""
    if stored is None:
        return incoming
    if stored.key != incoming.key:
        raise ValueError(f"merge_algo: {stored.key} and {incoming.key} are different algo orders")
    newer, older = (incoming, stored) if algo_supersedes(stored, incoming) else (stored, incoming)
    return replace(
        newer,
        child_order_id=_first(newer.child_order_id, older.child_order_id),
        trade_group_id=_first(newer.trade_group_id, older.trade_group_id),
        engine=_first(newer.engine, older.engine),
        created_ms=_earliest(newer.created_ms, older.created_ms),
        triggered_ms=_first(newer.triggered_ms, older.triggered_ms),
        executed_qty=max(newer.executed_qty, older.executed_qty),
        raw=newer.raw if newer.raw is not None else older.raw,
    )


def applied(stored: Any, merged: Any, incoming: Any, newer: bool) -> Applied:
    """Classify a merge: ``newer`` says whether ``incoming`` had precedence over ``stored``."""
    if stored is None:
        return Applied.INSERTED
    if merged == stored:
        return Applied.DUPLICATE if newer or incoming == stored else Applied.STALE
    return Applied.UPDATED


def links_child(algo: AlgoOrderState, order: OrderState) -> bool:
    """Whether ``order`` is the child ``algo`` placed when it triggered: by the child id the venue
    gave, or, while it gave none (``ai`` empty), by the algo's client id on an order of its symbol."""
    if algo.symbol != order.symbol:
        return False
    if algo.child_order_id is not None:
        return algo.child_order_id == order.order_id
    return order.client_order_id == algo.client_algo_id and algo.status not in _ALGO_CHILDLESS


def join_child(algo: AlgoOrderState, order: OrderState) -> tuple[AlgoOrderState, OrderState] | None:
    """Return ``algo`` and ``order`` joined (the order names its parent, the algo its child) when
    ``order`` is the algo's child and not another algo's; None otherwise."""
    if order.parent_algo_id not in (None, algo.algo_id) or not links_child(algo, order):
        return None
    return replace(algo, child_order_id=order.order_id), replace(order, parent_algo_id=algo.algo_id)


def stub_order(fill: Fill) -> OrderState:
    """The record of an order known only from one of its fills (status UNKNOWN: any news wins)."""
    return OrderState(
        symbol=fill.symbol, order_id=fill.order_id, client_order_id=fill.client_order_id, side=fill.side,
        order_type=UNKNOWN, status=UNKNOWN, qty=ZERO, filled_qty=ZERO, update_ms=fill.time_ms,
        created_ms=fill.time_ms,
    )  # fmt: skip


def unique_fills(fills: Iterable[Fill]) -> list[Fill]:
    """Return the fills once each by (symbol, trade id), the first seen kept, sorted by symbol, time, id."""
    seen: dict[tuple[str, int], Fill] = {}
    for f in fills:
        seen.setdefault(f.key, f)
    return sorted(seen.values(), key=lambda f: (f.symbol, f.time_ms, f.trade_id))


# --- positions ---------------------------------------------------------------------------------------

#: Income kinds that fills already carry (their PnL and commission): not counted twice.
INCOME_IN_FILLS = frozenset({"REALIZED_PNL", "COMMISSION"})
#: Income kinds that move the wallet but are no symbol's trading result.
INCOME_NOT_PNL = frozenset({"TRANSFER", "INTERNAL_TRANSFER", "CROSS_COLLATERAL_TRANSFER", "WELCOME_BONUS"})
FUNDING = "FUNDING_FEE"


@dataclass(frozen=True, slots=True)
class Position:
    """A symbol's position recomputed from its fills (one-way mode).

    ``qty`` is signed (long > 0); ``avg_entry_price`` the quantity-weighted entry of the open
    quantity (0 when flat); ``realized_pnl`` the trading PnL of closed quantity before fees;
    ``fees`` the commissions paid in the symbol's quote asset and ``fees_other`` those paid in other
    assets (BNB, …); ``funding`` and ``other_income`` come from income records. ``venue_realized_pnl``
    sums the venue's per-fill figure, to check ours against.
    """

    symbol: str
    qty: Decimal = ZERO
    avg_entry_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    fees_other: tuple[tuple[str, Decimal], ...] = ()
    funding: Decimal = ZERO
    other_income: Decimal = ZERO
    venue_realized_pnl: Decimal = ZERO
    fill_count: int = 0
    last_trade_id: int | None = None
    last_fill_ms: int | None = None

    @property
    def side(self) -> str:
        return "LONG" if self.qty > 0 else "SHORT" if self.qty < 0 else "FLAT"

    @property
    def net_pnl(self) -> Decimal:
        """Realized PnL with funding and other income folded in, net of quote-asset fees."""
        return self.realized_pnl + self.funding + self.other_income - self.fees


def quote_asset(symbol: str) -> str | None:
    """The quote (margin) asset a symbol's fees and PnL are counted in."""
    return next((q for q in QUOTE_ASSETS if symbol.endswith(q)), None)


def apply_fill(p: Position, f: Fill) -> Position:
    """Return the position after fill ``f`` (same symbol): weighted-average entry while adding,
    realized PnL on the closed quantity while reducing, a flip reopens at the fill price."""
    s = f.signed_qty
    qty, avg, realized = p.qty, p.avg_entry_price, p.realized_pnl
    if qty == 0 or (qty > 0) == (s > 0):
        new_qty = qty + s
        avg = (abs(qty) * avg + f.qty * f.price) / abs(new_qty)
    else:
        closed = min(abs(qty), f.qty)
        realized += closed * (f.price - avg) * (1 if qty > 0 else -1)
        new_qty = qty + s
        if new_qty == 0:
            avg = ZERO
        elif (new_qty > 0) != (qty > 0):
            avg = f.price
    fees, fees_other = p.fees, p.fees_other
    if f.commission and f.commission_asset not in (None, quote_asset(f.symbol)):
        others = dict(fees_other)
        others[f.commission_asset] = others.get(f.commission_asset, ZERO) + f.commission
        fees_other = tuple(sorted(others.items()))
    else:
        fees += f.commission
    return replace(
        p, qty=new_qty, avg_entry_price=avg, realized_pnl=realized, fees=fees, fees_other=fees_other,
        venue_realized_pnl=p.venue_realized_pnl + (f.realized_pnl or ZERO), fill_count=p.fill_count + 1,
        last_trade_id=max(p.last_trade_id or 0, f.trade_id), last_fill_ms=max(p.last_fill_ms or 0, f.time_ms),
    )  # fmt: skip


def apply_income(p: Position, i: Income) -> Position:
    """Return the position with income ``i`` folded in (funding, or other income fills do not carry)."""
    if i.kind in INCOME_IN_FILLS or i.kind in INCOME_NOT_PNL:
        return p
    if i.kind == FUNDING:
        return replace(p, funding=p.funding + i.amount)
    return replace(p, other_income=p.other_income + i.amount)


def positions_from_fills(fills: Iterable[Fill], incomes: Iterable[Income] = ()) -> dict[str, Position]:
    """Recompute every symbol's position from its fills (each trade id once, in time then id order)
    and its income records (each once by key); symbols in the order first seen after sorting."""
    out: dict[str, Position] = {}
    for f in unique_fills(fills):
        out[f.symbol] = apply_fill(out.get(f.symbol) or Position(f.symbol), f)
    seen: set[tuple[str, int, str, str]] = set()
    for i in sorted(incomes, key=lambda i: (i.time_ms, i.tran_id)):
        if not i.symbol or i.key in seen:
            continue
        seen.add(i.key)
        out[i.symbol] = apply_income(out.get(i.symbol) or Position(i.symbol), i)
    return out


def to_json(value: Any) -> Any:
    """Return a ledger record (or a structure of them) as JSON values: dataclasses as objects without
    their raw payload, Decimals as strings (exact), tuples as lists."""
    if isinstance(value, Decimal):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in fields(value) if f.name != "raw"}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    return value


# --- the in-memory ledger ----------------------------------------------------------------------------


class LedgerBook:
    """Orders, algo orders, fills and income in memory, by the rules above; positions recomputed.

    The database ledger (``storage.ledger.LedgerStore``) applies the same functions; this one serves
    pure tests, the reconciler's view and a process that keeps the ledger in memory.
    """

    def __init__(self) -> None:
        self.orders: dict[tuple[str, int], OrderState] = {}
        self.algo_orders: dict[tuple[str, int], AlgoOrderState] = {}
        self.fills: dict[tuple[str, int], Fill] = {}
        self.incomes: dict[tuple[str, int, str, str], Income] = {}

    def apply(self, event: OrderState | AlgoOrderState | Fill | Income) -> Applied:
        """Apply one event of any kind."""
        if isinstance(event, OrderState):
            return self.apply_order(event)
        if isinstance(event, AlgoOrderState):
            return self.apply_algo(event)
        if isinstance(event, Fill):
            return self.apply_fill(event)
        return self.apply_income(event)

    def apply_order(self, update: OrderState) -> Applied:
        for algo in list(self.algo_orders.values()):
            joined = join_child(algo, update)
            if joined is not None:
                self.algo_orders[algo.key], update = joined
                break
        stored = self.orders.get(update.key)
        merged = merge_order(stored, update)
        self.orders[update.key] = merged
        newer = stored is None or order_supersedes(stored, update)
        return applied(stored, merged, update, newer)

    def apply_algo(self, update: AlgoOrderState) -> Applied:
        stored = self.algo_orders.get(update.key)
        merged = merge_algo(stored, update)
        for order in list(self.orders.values()):
            joined = join_child(merged, order)
            if joined is not None:
                merged, self.orders[order.key] = joined
                break
        self.algo_orders[update.key] = merged
        newer = stored is None or algo_supersedes(stored, update)
        return applied(stored, merged, update, newer)

    def apply_fill(self, fill: Fill) -> Applied:
        if fill.key in self.fills:
            return Applied.DUPLICATE
        self.fills[fill.key] = fill
        return Applied.INSERTED

    def apply_income(self, income: Income) -> Applied:
        if income.key in self.incomes:
            return Applied.DUPLICATE
        self.incomes[income.key] = income
        return Applied.INSERTED

    def open_orders(self) -> list[OrderState]:
        return [o for o in self.orders.values() if o.is_open]

    def open_algo_orders(self) -> list[AlgoOrderState]:
        return [a for a in self.algo_orders.values() if a.is_open]

    def positions(self) -> dict[str, Position]:
        return positions_from_fills(self.fills.values(), self.incomes.values())
