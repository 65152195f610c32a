"""A protected entry on Binance USDⓈ-M: a MARKET entry, then an SL and a TP sized to its fill, and
never a position left naked (issue 15, "Order flow"; spec 001 §15.2; seed 003 §1.2).

``enter_protected(trading, plan)``:

1. Entry: MARKET with the decision's client id (``client_id(decision_key, "entry")``). An unknown
   outcome (timeout, 5xx, -1006/-1007) is never taken for a rejection: the client remembers the id
   and, asked to place it again, queries it first and sends again only when it is confirmed absent
   (``BinanceTrading._place``), so placing the same id again *is* the retry. When the attempts run
   out the position is read from ``positionRisk``: whatever is there gets protected.
2. The fill: the RESULT answer shows it; an order still NEW / PARTIALLY_FILLED is queried until it is
   final, within ``fill_timeout_s``.
3. Protection sized to the filled quantity: SL (STOP_MARKET) and TP (TAKE_PROFIT_MARKET) as algo
   orders triggered by the mark price, reduce-only, priceProtect, our clientAlgoIds; trigger prices
   rounded to the tick in the protective direction by the client.
4. Never naked: if either is rejected (-2021 would trigger immediately, a minimum, the conditional-
   order cap, …) or not acknowledged within ``protect_timeout_s`` of the fill, cancel whichever was
   placed and close the position with a reduce-only MARKET at once (the close id is deterministic
   too, so a close whose answer was lost is found, not sent twice). An SL whose answer was lost is
   queried at once, not after the recvWindow the client would wait before a resend: absent now
   means flatten now, and the id is cancelled afterwards in case the request lands late.

Time naked is measured on ``clock`` (monotonic seconds) from the entry's fill answer until both
protections are acknowledged, or the close is. Every departure from the plain path is a
``SafetyEvent`` in the result, for the caller to record.

``cancel_sibling`` cancels the other protection once one has filled; an order already gone counts
as cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from core.errors import RejectedError, TransientError
from core.messages import OrderSide
from exchange.binance.orders import PositionSide, Protection, Role, client_id
from exchange.binance.payloads import AlgoOrderResponse, OrderResponse
from exchange.binance.signed import BinanceRejection, OrderOutcomeUnknown, RateLimitedError
from exchange.binance.trading import BinanceTrading, Found

GONE_CODES = frozenset({-2011, -2013})  # unknown order / order does not exist: nothing left to cancel
_FINAL = frozenset({"FILLED", "CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"})
_T = TypeVar("_T")


class ProtectionConfig(BaseModel):
    """Bounds of the protected entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protect_timeout_s: float = Field(
        1.0, gt=0, description="both protections acknowledged within this of the fill"
    )
    fill_timeout_s: float = Field(
        5.0, gt=0, description="an entry not final within this is read from positionRisk"
    )
    entry_attempts: int = Field(
        4, ge=1, description="placements of one entry id (each queries before resending)"
    )
    close_attempts: int = Field(
        8, ge=1, description="placements of one close id before giving up to reconciliation"
    )
    poll_s: float = Field(0.05, gt=0, description="wait between queries of an order that is not final yet")


class Outcome(StrEnum):
    PROTECTED = "protected"  # filled, SL and TP acknowledged
    FLATTENED = "flattened"  # filled, protection failed, closed reduce-only
    REJECTED = "rejected"  # the entry was refused: no position
    NOT_FILLED = "not_filled"  # the entry expired or was cancelled without a fill
    UNRESOLVED = "unresolved"  # a position may be left: reconciliation and the kill switch take over


@dataclass(frozen=True, slots=True)
class EntryPlan:
    """What to enter: ``quantity`` (before flooring to the step) of ``symbol`` on ``side``, and where
    its stop-loss and take-profit trigger (mark price). ``decision_key`` names the decision: it makes
    every client id of the entry, so a retry reuses them."""

    decision_key: str
    symbol: str
    side: PositionSide
    quantity: Decimal
    stop_price: Decimal
    take_profit_price: Decimal
    mark_price: Decimal

    @property
    def order_side(self) -> OrderSide:
        return "BUY" if self.side == "LONG" else "SELL"

    @property
    def closing_side(self) -> OrderSide:
        return "SELL" if self.side == "LONG" else "BUY"


