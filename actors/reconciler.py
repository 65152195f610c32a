"""The reconciler (spec 004 §3, §7-3, §9; issue 15): the ledger made equal to the venue, on start and
every 30–60 s, and the venue kept free of orphan stops and naked positions.

``Reconciler.run_once`` runs rounds to a fixed point (at most ``max_rounds``): read the venue
(``exchange.binance.snapshot.fetch``, with the answers to the previous round's lookups), read the
ledger's view of it (``LedgerStore.view``), compare (``core.reconcile.reconcile``), write every
correction as an event and apply it (``LedgerStore.apply``), then carry out what the result asks of
the venue. It stops when a round asks nothing more, or asks the same again and finds nothing new;
the lookups still open are carried to the next run.

Actions, each recorded as a correction event (``reconcile.cancel_orphan`` / ``reconcile.protect_or_flatten``
with ``details.action``), and each order placed recorded in the ledger as ours:

- an orphan algo order (its position gone) is cancelled (``cancel_orphans``);
- a naked position (not both a stop-loss and a take-profit covering it) is protected when the ledger
  knows the trade's SL/TP levels (``naked_with_levels="protect"``: the missing SL and/or TP as
  reduce-only algo orders of the position's quantity), else flattened reduce-only
  (``naked_without_levels="flatten"``). Levels come from ``levels``; the default reads the newest
  entry signal of the position's symbol and side in ``engine_signals`` whose ``meta_json`` holds
  ``sl_price`` and ``tp_price`` (``signal_levels``). A protection the venue refuses (e.g. -2021,
  it would trigger at once) flattens the position at once and writes a ``risk_events`` row: never
  naked. Either policy may be ``"report"``: found and reported, nothing sent.

An order request whose outcome is unknown is resolved by its client id (``resolve_unknown``) before
anything else; client ids are deterministic (position's update time and quantity), so a retry in a
later round reuses them. ``dry_run=True`` computes and reports the same findings and the actions it
would take, and writes and sends nothing.

``run_forever(stop_event)`` runs once at once and then every ``interval_s``; ``reconciler_actor_class``
is a thin Ray actor around it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from core.errors import RaytradeError, RejectedError, UnknownOutcomeError
from core.ledger import AlgoOrderState, OrderState
from core.messages import OrderSide
from core.reconcile import (
    ACTION_KINDS,
    Correction,
    CorrectionKind,
    ExchangePosition,
    ExchangeSnapshot,
    LedgerView,
    Lookup,
    ReconcileConfig,
    ReconcileResult,
    reconcile,
)
from core.time import ms_to_text
from exchange.binance.ledger_records import algo_of_response, order_of_response
from exchange.binance.orders import PositionSide, Protection, client_id
from exchange.binance.payloads import AlgoOrderResponse, OrderResponse
from exchange.binance.snapshot import SnapshotConfig, fetch
from exchange.binance.trading import (
    Absent,
    BinanceRejection,
    BinanceTrading,
    Found,
    OrderOutcomeUnknown,
)
from storage.bulk import write_rows
from storage.ledger import LedgerStore
from storage.schema import engine_signals

log = logging.getLogger(__name__)

RECONCILER_ACTOR_NAME = "reconciler"
#: Binance: "Unknown order sent." (not open any more) and "Order does not exist."
_GONE_CODES = frozenset({-2011, -2013})
NakedWithLevels = Literal["protect", "flatten", "report"]
NakedWithoutLevels = Literal["flatten", "report"]


class ReconcilerConfig(BaseModel):
    """What the reconciler reads, how often, and what it does about orphans and naked positions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbols: tuple[str, ...] | None = Field(
        None, description="symbols to reconcile; None: every symbol the venue or the ledger shows"
    )
    interval_s: float = Field(
        30.0, gt=0, le=3_600, description="between runs of run_forever, s (30–60 s live)"
    )
    max_rounds: int = Field(
        5, ge=1, le=20, description="rounds of one run before it stops short of a fixed point"
    )
    dry_run: bool = Field(False, description="compute and report only: write nothing, send nothing")
    cancel_orphans: bool = Field(True, description="cancel algo orders whose position is gone")
    naked_with_levels: NakedWithLevels = Field(
        "protect",
        description="a naked position whose SL/TP levels the ledger knows: protect, flatten or report",
    )
    naked_without_levels: NakedWithoutLevels = Field(
        "flatten", description="a naked position whose levels the ledger does not know: flatten or report"
    )
    levels_max_age_ms: int = Field(
        7 * 24 * 3_600_000, gt=0, description="an entry signal older than this gives no levels, ms"
    )
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)


