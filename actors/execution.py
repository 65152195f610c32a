"""The risk/execution actor: the single writer of positions (seed 000 §3, §5; spec 001 §15.2).

One named, detached, restartable Ray actor holds the book. In shadow mode its exchange is the paper
exchange of ``core.sim`` (the ``FillSimulator`` the backtest runs): an entry intent passes the
hard risk guards and fills at the book's ask (long) or bid (short) with the simulator's slippage
and fees; SL/TP are checked on every mark update (exit at bid/ask) and on every closed 1m bar
(the backtest's bar rule, which also runs time exits and funding).

Persistence. Every entry and exit is written in one database transaction with a snapshot of the
simulator's book (``FillSimulator.book_state``: account and position arrays; an ``events`` row of
kind ``execution.state``). The ``positions`` table gets an ``entry`` row when a position opens and
a ``FINAL`` row when it closes, both keyed by ``trade_group_id`` = ``<session>:<symbol>:<decision
ts>``. A restarted actor (Ray restarts it after a crash; ``max_restarts=-1``) restores the book
from the newest snapshot of its session (``FillSimulator.restore_book``) and checks it against the
open ``entry`` rows; a disagreement stops the actor with a clear error instead of trading on a book
it cannot trust.

A late intent is refused (``SIGNAL_STALE``): an entry must fill within ``max_entry_delay_ms`` of
its decision bar's close, or the price it was decided on no longer holds.

No double entry: an intent is refused when the symbol already holds a position (the simulator's
``POSITION_OPEN``), when its trade group already exists in the database (a re-delivered intent),
or while another entry of the symbol is being processed (the entry lock).

The backtest's rules at a bar boundary (``core.sim.kernel.portfolio_bar``), so that a shadow session
admits and closes what the backtest of the same window does:

- Daily loss limit. Once every held symbol's bar has run (``on_bars``), the book is marked at the
  bar's mark closes and the limit is checked (``FillSimulator.mark_bar_close``); when it fired —
  there, or earlier on a mark tick, which also disables entries at once — every position is closed
  at the bar's close (the next bar's open in the backtest) at the book's bid (long) or ask (short),
  with exit reason FLATTEN and a ``daily_loss_flatten`` risk event. Should a held symbol's bar never
  come, the first tick ``max_entry_delay_ms`` after the bar's close flattens instead.
- Entries of one decision bar. A decider reports the symbols it decided on each close
  (``submit(intents, decision_ts, symbols)``); the bar's entries wait until every symbol of the book
  was reported (or a later bar shows up), then go in the book's symbol order — the backtest's panel
  order — each sized on the book's equity with the held positions marked at that bar's mark closes
  (the backtest's equity at the next open), after a pending daily-loss flatten. So when
  ``max_positions`` or a notional limit binds, the same symbols win. An intent submitted without a
  decision bar report (``decision_ts=None``) is admitted at once, in symbol order within the call.
- Closes (``CloseIntent``: the RL agent's CLOSE, or a reversal's close before its entry) run at once
  in a submit, before the bar's entries — the backtest's signal exits precede its entries at the next
  open (``rl.env``'s CLOSE and reversal) — and are never refused by the guards. The position (on the
  intent's side, entered on an earlier decision bar) closes at the book's bid (long) or ask (short),
  else the bar's close, else the last mark, as the daily loss flatten does, through the simulator's
  per-symbol market exit (``FillSimulator.close_position``, reason SIGNAL: the env's CLOSE) with the
  bar's volume; its ``FINAL`` row carries the intent's reason (``RL_CLOSE``). A close whose client id
  was seen, or that finds no such position, closes nothing (``DUPLICATE_INTENT``, ``FLAT``).

The operator's controls, read at most once a second of wall time on a tick, a bar or a submit (one
query: ``storage.trading_control.read_controls``, the control rows written since the last read):

- The kill switch's newest ``killswitch.*`` row (``raytrade kill``/``resume``, ``POST /api/killswitch``):
  active blocks every entry (``KILL_SWITCH``), with ``close_positions`` every position is flattened
  (``KILL``); inactive allows entries again.
- The trading state (``trading.*``): ``entries_stopped`` refuses entries (``ENTRIES_STOPPED``, counted
  as blocked, a risk event each) while exits and the bar rule run on; ``stopped`` refuses them
  (``TRADING_STOPPED``) and flattens every position once per stop row (``STOP``); ``running`` allows them.
- The runtime settings (``settings.update``): ``max_positions``, ``daily_loss_limit_pct`` and
  ``max_entry_delay_ms``, each applied as ``min(config, setting)``.

The account (wallet, equity, margin, positions) is published on ``account.update`` and written as an
``account.snapshot`` row when it changed, at most once a second of wall time; and at each minute close
(``on_bars``) as an ``account_snapshots`` row (``storage.account``) at that close's time, once a minute.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from core.config import RiskConfig
from core.jsonsafe import json_safe
from core.messages import (
    EXECUTION_ACTOR_NAME,
    AccountUpdate,
    BarClose,
    CloseIntent,
    EntryIntent,
    MarketTick,
    PositionUpdate,
    RiskEvent,
    Topic,
)
from core.sim import BookState, FillSimulator, SimConfig
from core.sim import kernel as sim_kernel
from storage import db, trading_control
from storage.account import snapshot_row, write_snapshot
from storage.bulk import write_rows
from storage.bus import Bus, open_bus
from storage.schema import events, positions

log = logging.getLogger(__name__)

STATE_EVENT = "execution.state"
_SIDE = {1: "LONG", -1: "SHORT"}


class ExecutionConfig(BaseModel):
    """What the execution actor needs; plain data so a restart rebuilds the same actor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str = Field(min_length=1, description="shadow session; keys trade groups and snapshots")
    symbols: tuple[str, ...]
    database_url: str
    redis_url: str | None = None
    mode: str = "shadow"
    sim: SimConfig = Field(default_factory=SimConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    max_entry_delay_ms: int = Field(
        60_000,
        gt=0,
        description="an entry must fill within this long after its decision bar closed (venue ms)",
    )


@dataclass(slots=True)
class EntryResult:
    symbol: str
    decision_ts: int
    filled: bool
    reasons: tuple[str, ...] = ()
    trade_group_id: str | None = None
    price: float | None = None
    kind: str = "entry"  # "close": the answer to a CloseIntent (filled = the position was closed)


@dataclass(slots=True)
class SessionStats:
    entries: int = 0
    blocked: int = 0
    duplicates: int = 0
    exits: int = 0
    wins: int = 0
    realized_pnl: float = 0.0
    fees: float = 0.0
    exit_reasons: dict[str, int] = field(default_factory=dict)
    restarts_recovered: int = 0


def trade_group_id(session_id: str, symbol: str, decision_ts: int) -> str:
    """The trade group of an entry decided on bar ``decision_ts``: unique per session and symbol-bar."""
    return f"{session_id}:{symbol}:{int(decision_ts)}"


def _group_ts(group: str) -> int:
    """The decision bar of a trade group ``<session>:<symbol>:<decision ts>``."""
    return int(group.rsplit(":", 1)[1])


def _json_array(a: np.ndarray) -> list[Any]:
    return json_safe(a.ravel())  # NaN as None, ±inf as "inf"/"-inf": _from_json reads both back


def _from_json(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], np.float64)