@dataclass(frozen=True, slots=True)
class SafetyEvent:
    kind: str  # entry_unknown, protection_failed, naked_closed, close_unknown, close_failed, …
    symbol: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ProtectedEntry:
    """What ``enter_protected`` did. Times in ms on the monotonic clock from the call."""

    plan: EntryPlan
    outcome: Outcome = Outcome.UNRESOLVED
    entry: OrderResponse | None = None
    stop: AlgoOrderResponse | None = None
    take_profit: AlgoOrderResponse | None = None
    close: OrderResponse | None = None
    filled_qty: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    entry_ack_ms: float | None = None
    protected_ms: float | None = None  # both protections acknowledged
    naked_ms: float = 0.0
    events: list[SafetyEvent] = field(default_factory=list)

    def event(self, kind: str, message: str, **details: Any) -> None:
        self.events.append(SafetyEvent(kind, self.plan.symbol, message, details))


def enter_protected(
    trading: BinanceTrading,
    plan: EntryPlan,
    config: ProtectionConfig | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ProtectedEntry:
    """Enter ``plan`` and protect it, or close it (module docstring); never raises for a venue refusal
    or an unknown outcome — the result says what happened and what is left."""
    cfg = config or ProtectionConfig()
    out = ProtectedEntry(plan)
    start = clock()
    entry_id = client_id(plan.decision_key, "entry")
    try:
        entry = place_settled(trading, plan.symbol, entry_id, lambda: trading.place_entry(
            plan.symbol, plan.order_side, plan.quantity, entry_id, mark_price=plan.mark_price), cfg.entry_attempts, sleep)  # fmt: skip
    except RejectedError as e:
        out.outcome = Outcome.REJECTED
        out.event("entry_rejected", f"entry {entry_id} refused: {e}", client_id=entry_id)
        return out
    except (OrderOutcomeUnknown, TransientError) as e:
        out.event("entry_unknown", f"entry {entry_id}: {e}; reading the position", client_id=entry_id)
        entry = None
    if entry is not None:
        entry = wait_final(trading, entry, cfg, clock, sleep)
        out.entry = entry
        out.filled_qty, out.avg_price = entry.executedQty, entry.avgPrice
    if entry is None or entry.status not in _FINAL:
        qty = position_qty(trading, plan)
        if qty is None:
            out.event("entry_unresolved", f"entry {entry_id}: neither the order nor the position is known")
            return out
        out.filled_qty = qty
    filled_at = clock()
    out.entry_ack_ms = (filled_at - start) * 1000
    if out.filled_qty <= 0:
        out.outcome = Outcome.NOT_FILLED if entry is not None else Outcome.REJECTED
        return out
    deadline = filled_at + cfg.protect_timeout_s
    failure = None
    kinds: tuple[Protection, ...] = ("SL", "TP")
    for kind in kinds:
        placed, failure = _protect(trading, plan, kind, out.filled_qty, deadline, clock, sleep)
        if placed is None:
            break
        if kind == "SL":
            out.stop = placed
        else:
            out.take_profit = placed
    if failure is None:
        out.outcome = Outcome.PROTECTED
        out.protected_ms = (clock() - start) * 1000
        out.naked_ms = (clock() - filled_at) * 1000
        return out
    out.event("protection_failed", failure, filled_qty=str(out.filled_qty))
    _flatten(trading, plan, out, cfg, sleep)
    out.naked_ms = (clock() - filled_at) * 1000
    return out


def place_settled(
    trading: BinanceTrading, symbol: str, order_id: str, place: Callable[[], OrderResponse], n: int,
    sleep: Callable[[float], None],
) -> OrderResponse:  # fmt: skip
    """Place a MARKET order until it answers, at most ``n`` times. An unknown outcome is queried at
    once (a 5xx whose order exists is found now, not after the recvWindow the client waits before a
    resend); absent, the next placement resends — the client holds it until the first request can no
    longer land. A rejection is raised at once."""
    for attempt in range(n):
        last = attempt == n - 1
        try:
            return place()
        except RateLimitedError as e:
            if last:
                raise
            sleep(min(e.retry_after_s, 1.0))
        except OrderOutcomeUnknown:
            try:
                found = trading.resolve_unknown(symbol, order_id, kind="order")
            except (TransientError, OrderOutcomeUnknown, RejectedError):
                found = None
            if isinstance(found, Found) and isinstance(found.order, OrderResponse):
                return found.order
            if last:
                raise
        except TransientError:
            if last:
                raise
    raise AssertionError("unreachable")


def wait_final(
    trading: BinanceTrading,
    order: OrderResponse,
    cfg: ProtectionConfig,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> OrderResponse:
    """Poll ``order`` until the venue reports a final status or ``cfg.fill_timeout_s`` passes; the last
    answer seen (a transient error or unknown outcome of a poll is retried at the next one)."""
    deadline = clock() + cfg.fill_timeout_s
    while order.status not in _FINAL and clock() < deadline:
        sleep(cfg.poll_s)
        try:
            order = trading.get_order(order.symbol, order.clientOrderId)
        except (TransientError, OrderOutcomeUnknown):
            continue
    return order


def position_qty(trading: BinanceTrading, plan: EntryPlan) -> Decimal | None:
    """The position's size on the plan's side (0 when flat or on the other side), None if unreadable."""
    try:
        rows = trading.positions(plan.symbol)
    except (TransientError, OrderOutcomeUnknown, RejectedError):
        return None
    amount = sum((r.positionAmt for r in rows if r.symbol == plan.symbol), Decimal(0))
    signed = amount if plan.side == "LONG" else -amount
    return max(signed, Decimal(0))


def _protect(
    trading: BinanceTrading,
    plan: EntryPlan,
    kind: Protection,
    quantity: Decimal,
    deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> tuple[AlgoOrderResponse | None, str | None]:
    """Place one protection; return it, or None and why it failed (refused, or no answer by ``deadline``)."""
    role: Role = "sl" if kind == "SL" else "tp"
    algo_id = client_id(plan.decision_key, role)
    trigger = plan.stop_price if kind == "SL" else plan.take_profit_price
    while True:
        try:
            placed = trading.place_protection(
                plan.symbol, kind, plan.side, trigger, plan.mark_price, algo_id, quantity
            )
            return placed, None
        except BinanceRejection as e:
            return None, f"{kind} {algo_id} refused (code {e.code}): {e.msg}"
        except RejectedError as e:
            return None, f"{kind} {algo_id} refused: {e}"
        except OrderOutcomeUnknown as e:
            # ask now rather than after the recvWindow the client would wait before a resend
            try:
                found = trading.resolve_unknown(plan.symbol, algo_id, kind="algo")
            except (TransientError, OrderOutcomeUnknown, RejectedError):
                found = None
            if isinstance(found, Found) and isinstance(found.order, AlgoOrderResponse):
                return found.order, None
            return None, f"{kind} {algo_id}: outcome unknown and not found at once ({e.reason})"
        except TransientError as e:
            if clock() >= deadline:
                return None, f"{kind} {algo_id}: not placed within the bound ({e})"
            sleep(min(getattr(e, "retry_after_s", 0.05), max(deadline - clock(), 0.0)))


def _flatten(
    trading: BinanceTrading,
    plan: EntryPlan,
    out: ProtectedEntry,
    cfg: ProtectionConfig,
    sleep: Callable[[float], None],
) -> None:
    """Close the filled quantity reduce-only at once, then cancel the protections that may rest."""
    close_id = client_id(plan.decision_key, "close")
    try:
        out.close = place_settled(trading, plan.symbol, close_id, lambda: trading.close_position(
            plan.symbol, plan.closing_side, out.filled_qty, close_id), cfg.close_attempts, sleep)  # fmt: skip
    except RejectedError as e:  # e.g. -2022 ReduceOnly rejected: the position is already gone
        left = position_qty(trading, plan)
        if left == 0:
            out.outcome = Outcome.FLATTENED
            out.event("naked_closed", f"position already flat when closing ({e})", close_id=close_id)
        else:
            out.event("close_failed", f"close {close_id} refused: {e}; position {left}", close_id=close_id)
    except (OrderOutcomeUnknown, TransientError) as e:
        out.event("close_unknown", f"close {close_id}: {e}", close_id=close_id)
    else:
        out.outcome = Outcome.FLATTENED
        out.event("naked_closed", f"closed {out.filled_qty} reduce-only after the protection failed",
                  close_id=close_id, close_status=out.close.status)  # fmt: skip
    roles: tuple[Role, ...] = ("sl", "tp")
    for role in roles:
        cancel_protection(trading, plan.symbol, client_id(plan.decision_key, role))


def cancel_protection(trading: BinanceTrading, symbol: str, client_algo_id: str) -> bool:
    """Cancel an algo order by client id; True when it is gone (cancelled now, or already not there).
    An unknown outcome is resolved by a query; False means it may still rest (the sweep retries)."""
    try:
        trading.cancel_algo_order(client_algo_id, symbol)
        return True
    except BinanceRejection as e:
        return e.code in GONE_CODES
    except (OrderOutcomeUnknown, TransientError):
        try:
            found = trading.resolve_unknown(symbol, client_algo_id, kind="algo")
        except (TransientError, OrderOutcomeUnknown, RejectedError):
            return False
        if isinstance(found, Found) and isinstance(found.order, AlgoOrderResponse):
            return found.order.algoStatus not in ("NEW", "TRIGGERING")
        return True


def cancel_sibling(trading: BinanceTrading, symbol: str, decision_key: str, filled_role: Role) -> bool:
    """One protection of ``decision_key`` filled (``filled_role`` "sl" or "tp"): cancel the other."""
    other: Role = "tp" if filled_role == "sl" else "sl"
    return cancel_protection(trading, symbol, client_id(decision_key, other))
