"""The kill switch's flatten: cancel every open order and algo order, close every position reduce-only.

``cancel_all_and_flatten`` works in rounds. Each round first resolves, by client id, every close
whose outcome was unknown (``BinanceTrading.resolve_unknown``: nothing else is sent for that
position until it is resolved, so a close is never sent twice), then reads the account
(``positions``, ``open_orders``, ``open_algo_orders``); when nothing is open and nothing is
unresolved it stops: verified flat. Otherwise, per symbol with anything open:
``cancel_all_algo_orders`` (the protection first: a stop must not trigger into the closing order),
``cancel_all_orders`` (both always: an order placed since the read goes too), then a reduce-only
MARKET close of each position (``close_position``). A failing request is noted, and the next round,
after a short pause, reads the account again and retries what is still open, up to
``max_attempts`` rounds.

Close client ids are deterministic: ``client_id("<prefix>:<symbol>:<position side>:<n>", "close")``
with ``n`` the number of closes of that position acknowledged before, so a retry of the same kill
(same ``client_id_prefix``, e.g. one holding the kill time) reuses the id, and ``BinanceTrading``'s
de-duplication queries it before sending it again.

The trading client must be started (its symbol filters loaded). Only this function's own requests
are made; it never raises for a venue failure: the report says what is left.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, TypeVar

from core.errors import RaytradeError
from core.messages import OrderSide
from exchange.binance.orders import client_id, wire
from exchange.binance.payloads import AlgoOrderResponse, OrderResponse, PositionRisk
from exchange.binance.trading import BinanceTrading, Found, OrderOutcomeUnknown

_Row = TypeVar("_Row", PositionRisk, OrderResponse, AlgoOrderResponse)

__all__ = ["CancelledOrder", "ClosedPosition", "EmergencyReport", "Leftover", "cancel_all_and_flatten"]


@dataclass(frozen=True, slots=True)
class CancelledOrder:
    """An open order or algo order that a cancel-all removed (open before it; gone after it was
    answered, or, when the answer was lost, at the next read of the account)."""

    symbol: str
    kind: Literal["order", "algo"]
    client_id: str
    order_type: str  # MARKET, STOP_MARKET, TAKE_PROFIT_MARKET, …
    side: OrderSide
    quantity: Decimal  # 0 for a closePosition algo order


@dataclass(frozen=True, slots=True)
class ClosedPosition:
    """A reduce-only MARKET close and its result; ``resolved``: its outcome was unknown and was queried."""

    symbol: str
    position_side: str  # BOTH in one-way mode
    position_quantity: Decimal  # signed, base asset, before the close
    side: OrderSide
    client_order_id: str
    status: str
    executed_quantity: Decimal
    average_price: Decimal
    resolved: bool = False


@dataclass(frozen=True, slots=True)
class Leftover:
    """What is still open on ``symbol`` after the last round (or unresolved)."""

    symbol: str
    position_quantity: Decimal  # signed, base asset (0: none)
    open_orders: tuple[str, ...]  # client ids
    open_algo_orders: tuple[str, ...]  # client algo ids
    unresolved_closes: tuple[str, ...] = ()  # close ids whose outcome is still unknown


@dataclass(frozen=True, slots=True)
class EmergencyReport:
    """What ``cancel_all_and_flatten`` did and found. ``verified``: the last account read succeeded."""

    cancelled: tuple[CancelledOrder, ...]
    closed: tuple[ClosedPosition, ...]
    left: tuple[Leftover, ...]
    errors: tuple[str, ...]
    rounds: int
    verified: bool

    @property
    def clean(self) -> bool:
        """Whether the account was read flat at the end: no position, no open order or algo order."""
        return self.verified and not self.left

    def lines(self) -> list[str]:
        """The report as plain lines for an operator."""
        out = [f"cancelled {c.kind} {c.symbol} {c.client_id} {c.order_type} {c.side} {wire(c.quantity)}"
               for c in self.cancelled]  # fmt: skip
        out += [
            f"closed {c.symbol} {c.position_side} {wire(c.position_quantity)} with {c.side} {c.client_order_id}: "
            f"{c.status} {wire(c.executed_quantity)} at {wire(c.average_price)}" + (" (resolved)" if c.resolved else "")
            for c in self.closed
        ]  # fmt: skip
        out += [
            f"LEFT {x.symbol}: position {wire(x.position_quantity)}, orders {list(x.open_orders)}, "
            f"algo orders {list(x.open_algo_orders)}, unresolved closes {list(x.unresolved_closes)}"
            for x in self.left
        ]
        out += [f"error: {e}" for e in self.errors]
        verdict = "flat: no position, no open order or algo order" if self.clean else "NOT verified flat"
        out.append(f"{verdict} after {self.rounds} round(s)")
        return out


@dataclass(frozen=True, slots=True)
class _Snapshot:
    positions: tuple[PositionRisk, ...]
    orders: tuple[OrderResponse, ...]
    algos: tuple[AlgoOrderResponse, ...]

    def symbols(self) -> list[str]:
        rows: tuple[PositionRisk | OrderResponse | AlgoOrderResponse, ...] = (
            *self.positions,
            *self.orders,
            *self.algos,
        )
        return sorted({r.symbol for r in rows})

    def empty(self) -> bool:
        return not (self.positions or self.orders or self.algos)


@dataclass(slots=True)
class _Pending:
    position: PositionRisk
    side: OrderSide
    client_order_id: str
    settled_after_ms: int


@dataclass(slots=True)
class _Run:
    trading: BinanceTrading
    wanted: frozenset[str] | None
    prefix: str
    cancelled: dict[tuple[str, str], CancelledOrder] = field(default_factory=dict)
    closed: list[ClosedPosition] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)
    acknowledged: dict[tuple[str, str], int] = field(default_factory=dict)  # closes per position
    maybe_cancelled: dict[tuple[str, str], CancelledOrder] = field(default_factory=dict)  # cancel unanswered

    def settle_cancels(self, snapshot: _Snapshot) -> None:
        """Count an order whose cancel went unanswered as cancelled once ``snapshot`` shows it gone."""
        still = {("order", o.clientOrderId) for o in snapshot.orders}
        still |= {("algo", a.clientAlgoId) for a in snapshot.algos}
        for key, order in self.maybe_cancelled.items():
            if key not in still:
                self.cancelled.setdefault(key, order)

    def snapshot(self) -> _Snapshot | None:
        try:
            positions = [p for p in self.trading.positions() if p.positionAmt != 0]
            orders = self.trading.open_orders()
            algos = self.trading.open_algo_orders()
        except RaytradeError as e:
            self.errors.append(f"reading the account: {e}")
            return None
        keep = self._kept
        return _Snapshot(tuple(keep(positions)), tuple(keep(orders)), tuple(keep(algos)))

    def _kept(self, rows: list[_Row]) -> list[_Row]:
        return [r for r in rows if self.wanted is None or r.symbol in self.wanted]

    def resolve_pending(self) -> None:
        for key, pending in list(self.pending.items()):
            symbol = pending.position.symbol
            try:
                resolution = self.trading.resolve_unknown(
                    symbol, pending.client_order_id, kind="order", not_before_ms=pending.settled_after_ms
                )
            except RaytradeError as e:
                self.errors.append(f"resolving close {pending.client_order_id} of {symbol}: {e}")
                continue
            del self.pending[key]
            if isinstance(resolution, Found) and isinstance(resolution.order, OrderResponse):
                self._closed(pending.position, pending.side, resolution.order, resolved=True)
            # Absent: never placed; the next round closes what is still open, with the same id

    def act(self, snapshot: _Snapshot) -> bool:
        """Cancel and close what ``snapshot`` shows open; return whether everything was answered."""
        ok = True
        for symbol in snapshot.symbols():
            algos = [a for a in snapshot.algos if a.symbol == symbol]
            orders = [o for o in snapshot.orders if o.symbol == symbol]
            # both cancel-alls every time: an order placed since the read goes too
            ok &= self._cancel(symbol, "algo", algos)
            ok &= self._cancel(symbol, "order", orders)
            for position in (p for p in snapshot.positions if p.symbol == symbol):
                ok &= self._close(position)
        return ok

    def _cancel(self, symbol: str, kind: Literal["order", "algo"], rows: list[OrderResponse] | list[AlgoOrderResponse]) -> bool:  # fmt: skip
        try:
            if kind == "algo":
                self.trading.cancel_all_algo_orders(symbol)
            else:
                self.trading.cancel_all_orders(symbol)
        except RaytradeError as e:  # unknown outcome included: the next round reads what is still open
            self.errors.append(f"cancelling every {kind} order of {symbol}: {e}")
            for row in rows:
                maybe = _cancelled(row)
                self.maybe_cancelled.setdefault((kind, maybe.client_id), maybe)
            return False
        for row in rows:
            cancelled = _cancelled(row)
            self.cancelled[(kind, cancelled.client_id)] = cancelled
        return True

    def _close(self, position: PositionRisk) -> bool:
        key = (position.symbol, position.positionSide)
        if key in self.pending:  # an earlier close may still be executing: never send another
            return False
        side: OrderSide = "SELL" if position.positionAmt > 0 else "BUY"
        sent = self.acknowledged.get(key, 0)
        order_id = client_id(f"{self.prefix}:{position.symbol}:{position.positionSide}:{sent}", "close")
        quantity = abs(position.positionAmt)
        try:
            order = self.trading.close_position(position.symbol, side, quantity, order_id)
        except OrderOutcomeUnknown as e:
            self.errors.append(f"closing {position.symbol}: {e}")
            self.pending[key] = _Pending(position, side, order_id, e.settled_after_ms)
            return False
        except RaytradeError as e:
            self.errors.append(f"closing {position.symbol} {wire(position.positionAmt)}: {e}")
            self.acknowledged[key] = sent + 1  # refused: a new attempt gets a new id
            return False
        self._closed(position, side, order)
        return True

    def _closed(self, position: PositionRisk, side: OrderSide, order: OrderResponse, *, resolved: bool = False) -> None:  # fmt: skip
        key = (position.symbol, position.positionSide)
        self.acknowledged[key] = self.acknowledged.get(key, 0) + 1
        self.closed.append(
            ClosedPosition(
                position.symbol,
                position.positionSide,
                position.positionAmt,
                side,
                order.clientOrderId,
                order.status,
                order.executedQty,
                order.avgPrice,
                resolved,
            )  # fmt: skip
        )

    def leftovers(self, snapshot: _Snapshot | None) -> tuple[Leftover, ...]:
        rows = snapshot or _Snapshot((), (), ())
        unresolved = [p.position.symbol for p in self.pending.values()]
        out = []
        for symbol in sorted({*rows.symbols(), *unresolved}):
            amount = sum((p.positionAmt for p in rows.positions if p.symbol == symbol), Decimal(0))
            out.append(
                Leftover(
                    symbol,
                    amount,
                    tuple(o.clientOrderId for o in rows.orders if o.symbol == symbol),
                    tuple(a.clientAlgoId for a in rows.algos if a.symbol == symbol),
                    tuple(p.client_order_id for p in self.pending.values() if p.position.symbol == symbol),
                )  # fmt: skip
            )
        return tuple(out)


def _cancelled(row: OrderResponse | AlgoOrderResponse) -> CancelledOrder:
    if isinstance(row, AlgoOrderResponse):
        return CancelledOrder(row.symbol, "algo", row.clientAlgoId, row.orderType, row.side, row.quantity)
    return CancelledOrder(row.symbol, "order", row.clientOrderId, row.origType, row.side, row.origQty)


def cancel_all_and_flatten(
    trading: BinanceTrading,
    symbols: Iterable[str] | None = None,
    *,
    client_id_prefix: str,
    max_attempts: int = 3,
    pause_s: float = 0.5,
) -> EmergencyReport:
    """Cancel every open order and algo order and close every position reduce-only, then verify.

    ``symbols`` limits it to those (default: every symbol with a position or an open order).
    ``client_id_prefix`` makes the close ids (module docstring): give the same one to a retry of the
    same kill. At most ``max_attempts`` rounds of cancels and closes, each followed by a read of
    the account; after a round with a failure it waits ``pause_s`` (the client's sleep).
    """
    if not client_id_prefix:
        raise ValueError("client_id_prefix must be a non-empty string (e.g. 'kill-<kill time ms>')")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    wanted = None if symbols is None else frozenset(symbols)
    run = _Run(trading, wanted, client_id_prefix)
    snapshot: _Snapshot | None = None
    rounds = 0
    while True:
        run.resolve_pending()
        snapshot = run.snapshot()
        if snapshot is not None:
            run.settle_cancels(snapshot)
        if snapshot is not None and snapshot.empty() and not run.pending:
            break
        if rounds == max_attempts:
            break
        rounds += 1
        answered = run.act(snapshot) if snapshot is not None else False
        if not answered:
            trading.http.sleep(pause_s)
    return EmergencyReport(
        tuple(run.cancelled.values()), tuple(run.closed), run.leftovers(snapshot), tuple(run.errors), rounds,
        verified=snapshot is not None,
    )  # fmt: skip