class ExecutionBook:
    """The actor's logic without Ray (tests drive it directly; the actor wraps it)."""

    def __init__(self, cfg: ExecutionConfig, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.monotonic = monotonic
        self.engine = db.make_engine(cfg.database_url)
        self.bus: Bus = open_bus(cfg.redis_url)
        self.sim = FillSimulator(cfg.symbols, cfg.sim, cfg.risk)
        self.stats = SessionStats()
        self._groups: dict[str, str] = {}  # symbol → trade_group_id of its open position
        self._locked: set[str] = set()
        self._last_ts = 0
        self._pending: dict[int, list[EntryIntent]] = {}  # decision bar → intents waiting for the bar
        self._reported: dict[int, set[str]] = {}  # decision bar → symbols whose decision came
        self._closes: dict[str, BarClose] = {}  # symbol → its last closed bar
        self._quotes: dict[str, tuple[float, float]] = {}  # symbol → last (bid, ask) of its ticks
        self._closes_seen: set[str] = set()  # client ids of the close intents taken
        self._flatten_due_ms: int | None = None  # a requested flatten runs at the latest then
        self._controls_id = 0  # the last control row read (kill switch, trading state, settings)
        self._next_controls_s = 0.0
        self.trading_state = "running"
        self._stop_done_id = 0  # the trading.stop row whose flatten ran
        self.entry_delay_ms = cfg.max_entry_delay_ms  # min(config, the runtime setting)
        self._next_account_s = 0.0
        self._account_sent: tuple[float, float, int] | None = None
        self._snapshot_minute = -1  # the minute of the last account_snapshots row written
        self._recover()
        _warm_kernels(cfg)

    # --- recovery ----------------------------------------------------------------------------------
    def _recover(self) -> None:
        with self.engine.connect() as conn:
            snap = conn.execute(
                sa.select(events.c.payload)
                .where(events.c.kind == STATE_EVENT, events.c.source == self._source)
                .order_by(events.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            open_rows = self._open_entries(conn)
            finals = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(positions.c.realized_pnl), 0.0))
                .where(positions.c.event_type == "FINAL", positions.c.trade_group_id.like(f"{self.cfg.session_id}:%"))
            ).one()  # fmt: skip
        if snap is None:
            if open_rows:
                raise RuntimeError(
                    f"execution: {len(open_rows)} open positions of session {self.cfg.session_id} in the database "
                    "but no state snapshot: refusing to trade on an unknown book"
                )
            return
        if tuple(snap["symbols"]) != self.sim.symbols:
            raise RuntimeError(
                f"execution: the snapshot of session {self.cfg.session_id} holds symbols {snap['symbols']}, "
                f"this actor {list(self.sim.symbols)}: start a new session for another universe"
            )
        self.sim.restore_book(BookState(self.sim.symbols, _from_json(snap["acct"]), _from_json(snap["pos"])))
        self._groups = dict(snap["groups"])
        self._last_ts = int(snap["ts"])
        held = {s for s in self.sim.symbols if s in self.sim.positions()}
        if held != set(open_rows) or any(self._groups.get(s) != open_rows[s] for s in held):
            raise RuntimeError(
                f"execution: snapshot positions {sorted(held)} disagree with the open entries "
                f"{sorted(open_rows)} of session {self.cfg.session_id}"
            )
        self.stats.exits, self.stats.realized_pnl = int(finals[0]), float(finals[1])
        self.stats.restarts_recovered += 1
        log.warning("execution: recovered session %s with %d open positions", self.cfg.session_id, len(held))

    @property
    def _source(self) -> str:
        return f"execution:{self.cfg.mode}:{self.cfg.session_id}"

    def _open_entries(self, conn: sa.Connection) -> dict[str, str]:
        """symbol → trade_group_id of this session's entries without a FINAL row."""
        final = sa.select(positions.c.trade_group_id).where(positions.c.event_type == "FINAL")
        rows = conn.execute(
            sa.select(positions.c.symbol, positions.c.trade_group_id).where(
                positions.c.event_type == "entry",
                positions.c.trade_group_id.like(f"{self.cfg.session_id}:%"),
                positions.c.trade_group_id.not_in(final),
            )
        ).all()
        return {r.symbol: r.trade_group_id for r in rows}

    def _state_row(self, ts: int) -> dict[str, Any]:
        book = self.sim.book_state()
        payload = {
            "symbols": list(book.symbols), "acct": _json_array(book.account), "pos": _json_array(book.positions),
            "groups": self._groups, "ts": int(ts),
        }  # fmt: skip
        return {
            "ts": int(ts),
            "kind": STATE_EVENT,
            "source": self._source,
            "symbol": None,
            "payload": payload,
        }

    # --- entries -----------------------------------------------------------------------------------
    def submit(
        self,
        intents: Sequence[EntryIntent | CloseIntent],
        decision_ts: int | None = None,
        symbols: Sequence[str] | None = None,
    ) -> list[EntryResult]:
        """Take the entries (and closes) decided on the close of bar ``decision_ts`` for ``symbols`` (a
        decider's report of one close: every symbol it decided, entering or not); one result per intent,
        in ``intents``' order (a close's has ``kind`` "close").

        Closes run now, before any entry of the call. With a report, the bar's entries are admitted
        once every symbol of the book was reported (or a later bar shows up), in the book's symbol
        order; until then an entry's result says ``PENDING``. Without one (``decision_ts`` None) the
        entries are admitted now, in symbol order.
        """
        self.read_controls()
        if decision_ts is not None:
            self._admit_before(int(decision_ts))  # an earlier bar's entries go before this bar's closes
        closed = {id(c): self._close(c) for c in intents if isinstance(c, CloseIntent)}
        entries = [i for i in intents if not isinstance(i, CloseIntent)]
        if decision_ts is None:
            admitted = self._admit(entries)
            done = {(r.symbol, r.decision_ts): r for r in admitted}
        else:
            bar = int(decision_ts)
            self._pending.setdefault(bar, []).extend(entries)
            reported = self._reported.setdefault(bar, set())
            reported.update(symbols or ())
            reported.update(i.symbol for i in entries)
            if reported.issuperset(self.sim.symbols):
                done = {(r.symbol, r.decision_ts): r for r in self._admit_bar(bar)}
            else:
                done = {
                    (i.symbol, i.decision_ts): EntryResult(i.symbol, i.decision_ts, filled=False, reasons=("PENDING",))
                    for i in entries
                }  # fmt: skip
        return [
            closed[id(i)] if isinstance(i, CloseIntent) else done[(i.symbol, i.decision_ts)] for i in intents
        ]

    def _close(self, ci: CloseIntent) -> EntryResult:
        """Close ``ci.symbol``'s position now, never refused by the guards (module docstring, "Closes")."""
        result = EntryResult(ci.symbol, int(ci.decision_ts), filled=False, kind="close")
        if ci.client_id in self._closes_seen:
            self.stats.duplicates += 1
            result.reasons = ("DUPLICATE_INTENT",)
            return result
        pos = self.sim.position(ci.symbol)
        group = self._groups.get(ci.symbol)
        if (pos is None or group is None or (ci.side and pos.side != ci.side)
                or _group_ts(group) >= int(ci.decision_ts)):  # fmt: skip
            result.reasons = ("FLAT",)  # nothing it may close (a retry of a done close lands here too)
            return result
        self._closes_seen.add(ci.client_id)  # the closes that acted: as many as trades
        ts = max(int(ci.decision_ts) + self.cfg.sim.bar_ms, self._last_ts)
        self._last_ts = ts
        price, volume = self._exit_quote(ci.symbol, pos)
        assert self.sim.close_position(ci.symbol, ts, price, reason="SIGNAL", quote_volume_usdt=volume)
        self._final(ci.symbol, ts, ci.reason)
        trade = self.sim.trades().iloc[-1]
        result.filled, result.trade_group_id, result.price = True, group, float(trade["exit_price"])
        return result

    def _exit_quote(self, symbol: str, pos: Any) -> tuple[float, float | None]:
        """Where a market exit of ``symbol``'s position fills before slippage: the book's bid (long) or ask
        (short), else the last bar's close, else the last mark; and the last bar's quote volume."""
        quote = self._quotes.get(symbol)
        bar = self._closes.get(symbol)
        price = math.nan
        if quote is not None:
            price = quote[0] if pos.side > 0 else quote[1]
        if not (math.isfinite(price) and price > 0) and bar is not None:
            price = bar.close
        if not (math.isfinite(price) and price > 0):
            price = pos.mark_price
        volume = bar.quote_volume if bar is not None and math.isfinite(bar.quote_volume) else None
        return float(price), volume

    def _admit_before(self, bar: int) -> None:
        """Admit the waiting entries of decision bars before ``bar`` (a later bar came: they are due)."""
        for b in sorted(b for b in self._reported if b < bar):
            self._admit_bar(b)

    def _admit_bar(self, bar: int) -> list[EntryResult]:
        self._reported.pop(bar, None)
        return self._admit(self._pending.pop(bar, []))

    def _admit(self, intents: list[EntryIntent]) -> list[EntryResult]:
        """Enter ``intents`` as the backtest does at the next open: a pending flatten first, the held
        positions marked at their decision bar's mark close, then one symbol after another in the book's
        order, each sized on the equity after the ones before it."""
        if not intents:
            return []
        bars = {int(i.decision_ts) for i in intents}
        open_ts = max(bars) + self.cfg.sim.bar_ms
        marks = {
            s: b.mark_close for s, b in self._closes.items() if int(b.ts_ms) in bars and s in self._groups
        }
        if marks:
            self.sim.mark_bar_close(max(self._last_ts, open_ts), marks)
        if self.sim.flatten_requested:
            self._flatten_daily_loss(open_ts)
        order = {s: k for k, s in enumerate(self.sim.symbols)}
        ranked = sorted(
            range(len(intents)), key=lambda j: (int(intents[j].decision_ts), order.get(intents[j].symbol, -1))
        )
        results: list[EntryResult | None] = [None] * len(intents)
        for j in ranked:
            results[j] = self._enter(intents[j])
        return [r for r in results if r is not None]

    def _enter(self, it: EntryIntent) -> EntryResult:
        result = EntryResult(it.symbol, it.decision_ts, filled=False)
        group = trade_group_id(self.cfg.session_id, it.symbol, it.decision_ts)
        if it.symbol in self._locked:
            result.reasons = ("ENTRY_LOCKED",)
            return result
        self._locked.add(it.symbol)
        try:
            with self.engine.connect() as conn:
                seen = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(positions)
                    .where(positions.c.trade_group_id == group)
                ).scalar_one()
            if seen:
                self.stats.duplicates += 1
                result.reasons = ("DUPLICATE_INTENT",)
                return result
            ts = max(int(it.book_ts), int(it.decision_ts) + self.cfg.sim.bar_ms, self._last_ts)
            late_ms = ts - (int(it.decision_ts) + self.cfg.sim.bar_ms)
            if self.trading_state != "running":
                self.stats.blocked += 1
                result.reasons = (
                    "ENTRIES_STOPPED" if self.trading_state == "entries_stopped" else "TRADING_STOPPED",
                )
                self._risk_event(ts, it.symbol, result.reasons, it)
                return result
            if late_ms > self.entry_delay_ms:
                self.stats.blocked += 1
                result.reasons = ("SIGNAL_STALE",)
                self._risk_event(ts, it.symbol, result.reasons, it)
                return result
            price = it.ask if it.side > 0 else it.bid
            equity = self.sim.equity
            reasons = self.sim.open_position(
                it.symbol, it.side, ts, price, it.size_fraction * equity, decision_price=it.decision_price,
                atr=it.atr, sl=it.sl_price, tp=it.tp_price, leverage=it.leverage,
                mark_price=it.mark if math.isfinite(it.mark) else None,
                quote_volume_usdt=it.quote_volume if math.isfinite(it.quote_volume) else None,
            )  # fmt: skip
            self._last_ts = ts
            if reasons:
                self.stats.blocked += 1
                result.reasons = reasons
                self._risk_event(ts, it.symbol, reasons, it)
                return result
            pos = self.sim.position(it.symbol)
            assert pos is not None
            self._groups[it.symbol] = group
            row = {
                "trade_group_id": group, "symbol": it.symbol, "ts": ts, "side": _SIDE[pos.side], "event_type": "entry",
                "mode": self.cfg.mode, "amt": pos.qty, "entry_price": pos.entry_price, "mark_price": pos.mark_price,
                "leverage": int(round(pos.leverage)), "margin_type": "ISOLATED",
                "liquidation_price": pos.liquidation_price, "notional": pos.qty * pos.entry_price,
                "sl_price": pos.sl_price, "tp_price": pos.tp_price, "unrealized_pnl": pos.unrealized_pnl_usdt,
                "fees": pos.entry_fee_usdt, "source": self.cfg.mode,
            }  # fmt: skip
            with self.engine.begin() as conn:
                conn.execute(positions.insert(), [row])
                conn.execute(events.insert(), [self._state_row(ts)])
            self.stats.entries += 1
            result.filled, result.trade_group_id, result.price = True, group, pos.entry_price
            self._publish_position(ts, it.symbol)
            return result
        finally:
            self._locked.discard(it.symbol)

    # --- market events -----------------------------------------------------------------------------
    def on_ticks(self, ticks: Sequence[MarketTick]) -> int:
        """Apply mark ticks (latest mark and best bid/ask per symbol); return exits."""
        exits = self.read_controls()
        for t in ticks:
            if math.isfinite(t.bid) and math.isfinite(t.ask):
                self._quotes[t.symbol] = (float(t.bid), float(t.ask))
            self._due(int(t.ts_ms))
            if t.symbol not in self._groups or not math.isfinite(t.mark):
                continue
            ts = max(int(t.ts_ms), self._last_ts)
            reason = self.sim.on_mark(t.symbol, ts, t.mark, bid=t.bid, ask=t.ask)
            self._last_ts = ts
            if reason:
                self._final(t.symbol, ts, reason)
                exits += 1
            if self.sim.flatten_requested and self._flatten_due_ms is None:
                # the limit fired on a tick: entries are off now; the flatten waits for the bar's close
                bar_ms = self.cfg.sim.bar_ms
                self._flatten_due_ms = (ts // bar_ms + 1) * bar_ms + self.cfg.max_entry_delay_ms
        self.publish_account()
        return exits

    def _due(self, ts: int) -> None:
        """What a tick at ``ts`` makes overdue: entries of bars closed longer than the entry delay ago
        (some decider never reported), and a flatten whose bar never completed."""
        late = ts - self.cfg.sim.bar_ms - self.cfg.max_entry_delay_ms
        if any(b < late for b in self._reported):
            self._admit_before(late)
        if self._flatten_due_ms is not None and ts >= self._flatten_due_ms and self.sim.flatten_requested:
            self._flatten_daily_loss(ts)

    def on_bars(self, bars: Sequence[BarClose]) -> int:
        """Run the bar rule on closed 1m bars of held symbols; return exits."""
        exits = self.read_controls()
        if bars:
            self._admit_before(max(int(b.ts_ms) for b in bars))
        for b in bars:
            if math.isfinite(b.mark_close):
                self._closes[b.symbol] = b
            if b.symbol not in self._groups:
                continue
            ts = max(int(b.ts_ms), 0)
            reason = self.sim.on_bar(
                b.symbol, ts, b.open, b.high, b.low, b.close,
                mark=(b.mark_open, b.mark_high, b.mark_low, b.mark_close),
                quote_volume_usdt=b.quote_volume if math.isfinite(b.quote_volume) else None,
                funding_rate=b.funding_rate,
            )  # fmt: skip
            if reason:
                self._final(b.symbol, max(ts + self.cfg.sim.bar_ms, self._last_ts), reason)
                exits += 1
        if bars:
            last = max(int(b.ts_ms) for b in bars)
            self._close_bar(last)
            self.snapshot_account(last + self.cfg.sim.bar_ms)
        self.publish_account()
        return exits

    def _close_bar(self, bar: int) -> None:
        """Once every held symbol's bar ``bar`` ran: the daily loss check at the bar's mark closes, and
        the flatten it requests (the backtest's, at the next open)."""
        held = list(self._groups)
        if any(s not in self._closes or int(self._closes[s].ts_ms) < bar for s in held):
            return  # another group's bars of this minute are still to come
        close_ts = bar + self.cfg.sim.bar_ms
        if held:
            marks = {s: self._closes[s].mark_close for s in held}
            self.sim.mark_bar_close(max(close_ts, self._last_ts), marks)
        if self.sim.flatten_requested:
            self._flatten_daily_loss(close_ts)

    def _flatten_daily_loss(self, ts_ms: int) -> None:
        """Close every position for the daily loss limit at ``ts_ms`` (a bar's close, or later) at the
        book's bid (long) or ask (short), else the last bar's close, else the last mark; FLATTEN."""
        ts = max(int(ts_ms), self._last_ts)
        self._last_ts = ts
        self._flatten_due_ms = None
        held = list(self._groups)
        equity_before, day_pnl = self.sim.equity, self.sim.daily_pnl
        for s in held:
            pos = self.sim.position(s)
            assert pos is not None
            price, volume = self._exit_quote(s, pos)
            self.sim.close_position(s, ts, price, reason="FLATTEN", quote_volume_usdt=volume)
            self._final(s, ts, "FLATTEN")
        self.sim.flatten(ts, reason="FLATTEN")  # nothing is left open: clears the request
        message = (f"daily loss limit: equity {equity_before:.2f} USDT, day PnL {day_pnl:.2f} USDT; "
                   f"flattened {len(held)} positions, entries off until the next UTC day")  # fmt: skip
        details = {"closed": held, "equity_usdt": equity_before, "daily_pnl_usdt": day_pnl,
                   "session": self.cfg.session_id}  # fmt: skip
        self._write_risk_event(ts, "daily_loss_flatten", None, 2, message, details)
        self._publish(Topic.RISK_EVENT, RiskEvent(ts_ms=ts, event_type="daily_loss_flatten", symbol=None,
                                                  severity="critical", message=message, details=details))  # fmt: skip
        log.warning("execution: %s", message)

    def flatten(self, reason: str = "FLATTEN") -> int:
        """Close every position at its last mark (end of a session, operator command)."""
        held = list(self._groups)
        if not held:
            return 0
        # venue time (a replay's clock is not the wall's), 1 ms after the last event the book saw
        ts = self._last_ts + 1 if self._last_ts else int(time.time() * 1000)
        self._last_ts = ts
        # the simulator knows its own exit reasons; the FINAL rows carry ours (KILL, STOP, ...)
        self.sim.flatten(ts, reason=reason if reason in ("SIGNAL", "TIME", "FLATTEN", "END") else "FLATTEN")
        for s in held:
            self._final(s, ts, reason)
        return len(held)

    def _final(self, symbol: str, ts: int, reason: str) -> None:
        trades = self.sim.trades()
        trade = trades[trades["symbol"] == symbol].iloc[-1]
        group = self._groups.pop(symbol)
        row = {
            "trade_group_id": group, "symbol": symbol, "ts": int(trade["exit_ts"]), "side": _SIDE[int(trade["side"])],
            "event_type": "FINAL", "mode": self.cfg.mode, "amt": float(trade["qty"]),
            "entry_price": float(trade["entry_price"]), "exit_price": float(trade["exit_price"]),
            "leverage": int(round(float(trade["leverage"]))), "margin_type": "ISOLATED",
            "notional": float(trade["notional"]), "sl_price": float(trade["sl_price"]),
            "tp_price": float(trade["tp_price"]), "realized_pnl": float(trade["pnl"]), "fees": float(trade["fees"]),
            "funding": float(trade["funding"]), "exit_reason": reason, "source": self.cfg.mode,
        }  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(positions.insert(), [row])
            conn.execute(events.insert(), [self._state_row(ts)])
        self.stats.exits += 1
        self.stats.wins += int(row["realized_pnl"] > 0)
        self.stats.realized_pnl += row["realized_pnl"]
        self.stats.fees += row["fees"]
        self.stats.exit_reasons[reason] = self.stats.exit_reasons.get(reason, 0) + 1
        self._publish_position(ts, symbol)

    # --- operator controls -------------------------------------------------------------------------
    def read_controls(self, force: bool = False) -> int:
        """Take the control rows written since the last read (at most once a second unless ``force``):
        the kill switch, the trading state, the runtime settings. Return the positions closed."""
        if not force and self.monotonic() < self._next_controls_s:
            return 0
        self._next_controls_s = self.monotonic() + 1.0
        try:
            controls = trading_control.read_controls(self.engine, self._controls_id)
        except Exception:  # a database hiccup: keep trading on the controls known, read again later
            log.exception("execution: could not read the operator's controls")
            return 0
        self._controls_id = controls.last_id
        closed = 0
        if controls.settings is not None:
            self._apply_settings(controls.settings.values)
        if controls.kill is not None:
            closed += self._apply_kill(controls.kill)
        if controls.trading is not None:
            closed += self._apply_trading(controls.trading)
        return closed

    def _apply_kill(self, stored: Any) -> int:
        state, held = stored.state, len(self._groups)
        killed = bool(self.sim.acct[sim_kernel.A_KILL_SWITCH])
        if state.active and (not killed or (state.close_positions and held)):
            return int(self.kill_switch(state.close_positions, source=stored.source)["closed"])
        if not state.active and killed:
            self.resume(source=stored.source)
        return 0

    def _apply_trading(self, t: trading_control.TradingState) -> int:
        before, self.trading_state = self.trading_state, t.state
        if t.state == "stopped" and t.id != self._stop_done_id:
            self._stop_done_id = t.id
            held = sorted(self._groups)
            closed = self.flatten("STOP")
            self._control_event("trading_stopped", 2, f"trading stopped ({t.source}): flattened {closed} positions",
                                {"closed": held, "reason": t.reason, "source": t.source})  # fmt: skip
            return closed
        if t.state != before:
            what = {"running": "trading_started", "entries_stopped": "entries_stopped"}.get(t.state, t.state)
            self._control_event(what, 1, f"{what.replace('_', ' ')} ({t.source})", {"reason": t.reason,
                                "source": t.source})  # fmt: skip
        return 0

    def _apply_settings(self, values: Mapping[str, Any]) -> None:
        risk, lim = self.cfg.risk, self.sim.lim
        positions, loss, delay = (
            values.get("max_positions"),
            values.get("daily_loss_limit_pct"),
            values.get("max_entry_delay_ms"),
        )
        lim[sim_kernel.L_MAX_POSITIONS] = (
            risk.max_positions if positions is None else min(risk.max_positions, positions)
        )
        lim[sim_kernel.L_DAILY_LOSS_PCT] = (
            risk.daily_loss_limit_pct if loss is None else min(risk.daily_loss_limit_pct, loss)
        )
        self.entry_delay_ms = self.cfg.max_entry_delay_ms if delay is None else min(self.cfg.max_entry_delay_ms, delay)  # fmt: skip
        log.info("execution: runtime settings %s", dict(values))

    def _control_event(self, event_type: str, severity: int, message: str, details: dict[str, Any]) -> None:
        ts = self._last_ts or int(time.time() * 1000)
        details = details | {"session": self.cfg.session_id}
        self._write_risk_event(ts, event_type, None, severity, message, details)
        self._publish(Topic.RISK_EVENT, RiskEvent(ts_ms=ts, event_type=event_type, symbol=None,
                                                  severity="critical" if severity >= 2 else "info",
                                                  message=message, details=details))  # fmt: skip
        log.warning("execution: %s", message)

    def account(self) -> dict[str, Any]:
        """The book's account now (USDT): wallet, equity, available, unrealized PnL, margin, positions."""
        equity, used = float(self.sim.equity), float(self.sim.used_margin)
        return {"mode": self.cfg.mode, "wallet": float(self.sim.wallet), "equity": equity, "available": equity - used,
                "unrealized_pnl": float(self.sim.unrealized), "margin_used": used, "positions": len(self._groups)}  # fmt: skip

    def account_figures(self) -> dict[str, float]:
        """The simulator's account as ``account_snapshots`` figures (USDT; the margin ratio is the
        positions' maintenance margin at their last marks over the equity)."""
        equity, used = float(self.sim.equity), float(self.sim.used_margin)
        maint = 0.0
        for symbol, pos in self.sim.positions().items():
            terms = self.sim.margin_terms(symbol)
            if terms is not None:
                maint += max(
                    pos.qty * pos.mark_price * terms.maint_margin_rate - terms.maint_amount_usdt, 0.0
                )
        return {"equity": equity, "wallet_balance": float(self.sim.wallet), "unrealized_pnl": float(self.sim.unrealized),
                "available_margin": equity - used, "used_margin": used,
                "margin_ratio": maint / equity if equity > 0 else 0.0}  # fmt: skip

    def snapshot_account(self, ts_ms: int) -> bool:
        """Write the account as an ``account_snapshots`` row at ``ts_ms`` (a minute close), at most once
        per minute; a database error is logged, never raised. Return whether a row was written."""
        minute = int(ts_ms) // 60_000
        if minute <= self._snapshot_minute:
            return False
        self._snapshot_minute = minute
        try:
            write_snapshot(self.engine, snapshot_row(ts_ms, self.cfg.mode, self.account_figures()))
        except Exception:
            log.exception("execution: could not write the account snapshot of %d", ts_ms)
            return False
        return True

    def publish_account(self, force: bool = False) -> bool:
        """Publish the account on ``account.update`` and write its ``account.snapshot`` row when it changed
        since the last one, at most once a second (unless ``force``); return whether it did."""
        if not force and self.monotonic() < self._next_account_s:
            return False
        self._next_account_s = self.monotonic() + 1.0
        account = self.account()
        key = (account["equity"], account["wallet"], account["positions"])
        if key == self._account_sent or not all(map(math.isfinite, key[:2])):
            return False
        self._account_sent = key
        ts = self._last_ts or int(time.time() * 1000)
        try:
            with self.engine.begin() as conn:
                conn.execute(events.insert(), [trading_control.account_row(ts, self._source, account)])
        except Exception:
            log.exception("execution: could not record the account")
        self._publish(Topic.ACCOUNT_UPDATE, AccountUpdate(ts_ms=ts, source=self._source, **account))
        return True

    # --- kill switch -------------------------------------------------------------------------------
    def kill_switch(self, close_positions: bool = False, source: str = "operator") -> dict[str, Any]:
        """Block every entry (the simulator's KILL_SWITCH guard); with ``close_positions`` flatten too."""
        self.sim.set_kill_switch(True)
        ts = self._last_ts or int(time.time() * 1000)
        self._write_risk_event(ts, "kill_switch", None, 2, f"kill switch on ({source})",
                               {"close_positions": close_positions, "session": self.cfg.session_id})  # fmt: skip
        closed = self.flatten("KILL") if close_positions else 0
        return {"active": True, "close_positions": close_positions, "closed": closed}

    def resume(self, source: str = "operator") -> dict[str, Any]:
        """Allow entries again."""
        self.sim.set_kill_switch(False)
        ts = self._last_ts or int(time.time() * 1000)
        self._write_risk_event(ts, "kill_switch_off", None, 1, f"kill switch off ({source})",
                               {"session": self.cfg.session_id})  # fmt: skip
        return {"active": False}

    @property
    def equity(self) -> float:
        return float(self.sim.equity)

    # --- reporting ---------------------------------------------------------------------------------
    def _risk_event(self, ts: int, symbol: str, reasons: tuple[str, ...], it: EntryIntent) -> None:
        details = {"reasons": list(reasons), "intent": {k: v for k, v in asdict(it).items() if not isinstance(v, float)
                                                        or math.isfinite(v)}}  # fmt: skip
        details["session"] = self.cfg.session_id
        message = f"entry {symbol} {_SIDE[it.side]} blocked: {', '.join(reasons)}"
        self._write_risk_event(ts, "entry_blocked", symbol, 1, message, details)
        self._publish(Topic.RISK_EVENT, RiskEvent(ts_ms=ts, event_type="entry_blocked", symbol=symbol,
                                                  severity="info", message=message, details=details))  # fmt: skip

    def _write_risk_event(
        self,
        ts: int,
        event_type: str,
        symbol: str | None,
        severity: int,
        message: str,
        details: dict[str, Any],
    ) -> None:
        # risk_events is unique on (ts, event_type, symbol): a row another session already wrote (a
        # replay of the same window on the same database) is kept, not an error that stops the book
        write_rows(self.engine, "risk_events", [{"ts": ts, "event_type": event_type, "symbol": symbol,
                                                 "severity": severity, "message": message, "details": details}])  # fmt: skip

    def _publish_position(self, ts: int, symbol: str) -> None:
        pos = self.sim.position(symbol)
        msg = PositionUpdate(
            symbol=symbol, ts_ms=ts, qty=0.0 if pos is None else pos.side * pos.qty,
            entry_price=0.0 if pos is None else pos.entry_price,
            unrealized_pnl=0.0 if pos is None else pos.unrealized_pnl_usdt,
            leverage=None if pos is None else int(round(pos.leverage)),
        )  # fmt: skip
        self._publish(Topic.POSITIONS_UPDATE, msg)

    def _publish(self, topic: Topic, msg: Any) -> None:
        try:
            self.bus.publish(topic, msg)
        except Exception:  # the bus is for observers; the database is the record
            log.exception("execution: could not publish on %s", topic)

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "session_id": self.cfg.session_id, "entries": s.entries, "blocked": s.blocked, "duplicates": s.duplicates,
            "exits": s.exits, "wins": s.wins, "win_rate": s.wins / s.exits if s.exits else math.nan,
            "realized_pnl": s.realized_pnl, "fees": s.fees, "exit_reasons": dict(s.exit_reasons),
            "open_positions": sorted(self._groups), "equity": self.sim.equity, "wallet": self.sim.wallet,
            "restarts_recovered": s.restarts_recovered,
        }  # fmt: skip

    def trades(self) -> list[dict[str, Any]]:
        """The simulator's closed trades of this actor's life (the database holds the whole session)."""
        return self.sim.trades().to_dict("records")

    def open_positions(self) -> dict[str, dict[str, Any]]:
        """The book's open positions from its simulator: symbol → side (±1), qty (base asset), entry
        price (the fill, after slippage) and entry time (ms) — what the RL agent's observation needs."""
        return {
            s: {"side": int(p.side), "qty": float(p.qty), "entry_price": float(p.entry_price),
                "entry_ts_ms": int(p.entry_ts_ms)}
            for s, p in self.sim.positions().items()
        }  # fmt: skip

    def close(self) -> None:
        self.bus.close()
        self.engine.dispose()


