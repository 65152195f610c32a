"""Reconciliation of the ledger with the venue (spec 004 §3 A–D, §7-3, §9), pure.

``reconcile(view, snapshot)`` compares what the ledger holds (``LedgerView``) with what the venue
says (``ExchangeSnapshot``: positionRisk, openOrders, openAlgoOrders, userTrades from the sync
cursor, and answers to earlier lookups) and returns a ``ReconcileResult``:

- ``corrections``: what to change or do, each a typed ``Correction`` with kind, symbol, the record
  before and after, and a reason; every one becomes an event (``storage.ledger`` writes them). The
  venue wins: its fills are inserted, its orders restore or update ours, its positions are adopted.
- ``lookups``: what the caller must ask the venue before the next round (an order we think open
  that is not in openOrders, a signal whose order we never recorded, trades older than the cursor).
  Reconciliation runs to a fixed point: the answers come back in the next snapshot.
- ``cursors``: the per-symbol sync cursors the snapshot's trades advance.

Spec cases, and where they are handled:

- A (signal without an order record; §7-3 case 4): ``_signals`` finds the order by client id among
  the venue's orders and restores it with the signal's trade group and engine, or asks to query it,
  or, when the venue has no such order, records that the signal was never executed.
- B (order without its fills; §7-3 case 2): ``_fills`` inserts every venue trade the ledger lacks;
  a fill of an order the ledger never saw restores the order (from the venue's record, else a stub
  to be queried). ``_orders`` updates orders from the venue: an order we think open that the venue
  no longer lists is queried, then closed with the venue's final status.
- C (position on the venue the ledger does not know; §7-3 case 1): ``_positions`` adopts it (a
  restoration signal) and asks for the trades that explain it; the venue's resting algo orders are
  adopted by ``_algo_orders``, so a closePosition stop that survived a restart is not placed again.
- D (closed on the venue, open in the ledger; §7-3 case 3): the closing trades are inserted and the
  position is marked closed (``POSITION_CLOSED``); when the trades are not there yet, they are
  looked up and the mismatch is recorded.
- Safety (issue 15): ``_protection`` finds orphan algo orders (position gone: cancel) and naked
  positions (not both a stop-loss and a take-profit covering the quantity: protect or flatten).
  Binance's query side can lag its matching side: an algo order it acknowledged may answer -2013
  and be missing from openAlgoOrders for a while. One the ledger holds open, acknowledged less than
  ``ReconcileConfig.unconfirmed_algo_ms`` ago, is therefore not closed as NOT_FOUND (it is queried
  again) and still counts as protection: the reconciler neither duplicates it nor flattens its
  position. Older than that, "no such order" closes it and its position is protected again.

Mismatches that fills cannot explain yet are reported once (``mismatch_signature``, kept in
``LedgerView.recorded_mismatches``), so a reconciler running every 30–60 s does not repeat itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.ledger import (
    NOT_FOUND,
    UNKNOWN,
    ZERO,
    AlgoOrderState,
    EngineSignal,
    Fill,
    LedgerBook,
    OrderState,
    Position,
    SyncCursor,
    merge_algo,
    merge_order,
    stub_order,
    unique_fills,
)

STOP_TYPES = frozenset({"STOP_MARKET", "STOP", "TRAILING_STOP_MARKET"})
TAKE_PROFIT_TYPES = frozenset({"TAKE_PROFIT_MARKET", "TAKE_PROFIT"})


class ReconcileConfig(BaseModel):
    """Grace periods that keep the reconciler off the execution actor's work in progress."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protection_grace_ms: int = Field(
        5_000,
        ge=0,
        description="a position changed less than this ago is the execution actor's to protect, ms",
    )
    orphan_grace_ms: int = Field(
        5_000,
        ge=0,
        description="an algo order created less than this before the positions were read is not an orphan, ms",
    )
    unconfirmed_algo_ms: int = Field(
        120_000,
        ge=0,
        description="an algo order the venue acknowledged less than this before the snapshot and does not "
        "show (-2013, not in openAlgoOrders: its query side lags) is still open and still protects, ms",
    )


