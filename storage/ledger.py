"""The order/fill ledger in the database (spec 004 §2, §4, §9), on SQLite and PostgreSQL.

``LedgerStore(engine)`` writes what the trading client and the reconciler hand it, by the rules of
``core.ledger`` (the same functions the in-memory ``LedgerBook`` applies):

- ``engine_signals`` rows (``record_signal``), then ``orders`` and ``algo_orders`` (upserted by
  (symbol, order_id) / (symbol, algo_id); an update older than the stored one is ignored, a child
  order is joined to its algo order), then ``fills`` (inserted once per (symbol, trade_id); a
  duplicate is ignored and counted) and ``income`` records — ``record(events)``, one transaction.
- the per-symbol sync cursors (``sync_cursors``; ``advance_cursors`` never moves one back);
- reconciliation results (``apply``): every correction is an ``events`` row (kind
  ``reconcile.<kind>``, with the record before and after), and those that change the ledger change it.

It reads positions recomputed from the stored fills and income (``positions``) and the view the
reconciler compares with the venue (``view``). A fill whose order the ledger has not seen gets a
stub order row (status UNKNOWN) that the order's next state replaces. A symbol missing from
``instruments`` is added as ``inactive`` (the venue's record is kept whatever our universe is).

Prices, quantities and fees are Decimal in Python and double precision in the database: a value is
stored only if it reads back exactly (Binance sends at most 15 significant digits), else it is refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.errors import DataQualityError
from core.jsonsafe import json_safe
from core.ledger import (
    ALGO_TERMINAL,
    ORDER_TERMINAL,
    AlgoOrderState,
    Applied,
    EngineSignal,
    Fill,
    Income,
    OrderState,
    Position,
    SyncCursor,
    algo_supersedes,
    applied,
    join_child,
    merge_algo,
    merge_order,
    order_supersedes,
    positions_from_fills,
    stub_order,
    to_json,
    unique_fills,
)
from core.reconcile import (
    POSITION_KINDS,
    Correction,
    CorrectionKind,
    ExchangeSnapshot,
    LedgerView,
    PendingSignal,
    ReconcileResult,
)
from storage.schema import (
    algo_orders,
    engine_signals,
    events,
    fills,
    income,
    instruments,
    orders,
    sync_cursors,
)

EVENT_PREFIX = "reconcile."
#: How far back a signal without an order is looked for (spec 004 §3 A), ms.
SIGNAL_WINDOW_MS = 7 * 24 * 3600 * 1000
_CHUNK = 500
Row = Mapping[Any, Any]  # a result row's mapping


@dataclass
class LedgerWrite:
    """What one write did, by table and outcome (``Applied``)."""

    orders: Counter[Applied] = field(default_factory=Counter)
    algo_orders: Counter[Applied] = field(default_factory=Counter)
    fills: Counter[Applied] = field(default_factory=Counter)
    income: Counter[Applied] = field(default_factory=Counter)
    events: int = 0
    signals: int = 0
    cursors: int = 0

    @property
    def duplicate_fills(self) -> int:
        return self.fills[Applied.DUPLICATE]


class LedgerStore:
    """The ledger tables of one database (module docstring). ``source`` names the writer in events."""

    def __init__(self, engine: sa.Engine, source: str = "ledger") -> None:
        self.engine = engine
        self.source = source
        self._instruments: set[str] = set()

    # --- writing --------------------------------------------------------------------------------------

    def record_signal(self, signal: EngineSignal) -> int:
        """Insert an ``engine_signals`` row; return its id."""
        with self.engine.begin() as conn:
            return self._signal(conn, signal)

    def record(self, events_: Iterable[OrderState | AlgoOrderState | Fill | Income]) -> LedgerWrite:
        """Write order, algo-order, fill and income events in the order given, in one transaction."""
        out = LedgerWrite()
        with self.engine.begin() as conn:
            pending: list[Fill] = []
            for e in events_:
                if isinstance(e, Fill):
                    pending.append(e)
                    continue
                if pending:  # consecutive fills go in one statement
                    self._fills(conn, pending, out)
                    pending = []
                if isinstance(e, OrderState):
                    out.orders[self._order(conn, e)] += 1
                elif isinstance(e, AlgoOrderState):
                    out.algo_orders[self._algo(conn, e)] += 1
                else:
                    out.income[self._income(conn, e)] += 1
            if pending:
                self._fills(conn, pending, out)
        return out

    def record_fills(self, fills_: Iterable[Fill]) -> LedgerWrite:
        """Insert fills once each by (symbol, trade id); duplicates are counted in ``fills[DUPLICATE]``."""
        return self.record(fills_)

    def advance_cursors(self, cursors: Iterable[SyncCursor], now_ms: int) -> int:
        """Store sync cursors; one behind the stored one is ignored. Return how many moved."""
        with self.engine.begin() as conn:
            return self._advance(conn, cursors, now_ms)

    def apply(self, result: ReconcileResult, ts_ms: int) -> LedgerWrite:
        """Write every correction as an event at ``ts_ms`` and apply those that change the ledger,
        then advance the cursors, in one transaction. Actions on the venue (cancel an orphan, protect
        or flatten) are recorded here and carried out by the caller."""
        out = LedgerWrite()
        with self.engine.begin() as conn:
            self._ensure_instruments(
                conn, {c.symbol for c in result.corrections} | set(result.cursors), ts_ms
            )
            for c in result.corrections:
                self._correct(conn, c, ts_ms, out)
            if result.corrections:
                conn.execute(sa.insert(events), [self._event_row(c, ts_ms) for c in result.corrections])
                out.events = len(result.corrections)
            out.cursors = self._advance(conn, result.cursors.values(), ts_ms)
        return out

    def _correct(self, conn: sa.Connection, c: Correction, ts_ms: int, out: LedgerWrite) -> None:
        record = c.ledger_event
        if isinstance(record, Fill):
            self._fills(conn, [record], out)
        elif isinstance(record, OrderState):
            out.orders[self._order(conn, record)] += 1
        elif isinstance(record, AlgoOrderState):
            out.algo_orders[self._algo(conn, record)] += 1
        elif c.kind in (CorrectionKind.ADOPT_POSITION, CorrectionKind.POSITION_CLOSED):
            position = c.after if c.kind == CorrectionKind.ADOPT_POSITION else c.before
            qty = getattr(position, "qty", Decimal(0))
            self._signal(conn, EngineSignal(
                ts_ms=ts_ms, symbol=c.symbol, side="LONG" if qty > 0 else "SHORT", engine="reconcile",
                reason="adopted" if c.kind == CorrectionKind.ADOPT_POSITION else "manual_close",
                meta={"reason": c.reason, **to_json(c.details)},
            ))  # fmt: skip
            out.signals += 1

    def _event_row(self, c: Correction, ts_ms: int) -> dict[str, Any]:
        payload = {
            "reason": c.reason,
            "before": to_json(c.before),
            "after": to_json(c.after),
            **to_json(c.details),
        }
        return {"ts": ts_ms, "kind": EVENT_PREFIX + c.kind, "source": self.source, "symbol": c.symbol,
                "payload": json_safe(payload)}  # fmt: skip

    # --- reading --------------------------------------------------------------------------------------

    def orders(self, symbol: str | None = None, *, open_only: bool = False) -> list[OrderState]:
        q = sa.select(orders)
        if symbol is not None:
            q = q.where(orders.c.symbol == symbol)
        if open_only:
            q = q.where(orders.c.status.not_in(ORDER_TERMINAL))
        with self.engine.connect() as conn:
            return [
                _order_of(r) for r in conn.execute(q.order_by(orders.c.symbol, orders.c.order_id)).mappings()
            ]

    def algo_orders(self, symbol: str | None = None, *, open_only: bool = False) -> list[AlgoOrderState]:
        q = sa.select(algo_orders)
        if symbol is not None:
            q = q.where(algo_orders.c.symbol == symbol)
        if open_only:
            q = q.where(algo_orders.c.status.not_in(ALGO_TERMINAL))
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(algo_orders.c.symbol, algo_orders.c.algo_id)).mappings()
            return [_algo_of(r) for r in rows]

    def fills(self, symbol: str | None = None) -> list[Fill]:
        q = sa.select(fills, orders.c.client_order_id).join(
            orders, sa.and_(orders.c.symbol == fills.c.symbol, orders.c.order_id == fills.c.order_id)
        )
        if symbol is not None:
            q = q.where(fills.c.symbol == symbol)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(fills.c.symbol, fills.c.ts, fills.c.trade_id)).mappings()
            return [_fill_of(r) for r in rows]

    def incomes(self, symbol: str | None = None) -> list[Income]:
        q = sa.select(income)
        if symbol is not None:
            q = q.where(income.c.symbol == symbol)
        with self.engine.connect() as conn:
            return [_income_of(r) for r in conn.execute(q.order_by(income.c.ts, income.c.tran_id)).mappings()]

    def positions(self, symbol: str | None = None) -> dict[str, Position]:
        """Recompute positions from the stored fills and income (``core.ledger.positions_from_fills``)."""
        return positions_from_fills(self.fills(symbol), self.incomes(symbol))

    def cursors(self) -> dict[str, SyncCursor]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(sync_cursors)).mappings()
            return {
                r["symbol"]: SyncCursor(r["symbol"], r["last_trade_id"], r["last_trade_ms"]) for r in rows
            }

    def correction_events(self, kind: CorrectionKind | None = None) -> list[dict[str, Any]]:
        """The reconciliation events, oldest first (``kind``, ``symbol``, ``ts``, ``payload``)."""
        q = sa.select(events.c.ts, events.c.kind, events.c.symbol, events.c.payload)
        q = (
            q.where(events.c.kind == EVENT_PREFIX + kind)
            if kind
            else q.where(events.c.kind.like(EVENT_PREFIX + "%"))
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q.order_by(events.c.id)).mappings()]

    def view(self, snapshot: ExchangeSnapshot, *, signal_window_ms: int = SIGNAL_WINDOW_MS) -> LedgerView:
        """What the reconciler needs of the ledger to compare it with ``snapshot`` (``LedgerView``)."""
        with self.engine.connect() as conn:
            order_rows = list(
                conn.execute(sa.select(orders).where(orders.c.status.not_in(ORDER_TERMINAL))).mappings()
            )
            order_rows += _rows_by_key(conn, orders, orders.c.order_id, snapshot.mentioned_orders())
            algo_rows = list(
                conn.execute(
                    sa.select(algo_orders).where(algo_orders.c.status.not_in(ALGO_TERMINAL))
                ).mappings()
            )
            algo_rows += _rows_by_key(
                conn, algo_orders, algo_orders.c.algo_id, snapshot.mentioned_algo_orders()
            )
            trade_keys = {(f.symbol, f.trade_id) for f in snapshot.trades}
            known: dict[str, set[int]] = {}
            for chunk in _chunks(sorted(trade_keys)):
                q = sa.select(fills.c.symbol, fills.c.trade_id).where(
                    sa.tuple_(fills.c.symbol, fills.c.trade_id).in_(chunk)
                )
                for symbol, trade_id in conn.execute(q):
                    known.setdefault(symbol, set()).add(trade_id)
            pending = _pending_signals(conn, snapshot.ts_ms - signal_window_ms)
            mismatches: dict[str, tuple[str, ...]] = {}
            q = (
                sa.select(events.c.symbol, events.c.payload)
                .where(events.c.kind.in_([EVENT_PREFIX + k for k in POSITION_KINDS]))
                .order_by(events.c.id)
            )
            for symbol, payload in conn.execute(q):
                mismatches[symbol] = tuple(payload.get("signature", ()))
        return LedgerView(
            orders={o.key: o for o in map(_order_of, order_rows)},
            algo_orders={a.key: a for a in map(_algo_of, algo_rows)},
            positions=self.positions(),
            trade_ids={s: frozenset(ids) for s, ids in known.items()},
            pending_signals=pending,
            cursors=self.cursors(),
            recorded_mismatches=mismatches,
        )

    # --- rows ------------------------------------------------------------------------------------------

    def _ensure_instruments(self, conn: sa.Connection, symbols: Iterable[str], ts_ms: int) -> None:
        wanted = sorted(set(symbols) - self._instruments - {""})
        if not wanted:
            return
        present = conn.execute(
            sa.select(instruments.c.symbol).where(instruments.c.symbol.in_(wanted))
        ).scalars()
        self._instruments.update(present)  # committed rows only: a row added below may be rolled back
        rows = [
            {"symbol": s, "status": "inactive", "created_at": ts_ms}
            for s in wanted
            if s not in self._instruments
        ]
        if rows:
            conn.execute(_insert(conn, instruments).on_conflict_do_nothing(), rows)

    def _signal(self, conn: sa.Connection, s: EngineSignal) -> int:
        row = {"ts": s.ts_ms, "symbol": s.symbol, "side": s.side, "engine": s.engine, "reason": s.reason,
               "trade_group_id": s.trade_group_id, "client_order_id": s.client_order_id,
               "meta_json": None if s.meta is None else json_safe(to_json(s.meta))}  # fmt: skip
        return int(conn.execute(sa.insert(engine_signals).returning(engine_signals.c.id), row).scalar_one())

    def _order(self, conn: sa.Connection, o: OrderState) -> Applied:
        self._ensure_instruments(conn, [o.symbol], o.update_ms)
        if o.parent_algo_id is None:
            o = self._join_parent(conn, o)
        for _ in range(2):  # a concurrent insert of the same order: merge with it
            stored_row = conn.execute(
                sa.select(orders).where(orders.c.symbol == o.symbol, orders.c.order_id == o.order_id).with_for_update()
            ).mappings().first()  # fmt: skip
            stored = None if stored_row is None else _order_of(stored_row)
            merged = merge_order(stored, o)
            result = applied(stored, merged, o, stored is None or order_supersedes(stored, o))
            if stored is None:
                ins = _insert(conn, orders).values(_order_row(merged)).on_conflict_do_nothing()
                if _wrote(conn, ins.returning(orders.c.order_id)):
                    return result
                continue
            if result == Applied.UPDATED:
                row = _order_row(merged)
                conn.execute(
                    sa.update(orders)
                    .where(orders.c.symbol == o.symbol, orders.c.order_id == o.order_id)
                    .values(row)
                )
            return result
        raise RuntimeError(f"order {o.key} could be neither inserted nor read")

    def _join_parent(self, conn: sa.Connection, o: OrderState) -> OrderState:
        cond = algo_orders.c.child_order_id == o.order_id
        if o.client_order_id is not None:
            cond = sa.or_(cond, algo_orders.c.client_algo_id == o.client_order_id)
        q = sa.select(algo_orders).where(algo_orders.c.symbol == o.symbol, cond)
        for row in conn.execute(q.with_for_update()).mappings().all():
            algo = _algo_of(row)
            joined = join_child(algo, o)
            if joined is None:
                continue
            linked_algo, o = joined
            if linked_algo != algo:
                conn.execute(
                    sa.update(algo_orders)
                    .where(algo_orders.c.symbol == algo.symbol, algo_orders.c.algo_id == algo.algo_id)
                    .values(child_order_id=linked_algo.child_order_id)
                )
            break
        return o

    def _algo(self, conn: sa.Connection, a: AlgoOrderState) -> Applied:
        self._ensure_instruments(conn, [a.symbol], a.update_ms)
        for _ in range(2):
            stored_row = conn.execute(
                sa.select(algo_orders).where(algo_orders.c.symbol == a.symbol, algo_orders.c.algo_id == a.algo_id)
                .with_for_update()
            ).mappings().first()  # fmt: skip
            stored = None if stored_row is None else _algo_of(stored_row)
            merged = merge_algo(stored, a)
            merged = self._join_child(conn, merged)
            result = applied(stored, merged, a, stored is None or algo_supersedes(stored, a))
            if stored is None:
                ins = _insert(conn, algo_orders).values(_algo_row(merged)).on_conflict_do_nothing()
                if _wrote(conn, ins.returning(algo_orders.c.algo_id)):
                    return result
                continue
            if result == Applied.UPDATED:
                conn.execute(
                    sa.update(algo_orders)
                    .where(algo_orders.c.symbol == a.symbol, algo_orders.c.algo_id == a.algo_id)
                    .values(_algo_row(merged))
                )
            return result
        raise RuntimeError(f"algo order {a.key} could be neither inserted nor read")

    def _join_child(self, conn: sa.Connection, algo: AlgoOrderState) -> AlgoOrderState:
        cond = orders.c.client_order_id == algo.client_algo_id
        if algo.child_order_id is not None:
            cond = orders.c.order_id == algo.child_order_id
        q = sa.select(orders).where(orders.c.symbol == algo.symbol, orders.c.parent_algo_id.is_(None), cond)
        for row in conn.execute(q.with_for_update()).mappings().all():
            joined = join_child(algo, _order_of(row))
            if joined is None:
                continue
            algo, child = joined
            conn.execute(
                sa.update(orders)
                .where(orders.c.symbol == child.symbol, orders.c.order_id == child.order_id)
                .values(parent_algo_id=child.parent_algo_id)
            )
            break
        return algo

    def _fills(self, conn: sa.Connection, batch: Sequence[Fill], out: LedgerWrite) -> None:
        unique = unique_fills(batch)
        _count(out.fills, Applied.DUPLICATE, len(batch) - len(unique))
        if not unique:
            return
        rows = [_fill_row(f) for f in unique]  # a value refused here has written nothing
        self._ensure_instruments(conn, {f.symbol for f in unique}, min(f.time_ms for f in unique))
        first: dict[tuple[str, int], Fill] = {}
        for f in unique:
            first.setdefault((f.symbol, f.order_id), f)
        # an order known only from its fill gets a stub row (UNKNOWN) that its next state replaces
        conn.execute(
            _insert(conn, orders).on_conflict_do_nothing(),
            [_order_row(stub_order(f)) for f in first.values()],
        )
        inserted = 0
        stmt = _insert(conn, fills).on_conflict_do_nothing().returning(fills.c.trade_id)
        for chunk in _chunks(rows):
            inserted += len(conn.execute(stmt, list(chunk)).all())
        _count(out.fills, Applied.INSERTED, inserted)
        _count(out.fills, Applied.DUPLICATE, len(unique) - inserted)

    def _income(self, conn: sa.Connection, i: Income) -> Applied:
        row = {"income_type": i.kind, "tran_id": i.tran_id, "asset": i.asset, "symbol": i.symbol,
               "amount": float(i.amount), "ts": i.time_ms, "trade_id": i.trade_id, "info": i.info or None,
               "raw_json": _raw(i.raw)}  # fmt: skip
        done = _wrote(
            conn, _insert(conn, income).values(row).on_conflict_do_nothing().returning(income.c.tran_id)
        )
        return Applied.INSERTED if done else Applied.DUPLICATE

    def _advance(self, conn: sa.Connection, cursors: Iterable[SyncCursor], now_ms: int) -> int:
        moved = 0
        cursors = list(cursors)
        self._ensure_instruments(conn, {c.symbol for c in cursors}, now_ms)
        for c in cursors:
            row = {"symbol": c.symbol, "last_trade_id": c.last_trade_id, "last_trade_ms": c.last_trade_ms,
                   "updated_at": now_ms}  # fmt: skip
            stmt = _insert(conn, sync_cursors).values(row)
            excluded = stmt.excluded
            stmt = stmt.on_conflict_do_update(
                index_elements=[sync_cursors.c.symbol],
                set_={"last_trade_id": excluded.last_trade_id, "last_trade_ms": excluded.last_trade_ms,
                      "updated_at": excluded.updated_at},
                where=sync_cursors.c.last_trade_id < excluded.last_trade_id,
            )  # fmt: skip
            moved += _wrote(conn, stmt.returning(sync_cursors.c.symbol))
        return moved


def _wrote(conn: sa.Connection, stmt: Any) -> bool:
    """Whether an INSERT … ON CONFLICT … RETURNING wrote its row (rowcount is not reliable for it)."""
    return conn.execute(stmt).first() is not None


def _count(counter: Counter[Applied], outcome: Applied, n: int) -> None:
    if n:
        counter[outcome] += n


# --- conversions --------------------------------------------------------------------------------------


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT (with ON CONFLICT): PostgreSQL or SQLite."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _exact(value: Decimal, name: str, owner: object) -> float:
    x = float(value)
    if Decimal(repr(x)) != value:
        raise DataQualityError(
            f"{type(owner).__name__} {getattr(owner, 'key', '')}: {name}={value} does not survive a double "
            "(more than 15 significant digits); refused rather than stored inexactly"
        )
    return x


def _decimal(value: float | None) -> Decimal:
    return Decimal(0) if value is None else Decimal(repr(float(value)))


def _raw(raw: Mapping[str, Any] | None) -> Any:
    return None if raw is None else json_safe(raw)


def _order_row(o: OrderState) -> dict[str, Any]:
    return {
        "symbol": o.symbol, "order_id": o.order_id, "client_order_id": o.client_order_id,
        "parent_algo_id": o.parent_algo_id, "trade_group_id": o.trade_group_id, "engine": o.engine,
        "side": o.side, "type": o.order_type, "status": o.status, "reduce_only": o.reduce_only,
        "close_position": o.close_position, "working_type": o.working_type,
        "price": _exact(o.price, "price", o), "stop_price": _exact(o.stop_price, "stop_price", o),
        "qty": _exact(o.qty, "qty", o), "filled_qty": _exact(o.filled_qty, "filled_qty", o),
        "avg_price": _exact(o.avg_price, "avg_price", o),
        "created_at": o.created_ms, "updated_at": o.update_ms,
        "raw_json": _raw(o.raw),
    }  # fmt: skip


def _order_of(r: Row) -> OrderState:
    return OrderState(
        symbol=r["symbol"], order_id=r["order_id"], client_order_id=r["client_order_id"], side=r["side"],
        order_type=r["type"], status=r["status"], qty=_decimal(r["qty"]), filled_qty=_decimal(r["filled_qty"]),
        update_ms=r["updated_at"], price=_decimal(r["price"]), stop_price=_decimal(r["stop_price"]),
        avg_price=_decimal(r["avg_price"]), reduce_only=r["reduce_only"], close_position=r["close_position"],
        working_type=r["working_type"], created_ms=r["created_at"], parent_algo_id=r["parent_algo_id"],
        trade_group_id=r["trade_group_id"], engine=r["engine"], raw=r["raw_json"],
    )  # fmt: skip


def _algo_row(a: AlgoOrderState) -> dict[str, Any]:
    return {
        "symbol": a.symbol, "algo_id": a.algo_id, "client_algo_id": a.client_algo_id, "algo_type": a.algo_type,
        "type": a.order_type, "side": a.side, "status": a.status, "qty": _exact(a.qty, "qty", a),
        "trigger_price": _exact(a.trigger_price, "trigger_price", a), "price": _exact(a.price, "price", a),
        "close_position": a.close_position, "reduce_only": a.reduce_only, "price_protect": a.price_protect,
        "working_type": a.working_type, "child_order_id": a.child_order_id,
        "executed_qty": _exact(a.executed_qty, "executed_qty", a), "avg_price": _exact(a.avg_price, "avg_price", a),
        "reject_reason": a.reject_reason or None, "trade_group_id": a.trade_group_id, "engine": a.engine,
        "created_at": a.created_ms, "updated_at": a.update_ms,
        "triggered_at": a.triggered_ms, "raw_json": _raw(a.raw),
    }  # fmt: skip


def _algo_of(r: Row) -> AlgoOrderState:
    return AlgoOrderState(
        symbol=r["symbol"], algo_id=r["algo_id"], client_algo_id=r["client_algo_id"], side=r["side"],
        order_type=r["type"], status=r["status"], qty=_decimal(r["qty"]), trigger_price=_decimal(r["trigger_price"]),
        update_ms=r["updated_at"], close_position=r["close_position"], reduce_only=r["reduce_only"],
        price_protect=r["price_protect"], working_type=r["working_type"], price=_decimal(r["price"]),
        child_order_id=r["child_order_id"], executed_qty=_decimal(r["executed_qty"]),
        avg_price=_decimal(r["avg_price"]), created_ms=r["created_at"], triggered_ms=r["triggered_at"],
        reject_reason=r["reject_reason"] or "", algo_type=r["algo_type"], trade_group_id=r["trade_group_id"],
        engine=r["engine"], raw=r["raw_json"],
    )  # fmt: skip


def _fill_row(f: Fill) -> dict[str, Any]:
    return {
        "symbol": f.symbol, "trade_id": f.trade_id, "order_id": f.order_id, "side": f.side,
        "price": _exact(f.price, "price", f), "qty": _exact(f.qty, "qty", f),
        "fee": _exact(f.commission, "commission", f), "fee_asset": f.commission_asset,
        "realized_pnl": None if f.realized_pnl is None else float(f.realized_pnl), "is_maker": f.is_maker,
        "ts": f.time_ms, "raw_json": _raw(f.raw),
    }  # fmt: skip


def _fill_of(r: Row) -> Fill:
    return Fill(
        symbol=r["symbol"], trade_id=r["trade_id"], order_id=r["order_id"], side=r["side"],
        price=_decimal(r["price"]), qty=_decimal(r["qty"]), commission=_decimal(r["fee"]),
        commission_asset=r["fee_asset"], time_ms=r["ts"], client_order_id=r["client_order_id"],
        realized_pnl=None if r["realized_pnl"] is None else _decimal(r["realized_pnl"]),
        is_maker=bool(r["is_maker"]), raw=r["raw_json"],
    )  # fmt: skip


def _income_of(r: Row) -> Income:
    return Income(
        symbol=r["symbol"], kind=r["income_type"], amount=_decimal(r["amount"]), asset=r["asset"],
        time_ms=r["ts"], tran_id=r["tran_id"], trade_id=r["trade_id"], info=r["info"] or "", raw=r["raw_json"],
    )  # fmt: skip


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _rows_by_key(
    conn: sa.Connection, table: sa.Table, id_column: sa.Column[int], keys: Iterable[tuple[str, int]]
) -> list[Any]:
    out: list[Any] = []
    for chunk in _chunks(sorted(keys)):
        q = sa.select(table).where(sa.tuple_(table.c.symbol, id_column).in_(chunk))
        out += conn.execute(q).mappings().all()
    return out


def _pending_signals(conn: sa.Connection, since_ms: int) -> list[PendingSignal]:
    """Signals since ``since_ms`` naming a client order id the ledger has no order for, and not
    already found absent at the venue (a ``signal_without_order`` event)."""
    has_order = sa.exists().where(
        orders.c.symbol == engine_signals.c.symbol,
        orders.c.client_order_id == engine_signals.c.client_order_id,
    )
    q = sa.select(engine_signals).where(
        engine_signals.c.client_order_id.is_not(None), engine_signals.c.ts >= max(since_ms, 0), ~has_order
    )
    rows = conn.execute(q.order_by(engine_signals.c.id)).mappings().all()
    if not rows:
        return []
    resolved = {
        int(p.get("signal_id", -1))
        for (p,) in conn.execute(
            sa.select(events.c.payload).where(
                events.c.kind == EVENT_PREFIX + CorrectionKind.SIGNAL_WITHOUT_ORDER
            )
        )
    }
    return [
        PendingSignal(
            r["id"],
            EngineSignal(
                ts_ms=r["ts"],
                symbol=r["symbol"],
                side=r["side"],
                engine=r["engine"],
                reason=r["reason"],
                trade_group_id=r["trade_group_id"],
                client_order_id=r["client_order_id"],
                meta=r["meta_json"],
            ),
        )  # fmt: skip
        for r in rows
        if r["id"] not in resolved
    ]