def execution_actor_class() -> Any:
    """The Ray actor class (built lazily so importing this module needs no Ray)."""
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
    class ExecutionActor:
        """Ray wrapper of ``ExecutionBook``; calls from one caller run in order (a synchronous actor)."""

        def __init__(self, cfg: Any) -> None:
            self.book = make_book(cfg)

        def submit(
            self,
            intents: Sequence[EntryIntent | CloseIntent],
            decision_ts: int | None = None,
            symbols: Sequence[str] | None = None,
        ) -> list[EntryResult]:
            return self.book.submit(intents, decision_ts, symbols)

        def on_ticks(self, ticks: Sequence[MarketTick]) -> int:
            return self.book.on_ticks(ticks)

        def on_bars(self, bars: Sequence[BarClose]) -> int:
            return self.book.on_bars(bars)

        def flatten(self, reason: str = "FLATTEN") -> int:
            return self.book.flatten(reason)

        def summary(self) -> dict[str, Any]:
            return self.book.summary()

        def equity(self) -> float:
            return float(self.book.equity)

        def kill_switch(self, close_positions: bool = False, source: str = "operator") -> dict[str, Any]:
            return self.book.kill_switch(close_positions, source)

        def resume(self, source: str = "operator") -> dict[str, Any]:
            return self.book.resume(source)

        def trades(self) -> list[dict[str, Any]]:
            return self.book.trades()

        def open_positions(self) -> dict[str, dict[str, Any]]:
            return self.book.open_positions()

        def pid(self) -> int:
            import os

            return os.getpid()

    return ExecutionActor


