"""Bookkeeping of the ingest actor that decides what is new, what is missing and what to fetch.

Pure (no I/O, time passed in), so every rule is unit-tested without sockets:

- ``BarSequence``: per symbol and interval, the closed bars accepted. A bar accepted before is a
  duplicate; a streamed bar older than the last accepted one is out of order; both are ignored.
  Holes (a gap after a reconnect, a dropped message) are filled by bars fetched over REST
  (``missing_range``), which are accepted wherever they fall.
- ``MarkMinutes``: the mark high/low/close and the premium close of each minute, aggregated from
  the markPrice ticks of that minute. Ticks are de-duplicated by event time; a minute counts as
  covered only if ticks were flowing without interruption from its start (``break_coverage`` is
  called on every disconnect) — an uncovered minute is fetched as markPriceKlines/premiumIndexKlines.
- ``FundingBook``: settled funding rates of one symbol and the settlements due (the ``T`` of the
  markPrice stream moves when one happens); the rate in force at a bar's close is the last
  settlement with funding time ≤ close, as ``core.features.funding_in_force`` defines it offline.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from core.features import INPUT_COLUMNS
from core.time import INTERVAL_MS, MINUTE_MS

#: Column positions of the kernel inputs (core.features.INPUT_COLUMNS).
COL = {name: i for i, name in enumerate(INPUT_COLUMNS)}


def missing_range(last_open_ms: int | None, now_ms: int, step_ms: int) -> tuple[int, int] | None:
    """Return [start, end) of the open times of bars closed by ``now_ms`` after ``last_open_ms``, or None.

    A bar [t, t + step) is closed when ``t + step <= now_ms``. Without a last bar nothing is missing.
    """
    if last_open_ms is None:
        return None
    start = last_open_ms + step_ms
    end = (now_ms // step_ms) * step_ms  # open time of the bar still forming at now_ms
    return (start, end) if end > start else None


class Verdict(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"


@dataclass(slots=True)
class BarSequence:
    """Accepted closed bars per (symbol, interval): the last open time and the recent ones.

    A bar already accepted is a duplicate. A streamed bar older than the last accepted one is out
    of order and ignored; a bar fetched to fill a hole (``fill=True``) is new if it was not
    accepted yet. The open times of the last ``keep`` bars are remembered.
    """

    keep: int = 4096
    last: dict[tuple[str, str], int] = field(default_factory=dict)
    seen: dict[tuple[str, str], set[int]] = field(default_factory=dict)

    def verdict(self, symbol: str, interval: str, open_ms: int, *, fill: bool = False) -> Verdict:
        """Return whether a closed bar at ``open_ms`` is new, a duplicate or (streamed) out of order."""
        key = (symbol, interval)
        if open_ms in self.seen.get(key, ()):
            return Verdict.DUPLICATE
        last = self.last.get(key)
        if last is None or open_ms > last:
            return Verdict.NEW
        if open_ms == last:
            return Verdict.DUPLICATE
        return (
            Verdict.NEW
            if fill and open_ms > last - self.keep * INTERVAL_MS[interval]
            else Verdict.OUT_OF_ORDER
        )

    def gap(self, symbol: str, interval: str, open_ms: int, step_ms: int) -> tuple[int, int] | None:
        """Return [start, end) of the bars missing between the last accepted bar and ``open_ms``."""
        last = self.last.get((symbol, interval))
        if last is None or open_ms <= last + step_ms:
            return None
        return last + step_ms, open_ms

    def accept(self, symbol: str, interval: str, open_ms: int) -> None:
        """Record the bar at ``open_ms`` as accepted (the last one never moves back)."""
        key = (symbol, interval)
        seen = self.seen.setdefault(key, set())
        seen.add(open_ms)
        if open_ms > self.last.get(key, -1):
            self.last[key] = open_ms
        if len(seen) > 2 * self.keep:
            floor = self.last[key] - self.keep * INTERVAL_MS[interval]
            self.seen[key] = {t for t in seen if t > floor}


@dataclass(slots=True)
class _MarkMinute:
    high: float = -math.inf
    low: float = math.inf
    close: float = math.nan
    premium: float = math.nan
    last_event_ms: int = -1
    ticks: int = 0


class MarkMinutes:
    """Per-minute mark aggregates of a set of symbols (see the module docstring)."""

    def __init__(self, symbols: tuple[str, ...] | list[str]) -> None:
        self._minutes: dict[str, dict[int, _MarkMinute]] = {s: {} for s in symbols}
        self._last_event: dict[str, int] = dict.fromkeys(symbols, -1)
        #: Venue time since which ticks of the symbol have flowed without a break (None: broken).
        self._covered_from: dict[str, int | None] = dict.fromkeys(symbols)

    def add(self, symbol: str, event_ms: int, mark: float, premium: float) -> bool:
        """Add a tick; return False (and change nothing) for a duplicate or an older tick."""
        if event_ms <= self._last_event[symbol]:
            return False
        self._last_event[symbol] = event_ms
        if self._covered_from[symbol] is None:
            self._covered_from[symbol] = event_ms
        minute = event_ms - event_ms % MINUTE_MS
        m = self._minutes[symbol].get(minute)
        if m is None:
            m = self._minutes[symbol][minute] = _MarkMinute()
        m.high = max(m.high, mark)
        m.low = min(m.low, mark)
        m.close, m.premium, m.last_event_ms = mark, premium, event_ms
        m.ticks += 1
        return True

    def break_coverage(self) -> None:
        """Note a disconnect: ticks may be lost from now until the next one arrives."""
        for s in self._covered_from:
            self._covered_from[s] = None

    def take(
        self, symbol: str, minute_ms: int, tick_tolerance_ms: int
    ) -> tuple[float, float, float, float] | None:
        """Return (mark high, low, close, premium close) of the minute starting at ``minute_ms`` and
        forget it and older minutes; None when the minute is not fully covered by ticks.

        Covered: at least one tick in the minute and ticks flowing since ``minute_ms +
        tick_tolerance_ms`` at the latest (the first tick of a minute lands within one tick period).
        """
        minutes = self._minutes[symbol]
        m = minutes.get(minute_ms)
        for key in [k for k in minutes if k <= minute_ms]:
            del minutes[key]
        covered_from = self._covered_from[symbol]
        if m is None or m.ticks == 0 or covered_from is None or covered_from > minute_ms + tick_tolerance_ms:
            return None
        return m.high, m.low, m.close, m.premium

    def last_event_ms(self, symbol: str) -> int | None:
        v = self._last_event[symbol]
        return None if v < 0 else v


class FundingBook:
    """Settled funding of one symbol and the settlements expected from the markPrice stream."""

    #: How long after an expected settlement time its rate is looked for before giving up, ms
    #: (Binance stamps some settlements a few ms after the hour).
    SETTLE_WINDOW_MS = 5 * MINUTE_MS

    def __init__(self, ts_ms: Iterable[int] = (), rates: Iterable[float] = ()) -> None:
        self.ts: list[int] = [int(t) for t in ts_ms]
        self.rates: list[float] = [float(r) for r in rates]
        if any(b <= a for a, b in zip(self.ts, self.ts[1:], strict=False)):
            raise ValueError("funding settlements must be strictly increasing in time")
        self.expected: set[int] = set()

    def expect(self, next_funding_ms: int) -> None:
        """Note a next funding time announced by the stream (already settled times are ignored)."""
        if next_funding_ms > 0 and (not self.ts or next_funding_ms > self.ts[-1]):
            self.expected.add(next_funding_ms)

    def due(self, close_ms: int) -> list[int]:
        """Return the expected settlement times ≤ ``close_ms`` not settled yet, oldest first."""
        return sorted(t for t in self.expected if t <= close_ms)

    def settle(self, ts_ms: list[int], rates: list[float], fetched_until_ms: int) -> None:
        """Add settlements fetched up to ``fetched_until_ms`` (inclusive); drop the expectations they
        answer and those older than the settle window."""
        for t, r in sorted(zip(ts_ms, rates, strict=True)):
            if not self.ts or t > self.ts[-1]:
                self.ts.append(int(t))
                self.rates.append(float(r))
        last = self.ts[-1] if self.ts else -1
        self.expected = {
            t for t in self.expected if t > last and fetched_until_ms < t + self.SETTLE_WINDOW_MS
        }

    def last_ms(self) -> int | None:
        return self.ts[-1] if self.ts else None

    def in_force(self, close_ms: int) -> tuple[float, float]:
        """Return (rate, funding time) of the last settlement with time ≤ ``close_ms``; NaN before any."""
        j = bisect.bisect_right(self.ts, close_ms) - 1
        if j < 0:
            return math.nan, math.nan
        return self.rates[j], float(self.ts[j])


def input_row(
    bar: tuple[float, float, float, float, float, float],
    mark: tuple[float, float, float, float] | None,
    funding: tuple[float, float],
) -> np.ndarray:
    """Return one kernel input row (``INPUT_COLUMNS``) from (open, high, low, close, volume, taker
    buy volume), (mark high, low, close, premium close) or None, and (funding rate, funding time)."""
    row = np.full(len(INPUT_COLUMNS), np.nan)
    row[:6] = bar
    if mark is not None:
        row[COL["mark_high"]], row[COL["mark_low"]], row[COL["mark_close"]], row[COL["premium_close"]] = mark
    row[COL["funding_rate"]], row[COL["funding_time_ms"]] = funding
    return row
