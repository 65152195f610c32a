"""The live book: the execution actor's book when orders go to a venue (Binance, its testnet, or the
replay venue's paper broker) instead of the paper exchange of ``core.sim``.

It answers the same calls as the paper book (``actors.execution.ExecutionBook``): ``submit`` entry
intents, ``on_ticks``, ``on_bars``, ``flatten``, ``summary``, ``trades``, ``equity``, ``close`` — the
execution actor holds one or the other (``make_book``), and no shared code asks which.

- Entries: each intent passes the kill switch, the entry delay, a held-symbol check and the hard
  risk guards of the same simulator the paper book uses (``FillSimulator.check_entry`` on a mirror
  of the account), then ``exchange.binance.protected.enter_protected``: MARKET with the decision's
  client id, SL and TP algo orders sized to the fill, or a reduce-only close at once. The engine
  signal is written before the order (spec 004 §3 A), then the orders, algo orders and fills the
  venue answered (``storage.ledger``); every safety event is a ``risk_events`` row and an audit line.
- Exits happen on the venue. ``sync`` (on start, then every ``reconciler.interval_s`` of wall time,
  driven by ticks) runs a reconciliation round (``actors.reconciler``): the venue's fills enter the
  ledger, the protection left behind when its sibling filled is an orphan and is cancelled, a naked
  position is protected or flattened; the mirror drops positions the venue no longer holds.
- Kill switch (``core.killswitch``): the kill file, stale market data, an order-failure spike and the
  daily loss limit (checked on the mirror at bar closes, as the paper book does) block entries;
  a close request (daily loss, or the operator's) cancels every order and flattens
  (``exchange.binance.emergency``). Every trigger and effect is an ``events`` row.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from actors.reconciler import Reconciler, ReconcilerConfig
from core.config import RiskConfig
from core.killswitch import KillSwitch, KillSwitchConfig, KillSwitchEvent
from core.ledger import EngineSignal, Fill
from core.messages import BarClose, EntryIntent, MarketTick
from core.sim import FillSimulator, SimConfig
from exchange.binance.emergency import cancel_all_and_flatten
from exchange.binance.ledger_records import algo_of_response, fill_of_trade, order_of_response
from exchange.binance.orders import client_id
from exchange.binance.payloads import OrderResponse
from exchange.binance.protected import (
    EntryPlan,
    Outcome,
    ProtectedEntry,
    ProtectionConfig,
    cancel_protection,
    enter_protected,
)
from exchange.binance.signed import TradingConfig
from exchange.binance.trading import BinanceTrading
from storage import db
from storage.audit import AuditLog
from storage.bulk import write_rows
from storage.ledger import LedgerStore

log = logging.getLogger(__name__)

_SIDE = {1: "LONG", -1: "SHORT"}


class LiveConfig(BaseModel):
    """What the live book needs; plain data so a restarted actor rebuilds the same book."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str = Field(min_length=1)
    symbols: tuple[str, ...]
    database_url: str
    trading: TradingConfig
    mode: str = "live"
    sim: SimConfig = Field(default_factory=SimConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    protection: ProtectionConfig = Field(default_factory=ProtectionConfig)
    killswitch: KillSwitchConfig = Field(default_factory=KillSwitchConfig)
    reconciler: ReconcilerConfig = Field(default_factory=ReconcilerConfig)
    kill_file: Path | None = Field(None, description="a kill switch trigger while this file exists")
    audit_dir: Path | None = Field(None, description="JSONL audit log of decisions, orders and fills")
    max_entry_delay_ms: int = Field(
        60_000, gt=0, description="an entry must go within this of its bar's close"
    )
    leverage: int = Field(3, ge=1, le=125, description="leverage when an intent names none")
    venue_clock: Literal["estimate", "query"] = Field(
        "estimate",
        description="the venue's time: the client's estimate (Binance), or asked of /fapi/v1/time each time "
        "(a replay venue, whose clock is not the wall's)",
    )


@dataclass(slots=True)
class LiveStats:
    entries: int = 0
    protected: int = 0
    flattened: int = 0
    rejected: int = 0
    unresolved: int = 0
    blocked: int = 0
    naked_ms: list[float] = field(default_factory=list)
    protect_ms: list[float] = field(default_factory=list)
    exits: int = 0
    kill_events: int = 0
    sync_runs: int = 0


class LiveBook:
    """The live implementation of the execution actor's book (module docstring)."""

    def __init__(
        self,
        cfg: LiveConfig,
        *,
        wall_ms: Callable[[], int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.engine = db.make_engine(cfg.database_url)
        self.store = LedgerStore(self.engine, source=self._source)
        self.trading = BinanceTrading(cfg.trading)
        self.trading.start()
        venue_now = self.trading.server_time_ms if cfg.venue_clock == "query" else self.trading.http.now_ms
        self.wall_ms = wall_ms or venue_now  # the venue's clock
        self.monotonic = monotonic
        self.sim = FillSimulator(cfg.symbols, cfg.sim, cfg.risk)  # the account's mirror, for the guards
        self.kill = KillSwitch(cfg.killswitch)
        self.reconciler = Reconciler(self.store, self.trading, cfg.reconciler)
        self.audit = AuditLog(cfg.audit_dir) if cfg.audit_dir is not None else None
        self.stats = LiveStats()
        self.entries: dict[str, ProtectedEntry] = {}  # symbol → its open protected entry
        self._last_tick_ms = 0
        self._next_sync_s = 0.0
        self.sync()

    @property
    def _source(self) -> str:
        return f"execution:{self.cfg.mode}:{self.cfg.session_id}"

    # --- entries -----------------------------------------------------------------------------------
    def submit(
        self,
        intents: Sequence[EntryIntent],
        decision_ts: int | None = None,
        symbols: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Enter ``intents`` now, in the book's symbol order; return one result per intent."""
        self._kill_file()
        order = {s: k for k, s in enumerate(self.cfg.symbols)}
        ranked = sorted(intents, key=lambda i: (int(i.decision_ts), order.get(i.symbol, len(order))))
        return [self._enter(it) for it in ranked]

    def _enter(self, it: EntryIntent) -> dict[str, Any]:
        now = self.wall_ms()
        group = f"{self.cfg.session_id}:{it.symbol}:{int(it.decision_ts)}"
        result: dict[str, Any] = {
            "symbol": it.symbol,
            "decision_ts": int(it.decision_ts),
            "trade_group_id": group,
        }
        reasons: tuple[str, ...] = ()
        late_ms = now - (int(it.decision_ts) + self.cfg.sim.bar_ms)
        if not self.kill.entries_allowed:
            reasons = ("KILL_SWITCH",)
        elif late_ms > self.cfg.max_entry_delay_ms:
            reasons = ("SIGNAL_STALE",)
        elif it.symbol in self.entries or self.sim.position(it.symbol) is not None:
            reasons = ("POSITION_OPEN",)
        else:
            price = it.ask if it.side > 0 else it.bid
            reasons = self.sim.check_entry(
                it.symbol, it.side, now, price, it.size_fraction * self.sim.equity,
                decision_price=it.decision_price, atr=it.atr, sl=it.sl_price, tp=it.tp_price, leverage=it.leverage,
                mark_price=it.mark if math.isfinite(it.mark) else None,
                quote_volume_usdt=it.quote_volume if math.isfinite(it.quote_volume) else None,
            )  # fmt: skip
        if reasons:
            self.stats.blocked += 1
            self._risk_event(now, "entry_blocked", it.symbol, 1, f"entry {it.symbol} blocked: {', '.join(reasons)}",
                             {"reasons": list(reasons), "trade_group_id": group})  # fmt: skip
            return result | {"filled": False, "reasons": reasons}
        side = _SIDE[int(it.side)]
        price = it.ask if it.side > 0 else it.bid
        plan = EntryPlan(
            decision_key=group, symbol=it.symbol, side=side,  # type: ignore[arg-type]
            quantity=Decimal(repr(it.size_fraction * self.sim.equity / price)),
            stop_price=Decimal(repr(it.sl_price)), take_profit_price=Decimal(repr(it.tp_price)),
            mark_price=Decimal(repr(it.mark if math.isfinite(it.mark) else price)),
        )  # fmt: skip
        self.store.record_signal(EngineSignal(
            now, it.symbol, side, engine="policy", reason="entry", trade_group_id=group,
            client_order_id=client_id(group, "entry"),
            meta={"sl_price": str(plan.stop_price), "tp_price": str(plan.take_profit_price),
                  "decision_ts": int(it.decision_ts), "quantity": str(plan.quantity)},
        ))  # fmt: skip
        self._audit("decision", now, symbol=it.symbol, side=side, trade_group_id=group,
                    quantity=plan.quantity, sl=plan.stop_price, tp=plan.take_profit_price)  # fmt: skip
        self.trading.prepare_symbol(it.symbol, int(it.leverage) if it.leverage >= 1 else self.cfg.leverage)
        done = enter_protected(self.trading, plan, self.cfg.protection)
        self._record_entry(done)
        ok = done.outcome in (Outcome.PROTECTED, Outcome.REJECTED, Outcome.NOT_FILLED)
        self._kill_events(self.kill.order_result(now, ok))
        self.stats.entries += 1
        self.stats.naked_ms.append(done.naked_ms)
        if done.outcome is Outcome.PROTECTED:
            self.stats.protected += 1
            if done.protected_ms is not None:
                self.stats.protect_ms.append(done.protected_ms)
            self.entries[it.symbol] = done
            self.sim.open_position(
                it.symbol, int(it.side), now, float(done.avg_price),
                float(done.filled_qty * done.avg_price), atr=it.atr, sl=it.sl_price, tp=it.tp_price,
                leverage=it.leverage, mark_price=float(done.avg_price),
            )  # fmt: skip
        elif done.outcome is Outcome.FLATTENED:
            self.stats.flattened += 1
        elif done.outcome is Outcome.UNRESOLVED:
            self.stats.unresolved += 1
            self._next_sync_s = 0.0  # reconcile at the next tick: the venue's record decides
        else:
            self.stats.rejected += 1
        return result | {"filled": done.outcome is Outcome.PROTECTED, "outcome": str(done.outcome),
                         "naked_ms": done.naked_ms, "price": float(done.avg_price)}  # fmt: skip

    def _record_entry(self, done: ProtectedEntry) -> None:
        """The venue's answers into the ledger: orders, algo orders, and the fills of the entry and close."""
        events: list[Any] = []
        orders = [o for o in (done.entry, done.close) if o is not None]
        events += [order_of_response(o) for o in orders]
        events += [algo_of_response(a) for a in (done.stop, done.take_profit) if a is not None]
        events += self._fills_of([o for o in orders if o.executedQty > 0])
        if events:
            self.store.record(events)
        now = self.wall_ms()
        for e in done.events:
            severity = 2 if e.kind in ("close_failed", "close_unknown", "entry_unresolved") else 1
            self._risk_event(now, e.kind, e.symbol, severity, e.message, dict(e.details))
        for o in orders:
            self._audit("order", now, symbol=o.symbol, client_order_id=o.clientOrderId, side=o.side,
                        status=o.status, qty=o.executedQty, price=o.avgPrice)  # fmt: skip

    def _fills_of(self, orders: list[OrderResponse]) -> list[Fill]:
        """Our trades of ``orders`` from ``userTrades`` (the answer holds no trade ids)."""
        fills: list[Fill] = []
        for symbol in {o.symbol for o in orders}:
            ids = {o.orderId: o.clientOrderId for o in orders if o.symbol == symbol}
            for trade in self.trading.user_trades(symbol, limit=100):
                if trade.orderId in ids:
                    fill = fill_of_trade(trade, ids[trade.orderId])
                    fills.append(fill)
                    self._audit("fill", fill.time_ms, symbol=symbol, trade_id=fill.trade_id, order_id=trade.orderId,
                                qty=fill.qty, price=fill.price)  # fmt: skip
        return fills

    # --- market events -----------------------------------------------------------------------------
    def on_ticks(self, ticks: Sequence[MarketTick]) -> int:
        """Watch the market data's freshness and the kill file; reconcile when due. Return exits seen."""
        if ticks:
            self._last_tick_ms = max(self._last_tick_ms, max(int(t.ts_ms) for t in ticks))
        self._kill_file()
        if self.monotonic() >= self._next_sync_s:
            return self.sync()
        return 0

    def on_bars(self, bars: Sequence[BarClose]) -> int:
        """Mark the mirror at the bars' mark closes and apply the daily loss limit (close request)."""
        marks = {
            b.symbol: b.mark_close for b in bars if b.symbol in self.entries and math.isfinite(b.mark_close)
        }
        if not bars:
            return 0
        ts = max(int(b.ts_ms) for b in bars) + self.cfg.sim.bar_ms
        if marks and self.sim.mark_bar_close(ts, marks):  # the paper book's rule: flatten at the close
            self._kill_events(self.kill.daily_loss(self.wall_ms()))
            return self.flatten("FLATTEN")
        if self.kill.close_positions and self.entries:
            return self.flatten("KILL")
        return 0

    def sync(self) -> int:
        """One reconciliation round; drop from the mirror the positions the venue no longer holds."""
        self._next_sync_s = self.monotonic() + self.cfg.reconciler.interval_s
        report = self.reconciler.run_once()
        self.stats.sync_runs += 1
        held = {p.symbol for p in self.trading.positions() if p.positionAmt != 0}
        exits = 0
        for symbol in [s for s in self.entries if s not in held]:
            self._closed(symbol, "VENUE")
            exits += 1
        if not report.consistent:
            log.info("live: reconciliation %s", report.format(max_lines=10))
        return exits

    def _closed(self, symbol: str, reason: str) -> None:
        """The venue no longer holds ``symbol``'s position: cancel what is left of its protection (the
        sibling of the one that filled; gone counts as cancelled) and drop it from the mirror."""
        entry = self.entries.pop(symbol, None)
        if entry is not None:
            for role in ("sl", "tp"):
                cancel_protection(self.trading, symbol, client_id(entry.plan.decision_key, role))
        pos = self.sim.position(symbol)
        if pos is not None:
            self.sim.close_position(symbol, self.wall_ms(), pos.mark_price, reason="FLATTEN")
        self.stats.exits += 1

    def flatten(self, reason: str = "FLATTEN") -> int:
        """Cancel every order and algo order and close every position reduce-only; return positions closed."""
        now = self.wall_ms()
        report = cancel_all_and_flatten(self.trading, client_id_prefix=f"{reason.lower()}-{now}")
        self._risk_event(now, "flatten", None, 2, f"{reason}: " + "; ".join(report.lines()[:5]),
                         {"clean": report.clean, "reason": reason})  # fmt: skip
        closed = list(self.entries)
        for symbol in closed:
            self._closed(symbol, reason)
        self.reconciler.run_once()  # the closes' fills into the ledger
        return len(closed)

    # --- kill switch -------------------------------------------------------------------------------
    def _kill_file(self) -> None:
        now = self.wall_ms()
        if self.cfg.kill_file is not None:
            self._kill_events(self.kill.file(now, self.cfg.kill_file.exists()))
        if self._last_tick_ms:
            self._kill_events(self.kill.market_data(now, self._last_tick_ms))

    def kill_switch(self, close_positions: bool, source: str = "operator") -> dict[str, Any]:
        """Activate the kill switch (and with ``close_positions`` cancel everything and flatten)."""
        self._kill_events(self.kill.operator(self.wall_ms(), close_positions, source))
        if close_positions:
            self.flatten("KILL")
        return {"active": self.kill.active, "close_positions": self.kill.close_positions}

    def resume(self, source: str = "operator") -> dict[str, Any]:
        """Deactivate the kill switch, unless a condition still holds (the kill file, stale data, …)."""
        self._kill_file()
        events = self.kill.resume(self.wall_ms(), source)
        self._kill_events(events)
        return {"active": self.kill.active, "events": [e.kind for e in events]}

    def _kill_events(self, events: Sequence[KillSwitchEvent]) -> None:
        if not events:
            return
        rows = [{"ts": e.ts_ms, "kind": e.event_kind, "source": self._source, "symbol": None,
                 "payload": {"reason": e.reason, "detail": e.detail, "source": e.source}} for e in events]  # fmt: skip
        write_rows(self.engine, "events", rows)
        self.stats.kill_events += len(rows)
        for e in events:
            log.warning("live kill switch: %s %s %s", e.kind, e.reason or "", e.detail)
            self._audit("killswitch", e.ts_ms, event=e.kind, reason=e.reason, detail=e.detail)

    # --- reporting ---------------------------------------------------------------------------------
    def _risk_event(
        self,
        ts: int,
        event_type: str,
        symbol: str | None,
        severity: int,
        message: str,
        details: dict[str, Any],
    ) -> None:
        details = details | {"session": self.cfg.session_id}
        write_rows(self.engine, "risk_events", [{"ts": ts, "event_type": event_type, "symbol": symbol,
                                                 "severity": severity, "message": message, "details": details}])  # fmt: skip
        self._audit("risk", ts, event_type=event_type, symbol=symbol, message=message)

    def _audit(self, kind: str, ts_ms: int, **fields: Any) -> None:
        if self.audit is not None:
            self.audit.record(kind, ts_ms, **fields)

    @property
    def equity(self) -> float:
        return float(self.sim.equity)

    def summary(self) -> dict[str, Any]:
        s = self.stats
        naked = np.array(s.naked_ms) if s.naked_ms else np.zeros(1)
        protect = np.array(s.protect_ms) if s.protect_ms else np.full(1, np.nan)
        positions = {k: str(p.qty) for k, p in self.store.positions().items() if p.qty != 0}
        return {
            "session_id": self.cfg.session_id, "mode": self.cfg.mode, "entries": s.entries, "protected": s.protected,
            "flattened": s.flattened, "rejected": s.rejected, "unresolved": s.unresolved, "blocked": s.blocked,
            "exits": s.exits, "naked_ms_max": float(naked.max()), "protect_p50_ms": float(np.nanpercentile(protect, 50)),
            "protect_p99_ms": float(np.nanpercentile(protect, 99)), "kill_switch": self.kill.active,
            "open_positions": sorted(self.entries), "ledger_positions": positions, "equity": self.equity,
            "sync_runs": s.sync_runs, "kill_events": s.kill_events,
        }  # fmt: skip

    def trades(self) -> list[dict[str, Any]]:
        return self.sim.trades().to_dict("records")

    def close(self) -> None:
        self.trading.close()
        self.engine.dispose()