@dataclass(frozen=True, slots=True)
class ProtectionLevels:
    """A trade's stop-loss and take-profit trigger prices, and where they came from."""

    stop_loss: Decimal
    take_profit: Decimal
    source: str


#: (symbol, position side, now_ms) → the levels the ledger knows, or None.
LevelsSource = Callable[[str, PositionSide, int], ProtectionLevels | None]

ActionKind = Literal["cancel", "protect", "flatten"]
Outcome = Literal["done", "gone", "failed", "unknown", "skipped", "dry_run"]


@dataclass(frozen=True, slots=True)
class Action:
    """One thing done (or, in a dry run, that would be done) on the venue."""

    kind: ActionKind
    symbol: str
    outcome: Outcome
    detail: str
    client_id: str | None = None

    def format(self) -> str:
        ident = f" {self.client_id}" if self.client_id else ""
        return f"{self.kind:<8} {self.symbol:<12} {self.outcome:<8}{ident}: {self.detail}"


@dataclass
class ReconcileReport:
    """What one run found (unique corrections, by kind), did, and left open."""

    started_ms: int
    dry_run: bool
    rounds: int = 0
    findings: list[Correction] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    lookups_pending: list[Lookup] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def found(self) -> Counter[str]:
        """How many corrections of each kind (``CorrectionKind`` value) the run found."""
        return Counter(str(c.kind) for c in self.findings)

    @property
    def consistent(self) -> bool:
        """Nothing found, nothing done, nothing left to ask, no error."""
        return not (self.findings or self.actions or self.lookups_pending or self.errors)

    @property
    def exit_code(self) -> int:
        """0 consistent, 2 corrections found (made, or in a dry run to be made) or lookups open, 1 error."""
        return 1 if self.errors else 0 if self.consistent else 2

    def format(self, max_lines: int = 40) -> str:
        """A human-readable account of the run."""
        mode = " (dry run: nothing written, nothing sent)" if self.dry_run else ""
        lines = [f"reconcile at {ms_to_text(self.started_ms, seconds=True)}{mode}: {self.rounds} round(s)"]
        if self.findings:
            lines.append("found:")
            lines += [f"  {kind:<22} {n}" for kind, n in sorted(self.found.items())]
            for c in self.findings[:max_lines]:
                lines.append(f"  - {c.kind} {c.symbol}: {c.reason}")
            if len(self.findings) > max_lines:
                lines.append(f"  … and {len(self.findings) - max_lines} more")
        else:
            lines.append("found: nothing")
        verb = "would do" if self.dry_run else "did"
        lines.append(f"{verb}:" if self.actions else f"{verb}: nothing")
        lines += [f"  {a.format()}" for a in self.actions]
        lines.append(f"lookups pending: {len(self.lookups_pending)}")
        lines += [f"  {lk.kind} {lk.symbol}: {lk.reason}" for lk in self.lookups_pending[:max_lines]]
        if self.errors:
            lines.append("errors:")
            lines += [f"  {e}" for e in self.errors]
        status = (
            "error" if self.errors else "consistent" if self.consistent
            else "would correct" if self.dry_run else "corrected"
        )  # fmt: skip
        lines.append(f"result: {status}")
        return "\n".join(lines)