class CorrectionKind(StrEnum):
    """What a correction does. The first group changes the ledger, the second asks the caller to act
    on the venue, the third only records what was found."""

    INSERT_FILL = "insert_fill"
    RESTORE_ORDER = "restore_order"
    UPDATE_ORDER = "update_order"
    RESTORE_ALGO_ORDER = "restore_algo_order"
    UPDATE_ALGO_ORDER = "update_algo_order"
    ADOPT_POSITION = "adopt_position"
    POSITION_CLOSED = "position_closed"
    CANCEL_ORPHAN = "cancel_orphan"
    PROTECT_OR_FLATTEN = "protect_or_flatten"
    POSITION_MISMATCH = "position_mismatch"
    SIGNAL_WITHOUT_ORDER = "signal_without_order"


#: Kinds whose ``after`` record is written into the ledger's orders, algo orders or fills.
LEDGER_KINDS = frozenset(
    {
        CorrectionKind.INSERT_FILL,
        CorrectionKind.RESTORE_ORDER,
        CorrectionKind.UPDATE_ORDER,
        CorrectionKind.RESTORE_ALGO_ORDER,
        CorrectionKind.UPDATE_ALGO_ORDER,
    }
)
#: Kinds after which the ledger's positions may differ: the position-level record of a mismatch.
POSITION_KINDS = frozenset(
    {CorrectionKind.ADOPT_POSITION, CorrectionKind.POSITION_CLOSED, CorrectionKind.POSITION_MISMATCH}
)
#: Kinds the caller carries out on the venue.
ACTION_KINDS = frozenset({CorrectionKind.CANCEL_ORPHAN, CorrectionKind.PROTECT_OR_FLATTEN})


class LookupKind(StrEnum):
    QUERY_ORDER = "query_order"  # GET /fapi/v1/order by orderId
    QUERY_ORDER_BY_CLIENT_ID = "query_order_by_client_id"  # by origClientOrderId
    QUERY_ALGO_ORDER = "query_algo_order"  # GET /fapi/v1/algoOrder by algoId
    BACKFILL_TRADES = "backfill_trades"  # GET /fapi/v1/userTrades fromId (None: all the venue keeps)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A question for the venue whose answer goes in the next snapshot."""

    kind: LookupKind
    symbol: str
    reason: str
    order_id: int | None = None
    client_order_id: str | None = None
    algo_id: int | None = None
    from_trade_id: int | None = None


@dataclass(frozen=True, slots=True)
class ExchangePosition:
    """One symbol's position as the venue shows it (positionRisk, one-way mode): ``qty`` signed."""

    symbol: str
    qty: Decimal
    entry_price: Decimal
    update_ms: int


_FLAT = ExchangePosition("", ZERO, ZERO, 0)


@dataclass(frozen=True, slots=True)
class PendingSignal:
    """An ``engine_signals`` row with a client order id the ledger has no order for (case A)."""

    signal_id: int
    signal: EngineSignal


Record = OrderState | AlgoOrderState | Fill | Position | ExchangePosition | EngineSignal


@dataclass(frozen=True, slots=True)
class Correction:
    """One thing reconciliation changes or asks for; ``before``/``after`` are the ledger's and the
    venue's records (None when one side has none); ``details`` holds figures for the event."""

    kind: CorrectionKind
    symbol: str
    reason: str
    before: Record | None = None
    after: Record | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ledger_event(self) -> OrderState | AlgoOrderState | Fill | None:
        """The record to write into the ledger (a fill, an order's or algo order's state), if any."""
        if self.kind in LEDGER_KINDS and isinstance(self.after, OrderState | AlgoOrderState | Fill):
            return self.after
        return None