def make_book(cfg: Any) -> Any:
    """The book a config describes: the paper book (``ExecutionConfig``) or the live book of a venue
    (``actors.live_book.LiveConfig``); both answer the same calls."""
    if isinstance(cfg, ExecutionConfig):
        return ExecutionBook(cfg)
    from actors.live_book import LiveBook, LiveConfig

    if isinstance(cfg, LiveConfig):
        return LiveBook(cfg)
    raise TypeError(f"no book for a {type(cfg).__name__}: give an ExecutionConfig or a LiveConfig")


def start_execution_actor(cfg: Any, *, name: str = EXECUTION_ACTOR_NAME, detached: bool = True) -> Any:
    """Create (or get) the named execution actor; detached so it outlives the driver that started it."""
    cls = execution_actor_class()
    options: Mapping[str, Any] = {"name": name, "get_if_exists": True}
    if detached:
        options = {**options, "lifetime": "detached"}
    return cls.options(**options).remote(cfg)


def _warm_kernels(cfg: ExecutionConfig) -> None:
    """Run every simulator event once on a throwaway book, so the first real entry or mark tick does
    not pay for loading the compiled kernels (hundreds of ms)."""
    sim = FillSimulator(cfg.symbols[:1], cfg.sim, cfg.risk)
    s, ts = cfg.symbols[0], 86_400_000
    sim.open_position(s, 1, ts, 100.0, 10.0, atr=1.0, sl=90.0, tp=110.0, mark_price=100.0)
    sim.on_mark(s, ts + 1, 100.0, bid=99.9, ask=100.1)
    sim.on_bar(s, ts, 100.0, 101.0, 99.0, 100.0, mark=(100.0, 101.0, 99.0, 100.0), quote_volume_usdt=1e6)
    sim.flatten(ts + 60_000)
    sim.trades()
