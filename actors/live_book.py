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
- Exits happen on the venue. With a user data stream (``LiveConfig.user_stream``; ``actors.live_stream``
  runs it in a thread of its own and queues its events), the book learns them as they happen: the
  queue is drained at the start of each call (``submit``, ``on_ticks``, ``on_bars``, ``sync``, ``poll``),
  so the book stays single-threaded. ORDER_TRADE_UPDATE and ALGO_UPDATE states and the fills go to
  the ledger (which orders and de-duplicates them); a fill of an entry's SL or TP child order (known
  by the algo's client id, or by the child id ``ai`` links, which may come after the fill) that closes
  the entry's quantity cancels the sibling at once and drops the entry; a liquidation (``autoclose-``
  client id, or type LIQUIDATION) and a MARGIN_CALL are risk events; a ``Gap`` makes the next drain
  reconcile. The stream's silence (no message and no pong) and closure beyond the kill switch's bounds
  block entries (``user_stream_silent``, ``user_stream_closed``); a healthy stream clears them.
- Closes (``CloseIntent``: the RL agent's CLOSE, or a reversal's close, which a submit runs before
  its entries): a reduce-only MARKET of the entry's quantity with a client id derived from the
  intent's (``client_id(intent.client_id, "close")``) through the protected entry's own close path
  (``protected.place_settled``: an unknown outcome is queried before anything is sent again, so a retried
  close is found, not sent twice), written to the ledger (engine signal first, then the order and its
  fills) with an ``rl_close`` risk event. The protections are cancelled only after the venue reports
  the close FILLED: a refused, unknown or partly filled close leaves SL and TP resting (a
  ``close_failed`` / ``close_unknown`` / ``close_incomplete`` risk event, and reconciliation next), so
  the position is never without protection; the resting reduce-only orders can neither open nor grow a
  position in the moment between the fill and their cancel. Never refused by the guards.
- ``sync`` (on start, then every ``reconciler.interval_s`` of wall time, driven by ticks, and after a
  gap) runs a reconciliation round (``actors.reconciler``): the venue's fills enter the ledger, the
  protection left behind when its sibling filled is an orphan and is cancelled, a naked position is
  protected or flattened; the mirror drops positions the venue no longer holds.
