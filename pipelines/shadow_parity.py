"""Backtest ↔ shadow parity: a shadow session's trades beside the backtest's on the same window.

DESIGN.md's invariant "replaying a shadow session's data through the backtester yields the same
trades", as one comparison for the parity test (``tests/integration/test_shadow.py``) and the demo's
shadow replay (``raytrade.demo_shadow``):

- ``load_shadow_trades`` reads a session's closed trades from the ``positions`` table (an ``entry``
  row and a ``FINAL`` row per ``trade_group_id``);
- ``compare_trades`` matches them with the backtest's trades (``core.sim`` trades frame) by
  (symbol, side, entry bar) and checks, for each, the exit kind, the exit bar and the prices.

Identical means: the same set of (symbol, side, entry bar); the same exit kind (SL, TP, TIME, RISK,
END); for every exit but END the same exit bar (a mark tick inside the bar, or the bar rule at its
close). Prices differ by the replay venue's book model, which the backtest does not have: an entry
fills at the book's ask/bid (half-spread max(tick/2, 1 bp·price), ``exchange.venue.replay.book_quote``)
a few ms after the decision bar's close instead of at the next bar's open, so within
``ENTRY_PRICE_REL_TOL``; an SL/TP exit fills at the first mark tick past the trigger instead of at the
trigger price of the bar rule, so within ``EXIT_PRICE_REL_TOL`` (one tick-path step of a 1m bar at
6–60 ticks a minute). An entry decided on the window's last bar fills after it, where the backtest
has no bar: it is left out (``end_ms``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.time import MINUTE_MS, ms_to_text
from storage.schema import positions

#: Entry price: the book's ask/bid after the decision bar's close vs the next bar's open (relative).
ENTRY_PRICE_REL_TOL = 2e-3
#: SL/TP exit price: the first mark tick past the trigger vs the bar rule's trigger price (relative).
EXIT_PRICE_REL_TOL = 1e-2

_SIDE_NAME = {1: "LONG", -1: "SHORT"}


@dataclass(frozen=True, slots=True)
class TradeParity:
    """The comparison of a shadow session's trades with the backtest's on one window.

    ``table``: one row per trade of either side (matched ones side by side); ``problems``: every
    difference in words (empty: identical entries and exits, prices within the book model).
    """

    table: pd.DataFrame
    shadow_trades: int
    backtest_trades: int
    matched: int
    max_entry_diff_bps: float
    max_exit_diff_bps: float
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        """One line: the outcome of the comparison."""
        counts = f"shadow {self.shadow_trades} trades, backtest {self.backtest_trades}"
        if not self.ok:
            return (
                f"DIFFERENT: {counts}; "
                + "; ".join(self.problems[:5])
                + (f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else "")
            )
        if self.shadow_trades == 0:
            return (
                f"identical: no trades on either side ({counts}): the production model entered nothing "
                "on this window, so only the count is compared"
            )
        return (
            f"identical entries and exits ({counts}, all matched); prices within the book model: "
            f"entries ≤ {self.max_entry_diff_bps:.1f} bps (tolerance {ENTRY_PRICE_REL_TOL * 1e4:.0f}), "
            f"exits ≤ {self.max_exit_diff_bps:.1f} bps (tolerance {EXIT_PRICE_REL_TOL * 1e4:.0f})"
        )


@dataclass(frozen=True, slots=True)
class ShadowReplay:
    """What the demo's shadow replay did: the window, the session's counters and the parity with the
    backtest of the same model on the same window."""

    session_id: str
    model_version: str
    start_ms: int
    end_ms: int
    symbols: int
    closes: int
    signals: int
    realized_pnl: float
    wall_s: float
    parity: TradeParity

    def to_dict(self) -> dict[str, Any]:
        """The rerun-comparable part (no session id, no timing) for report.json."""
        p = self.parity
        return {
            "model_version": self.model_version, "start_ms": self.start_ms, "end_ms": self.end_ms,
            "symbols": self.symbols, "signals": self.signals, "shadow_trades": p.shadow_trades,
            "backtest_trades": p.backtest_trades, "matched": p.matched, "identical": p.ok,
            "problems": list(p.problems),
        }  # fmt: skip


def load_shadow_trades(engine: sa.Engine, session_id: str) -> pd.DataFrame:
    """Return the session's closed trades: symbol, side (±1), entry_ts (fill time, ms), exit_ts (ms),
    entry_price, exit_price, exit_reason; entries without a FINAL row have NaN exits."""
    query = sa.select(positions).where(
        positions.c.trade_group_id.like(f"{session_id}:%"),
        positions.c.event_type.in_(("entry", "FINAL")),
    )
    with engine.connect() as conn:
        rows = pd.DataFrame([dict(r._mapping) for r in conn.execute(query)])
    columns = ["symbol", "side", "entry_ts", "exit_ts", "entry_price", "exit_price", "exit_reason"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    entries = rows[rows.event_type == "entry"].set_index("trade_group_id")
    finals = rows[rows.event_type == "FINAL"].set_index("trade_group_id").reindex(entries.index)
    return pd.DataFrame(
        {
            "symbol": entries["symbol"].to_numpy(),
            "side": np.where(entries["side"].to_numpy() == "LONG", 1, -1),
            "entry_ts": entries["ts"].to_numpy(np.int64),
            "exit_ts": finals["ts"].to_numpy(np.float64),
            "entry_price": finals["entry_price"].fillna(entries["entry_price"]).to_numpy(np.float64),
            "exit_price": finals["exit_price"].to_numpy(np.float64),
            "exit_reason": finals["exit_reason"].to_numpy(object),
        }
    ).sort_values(["entry_ts", "symbol"], kind="stable", ignore_index=True)


def compare_trades(shadow: pd.DataFrame, backtest: pd.DataFrame, end_ms: int) -> TradeParity:
    """Match ``shadow`` trades (``load_shadow_trades``) with ``backtest`` trades (``core.sim``'s frame:
    symbol, side, entry_ts, exit_ts, entry_price, exit_price, exit_reason) of the window ending at
    ``end_ms`` (exclusive) and check them as the module docstring says."""
    shadow = shadow[shadow["entry_ts"] < end_ms]
    problems: list[str] = []
    mine = {_key(r.symbol, r.side, r.entry_ts): r for r in shadow.itertuples(index=False)}
    theirs = {_key(r.symbol, r.side, r.entry_ts): r for r in backtest.itertuples(index=False)}
    if len(mine) != len(shadow):
        problems.append("the shadow session entered one symbol twice in one bar")
    rows, entry_bps, exit_bps = [], [], []
    for key in sorted(mine.keys() | theirs.keys(), key=lambda k: (k[2], k[0], k[1])):
        s, b = mine.get(key), theirs.get(key)
        symbol, side, bar = key
        row: dict[str, object] = {"symbol": symbol, "side": _SIDE_NAME.get(int(side), str(side)),
                                  "entry bar (UTC)": ms_to_text(bar)}  # fmt: skip
        where = f"{symbol} {row['side']} entered {ms_to_text(bar)}"
        if s is not None:
            row |= {"shadow entry": s.entry_price, "shadow exit": _exit_text(s.exit_reason, _shadow_exit_bar(s)),
                    "shadow exit price": s.exit_price}  # fmt: skip
        if b is not None:
            row |= {"backtest entry": b.entry_price, "backtest exit": _exit_text(b.exit_reason, _bar(b.exit_ts) - MINUTE_MS),
                    "backtest exit price": b.exit_price}  # fmt: skip
        if s is None or b is None:
            row["verdict"] = "backtest only" if s is None else "shadow only"
            problems.append(f"{where}: {row['verdict']}")
            rows.append(row)
            continue
        differences = _differences(s, b)
        entry_diff, exit_diff = _rel(s.entry_price, b.entry_price), _rel(s.exit_price, b.exit_price)
        row |= {"entry Δ bps": entry_diff * 1e4, "exit Δ bps": exit_diff * 1e4}
        entry_bps.append(entry_diff * 1e4)
        exit_bps.append(exit_diff * 1e4)
        row["verdict"] = "same" if not differences else "; ".join(differences)
        problems += [f"{where}: {d}" for d in differences]
        rows.append(row)
    return TradeParity(
        table=pd.DataFrame(rows), shadow_trades=len(shadow), backtest_trades=len(backtest), matched=len(entry_bps),
        max_entry_diff_bps=max(entry_bps, default=0.0), max_exit_diff_bps=max(exit_bps, default=0.0),
        problems=tuple(problems),
    )  # fmt: skip


def _differences(s: Any, b: Any) -> list[str]:
    if not isinstance(s.exit_reason, str):
        return ["the shadow position never closed"]
    out = []
    if s.exit_reason != b.exit_reason:
        out.append(f"exit {s.exit_reason} in shadow, {b.exit_reason} in the backtest")
    elif s.exit_reason != "END" and _shadow_exit_bar(s) != _bar(b.exit_ts) - MINUTE_MS:
        out.append("exit in another bar")
    if not _rel(s.entry_price, b.entry_price) <= ENTRY_PRICE_REL_TOL:
        out.append("entry price outside the book model")
    if not _rel(s.exit_price, b.exit_price) <= EXIT_PRICE_REL_TOL:
        out.append("exit price outside the book model")
    return out


def _key(symbol: str, side: object, ts_ms: object) -> tuple[str, int, int]:
    return str(symbol), int(side), _bar(ts_ms)  # type: ignore[call-overload]


def _bar(ts_ms: object) -> int:
    """Open time of the 1m bar holding ``ts_ms``."""
    return int(ts_ms) // MINUTE_MS * MINUTE_MS  # type: ignore[call-overload]


def _shadow_exit_bar(s: Any) -> int:
    """The bar a shadow exit belongs to: a mark tick at ts inside bar [t, t + 1m) or the bar rule at
    its close (ts = t + 1m) both count as bar t."""
    ts = s.exit_ts
    return -(-int(ts) // MINUTE_MS) * MINUTE_MS - MINUTE_MS if np.isfinite(ts) else -1


def _exit_text(reason: object, bar_ms: int) -> str:
    return f"{reason} @ {ms_to_text(bar_ms)}" if isinstance(reason, str) and bar_ms >= 0 else "open"


def _rel(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return math.nan
    return abs(a - b) / abs(b)