@dataclass(frozen=True, slots=True)
class LedgerView:
    """What the ledger holds, for the symbols and ids the snapshot concerns.

    ``orders``/``algo_orders``: every open record, and every record of an id the snapshot mentions
    (any status). ``trade_ids``: the fill ids the ledger has among those the snapshot's trades carry.
    ``recorded_mismatches``: per symbol, the ``mismatch_signature`` of the last position event.
    """

    orders: Mapping[tuple[str, int], OrderState] = field(default_factory=dict)
    algo_orders: Mapping[tuple[str, int], AlgoOrderState] = field(default_factory=dict)
    positions: Mapping[str, Position] = field(default_factory=dict)
    trade_ids: Mapping[str, frozenset[int]] = field(default_factory=dict)
    pending_signals: Sequence[PendingSignal] = ()
    cursors: Mapping[str, SyncCursor] = field(default_factory=dict)
    recorded_mismatches: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of_book(
        cls,
        book: LedgerBook,
        pending_signals: Sequence[PendingSignal] = (),
        cursors: Mapping[str, SyncCursor] | None = None,
        recorded_mismatches: Mapping[str, tuple[str, ...]] | None = None,
    ) -> LedgerView:
        """The view of an in-memory ledger (every record, every fill id)."""
        trade_ids: dict[str, set[int]] = {}
        for symbol, trade_id in book.fills:
            trade_ids.setdefault(symbol, set()).add(trade_id)
        return cls(
            orders=dict(book.orders), algo_orders=dict(book.algo_orders), positions=book.positions(),
            trade_ids={s: frozenset(ids) for s, ids in trade_ids.items()}, pending_signals=pending_signals,
            cursors=cursors or {}, recorded_mismatches=recorded_mismatches or {},
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExchangeSnapshot:
    """What the venue says at ``ts_ms``.

    ``positions``: positionRisk (a symbol absent is flat), read at ``positions_ms`` (default ``ts_ms``).
    ``trades``: userTrades; ``trades_from_id`` says, per symbol, from which trade id they are complete
    (None: everything the venue keeps); a symbol absent from it had no trades fetched.
    ``orders``/``algo_orders``: answers to QUERY lookups; ``absent_orders``/``absent_client_ids``/
    ``absent_algo_orders``: lookups the venue answered "no such order" (-2013).
    """

    ts_ms: int
    positions: Sequence[ExchangePosition] = ()
    open_orders: Sequence[OrderState] = ()
    open_algo_orders: Sequence[AlgoOrderState] = ()
    trades: Sequence[Fill] = ()
    trades_from_id: Mapping[str, int | None] = field(default_factory=dict)
    orders: Sequence[OrderState] = ()
    algo_orders: Sequence[AlgoOrderState] = ()
    absent_orders: frozenset[tuple[str, int]] = frozenset()
    absent_client_ids: frozenset[tuple[str, str]] = frozenset()
    absent_algo_orders: frozenset[tuple[str, int]] = frozenset()
    positions_ms: int | None = None

    def mentioned_orders(self) -> set[tuple[str, int]]:
        """Order ids the snapshot mentions, algo children included (the view carries their records)."""
        algos = (*self.open_algo_orders, *self.algo_orders)
        return (
            {o.key for o in (*self.open_orders, *self.orders)}
            | {(f.symbol, f.order_id) for f in self.trades}
            | {(a.symbol, a.child_order_id) for a in algos if a.child_order_id is not None}
        )

    def mentioned_algo_orders(self) -> set[tuple[str, int]]:
        return {a.key for a in (*self.open_algo_orders, *self.algo_orders)}


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    corrections: list[Correction]
    lookups: list[Lookup]
    cursors: dict[str, SyncCursor]

    def of_kind(self, kind: CorrectionKind) -> list[Correction]:
        return [c for c in self.corrections if c.kind == kind]


def reconcile(
    view: LedgerView, snapshot: ExchangeSnapshot, config: ReconcileConfig | None = None
) -> ReconcileResult:
    """Return the corrections, lookups and advanced cursors that make the ledger equal the venue."""
    config = config or ReconcileConfig()
    out: list[Correction] = []
    lookups: list[Lookup] = []
    signals = {(p.signal.symbol, p.signal.client_order_id): p for p in view.pending_signals}
    new_fills = _fills(view, snapshot)
    ours = _orders(view, snapshot, new_fills, signals, out, lookups)
    _signals(snapshot, signals, out, lookups)
    unconfirmed = _algo_orders(view, snapshot, config, out, lookups)
    _positions(view, snapshot, new_fills, ours, out, lookups)
    _protection(snapshot, config, unconfirmed, out)
    return ReconcileResult(out, lookups, _cursors(view, snapshot))


def _fills(view: LedgerView, snapshot: ExchangeSnapshot) -> list[Fill]:
    return [f for f in unique_fills(snapshot.trades) if f.trade_id not in view.trade_ids.get(f.symbol, ())]


def _link(order: OrderState, signals: Mapping[tuple[str, str | None], PendingSignal]) -> OrderState:
    pending = signals.get((order.symbol, order.client_order_id))
    if pending is None:
        return order
    s = pending.signal
    return replace(
        order, trade_group_id=order.trade_group_id or s.trade_group_id, engine=order.engine or s.engine
    )


def _orders(
    view: LedgerView,
    snapshot: ExchangeSnapshot,
    new_fills: list[Fill],
    signals: Mapping[tuple[str, str | None], PendingSignal],
    out: list[Correction],
    lookups: list[Lookup],
) -> set[tuple[str, int]]:
    """Correct the orders; return the keys of our orders (the ledger's, and those of our signals)."""
    ours = set(view.orders)
    venue: dict[tuple[str, int], OrderState] = {}
    for o in (*snapshot.open_orders, *snapshot.orders):
        venue[o.key] = merge_order(venue.get(o.key), o)
    listed = {o.key for o in snapshot.open_orders}
    restored: set[tuple[str, int]] = set()
    for key, o in venue.items():
        stored = view.orders.get(key)
        if stored is None:
            restored.add(key)
            linked = _link(o, signals)
            if linked is not o:
                ours.add(key)
            why = "open on the venue" if key in listed else "queried from the venue"
            out.append(Correction(
                CorrectionKind.RESTORE_ORDER, o.symbol, f"{why}, missing from the ledger", None, linked,
                {"signal_id": signals[(o.symbol, o.client_order_id)].signal_id}
                if (o.symbol, o.client_order_id) in signals else {},
            ))  # fmt: skip
            continue
        merged = merge_order(stored, o)
        if merged != stored:
            out.append(Correction(
                CorrectionKind.UPDATE_ORDER, o.symbol,
                f"venue says {o.status} (filled {o.filled_qty}), ledger {stored.status} (filled {stored.filled_qty})",
                stored, merged,
            ))  # fmt: skip
    # an order the ledger thinks open that the venue no longer lists: query it, then close it
    for key, stored in view.orders.items():
        if not stored.is_open or key in venue:
            continue
        if key in snapshot.absent_orders:
            closed = replace(stored, status=NOT_FOUND, update_ms=max(stored.update_ms, snapshot.ts_ms))
            out.append(Correction(
                CorrectionKind.UPDATE_ORDER, stored.symbol, "the venue has no such order (queried)", stored, closed,
            ))  # fmt: skip
        else:
            lookups.append(Lookup(
                LookupKind.QUERY_ORDER, stored.symbol, f"ledger says {stored.status}, not in openOrders",
                order_id=stored.order_id,
            ))  # fmt: skip
    # a fill of an order the ledger never saw: restore the order as a stub, to be queried
    for f in new_fills:
        key = (f.symbol, f.order_id)
        if key in view.orders or key in venue or key in restored:
            continue
        restored.add(key)
        out.append(Correction(
            CorrectionKind.RESTORE_ORDER, f.symbol, "a venue trade's order is missing from the ledger (stub; queried)",
            None, stub_order(f),
        ))  # fmt: skip
        lookups.append(
            Lookup(LookupKind.QUERY_ORDER, f.symbol, "order known from a trade only", order_id=f.order_id)
        )
    for f in new_fills:
        out.append(
            Correction(CorrectionKind.INSERT_FILL, f.symbol, "venue trade missing from fills", None, f)
        )
    return ours


def _signals(
    snapshot: ExchangeSnapshot,
    signals: Mapping[tuple[str, str | None], PendingSignal],
    out: list[Correction],
    lookups: list[Lookup],
) -> None:
    found = {(o.symbol, o.client_order_id) for o in (*snapshot.open_orders, *snapshot.orders)}
    for key, pending in signals.items():
        symbol, client_id = key
        if key in found or client_id is None:
            continue  # restored by _orders with the signal's trade group
        if (symbol, client_id) in snapshot.absent_client_ids:
            out.append(Correction(
                CorrectionKind.SIGNAL_WITHOUT_ORDER, symbol, "the venue has no order with the signal's client id",
                pending.signal, None, {"signal_id": pending.signal_id, "client_order_id": client_id},
            ))  # fmt: skip
        else:
            lookups.append(Lookup(
                LookupKind.QUERY_ORDER_BY_CLIENT_ID, symbol, "signal recorded, order missing from the ledger",
                client_order_id=client_id,
            ))  # fmt: skip


def _algo_orders(
    view: LedgerView,
    snapshot: ExchangeSnapshot,
    config: ReconcileConfig,
    out: list[Correction],
    lookups: list[Lookup],
) -> list[AlgoOrderState]:
    """Correct the algo orders; return the ledger's open ones the venue acknowledged recently but does
    not show (yet): still open, still protection (module docstring)."""
    venue: dict[tuple[str, int], AlgoOrderState] = {}
    for a in (*snapshot.open_algo_orders, *snapshot.algo_orders):
        venue[a.key] = merge_algo(venue.get(a.key), a)
    known_orders = set(view.orders) | {o.key for o in (*snapshot.open_orders, *snapshot.orders)}
    known_orders |= {(f.symbol, f.order_id) for f in snapshot.trades}  # restored from the trade
    for key, a in venue.items():
        stored = view.algo_orders.get(key)
        merged = merge_algo(stored, a)
        if stored is None:
            what = "closePosition " if a.close_position else ""
            out.append(Correction(
                CorrectionKind.RESTORE_ALGO_ORDER, a.symbol,
                f"{a.status} {what}{a.order_type} on the venue, missing from the ledger: adopted, not placed again",
                None, a,
            ))  # fmt: skip
        elif merged != stored:
            out.append(Correction(
                CorrectionKind.UPDATE_ALGO_ORDER, a.symbol, f"venue says {a.status}, ledger {stored.status}", stored, merged,
            ))  # fmt: skip
        child = merged.child_order_id
        if child is not None and (a.symbol, child) not in known_orders:
            lookups.append(
                Lookup(LookupKind.QUERY_ORDER, a.symbol, f"child of algo {a.algo_id}", order_id=child)
            )
    unconfirmed: list[AlgoOrderState] = []
    for key, stored in view.algo_orders.items():
        if not stored.is_open or key in venue:
            continue
        created = stored.created_ms if stored.created_ms is not None else stored.update_ms
        if stored.status != UNKNOWN and created > snapshot.ts_ms - config.unconfirmed_algo_ms:
            unconfirmed.append(stored)
            if key in snapshot.absent_algo_orders:
                lookups.append(Lookup(
                    LookupKind.QUERY_ALGO_ORDER, stored.symbol,
                    f"acknowledged {(snapshot.ts_ms - created) / 1000:.0f} s ago, the venue does not show it yet",
                    algo_id=stored.algo_id,
                ))  # fmt: skip
                continue
        if key in snapshot.absent_algo_orders:
            closed = replace(stored, status=NOT_FOUND, update_ms=max(stored.update_ms, snapshot.ts_ms))
            out.append(Correction(
                CorrectionKind.UPDATE_ALGO_ORDER, stored.symbol, "the venue has no such algo order (queried)", stored, closed,
            ))  # fmt: skip
        else:
            lookups.append(Lookup(
                LookupKind.QUERY_ALGO_ORDER, stored.symbol, f"ledger says {stored.status}, not in openAlgoOrders",
                algo_id=stored.algo_id,
            ))  # fmt: skip
    return unconfirmed


def _positions(
    view: LedgerView,
    snapshot: ExchangeSnapshot,
    new_fills: list[Fill],
    ours: set[tuple[str, int]],
    out: list[Correction],
    lookups: list[Lookup],
) -> None:
    venue = {p.symbol: p for p in snapshot.positions}
    added: dict[str, Decimal] = {}
    foreign: dict[str, list[int]] = {}  # new fills of orders that are not ours
    for f in new_fills:
        added[f.symbol] = added.get(f.symbol, ZERO) + f.signed_qty
        if (f.symbol, f.order_id) not in ours:
            foreign.setdefault(f.symbol, []).append(f.trade_id)
    for symbol in sorted(set(venue) | {s for s, p in view.positions.items() if p.qty} | set(added)):
        ledger = view.positions.get(symbol) or Position(symbol)
        if ledger.qty == venue.get(symbol, _FLAT).qty:
            continue
        expected = ledger.qty + added.get(symbol, ZERO)
        v = venue.get(symbol) or ExchangePosition(symbol, ZERO, ZERO, 0)
        explained = expected == v.qty
        signature = mismatch_signature(expected, v, ledger)
        details = {
            "ledger_qty": ledger.qty, "after_new_fills_qty": expected, "venue_qty": v.qty,
            "new_trade_ids": sorted(f.trade_id for f in new_fills if f.symbol == symbol),
            "signature": list(signature),
        }  # fmt: skip
        if not explained:
            lookups.append(_backfill(view, snapshot, symbol, expected, v.qty))
            if view.recorded_mismatches.get(symbol) == signature:
                continue  # recorded already; the lookup is repeated, the event is not
        if ledger.qty == 0:
            if explained and symbol not in foreign:
                continue  # our own fills, missed on the stream (case B)
            out.append(Correction(
                CorrectionKind.ADOPT_POSITION, symbol,
                "position on the venue without an entry record"
                + ("" if explained else "; the trades that opened it are being looked up"),
                ledger, v, {**details, "explained_by_fills": explained},
            ))  # fmt: skip
        elif v.qty == 0:
            out.append(Correction(
                CorrectionKind.POSITION_CLOSED, symbol,
                "closed on the venue" + (" by trades missing from the ledger" if explained else "; closing trades looked up"),
                ledger, v, {**details, "explained_by_fills": explained},
            ))  # fmt: skip
        elif not explained:
            out.append(Correction(
                CorrectionKind.POSITION_MISMATCH, symbol, "ledger and venue quantities differ; trades looked up",
                ledger, v, {**details, "explained_by_fills": False},
            ))  # fmt: skip


def mismatch_signature(expected: Decimal, venue: ExchangePosition, ledger: Position) -> tuple[str, ...]:
    """Identify one unexplained difference: the same quantities after the same last fill and the same
    venue position update are the same finding, reported once."""
    return (str(expected), str(venue.qty), str(venue.update_ms), str(ledger.last_trade_id))


def _backfill(
    view: LedgerView, snapshot: ExchangeSnapshot, symbol: str, ledger: Decimal, venue: Decimal
) -> Lookup:
    cursor = view.cursors.get(symbol)
    next_id = None if cursor is None else cursor.last_trade_id + 1
    covered = symbol in snapshot.trades_from_id
    # trades from the cursor did not explain it (or there is no cursor): ask for all the venue keeps
    from_id = None if covered or next_id is None else next_id
    return Lookup(
        LookupKind.BACKFILL_TRADES, symbol, f"fills give {ledger}, the venue {venue}", from_trade_id=from_id
    )


def _covers(
    orders: Iterable[OrderState | AlgoOrderState], side: str, types: frozenset[str], qty: Decimal
) -> bool:
    covered = ZERO
    for o in orders:
        if o.side != side or o.order_type not in types:
            continue
        if o.close_position:
            return True
        remaining = o.qty - (o.filled_qty if isinstance(o, OrderState) else o.executed_qty)
        covered += remaining
    return covered >= qty


def _protection(
    snapshot: ExchangeSnapshot,
    config: ReconcileConfig,
    unconfirmed: Sequence[AlgoOrderState],
    out: list[Correction],
) -> None:
    positions = {p.symbol: p for p in snapshot.positions if p.qty}
    read_ms = snapshot.ts_ms if snapshot.positions_ms is None else snapshot.positions_ms
    protective: list[OrderState | AlgoOrderState] = [
        *[a for a in snapshot.open_algo_orders if a.is_open],
        *[o for o in snapshot.open_orders if o.is_open and o.order_type in STOP_TYPES | TAKE_PROFIT_TYPES],
    ]
    for o in protective:
        if o.symbol in positions:
            continue
        if not (o.close_position or o.reduce_only or isinstance(o, AlgoOrderState)):
            continue  # a stop entry order is not protection; it is no orphan either
        created = o.created_ms if o.created_ms is not None else o.update_ms
        if created > read_ms - config.orphan_grace_ms:
            continue  # may protect a position opened after positionRisk was read
        ident = {"algo_id": o.algo_id} if isinstance(o, AlgoOrderState) else {"order_id": o.order_id}
        out.append(Correction(
            CorrectionKind.CANCEL_ORPHAN, o.symbol, f"{o.order_type} rests while the venue shows no position",
            None, o, ident,
        ))  # fmt: skip
    for symbol, p in sorted(positions.items()):
        if p.update_ms > snapshot.ts_ms - config.protection_grace_ms:
            continue  # just changed: the execution actor is protecting it
        side = "SELL" if p.qty > 0 else "BUY"
        mine = [o for o in (*protective, *unconfirmed) if o.symbol == symbol]
        missing = [
            name
            for name, types in (("stop_loss", STOP_TYPES), ("take_profit", TAKE_PROFIT_TYPES))
            if not _covers(mine, side, types, abs(p.qty))
        ]
        if missing:
            out.append(Correction(
                CorrectionKind.PROTECT_OR_FLATTEN, symbol,
                f"naked: no {' and no '.join(missing)} covers {p.qty}; protect, or flatten if protection fails",
                None, p, {"missing": missing, "close_side": side, "qty": abs(p.qty)},
            ))  # fmt: skip


def _cursors(view: LedgerView, snapshot: ExchangeSnapshot) -> dict[str, SyncCursor]:
    out: dict[str, SyncCursor] = {}
    by_symbol: dict[str, list[Fill]] = {}
    for f in snapshot.trades:
        by_symbol.setdefault(f.symbol, []).append(f)
    for symbol, from_id in snapshot.trades_from_id.items():
        cursor = view.cursors.get(symbol)
        if cursor is not None and from_id is not None and from_id > cursor.last_trade_id + 1:
            continue  # a gap between the cursor and these trades: not complete
        last = max(by_symbol.get(symbol, ()), key=lambda f: f.trade_id, default=None)
        if last is None or (cursor is not None and last.trade_id <= cursor.last_trade_id):
            continue
        out[symbol] = SyncCursor(symbol, last.trade_id, last.time_ms)
    return out