- Kill switch (``core.killswitch``): the kill file, stale market data, an order-failure spike and the
  daily loss limit (checked on the mirror at bar closes, as the paper book does) block entries;
  a close request (daily loss, or the operator's) cancels every order and flattens
  (``exchange.binance.emergency``). Every trigger and effect is an ``events`` row.
- The operator's trading state and runtime settings (``storage.trading_control``), read with the kill
  switch's rows at most once a second: ``entries_stopped`` refuses entries (``ENTRIES_STOPPED``) while
  the protection and exits on the venue go on; ``stopped`` refuses them (``TRADING_STOPPED``) and
  cancels everything and flattens once per stop row (``STOP``); ``max_positions``,
  ``daily_loss_limit_pct`` and ``max_entry_delay_ms`` apply as ``min(config, setting)``.
- Positions rows (``storage.trade_rows``), as the paper book writes them: an ``entry`` row when an entry
  is protected, from its order's ledger fills; a ``FINAL`` row once the ledger's fills bring the trade
  back to flat after the book dropped it (the exit's fills may reach the ledger after the drop: each
  drain, reconciliation and flatten settles the trades waiting), with the ledger's realized PnL net of
  fees. A write error is logged and retried at the next settle; it never touches the orders.
- Account snapshots (``storage.account``): each minute close (``on_bars``) asks a thread of its own,
  on an HTTP session of its own, for the venue's account (``GET /fapi/v3/account``) and writes it as
  the ``account_snapshots`` row of that close. Nothing on the order path waits for it; a failure is an
  ``account_snapshot_missed`` risk event, never raised.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from actors.live_stream import Arrival, StreamThread
from actors.reconciler import Reconciler, ReconcilerConfig
from core.config import RiskConfig
from core.errors import RejectedError, TransientError
from core.killswitch import KillSwitch, KillSwitchConfig, KillSwitchEvent
from core.ledger import EngineSignal, Fill
from core.messages import BarClose, CloseIntent, EntryIntent, MarketTick
from core.sim import FillSimulator, SimConfig
from core.sim import kernel as sim_kernel
from exchange.binance.account import fetch_account
from exchange.binance.emergency import cancel_all_and_flatten
from exchange.binance.ledger_records import (
    algo_of_response,
    algo_of_update,
    fill_of_trade,
    order_of_response,
    order_of_update,
)
from exchange.binance.orders import Role, client_id
from exchange.binance.payloads import (
    AccountUpdateEvent,
    AlgoUpdateEvent,
    MarginCallEvent,
    OrderResponse,
    OrderTradeUpdateEvent,
    UserFill,
)
from exchange.binance.protected import (
    EntryPlan,
    Outcome,
    ProtectedEntry,
    ProtectionConfig,
    cancel_protection,
    cancel_sibling,
    enter_protected,
    place_settled,
    position_qty,
    wait_final,
)
from exchange.binance.signed import OrderOutcomeUnknown, SignedTransport, TradingConfig
from exchange.binance.trading import BinanceTrading
from exchange.binance.user_stream import Gap, MalformedEvent, UserStreamConfig
from exchange.logging_safety import install_redaction
from storage import db, killswitch_store, trading_control
from storage.account import snapshot_row, write_snapshot
from storage.audit import AuditLog
from storage.bulk import write_rows
from storage.ledger import LedgerStore
from storage.trade_rows import TradeOpen, entry_row, final_row, write_position_row

log = logging.getLogger(__name__)

_SIDE = {1: "LONG", -1: "SHORT"}
_ROLES: tuple[Role, Role] = ("sl", "tp")
#: Algo statuses after which a protection neither rests nor fills: the position may be naked.
_PROTECTION_GONE = frozenset({"CANCELED", "EXPIRED", "REJECTED"})
#: Client id prefixes of the venue's own closes: liquidation, auto-deleveraging.
_LIQUIDATION_PREFIXES = ("autoclose-", "adl_autoclose")


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
    user_stream: UserStreamConfig | None = Field(
        None,
        description="the user data stream (ws_url: the WebSocket base, Binance's or the venue's); None: "
        "exits are learned by reconciliation only",
    )
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
    stream_exits: int = 0  # exits learned from the user stream (the sibling cancelled at once)
    sibling_cancel_ms: list[float] = field(default_factory=list)  # fill event's arrival → sibling cancelled
    liquidations: int = 0
    gaps: int = 0


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
        install_redaction([cfg.trading.api_key.get_secret_value(), cfg.trading.api_secret.get_secret_value()])
        self.trading = BinanceTrading(cfg.trading)
        self.trading.start()
        venue_now = self.trading.server_time_ms if cfg.venue_clock == "query" else self.trading.http.now_ms
        self.wall_ms = wall_ms or venue_now  # the venue's clock
        self.monotonic = monotonic
        self.sim = FillSimulator(cfg.symbols, cfg.sim, cfg.risk)  # the account's mirror, for the guards
        stored = killswitch_store.latest_state(self.engine)  # a kill set while no book ran still holds
        self.kill = KillSwitch(cfg.killswitch, stored.state if stored is not None else None)
        self._kill_row_seen = None if stored is None else (stored.ts_ms, stored.kind, stored.source)
        self._next_kill_read_s = 0.0
        self._controls_id = 0  # the last trading-state / settings row read
        self.trading_state = "running"
        self._stop_done_id = 0
        self.entry_delay_ms = cfg.max_entry_delay_ms
        self.reconciler = Reconciler(self.store, self.trading, cfg.reconciler, clock_ms=self.wall_ms)
        self.audit = AuditLog(cfg.audit_dir) if cfg.audit_dir is not None else None
        self.stats = LiveStats()
        self.entries: dict[str, ProtectedEntry] = {}  # symbol → its open protected entry
        self._closes_seen: set[str] = set()  # client ids of the close intents taken
        self._last_tick_ms = 0
        self._next_sync_s = 0.0
        self._sync_due = False  # a gap in the user stream: reconcile at the next drain
        self._children: dict[tuple[str, int], Role] = {}  # (symbol, child order id) → its protection's role
        self._unlinked: dict[tuple[str, int], list[Arrival]] = {}  # closing fills of orders not linked yet
        self._exit_fills: dict[str, dict[int, Decimal]] = {}  # symbol → protection fills: trade id → qty
        self._liquidations: set[tuple[str, int]] = set()
        self._stream_closed_ms: int | None = None
        self._trades: dict[str, TradeOpen] = {}  # symbol → its open entry's trade (positions rows)
        self._finals: dict[str, tuple[TradeOpen, str]] = {}  # trade group → (trade, exit reason): FINAL due
        self._snapshot_minute = -1
        self.stream: StreamThread | None = None
        self.snapshots = AccountSnapshots(cfg.trading, self.engine, cfg.mode, cfg.session_id,
                                          lambda: self.trading.http.clock_offset_ms)  # fmt: skip
        try:
            if cfg.user_stream is not None:  # before the first reconciliation: what follows it is heard
                self.stream = StreamThread(cfg.trading, cfg.user_stream, lambda: cfg.symbols,
                                           clock_offset_ms=self.trading.http.clock_offset_ms)  # fmt: skip
                if not self.stream.wait_connected(cfg.user_stream.connect_timeout_s):
                    log.warning("live: the user stream is not connected yet; the kill switch watches it")
            self.sync()
        except BaseException:
            self.close()
            raise

    @property
    def _source(self) -> str:
        return f"execution:{self.cfg.mode}:{self.cfg.session_id}"

    # --- entries -----------------------------------------------------------------------------------
    def submit(
        self,
        intents: Sequence[EntryIntent | CloseIntent],
        decision_ts: int | None = None,
        symbols: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Run the closes of ``intents``, then enter the entries in the book's symbol order; return one
        result per intent, in ``intents``' order (a close's has ``kind`` "close")."""
        self._pump()
        self._kill_file()
        closed = {id(c): self._close(c) for c in intents if isinstance(c, CloseIntent)}
        order = {s: k for k, s in enumerate(self.cfg.symbols)}
        entries = [i for i in intents if not isinstance(i, CloseIntent)]
        ranked = sorted(entries, key=lambda i: (int(i.decision_ts), order.get(i.symbol, len(order))))
        entered = {id(it): self._enter(it) for it in ranked}
        return [closed[id(i)] if isinstance(i, CloseIntent) else entered[id(i)] for i in intents]

    def _close(self, ci: CloseIntent) -> dict[str, Any]:
        """Close ``ci.symbol``'s protected position reduce-only; cancel its protections once the close
        filled, never before (module docstring, "Closes")."""
        now = self.wall_ms()
        close_id = client_id(ci.client_id, "close")
        result: dict[str, Any] = {"symbol": ci.symbol, "decision_ts": int(ci.decision_ts), "kind": "close",
                                  "client_order_id": close_id, "filled": False}  # fmt: skip
        entry = self.entries.get(ci.symbol)
        if ci.client_id in self._closes_seen:
            return result | {"reasons": ("DUPLICATE_INTENT",)}
        if (entry is None or (ci.side and entry.plan.side != _SIDE[int(ci.side)])
                or int(entry.plan.decision_key.rsplit(":", 1)[1]) >= int(ci.decision_ts)):  # fmt: skip
            return result | {"reasons": ("FLAT",)}  # nothing it may close (a retry of a done close too)
        self._closes_seen.add(ci.client_id)  # the closes sent: as many as trades
        plan, qty = entry.plan, entry.filled_qty
        result["trade_group_id"] = plan.decision_key
        self.store.record_signal(EngineSignal(
            now, ci.symbol, plan.side, engine="rl", reason=ci.reason, trade_group_id=plan.decision_key,
            client_order_id=close_id, meta={"decision_ts": int(ci.decision_ts), "quantity": str(qty)},
        ))  # fmt: skip
        self._audit("decision", now, symbol=ci.symbol, side=plan.closing_side, trade_group_id=plan.decision_key,
                    reason=ci.reason, quantity=qty)  # fmt: skip
        details = {"trade_group_id": plan.decision_key, "client_order_id": close_id, "quantity": str(qty)}
        cfg = self.cfg.protection
        try:
            close = place_settled(self.trading, ci.symbol, close_id, lambda: self.trading.close_position(
                ci.symbol, plan.closing_side, qty, close_id), cfg.close_attempts, time.sleep)  # fmt: skip
        except RejectedError as e:
            if position_qty(self.trading, plan) == 0:  # already flat on the venue: its protection is moot
                self._closed(ci.symbol, "VENUE")
                self._risk_event(now, "close_flat", ci.symbol, 1, f"{ci.symbol} {ci.reason}: already flat ({e})",
                                 details)  # fmt: skip
                return result | {"reasons": ("FLAT",)}
            self._risk_event(now, "close_failed", ci.symbol, 2,
                             f"{ci.symbol} {ci.reason} refused: {e}; SL and TP stay", details)  # fmt: skip
            self._kill_events(self.kill.order_result(now, False))
            return result | {"reasons": ("CLOSE_REJECTED",)}
        except (OrderOutcomeUnknown, TransientError) as e:
            self._next_sync_s = 0.0  # the venue's record decides at the next tick
            self._risk_event(now, "close_unknown", ci.symbol, 2,
                             f"{ci.symbol} {ci.reason}: {e}; SL and TP stay", details)  # fmt: skip
            return result | {"reasons": ("CLOSE_UNKNOWN",)}
        close = wait_final(self.trading, close, cfg, time.monotonic, time.sleep)
        records: list[Any] = [order_of_response(close)]
        records += self._fills_of([close] if close.executedQty > 0 else [])
        self.store.record(records)
        self._audit("order", now, symbol=ci.symbol, client_order_id=close_id, side=close.side, status=close.status,
                    qty=close.executedQty, price=close.avgPrice)  # fmt: skip
        self._kill_events(self.kill.order_result(now, True))
        if close.status != "FILLED" or close.executedQty < qty:
            self._next_sync_s = 0.0
            self._risk_event(now, "close_incomplete", ci.symbol, 2, f"{ci.symbol} {ci.reason}: {close.status} "
                             f"{close.executedQty} of {qty}; SL and TP stay", details | {"status": close.status})  # fmt: skip
            return result | {"reasons": ("CLOSE_INCOMPLETE",)}
        self._closed(ci.symbol, ci.reason, price=float(close.avgPrice))  # flat now: cancel SL and TP
        self._settle_finals()
        self._risk_event(now, "rl_close", ci.symbol, 1, f"{ci.symbol} {plan.side} closed ({ci.reason}) at "
                         f"{close.avgPrice}", details | {"price": str(close.avgPrice)})  # fmt: skip
        return result | {"filled": True, "reasons": (), "price": float(close.avgPrice)}

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
        elif self.trading_state != "running":
            reasons = ("ENTRIES_STOPPED" if self.trading_state == "entries_stopped" else "TRADING_STOPPED",)
        elif late_ms > self.entry_delay_ms:
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
        fills = self._record_entry(done)
        ok = done.outcome in (Outcome.PROTECTED, Outcome.REJECTED, Outcome.NOT_FILLED)
        self._kill_events(self.kill.order_result(now, ok))
        self.stats.entries += 1
        self.stats.naked_ms.append(done.naked_ms)
        if done.outcome is Outcome.PROTECTED:
            self.stats.protected += 1
            if done.protected_ms is not None:
                self.stats.protect_ms.append(done.protected_ms)
            self.entries[it.symbol] = done
            if done.entry is not None:
                trade = TradeOpen(group, it.symbol, side, done.entry.orderId,
                                  int(it.leverage) if it.leverage >= 1 else self.cfg.leverage,
                                  float(it.sl_price), float(it.tp_price), self.cfg.mode)  # fmt: skip
                self._trades[it.symbol] = trade
                self._position_row(entry_row, fills, trade)
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

    def _record_entry(self, done: ProtectedEntry) -> list[Fill]:
        """The venue's answers into the ledger: orders, algo orders, and the fills of the entry and close
        (returned)."""
        events: list[Any] = []
        orders = [o for o in (done.entry, done.close) if o is not None]
        events += [order_of_response(o) for o in orders]
        events += [algo_of_response(a) for a in (done.stop, done.take_profit) if a is not None]
        fills = self._fills_of([o for o in orders if o.executedQty > 0])
        events += fills
        if events:
            self.store.record(events)
        now = self.wall_ms()
        for e in done.events:
            severity = 2 if e.kind in ("close_failed", "close_unknown", "entry_unresolved") else 1
            self._risk_event(now, e.kind, e.symbol, severity, e.message, dict(e.details))
        for o in orders:
            self._audit("order", now, symbol=o.symbol, client_order_id=o.clientOrderId, side=o.side,
                        status=o.status, qty=o.executedQty, price=o.avgPrice)  # fmt: skip
        return fills

    def _position_row(self, build: Callable[..., dict[str, Any] | None], fills: Sequence[Fill],
                      *args: Any) -> bool:  # fmt: skip
        """Write the positions row ``build(fills, *args)`` makes (None: not yet); never raise."""
        try:
            row = build(fills, *args)
            if row is not None:
                write_position_row(self.engine, row)
            return row is not None
        except Exception:
            log.exception("live: could not write the positions row of %s", args[0].trade_group_id)
            return False

    def _settle_finals(self) -> None:
        """Write the FINAL rows of the dropped trades whose closing fills the ledger now holds."""
        for group, (trade, reason) in list(self._finals.items()):
            try:
                fills = self.store.fills(trade.symbol)
            except Exception:
                log.exception("live: could not read the fills of %s", trade.symbol)
                return
            if self._position_row(final_row, fills, trade, reason):
                del self._finals[group]

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
        exits = self._pump()
        if ticks:
            self._last_tick_ms = max(self._last_tick_ms, max(int(t.ts_ms) for t in ticks))
        self._kill_file()
        if self.monotonic() >= self._next_sync_s:
            exits += self.sync()
        return exits

    def poll(self, timeout_s: float = 0.0) -> int:
        """Handle the user stream's events (waiting up to ``timeout_s`` for the first), judge the stream's
        health and the kill file, reconcile after a gap; return the exits seen. The actor calls it
        between market events: an exit's sibling is cancelled no later than the next call."""
        exits = self._pump(timeout_s)
        self._kill_file()
        return exits

    def on_bars(self, bars: Sequence[BarClose]) -> int:
        """Mark the mirror at the bars' mark closes and apply the daily loss limit (close request)."""
        self._pump()
        marks = {
            b.symbol: b.mark_close for b in bars if b.symbol in self.entries and math.isfinite(b.mark_close)
        }
        if not bars:
            return 0
        ts = max(int(b.ts_ms) for b in bars) + self.cfg.sim.bar_ms
        if ts // 60_000 > self._snapshot_minute:  # once a minute, off the order path
            self._snapshot_minute = ts // 60_000
            self.snapshots.request(ts)
        if marks and self.sim.mark_bar_close(ts, marks):  # the paper book's rule: flatten at the close
            self._kill_events(self.kill.daily_loss(self.wall_ms()))
            return self.flatten("FLATTEN")
        if self.kill.close_positions and self.entries:
            return self.flatten("KILL")
        return 0

    def sync(self) -> int:
        """One reconciliation round; drop from the mirror the positions the venue no longer holds."""
        exits = self._drain()
        self._sync_due = False
        self._next_sync_s = self.monotonic() + self.cfg.reconciler.interval_s
        report = self.reconciler.run_once()
        self.stats.sync_runs += 1
        held = {p.symbol for p in self.trading.positions() if p.positionAmt != 0}
        for symbol in [s for s in self.entries if s not in held]:
            self._closed(symbol, "VENUE")
            exits += 1
        self._settle_finals()
        if not report.consistent:
            log.info("live: reconciliation %s", report.format(max_lines=10))
        return exits

    def _closed(self, symbol: str, reason: str, *, cancel: bool = True, price: float | None = None) -> None:
        """The venue no longer holds ``symbol``'s position: cancel what is left of its protection (the
        sibling of the one that filled; gone counts as cancelled) unless the caller did, and drop it
        from the mirror (closed at ``price`` when known, else at its last mark)."""
        entry = self.entries.pop(symbol, None)
        if entry is not None and cancel:
            for role in _ROLES:
                cancel_protection(self.trading, symbol, client_id(entry.plan.decision_key, role))
        self._exit_fills.pop(symbol, None)
        trade = self._trades.pop(symbol, None)
        if trade is not None:
            self._finals[trade.trade_group_id] = (trade, reason)
        for links in (self._children, self._unlinked):
            for key in [k for k in links if k[0] == symbol]:
                del links[key]
        pos = self.sim.position(symbol)
        now = self.wall_ms()
        if pos is not None:
            self.sim.close_position(symbol, now, pos.mark_price if price is None else price, reason="FLATTEN")
        self.stats.exits += 1
        self._audit("exit", now, symbol=symbol, reason=reason)

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
        self._settle_finals()
        return len(closed)

    # --- user data stream --------------------------------------------------------------------------
    def _pump(self, timeout_s: float = 0.0) -> int:
        """Drain the stream's events, judge its health, and reconcile when a gap asks for it."""
        exits = self._drain(timeout_s)
        self._judge_stream()
        if self._sync_due:
            exits += self.sync()
        return exits

    def _drain(self, timeout_s: float = 0.0) -> int:
        """Handle the queued stream events in arrival order: venue actions first (a sibling's cancel),
        then one ledger write of their order, algo-order and fill records. Return the exits seen."""
        if self.stream is None:
            return 0
        records: list[Any] = []
        exits = 0
        for arrival in self.stream.take(timeout_s):
            exits += self._on_event(arrival, records)
        if records:
            self._write(records)
        if self._finals:
            self._settle_finals()
        return exits

    def _on_event(self, arrival: Arrival, records: list[Any]) -> int:
        event = arrival.event
        if isinstance(event, OrderTradeUpdateEvent):
            order, _ = order_of_update(event)  # its fill comes as the UserFill that follows
            records.append(order)
            o = event.o
            if o.c.startswith(_LIQUIDATION_PREFIXES) or "LIQUIDATION" in (o.o, o.ot):
                return self._liquidated(event)
        elif isinstance(event, AlgoUpdateEvent):
            algo = algo_of_update(event)
            records.append(algo)
            return self._protection_update(algo.symbol, algo.client_algo_id, algo.status, algo.child_order_id)
        elif isinstance(event, UserFill):
            records.append(_fill_of(event))
            self._audit("fill", event.ts_ms, symbol=event.symbol, trade_id=event.trade_id, order_id=event.order_id,
                        qty=event.qty, price=event.price, source=event.source)  # fmt: skip
            return self._protection_fill(arrival)
        elif isinstance(event, Gap):
            self.stats.gaps += 1
            self._sync_due = True
            log.info(
                "live: user stream gap of %d ms (%s): reconciling",
                event.end_ms - event.start_ms,
                event.reason,
            )
        elif isinstance(event, MarginCallEvent):
            positions = [
                {"symbol": p.s, "qty": str(p.pa), "mark": str(p.mp), "maint_margin": str(p.mm)}
                for p in event.p
            ]
            self._risk_event(event.E, "margin_call", positions[0]["symbol"] if len(positions) == 1 else None, 2,
                             f"margin call on {', '.join(p['symbol'] for p in positions) or 'the account'}",
                             {"positions": positions})  # fmt: skip
        elif isinstance(event, MalformedEvent):
            self._sync_due = True  # it may have reported a fill or a state: the venue's record decides
            self._risk_event(event.received_ms, "user_event_malformed", None, 1,
                             f"malformed user event: {event.error.reason}", {"detail": event.error.detail[:300]})  # fmt: skip
        elif isinstance(event, AccountUpdateEvent):
            log.debug("live: ACCOUNT_UPDATE %s (positions are reconciled)", event.a.m)
        else:
            log.debug("live: user event %s", type(event).__name__)
        return 0

    def _role(self, symbol: str, client_order_id: str | None, order_id: int) -> Role | None:
        """Which protection of ``symbol``'s open entry placed this order: by the algo's client id (the
        child carries it), else by the child order id ALGO_UPDATE linked; None when neither."""
        entry = self.entries.get(symbol)
        if entry is None:
            return None
        for role in _ROLES:
            if client_order_id == client_id(entry.plan.decision_key, role):
                return role
        return self._children.get((symbol, order_id))

    def _protection_update(
        self, symbol: str, client_algo_id: str, status: str, child_order_id: int | None
    ) -> int:
        """An ALGO_UPDATE: link a protection's child order (and handle its fills that came first); a
        protection gone without a fill leaves the position naked: reconcile (protect or flatten)."""
        entry = self.entries.get(symbol)
        role = self._role(symbol, client_algo_id, -1)
        if entry is None or role is None:
            return 0
        if status in _PROTECTION_GONE:
            self._sync_due = True
            self._risk_event(self.wall_ms(), "protection_gone", symbol, 2, f"{symbol} {role} is {status} on the venue",
                             {"client_algo_id": client_algo_id, "status": status})  # fmt: skip
        if child_order_id is None:
            return 0
        self._children[(symbol, child_order_id)] = role
        return sum(self._protection_fill(a) for a in self._unlinked.pop((symbol, child_order_id), []))

    def _protection_fill(self, arrival: Arrival) -> int:
        """A fill: when it is of an entry's SL or TP child and the protections' fills cover the entry's
        quantity, the position is flat: cancel the sibling now, drop the entry. Return 1 on that exit."""
        fill = arrival.event
        assert isinstance(fill, UserFill)
        entry = self.entries.get(fill.symbol)
        if entry is None or fill.client_order_id == client_id(entry.plan.decision_key, "entry"):
            return 0
        role = self._role(fill.symbol, fill.client_order_id, fill.order_id)
        if role is None:
            if fill.side == entry.plan.closing_side:  # perhaps a child whose link (``ai``) comes later
                self._unlinked.setdefault((fill.symbol, fill.order_id), []).append(arrival)
            return 0
        closed = self._exit_fills.setdefault(fill.symbol, {})
        closed[fill.trade_id] = fill.qty
        if sum(closed.values()) < entry.filled_qty:
            return 0  # partly closed: the sibling still protects the rest
        gone = cancel_sibling(self.trading, fill.symbol, entry.plan.decision_key, role)
        cancel_ms = (time.monotonic() - arrival.arrived_s) * 1000.0
        self.stats.sibling_cancel_ms.append(cancel_ms)
        self.stats.stream_exits += 1
        if not gone:  # it may still rest: the next reconciliation's sweep cancels the orphan
            log.warning("live: %s's sibling of the filled %s may still rest; reconciling", fill.symbol, role)
            self._next_sync_s = 0.0
        log.info(
            "live: %s %s filled; sibling cancelled %.1f ms after the fill event", fill.symbol, role, cancel_ms
        )
        self._closed(fill.symbol, role.upper(), cancel=False, price=float(fill.price))
        return 1

    def _liquidated(self, event: OrderTradeUpdateEvent) -> int:
        """The venue closed a position itself: a risk event (once per order); the entry is dropped and
        its protections cancelled when the close is complete; reconcile what is left."""
        o = event.o
        self._sync_due = True
        if (o.s, o.i) not in self._liquidations:
            self._liquidations.add((o.s, o.i))
            self.stats.liquidations += 1
            self._risk_event(o.T, "liquidation", o.s, 2, f"{o.s} closed by the venue ({o.c or o.ot}): {o.X} {o.z}",
                             {"order_id": o.i, "status": o.X, "qty": str(o.z), "avg_price": str(o.ap)})  # fmt: skip
        if o.s in self.entries and o.X == "FILLED":
            self._closed(o.s, "LIQUIDATION", price=float(o.ap) or None)
            return 1
        return 0

    def _write(self, records: list[Any]) -> None:
        """Write the stream's records in one transaction; on failure one by one, so that one refused
        record loses no other; what cannot be written is left to the next reconciliation."""
        try:
            self.store.record(records)
            return
        except Exception:
            log.exception("live: writing %d user-stream records failed; retrying one by one", len(records))
        for record in records:
            try:
                self.store.record([record])
            except Exception as e:
                log.error(
                    "live: %s not written (%s: %s); reconciling", type(record).__name__, type(e).__name__, e
                )
                self._next_sync_s = 0.0

    def _judge_stream(self) -> None:
        """The stream's silence (no message and no pong) and closure against the kill switch's bounds."""
        if self.stream is None:
            return
        health = self.stream.health()
        now = self.wall_ms()
        if health.ended is not None:
            self._kill_events(self.kill.user_stream_closed(now, None))
            return
        last_ms = now - health.silent_ms
        if health.connected:
            self._stream_closed_ms = None
        else:
            if self._stream_closed_ms is None:
                self._stream_closed_ms = last_ms
            self._kill_events(self.kill.user_stream_closed(now, self._stream_closed_ms))
        self._kill_events(self.kill.user_stream_silent(now, last_ms))

    # --- kill switch -------------------------------------------------------------------------------
    def _kill_file(self) -> None:
        now = self.wall_ms()
        if self.cfg.kill_file is not None:
            self._kill_events(self.kill.file(now, self.cfg.kill_file.exists()))
        self._kill_from_operator(now)
        if self._last_tick_ms:
            self._kill_events(self.kill.market_data(now, self._last_tick_ms))

    def _kill_from_operator(self, now: int) -> None:
        """Take a kill or a resume another process recorded (``raytrade kill`` / ``resume``), at most once
        a second: the newest ``killswitch.*`` row, when it is not one of ours."""
        if self.monotonic() < self._next_kill_read_s:
            return
        self._next_kill_read_s = self.monotonic() + 1.0
        self._controls_from_operator()
        stored = killswitch_store.latest_state(self.engine)
        if stored is None or (stored.ts_ms, stored.kind, stored.source) == self._kill_row_seen:
            return
        self._kill_row_seen = (stored.ts_ms, stored.kind, stored.source)
        if stored.state.active and not self.kill.active:
            self.kill_switch(stored.state.close_positions, source=stored.source)
        elif not stored.state.active and self.kill.active:
            self.resume(source=stored.source)

    def _controls_from_operator(self) -> None:
        """Take the trading state and runtime settings written since the last read (the caller limits
        this to once a second)."""
        controls = trading_control.read_controls(self.engine, self._controls_id)
        self._controls_id = controls.last_id
        if controls.settings is not None:
            values, risk, lim = controls.settings.values, self.cfg.risk, self.sim.lim
            positions, loss = values.get("max_positions"), values.get("daily_loss_limit_pct")
            delay = values.get("max_entry_delay_ms")
            lim[sim_kernel.L_MAX_POSITIONS] = (
                risk.max_positions if positions is None else min(risk.max_positions, positions)
            )
            lim[sim_kernel.L_DAILY_LOSS_PCT] = (
                risk.daily_loss_limit_pct if loss is None else min(risk.daily_loss_limit_pct, loss)
            )
            self.entry_delay_ms = self.cfg.max_entry_delay_ms if delay is None else min(self.cfg.max_entry_delay_ms, delay)  # fmt: skip
        t = controls.trading
        if t is None:
            return
        before, self.trading_state = self.trading_state, t.state
        now = self.wall_ms()
        if t.state == "stopped" and t.id != self._stop_done_id:
            self._stop_done_id = t.id
            self._risk_event(now, "trading_stopped", None, 2, f"trading stopped ({t.source}): flattening",
                             {"reason": t.reason, "source": t.source})  # fmt: skip
            self.flatten("STOP")
        elif t.state != before:
            what = {"running": "trading_started", "entries_stopped": "entries_stopped"}.get(t.state, t.state)
            self._risk_event(now, what, None, 1, f"{what.replace('_', ' ')} ({t.source})",
                             {"reason": t.reason, "source": t.source})  # fmt: skip

    def kill_switch(self, close_positions: bool, source: str = "operator") -> dict[str, Any]:
        """Activate the kill switch (and with ``close_positions`` cancel everything and flatten)."""
        self._kill_events(self.kill.operator(self.wall_ms(), close_positions, source))
        if close_positions:
            self.flatten("KILL")
        return {"active": self.kill.active, "close_positions": self.kill.close_positions}

    def resume(self, source: str = "operator") -> dict[str, Any]:
        """Deactivate the kill switch, unless a condition still holds (the kill file, stale data, …)."""
        self._pump()
        self._kill_file()
        events = self.kill.resume(self.wall_ms(), source)
        self._kill_events(events)
        return {"active": self.kill.active, "events": [e.kind for e in events]}

    def _kill_events(self, events: Sequence[KillSwitchEvent]) -> None:
        if not events:
            return
        rows = killswitch_store.event_rows(events, self.kill.state())  # the state after them: CLI reads it
        killswitch_store.record(self.engine, rows)
        last = rows[-1]
        self._kill_row_seen = (int(last["ts"]), str(last["kind"]), str(last["source"]))
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
        protect = np.array(s.protect_ms) if s.protect_ms else None
        positions = {k: str(p.qty) for k, p in self.store.positions().items() if p.qty != 0}
        return {
            "session_id": self.cfg.session_id, "mode": self.cfg.mode, "entries": s.entries, "protected": s.protected,
            "flattened": s.flattened, "rejected": s.rejected, "unresolved": s.unresolved, "blocked": s.blocked,
            "exits": s.exits, "naked_ms_max": float(naked.max()), "protect_p50_ms": math.nan if protect is None else float(np.percentile(protect, 50)),
            "protect_p99_ms": math.nan if protect is None else float(np.percentile(protect, 99)), "kill_switch": self.kill.active,
            "open_positions": sorted(self.entries), "ledger_positions": positions, "equity": self.equity,
            "sync_runs": s.sync_runs, "kill_events": s.kill_events, "stream_exits": s.stream_exits,
            "sibling_cancel_ms_max": max(s.sibling_cancel_ms, default=float("nan")),
            "liquidations": s.liquidations, "user_stream_gaps": s.gaps,
            "user_stream_connected": None if self.stream is None else self.stream.health().connected,
        }  # fmt: skip

    def open_positions(self) -> dict[str, dict[str, Any]]:
        """The positions this book holds — its protected entries, the ones its close path closes (after
        the user stream's queued events, so an SL/TP fill already heard is gone): symbol → side (±1),
        qty (the entry's filled base quantity), entry price (its average fill) and entry time (ms, the
        mirror's open; the decision bar's close when the mirror lacks it)."""
        self._pump()
        out: dict[str, dict[str, Any]] = {}
        for symbol, entry in self.entries.items():
            plan = entry.plan
            mirror = self.sim.position(symbol)
            entry_ts = (int(mirror.entry_ts_ms) if mirror is not None
                        else int(plan.decision_key.rsplit(":", 1)[1]) + self.cfg.sim.bar_ms)  # fmt: skip
            out[symbol] = {"side": 1 if plan.side == "LONG" else -1, "qty": float(entry.filled_qty),
                           "entry_price": float(entry.avg_price), "entry_ts_ms": entry_ts}  # fmt: skip
        return out

    def trades(self) -> list[dict[str, Any]]:
        return self.sim.trades().to_dict("records")

    def close(self) -> None:
        """Stop the user stream (what it delivered goes to the ledger first), then the client and database."""
        try:
            if self.stream is not None:
                self.stream.stop()
                self._drain()
        finally:
            self.stream = None
            self.snapshots.close()
            self.trading.close()
            self.engine.dispose()


class AccountSnapshots:
    """A thread writing the venue's account as ``account_snapshots`` rows when asked (module docstring):
    ``request(ts_ms)`` returns at once; the newest request waiting is the one served."""

    def __init__(self, trading: TradingConfig, engine: Any, mode: str, session_id: str,
                 clock_offset_ms: Callable[[], int]) -> None:  # fmt: skip
        self.engine, self.mode, self.session_id = engine, mode, session_id
        self._offset = clock_offset_ms
        self._http = SignedTransport(trading)  # its own session: never shared with the order path
        self._queue: queue.Queue[int | None] = queue.Queue()
        self.written = self.missed = 0
        self._thread = threading.Thread(target=self._run, name="live-account", daemon=True)
        self._thread.start()

    def request(self, ts_ms: int) -> None:
        self._queue.put(int(ts_ms))

    def flush(self) -> None:
        """Wait until every request so far was served (tests, shutdown)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            ts = self._queue.get()
            try:
                if ts is None:
                    return
                self._snapshot(ts)
            finally:
                self._queue.task_done()

    def _snapshot(self, ts: int) -> None:
        try:
            self._http.clock_offset_ms = self._offset()
            write_snapshot(self.engine, snapshot_row(ts, self.mode, fetch_account(self._http).snapshot()))
            self.written += 1
        except Exception as e:
            self.missed += 1
            message = f"account snapshot of {ts} not written: {type(e).__name__}: {str(e)[:200]}"
            log.warning("live: %s", message)
            try:
                write_rows(self.engine, "risk_events", [{"ts": ts, "event_type": "account_snapshot_missed",
                                                         "symbol": None, "severity": 1, "message": message,
                                                         "details": {"session": self.session_id}}])  # fmt: skip
            except Exception:
                log.exception("live: could not record the missed account snapshot")

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._http.close()


def _fill_of(f: UserFill) -> Fill:
    """A stream or backfilled fill as the ledger's ``Fill``."""
    return Fill(
        symbol=f.symbol, trade_id=f.trade_id, order_id=f.order_id, side=f.side, price=f.price, qty=f.qty,
        commission=f.fee, commission_asset=f.fee_asset or None, time_ms=f.ts_ms, client_order_id=f.client_order_id,
        realized_pnl=f.realized_pnl, is_maker=f.is_maker,
    )  # fmt: skip