class Reconciler:
    """One ledger, one venue account (module docstring). ``clock_ms`` defaults to the client's
    estimate of the venue's clock; ``levels`` to ``signal_levels`` on the store's database."""

    def __init__(
        self,
        store: LedgerStore,
        trading: BinanceTrading,
        config: ReconcilerConfig | None = None,
        *,
        levels: LevelsSource | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.trading = trading
        self.config = config or ReconcilerConfig()
        self.levels = levels or signal_levels(store.engine, self.config.levels_max_age_ms)
        self.clock_ms = clock_ms or trading.http.now_ms
        self.pending: list[Lookup] = []  # carried from one run to the next

    # --- one run ---------------------------------------------------------------------------------------
    def run_once(self) -> ReconcileReport:
        """Reconcile to a fixed point (at most ``max_rounds`` rounds) and carry out the actions."""
        cfg = self.config
        report = ReconcileReport(self.clock_ms(), cfg.dry_run)
        seen: set[tuple[Any, ...]] = set()
        acted: set[tuple[Any, ...]] = set()
        lookups = list(self.pending)
        previous: set[Lookup] | None = None
        try:
            for _ in range(cfg.max_rounds):
                report.rounds += 1
                now = self.clock_ms()
                fetched = fetch(
                    self.trading, cfg.symbols, self.store.cursors(), lookups, now, config=cfg.snapshot
                )
                report.errors += fetched.errors
                snapshot = fetched.snapshot
                result = reconcile(self._view(snapshot), snapshot, cfg.reconcile)
                new = [c for c in result.corrections if _identity(c) not in seen]
                seen.update(_identity(c) for c in new)
                report.findings += new
                if not cfg.dry_run:
                    self.store.apply(result, now)
                acted_now = 0
                for c in result.corrections:
                    target = _identity(c)
                    if c.kind in ACTION_KINDS and target not in acted:
                        acted.add(target)
                        action = self._act(c, now)
                        if action is not None:
                            report.actions.append(action)
                            acted_now += action.outcome not in ("skipped", "dry_run")
                lookups = list(dict.fromkeys([*result.lookups, *fetched.deferred]))
                stalled = previous is not None and set(lookups) <= previous and not new
                if (not lookups and not acted_now) or (stalled and not acted_now):
                    break
                previous = set(lookups)
        except RaytradeError as e:  # the venue or the database failed: report it, the next run retries
            report.errors.append(f"{type(e).__name__}: {e}")
        self.pending = [] if cfg.dry_run else lookups
        report.lookups_pending = lookups
        return report

    def run_forever(
        self, stop_event: threading.Event, on_report: Callable[[ReconcileReport], None] | None = None
    ) -> int:
        """Run at once, then every ``interval_s`` until ``stop_event`` is set; return the runs made."""
        runs = 0
        while not stop_event.is_set():
            report = self.run_once()
            runs += 1
            level = logging.WARNING if report.errors else logging.INFO
            log.log(level, "reconcile: %s", report.format().replace("\n", "; "))
            if on_report is not None:
                on_report(report)
            stop_event.wait(self.config.interval_s)
        return runs

    def _view(self, snapshot: ExchangeSnapshot) -> LedgerView:
        view = self.store.view(snapshot)
        if self.config.symbols is None:
            return view
        keep = set(self.config.symbols)  # a symbol left out must not look flat on the venue
        return replace(
            view,
            orders={k: o for k, o in view.orders.items() if k[0] in keep},
            algo_orders={k: a for k, a in view.algo_orders.items() if k[0] in keep},
            positions={s: p for s, p in view.positions.items() if s in keep},
            pending_signals=[p for p in view.pending_signals if p.signal.symbol in keep],
        )

    # --- actions ---------------------------------------------------------------------------------------
    def _act(self, c: Correction, now_ms: int) -> Action | None:
        if c.kind == CorrectionKind.CANCEL_ORPHAN and isinstance(c.after, AlgoOrderState | OrderState):
            if not self.config.cancel_orphans:
                return Action("cancel", c.symbol, "skipped", "cancel_orphans is off: " + c.reason)
            return self._cancel(c, c.after, now_ms)
        if c.kind == CorrectionKind.PROTECT_OR_FLATTEN and isinstance(c.after, ExchangePosition):
            return self._protect_or_flatten(c, c.after, now_ms)
        return None

    def _cancel(self, c: Correction, o: AlgoOrderState | OrderState, now_ms: int) -> Action:
        is_algo = isinstance(o, AlgoOrderState)
        cid, ident = (
            (o.client_algo_id, o.algo_id)
            if isinstance(o, AlgoOrderState)
            else (o.client_order_id, o.order_id)
        )
        what = f"orphan {o.order_type} ({'algo' if is_algo else 'order'} {ident})"
        if self.config.dry_run:
            return Action("cancel", o.symbol, "dry_run", what, cid)
        if not cid:
            action = Action("cancel", o.symbol, "failed", what + ": no client id to cancel it by", cid)
            return self._record(c, action, now_ms)
        try:
            if isinstance(o, AlgoOrderState):
                self.trading.cancel_algo_order(cid, o.symbol)
            else:
                self.trading.cancel_order(o.symbol, cid)
            action = Action("cancel", o.symbol, "done", what + " cancelled: its position is gone", cid)
        except OrderOutcomeUnknown as e:
            action = self._cancel_resolved(o, cid, what, e)
        except BinanceRejection as e:
            gone = e.code in _GONE_CODES
            action = Action("cancel", o.symbol, "gone" if gone else "failed", f"{what}: {e}", cid)
        except RaytradeError as e:  # refused for another reason, or not sent: the next round retries
            action = Action("cancel", o.symbol, "failed", f"{what}: {e}", cid)
        if action.outcome in ("done", "gone"):
            write_rows(self.store.engine, "cancels", [{
                "ts": now_ms, "order_id": ident, "symbol": o.symbol, "side": o.side,
                "reason": "reconcile: orphan, position gone", "raw_json": {"client_id": cid, "algo": is_algo},
            }])  # fmt: skip
        return self._record(c, action, now_ms)

    def _cancel_resolved(
        self, o: AlgoOrderState | OrderState, cid: str, what: str, e: OrderOutcomeUnknown
    ) -> Action:
        kind: Literal["order", "algo"] = "algo" if isinstance(o, AlgoOrderState) else "order"
        try:
            found = self._resolve(o.symbol, cid, kind, e)
        except UnknownOutcomeError as unknown:
            return Action("cancel", o.symbol, "unknown", f"{what}: {unknown}", cid)
        if isinstance(found, Absent):
            return Action(
                "cancel",
                o.symbol,
                "gone",
                f"{what}: cancel outcome unknown, the venue has no such order",
                cid,
            )
        order = found.order
        status = order.algoStatus if isinstance(order, AlgoOrderResponse) else order.status
        still_open = status in ("NEW", "PARTIALLY_FILLED", "TRIGGERING")
        outcome: Outcome = "unknown" if still_open else "done"
        return Action("cancel", o.symbol, outcome, f"{what}: cancel outcome unknown, queried: {status}", cid)

    def _protect_or_flatten(self, c: Correction, p: ExchangePosition, now_ms: int) -> Action:
        side: PositionSide = "LONG" if p.qty > 0 else "SHORT"
        missing = [str(m) for m in c.details.get("missing", ("stop_loss", "take_profit"))]
        levels = self.levels(p.symbol, side, now_ms)
        if levels is not None and not _levels_fit(side, levels):
            levels = None
        policy = self.config.naked_with_levels if levels is not None else self.config.naked_without_levels
        naked = f"{side} {abs(p.qty)} without {' and '.join(missing)}"
        if policy == "report":
            known = f"levels from {levels.source}" if levels else "levels unknown"
            return Action(
                "protect" if levels else "flatten", p.symbol, "skipped", f"{naked} ({known}; policy report)"
            )
        if policy == "protect" and levels is not None:
            return self._protect(c, p, side, missing, levels, now_ms)
        why = "levels unknown" if levels is None else "policy flatten"
        return self._flatten(c, p, f"{naked}; {why}", now_ms)

    def _ids(self, p: ExchangePosition) -> str:
        return f"reconcile:{p.symbol}:{p.update_ms}:{p.qty}"

    def _protect(
        self,
        c: Correction,
        p: ExchangePosition,
        side: PositionSide,
        missing: Sequence[str],
        levels: ProtectionLevels,
        now_ms: int,
    ) -> Action:
        plan: list[tuple[Protection, Decimal, str]] = []
        if "stop_loss" in missing:
            plan.append(("SL", levels.stop_loss, client_id(self._ids(p), "sl")))
        if "take_profit" in missing:
            plan.append(("TP", levels.take_profit, client_id(self._ids(p), "tp")))
        what = ", ".join(f"{kind} {price}" for kind, price, _ in plan) + f" from {levels.source}"
        ids = ",".join(cid for _, _, cid in plan)
        if self.config.dry_run:
            return Action("protect", p.symbol, "dry_run", what, ids)
        placed: list[AlgoOrderState] = []
        for kind, price, cid in plan:
            try:
                row = self._place_protection(p, side, kind, price, cid)
            except RejectedError as e:  # refused, or confirmed absent after an unknown outcome
                if placed:
                    self.store.record(placed)
                self._risk_event(now_ms, p.symbol, "protection_failed", f"{kind} refused: {e}; flattening",
                                 {"client_id": cid, "trigger_price": str(price), "error": str(e)})  # fmt: skip
                return self._flatten(c, p, f"{kind} at {price} refused ({e}): never naked", now_ms)
            except RaytradeError as e:  # not sent (unreachable), or sent and the query failed too
                if placed:
                    self.store.record(placed)
                outcome: Outcome = "unknown" if isinstance(e, UnknownOutcomeError) else "failed"
                return self._record(
                    c, Action("protect", p.symbol, outcome, f"{kind} {cid}: {e}", cid), now_ms
                )
            placed.append(algo_of_response(row))
        self.store.record(placed)
        return self._record(c, Action("protect", p.symbol, "done", what, ids), now_ms)

    def _place_protection(
        self, p: ExchangePosition, side: PositionSide, kind: Protection, price: Decimal, cid: str
    ) -> AlgoOrderResponse:
        """Place one reduce-only SL/TP of the position's quantity; an unknown outcome is queried first
        (RejectedError when the venue then has no such order, UnknownOutcomeError when the query fails)."""
        try:
            return self.trading.place_protection(p.symbol, kind, side, price, p.entry_price, cid, abs(p.qty))
        except OrderOutcomeUnknown as e:
            found = self._resolve(p.symbol, cid, "algo", e)
            if isinstance(found, Found) and isinstance(found.order, AlgoOrderResponse):
                return found.order
            raise RejectedError(f"{kind} {cid}: outcome unknown, then confirmed absent") from e

    def _resolve(
        self, symbol: str, cid: str, kind: Literal["order", "algo"], e: OrderOutcomeUnknown
    ) -> Found | Absent:
        try:
            return self.trading.resolve_unknown(symbol, cid, kind=kind, not_before_ms=e.settled_after_ms)
        except RaytradeError as again:
            raise UnknownOutcomeError(f"{e}; the query by client id failed too: {again}") from again

    def _flatten(self, c: Correction, p: ExchangePosition, why: str, now_ms: int) -> Action:
        close_side: OrderSide = "SELL" if p.qty > 0 else "BUY"
        cid = client_id(self._ids(p), "close")
        what = f"reduce-only {close_side} {abs(p.qty)}: {why}"
        if self.config.dry_run:
            return Action("flatten", p.symbol, "dry_run", what, cid)
        try:
            try:
                row = self.trading.close_position(p.symbol, close_side, abs(p.qty), cid)
            except OrderOutcomeUnknown as e:  # query before anything else; resend only when absent
                found = self._resolve(p.symbol, cid, "order", e)
                if isinstance(found, Found) and isinstance(found.order, OrderResponse):
                    row = found.order
                else:
                    row = self.trading.close_position(p.symbol, close_side, abs(p.qty), cid)
        except RejectedError as e:
            action = Action("flatten", p.symbol, "failed", f"{what}; refused: {e}", cid)
        except UnknownOutcomeError as e:
            action = Action("flatten", p.symbol, "unknown", f"{what}; {e}", cid)
        except RaytradeError as e:
            action = Action("flatten", p.symbol, "failed", f"{what}; {e}", cid)
        else:
            self.store.record([order_of_response(row)])
            action = Action("flatten", p.symbol, "done", what, cid)
        self._risk_event(now_ms, p.symbol, "naked_flattened", f"{action.outcome}: {what}", {"client_id": cid})
        return self._record(c, action, now_ms)

    def _record(self, c: Correction, action: Action, now_ms: int) -> Action:
        details = {
            **c.details,
            "action": action.kind,
            "outcome": action.outcome,
            "client_id": action.client_id,
        }
        event = Correction(
            c.kind, c.symbol, f"{action.kind} {action.outcome}: {action.detail}", c.before, c.after, details
        )
        self.store.apply(ReconcileResult([event], [], {}), now_ms)
        log.warning("reconcile: %s", action.format())
        return action

    def _risk_event(
        self, ts: int, symbol: str, event_type: str, message: str, details: dict[str, Any]
    ) -> None:
        write_rows(self.store.engine, "risk_events", [{
            "ts": ts, "event_type": event_type, "symbol": symbol, "severity": 2, "message": message,
            "details": {"source": "reconciler", **details},
        }])  # fmt: skip


def _identity(c: Correction) -> tuple[Any, ...]:
    record = c.after if c.after is not None else c.before
    key = getattr(record, "key", None)
    return (str(c.kind), c.symbol, key if isinstance(key, tuple) else None)


def _levels_fit(side: PositionSide, levels: ProtectionLevels) -> bool:
    sl, tp = levels.stop_loss, levels.take_profit
    if sl <= 0 or tp <= 0:
        return False
    return sl < tp if side == "LONG" else sl > tp


def signal_levels(engine: sa.Engine, max_age_ms: int) -> LevelsSource:
    """Levels from the newest entry signal (``engine_signals``, not the reconciler's own) of the
    symbol and side, at most ``max_age_ms`` old, whose ``meta_json`` has ``sl_price`` and ``tp_price``."""

    def levels(symbol: str, side: PositionSide, now_ms: int) -> ProtectionLevels | None:
        q = (
            sa.select(engine_signals.c.id, engine_signals.c.meta_json)
            .where(
                engine_signals.c.symbol == symbol, engine_signals.c.side == side,
                engine_signals.c.engine != "reconcile", engine_signals.c.ts >= now_ms - max_age_ms,
                engine_signals.c.ts <= now_ms,
            )
            .order_by(engine_signals.c.ts.desc(), engine_signals.c.id.desc())
            .limit(20)
        )  # fmt: skip
        with engine.connect() as conn:
            for signal_id, meta in conn.execute(q):
                if not isinstance(meta, dict):
                    continue
                try:
                    sl, tp = Decimal(str(meta["sl_price"])), Decimal(str(meta["tp_price"]))
                except (KeyError, InvalidOperation):
                    continue
                if sl.is_finite() and tp.is_finite():
                    return ProtectionLevels(sl, tp, f"engine signal {signal_id}")
        return None

    return levels


def reconciler_actor_class() -> Any:
    """The Ray actor class around ``Reconciler`` (built lazily: importing this module needs no Ray).

    ``start(config)`` runs ``run_forever`` on a thread of the actor; ``stop()`` ends it."""
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
    class ReconcilerActor:
        def __init__(self, make: Callable[[], Reconciler]) -> None:
            self.reconciler = make()
            self.stop_event = threading.Event()
            self.last: ReconcileReport | None = None
            self.thread: threading.Thread | None = None

        def start(self) -> None:
            if self.thread is None or not self.thread.is_alive():
                self.stop_event.clear()
                self.thread = threading.Thread(
                    target=self.reconciler.run_forever, args=(self.stop_event, self._keep), daemon=True
                )
                self.thread.start()

        def _keep(self, report: ReconcileReport) -> None:
            self.last = report

        def last_report(self) -> str | None:
            return None if self.last is None else self.last.format()

        def stop(self) -> None:
            self.stop_event.set()

    return ReconcilerActor
