"""The replay driver: walks the stored 1m bars minute by minute and streams them as Binance would.

For every minute of every replayed symbol the driver emits, in time order:

- ``markPriceUpdate`` ticks at ``ts + k·60 s / n − 1 ms`` (k = 1..n, n = ``mark_ticks_per_minute``),
  the k-th at fraction (k−1)/(n−1) of the intra-minute path of the mark_1m bar, whose vertices are
  snapped to that grid (n ≥ 4): every tick lies inside the bar's minute [ts, ts + 59 999] as
  Binance's kline convention counts it, the first is the open, the last (at ts + 59 999) the close
  and the extremes are ticked, so the ticks of a minute aggregate to exactly its stored mark bar; ``i`` (index) = mark / (1 + premium close of the
  minute's premium_1m bar), so the premium is recoverable (mark when premium is missing); ``P``
  (estimated settle price) = index; ``r`` = the last funding rate settled at or before the tick
  (0 before the first known one); ``T`` = the symbol's next funding time from its stored funding
  events (after the last stored event: extrapolated by its last interval, 8 h when only one).
- ``bookTicker`` at the same ticks around the last-price path of the candles_1m bar (``book_quote``:
  half-spread = max(tickSize / 2, spread_bps · price), bid rounded down and ask up to the tick);
  sizes = volume / n × U(0.2, 1.8) floored to the step (at least one step), drawn from a generator
  seeded by (seed, symbol, minute), so a replay is identical for a given seed whatever the speed.
- ``kline_1m`` updates with ``x=false`` at ``ts + j·60 s / (m + 1)`` (j = 1..m,
  m = ``kline_updates_per_minute``): open, the path's running high/low, the path price as close,
  volumes pro rata; then at ``ts + 60 s`` the stored bar itself with ``x=true``; ``kline_15m`` and
  ``kline_1h`` at their close, resampled from the 1m bars (``core.resample``; none when a 1m bar of
  the bucket is missing).

Path model (``bar_path``): piecewise linear, open → the extreme nearer the open → the other extreme
→ close (a tie goes to the low first when the bar closes up, the high first otherwise), walked at
constant speed in price (vertices then snapped to the tick grid), so ticks never leave [low, high]
and the minute's last tick is the close. A missing bar emits nothing for that symbol and minute (no candle: no book, no kline and no
broker tick; no mark bar: no mark ticks). With ``mark_fallback="last"`` a symbol that has no mark_1m
bar in a 6-hour chunk of the replay (real dumps without Binance's markPriceKlines) is ticked with
its candles_1m bar as mark: a derived mark, listed in ``ReplayVenue.stats()["mark"]``, so a report
can say which marks were not Binance's.

After each tick the paper broker (when there is one) hears ``on_book`` and ``on_mark``, so its
conditional orders trigger on exactly the ticks clients see. ``ReplayVenue`` (below) wires clock,
driver, streams, faults and broker into one server for tests, benchmarks and ``raytrade venue``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import FatalError
from core.resample import resample_candles
from core.sim.config import SimConfig
from core.time import HOUR_MS, MINUTE_MS
from exchange.venue.app import create_app
from exchange.venue.clock import ReplayClock
from exchange.venue.exchange_info import add_routes as add_info_routes
from exchange.venue.exchange_info import filter_exchange_info, generate_exchange_info, symbol_filter
from exchange.venue.faults import Faults
from exchange.venue.server import BackgroundServer
from exchange.venue.state import DEFAULT_WEIGHT_LIMIT_1M, STATE, BinanceError, MarketData
from exchange.venue.streams import (
    KlineValues,
    StreamHub,
    book_ticker_payload,
    kline_payload,
    mark_price_payload,
)

log = logging.getLogger(__name__)

_FUNDING_LOOKAROUND_MS = 40 * 24 * HOUR_MS
_DEFAULT_FUNDING_INTERVAL_MS = 8 * HOUR_MS
_CHUNK_MS = 6 * HOUR_MS
_HIGHER = (("15m", 15 * MINUTE_MS), ("1h", HOUR_MS))
_CANDLE_COLUMNS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "taker_buy_volume",
)


class Broker(Protocol):
    """What the driver tells the paper broker (``exchange.venue.trading.PaperBroker``)."""

    def on_book(self, symbol: str, ts_ms: int, bid: float, ask: float) -> None: ...

    def on_mark(self, symbol: str, ts_ms: int, mark: float, last: float) -> None: ...


# Pure models ------------------------------------------------------------------------------------
def bar_path(
    open_: float, high: float, low: float, close: float, grid: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return the path's vertices (fractions of the bar in [0, 1], prices) for one OHLC bar (see module doc).

    ``grid`` ≥ 3: the vertex fractions are moved to the nearest multiple of 1/grid, kept strictly
    increasing, so a tick at every k/grid passes through each vertex (the bar's high and low).
    """
    high, low = max(high, open_, close), min(low, open_, close)
    up_distance, down_distance = high - open_, open_ - low
    if up_distance < down_distance or (up_distance == down_distance and close < open_):
        points = [open_, high, low, close]
    else:
        points = [open_, low, high, close]
    prices = np.array(points, dtype=np.float64)
    lengths = np.abs(np.diff(prices))
    total = float(lengths.sum())
    if total == 0.0:
        return np.array([0.0, 1.0]), np.array([open_, close], dtype=np.float64)
    keep = np.concatenate(([True], lengths > 0))
    fractions = np.concatenate(([0.0], np.cumsum(lengths) / total))[keep]
    fractions[-1] = 1.0
    if grid >= len(fractions) - 1 and grid >= 3:
        fractions = _snapped(fractions, grid)
    return fractions, prices[keep]


def _snapped(fractions: np.ndarray, grid: int) -> np.ndarray:
    """Inner fractions rounded to multiples of 1/grid, strictly increasing, 0 and 1 kept."""
    steps = np.rint(fractions * grid).astype(np.int64)
    last = len(steps) - 1
    for i in range(1, last):  # leave room for the vertices still to come
        steps[i] = min(max(steps[i], steps[i - 1] + 1), grid - (last - i))
    steps[0], steps[last] = 0, grid
    return steps / grid


def path_prices(
    open_: float, high: float, low: float, close: float, fractions: np.ndarray, grid: int = 0
) -> np.ndarray:
    """Return the bar's path price at each fraction of the bar (1.0 gives exactly ``close``);
    ``grid`` as in ``bar_path``."""
    xs, ys = bar_path(open_, high, low, close, grid)
    between = np.interp(fractions, xs, ys)
    # Interpolated prices are shown to 10 significant digits (no 59981.799999999996 on the wire).
    tidy = np.array([float(f"{v:.10g}") for v in between])
    out = np.clip(tidy, min(low, open_, close), max(high, open_, close))
    at_vertex = np.isin(fractions, xs)
    out[at_vertex] = np.interp(np.asarray(fractions)[at_vertex], xs, ys)
    out[np.asarray(fractions) >= 1.0] = close
    return out


def path_extremes(
    open_: float, high: float, low: float, close: float, fraction: float
) -> tuple[float, float]:
    """Return (high, low) of the path from the bar's open up to ``fraction`` of the bar."""
    xs, ys = bar_path(open_, high, low, close)
    now = float(path_prices(open_, high, low, close, np.array([fraction]))[0])
    seen = ys[xs <= fraction]
    return max(now, float(seen.max())), min(now, float(seen.min()))


def book_quote(price: float, tick: Decimal, spread_bps: float) -> tuple[Decimal, Decimal]:
    """Return (bid, ask) around ``price``: half-spread max(tick/2, spread_bps·price), bid down, ask up to the tick."""
    tick_f = float(tick)
    half = max(tick_f / 2.0, spread_bps * 1e-4 * price)
    bid_ticks = math.floor((price - half) / tick_f + 1e-9)
    ask_ticks = math.ceil((price + half) / tick_f - 1e-9)
    if ask_ticks <= bid_ticks:
        ask_ticks = bid_ticks + 1
    return tick * max(bid_ticks, 1), tick * max(ask_ticks, 2)


@dataclass(frozen=True, slots=True)
class FundingSchedule:
    """A symbol's stored funding events: ``ts`` (epoch ms, increasing) and ``rates``."""

    ts: np.ndarray
    rates: np.ndarray

    def last_rate(self, ts_ms: int) -> float:
        """Return the rate settled last at or before ``ts_ms`` (0 before the first known event)."""
        i = int(np.searchsorted(self.ts, ts_ms, side="right"))
        return float(self.rates[i - 1]) if i > 0 else 0.0

    def interval_ms(self, ts_ms: int) -> int:
        """Return the funding interval around ``ts_ms`` (ms), from the stored event spacing (8 h if unknown)."""
        if len(self.ts) < 2:
            return _DEFAULT_FUNDING_INTERVAL_MS
        i = min(max(int(np.searchsorted(self.ts, ts_ms, side="right")), 1), len(self.ts) - 1)
        return int(self.ts[i] - self.ts[i - 1])

    def next_time(self, ts_ms: int) -> int:
        """Return the first funding time after ``ts_ms`` (extrapolated past the stored events)."""
        i = int(np.searchsorted(self.ts, ts_ms, side="right"))
        if i < len(self.ts):
            return int(self.ts[i])
        if len(self.ts) == 0:
            return (ts_ms // _DEFAULT_FUNDING_INTERVAL_MS + 1) * _DEFAULT_FUNDING_INTERVAL_MS
        step = self.interval_ms(ts_ms)
        last = int(self.ts[-1])
        return last + ((ts_ms - last) // step + 1) * step


# Data -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Bars:
    """One dataset of one symbol over a span: ts and columns, with a ts → row index."""

    ts: np.ndarray
    columns: Mapping[str, np.ndarray]
    row: Mapping[int, int]

    @classmethod
    def of(cls, frame: pd.DataFrame, names: tuple[str, ...]) -> _Bars:
        ts = frame["ts"].to_numpy(np.int64) if len(frame) else np.zeros(0, np.int64)
        columns = {}
        for name in names:
            if name in frame.columns:
                columns[name] = np.nan_to_num(frame[name].to_numpy(np.float64, na_value=np.nan), nan=0.0)
            else:
                columns[name] = np.zeros(len(ts))
        return cls(ts, columns, {int(t): i for i, t in enumerate(ts)})

    def get(self, ts_ms: int) -> dict[str, float] | None:
        i = self.row.get(ts_ms)
        return None if i is None else {k: float(v[i]) for k, v in self.columns.items()}


@dataclass(slots=True)
class _Chunk:
    start_ms: int
    end_ms: int
    candles: dict[str, _Bars]
    mark: dict[str, _Bars]
    premium: dict[str, _Bars]
    first_trade_id: dict[str, dict[int, int]]


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """What the driver needs of a symbol's exchangeInfo: tick and step sizes."""

    tick_size: Decimal
    step_size: Decimal


# Driver -----------------------------------------------------------------------------------------
class ReplayDriver:
    """Emits the replay's stream messages into a ``StreamHub`` as the ``ReplayClock`` passes them.

    Runs as one asyncio task in the venue's loop (``run``). ``replayed_ms`` is the replay time up to
    which everything has been emitted; ``wait_until`` blocks another thread until it reaches a time.
    """

    def __init__(
        self,
        data: MarketData,
        symbols: tuple[str, ...],
        clock: ReplayClock,
        hub: StreamHub,
        specs: Mapping[str, SymbolSpec],
        *,
        mark_ticks_per_minute: int = 60,
        kline_updates_per_minute: int = 0,
        spread_bps: float = 1.0,
        seed: int = 0,
        broker: Broker | None = None,
        mark_fallback: Literal["none", "last"] = "none",
    ) -> None:
        self.data = data
        self.mark_fallback = mark_fallback
        self.derived_mark: set[str] = set()  # symbols ticked with their last price as mark
        self.symbols = symbols
        self.clock = clock
        self.hub = hub
        self.specs = dict(specs)
        self.n_ticks = mark_ticks_per_minute
        self.n_kline_updates = kline_updates_per_minute
        self.spread_bps = spread_bps
        self.seed = seed
        self.broker = broker
        self.funding: dict[str, FundingSchedule] = {}
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self._progress = threading.Condition()
        self.replayed_ms = clock.start_ms
        self._wake: asyncio.Event | None = None
        self._next_trade_id = dict.fromkeys(symbols, 1)
        self._update_id = dict.fromkeys(symbols, 1)
        self._lowers = {s: s.lower() for s in symbols}

    # Public ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Replay from the clock's start to its end; set ``finished`` (and ``error`` if it failed)."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        wake = self._wake

        def on_clock() -> None:
            loop.call_soon_threadsafe(wake.set)

        self.clock.add_listener(on_clock)
        try:
            await asyncio.to_thread(self._load_funding)
            await self._replay()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            log.exception("replay driver failed")
            self.error = e
        finally:
            self.clock.remove_listener(on_clock)
            with self._progress:
                self.finished.set()
                self._progress.notify_all()

    def wait_until(self, ts_ms: int, timeout_s: float) -> bool:
        """Block until everything up to replay time ``ts_ms`` has been emitted (or the replay ended).

        Return False on timeout; re-raise the driver's error if it failed.
        """
        with self._progress:
            done = self._progress.wait_for(
                lambda: self.replayed_ms >= ts_ms or self.finished.is_set(), timeout_s
            )
        if self.error is not None:
            raise FatalError(f"the replay driver failed: {self.error!r}") from self.error
        return done

    def premium_index(self, symbol: str) -> dict[str, Any]:
        """Return the premiumIndex object of ``symbol`` at the clock, the value of its latest mark tick."""
        now = self.clock.now_ms()
        minute = now - now % MINUTE_MS
        k = (now - minute + 1) * self.n_ticks // MINUTE_MS  # ticks of this minute so far
        grid = self.n_ticks - 1
        bar_ts, fraction = (
            (minute - MINUTE_MS, 1.0) if k == 0 else (minute, (k - 1) / grid if grid > 0 else 1.0)
        )
        mark_frame = self.data.read("mark_1m", symbol, bar_ts - HOUR_MS, bar_ts + MINUTE_MS)
        if len(mark_frame) == 0:
            mark_frame = self.data.read("candles_1m", symbol, bar_ts - HOUR_MS, bar_ts + MINUTE_MS)
        if len(mark_frame) == 0:
            raise BinanceError(-1121, "Invalid symbol.")
        last = mark_frame.iloc[-1]
        if int(last["ts"]) == bar_ts:
            mark = float(
                path_prices(
                    last["open"], last["high"], last["low"], last["close"], np.array([fraction]), grid
                )[0]
            )
        else:
            bar_ts, mark = int(last["ts"]), float(last["close"])
        premium = self.data.read("premium_1m", symbol, bar_ts, bar_ts + MINUTE_MS)
        index = mark / (1.0 + float(premium["close"].iat[0])) if len(premium) else mark
        schedule = self.funding.get(symbol) or self._schedule(symbol)
        interest = 0.0001 * schedule.interval_ms(now) / _DEFAULT_FUNDING_INTERVAL_MS
        return {
            "symbol": symbol,
            "markPrice": f"{mark:.8f}",
            "indexPrice": f"{index:.8f}",
            "estimatedSettlePrice": f"{index:.8f}",
            "lastFundingRate": f"{schedule.last_rate(now):.8f}",
            "interestRate": f"{interest:.8f}",
            "nextFundingTime": schedule.next_time(now),
            "time": int(now),
        }

    # Replay loop -----------------------------------------------------------------------------
    async def _replay(self) -> None:
        start, end = self.clock.start_ms, self.clock.end_ms
        chunk_start = start - start % HOUR_MS
        pending = asyncio.ensure_future(asyncio.to_thread(self._load_chunk, chunk_start))
        while chunk_start < end:
            chunk = await pending
            chunk_start = chunk.end_ms
            if chunk_start < end:
                pending = asyncio.ensure_future(asyncio.to_thread(self._load_chunk, chunk_start))
            first = max(chunk.start_ms, start)
            for minute in range(first, min(chunk.end_ms, end), MINUTE_MS):
                for ts_ms, batch in self._minute_events(chunk, minute):
                    await self._wait_for(ts_ms)
                    for emit in batch:
                        emit()
                    self._set_replayed(ts_ms)
                    await asyncio.sleep(0)
        await self._wait_for(end)
        self._set_replayed(end)

    async def _wait_for(self, ts_ms: int) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            delay_s = self.clock.wall_delay_s(ts_ms)
            if delay_s == 0.0:
                return
            self._set_replayed(min(self.clock.now_ms(), ts_ms - 1))
            if delay_s is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay_s)

    def _set_replayed(self, ts_ms: int) -> None:
        if ts_ms > self.replayed_ms:
            with self._progress:
                self.replayed_ms = ts_ms
                self._progress.notify_all()

    # Events of one minute --------------------------------------------------------------------
    def _minute_events(self, chunk: _Chunk, minute: int) -> list[tuple[int, list[Callable[[], None]]]]:
        """Return the minute's emissions grouped by event time (ms), in time order."""
        events: dict[int, list[tuple[int, Callable[[], None]]]] = {}

        def add(ts_ms: int, order: int, emit: Callable[[], None]) -> None:
            events.setdefault(ts_ms, []).append((order, emit))

        for position, symbol in enumerate(self.symbols):
            base = position * 10
            bar = chunk.candles[symbol].get(minute)
            mark_bar = chunk.mark[symbol].get(minute)
            grid = self.n_ticks - 1
            fractions = np.arange(self.n_ticks) / grid if grid > 0 else np.ones(1)
            tick_times = minute + np.arange(1, self.n_ticks + 1) * MINUTE_MS // self.n_ticks - 1
            last = _prices(bar, fractions, grid)
            mark = _prices(mark_bar, fractions, grid)
            if mark is not None:
                premium_bar = chunk.premium[symbol].get(minute)
                premium = premium_bar["close"] if premium_bar is not None else 0.0
                schedule = self.funding[symbol]
                for k, t in enumerate(tick_times):
                    add(int(t), base, self._mark_emitter(symbol, int(t), float(mark[k]), premium, schedule))
            if last is not None:
                assert bar is not None
                sizes = self._book_sizes(symbol, minute, bar["volume"])
                for k, t in enumerate(tick_times):
                    mark_k = None if mark is None else float(mark[k])
                    add(
                        int(t), base + 1, self._book_emitter(symbol, int(t), float(last[k]), mark_k, sizes[k])
                    )
                first_id = chunk.first_trade_id[symbol].get(minute, 1)
                for j in range(1, self.n_kline_updates + 1):
                    update_ms = minute + j * MINUTE_MS // (self.n_kline_updates + 1)
                    add(
                        update_ms,
                        base + 2,
                        self._kline_update_emitter(
                            symbol, minute, update_ms, bar, j / (self.n_kline_updates + 1), first_id
                        ),
                    )
                close_ms = minute + MINUTE_MS
                add(
                    close_ms,
                    base + 3,
                    self._kline_emitter(symbol, "1m", minute, MINUTE_MS, close_ms, _values(bar), first_id),
                )
                for order, (interval, length) in enumerate(_HIGHER, start=4):
                    if close_ms % length == 0:
                        add(
                            close_ms,
                            base + order,
                            self._higher_emitter(chunk, symbol, interval, length, close_ms),
                        )
        return [
            (t, [emit for _, emit in sorted(batch, key=lambda x: x[0])])
            for t, batch in sorted(events.items())
        ]

    def _mark_emitter(
        self, symbol: str, ts_ms: int, mark: float, premium: float, schedule: FundingSchedule
    ) -> Callable[[], None]:
        lower = self._lowers[symbol]

        def emit() -> None:
            streams = [s for s in (f"{lower}@markPrice@1s", f"{lower}@markPrice") if self.hub.wants(s)]
            if streams:
                index = mark / (1.0 + premium)
                payload = mark_price_payload(
                    symbol, ts_ms, mark, index, index, schedule.last_rate(ts_ms), schedule.next_time(ts_ms)
                )
                for stream in streams:
                    self.hub.publish(stream, payload)

        return emit

    def _book_emitter(
        self, symbol: str, ts_ms: int, last: float, mark: float | None, sizes: tuple[Decimal, Decimal]
    ) -> Callable[[], None]:
        stream = f"{self._lowers[symbol]}@bookTicker"
        spec = self.specs[symbol]

        def emit() -> None:
            bid, ask = book_quote(last, spec.tick_size, self.spread_bps)
            self._update_id[symbol] += 1 + (ts_ms // 7 + self.seed) % 13
            if self.hub.wants(stream):
                update_id = self._update_id[symbol]
                self.hub.publish(
                    stream, book_ticker_payload(symbol, update_id, ts_ms, bid, sizes[0], ask, sizes[1])
                )
            if self.broker is not None:
                self.broker.on_book(symbol, ts_ms, float(bid), float(ask))
                if mark is not None:
                    self.broker.on_mark(symbol, ts_ms, mark, last)

        return emit

    def _kline_update_emitter(
        self, symbol: str, minute: int, ts_ms: int, bar: dict[str, float], fraction: float, first_id: int
    ) -> Callable[[], None]:
        o, h, lo, c = bar["open"], bar["high"], bar["low"], bar["close"]
        high, low = path_extremes(o, h, lo, c, fraction)
        values = KlineValues(
            open=o, high=high, low=low, close=float(path_prices(o, h, lo, c, np.array([fraction]))[0]),
            volume=bar["volume"] * fraction, quote_volume=bar["quote_volume"] * fraction,
            trade_count=int(bar["trade_count"] * fraction), taker_buy_volume=bar["taker_buy_volume"] * fraction,
        )  # fmt: skip
        return self._kline_emitter(symbol, "1m", minute, MINUTE_MS, ts_ms, values, first_id, closed=False)

    def _kline_emitter(
        self,
        symbol: str,
        interval: str,
        open_ms: int,
        length_ms: int,
        ts_ms: int,
        values: KlineValues,
        first_id: int,
        closed: bool = True,
    ) -> Callable[[], None]:
        stream = f"{self._lowers[symbol]}@kline_{interval}"

        def emit() -> None:
            if self.hub.wants(stream):
                payload = kline_payload(symbol, interval, open_ms, length_ms, ts_ms, values, closed, first_id)
                self.hub.publish(stream, payload)

        return emit

    def _higher_emitter(
        self, chunk: _Chunk, symbol: str, interval: str, length_ms: int, close_ms: int
    ) -> Callable[[], None]:
        stream = f"{self._lowers[symbol]}@kline_{interval}"

        def emit() -> None:
            if not self.hub.wants(stream):
                return
            bars = chunk.candles[symbol]
            inside = (bars.ts >= close_ms - length_ms) & (bars.ts < close_ms)
            columns = {"ts": bars.ts[inside], **{k: v[inside] for k, v in bars.columns.items()}}
            columns["trade_count"] = columns["trade_count"].astype(np.int64)
            out = resample_candles(columns, MINUTE_MS, length_ms)
            if len(out["ts"]) != 1:
                return  # a 1m bar of the bucket is missing: no coarse bar, as in the lake
            values = _values({k: float(v[0]) for k, v in out.items() if k != "ts"})
            first_id = chunk.first_trade_id[symbol].get(int(out["ts"][0]), 1)
            self.hub.publish(
                stream,
                kline_payload(
                    symbol, interval, int(out["ts"][0]), length_ms, close_ms, values, True, first_id
                ),
            )

        return emit

    def _book_sizes(self, symbol: str, minute: int, volume: float) -> list[tuple[Decimal, Decimal]]:
        step = self.specs[symbol].step_size
        rng = np.random.default_rng([self.seed, _symbol_key(symbol), minute // MINUTE_MS])
        mean = max(volume, 0.0) / self.n_ticks
        draws = rng.uniform(0.2, 1.8, size=(self.n_ticks, 2)) * mean / float(step)
        steps = np.maximum(np.floor(draws), 1).astype(np.int64)
        return [(step * int(b), step * int(a)) for b, a in steps]

    # Loading ---------------------------------------------------------------------------------
    def _load_funding(self) -> None:
        for symbol in self.symbols:
            self.funding[symbol] = self._schedule(symbol)

    def _schedule(self, symbol: str) -> FundingSchedule:
        frame = self.data.read(
            "funding",
            symbol,
            self.clock.start_ms - _FUNDING_LOOKAROUND_MS,
            self.clock.end_ms + _FUNDING_LOOKAROUND_MS,
        )
        if len(frame) == 0:
            return FundingSchedule(np.zeros(0, np.int64), np.zeros(0))
        return FundingSchedule(frame["ts"].to_numpy(np.int64), frame["funding_rate"].to_numpy(np.float64))

    def _load_chunk(self, start_ms: int) -> _Chunk:
        end_ms = start_ms + _CHUNK_MS
        candles, mark, premium, first_ids = {}, {}, {}, {}
        for symbol in self.symbols:
            candles[symbol] = _Bars.of(
                self.data.read("candles_1m", symbol, start_ms, end_ms), _CANDLE_COLUMNS
            )
            mark_frame = self.data.read("mark_1m", symbol, start_ms, end_ms)
            if len(mark_frame) == 0 and self.mark_fallback == "last":
                mark[symbol] = _Bars(candles[symbol].ts, {k: candles[symbol].columns[k] for k in
                                     ("open", "high", "low", "close")}, candles[symbol].row)  # fmt: skip
                if len(candles[symbol].ts):
                    self.derived_mark.add(symbol)
            else:
                mark[symbol] = _Bars.of(mark_frame, ("open", "high", "low", "close"))
            premium[symbol] = _Bars.of(self.data.read("premium_1m", symbol, start_ms, end_ms), ("close",))
            counts = candles[symbol].columns["trade_count"].astype(np.int64)
            firsts = (
                self._next_trade_id[symbol] + np.concatenate(([0], np.cumsum(counts)[:-1]))[: len(counts)]
            )
            first_ids[symbol] = {int(t): int(f) for t, f in zip(candles[symbol].ts, firsts, strict=True)}
            self._next_trade_id[symbol] += int(counts.sum())
        return _Chunk(start_ms, end_ms, candles, mark, premium, first_ids)


def _prices(bar: dict[str, float] | None, fractions: np.ndarray, grid: int = 0) -> np.ndarray | None:
    if bar is None:
        return None
    return path_prices(bar["open"], bar["high"], bar["low"], bar["close"], fractions, grid)


def _values(bar: Mapping[str, float]) -> KlineValues:
    return KlineValues(
        open=bar["open"], high=bar["high"], low=bar["low"], close=bar["close"], volume=bar["volume"],
        quote_volume=bar["quote_volume"], trade_count=int(bar["trade_count"]), taker_buy_volume=bar["taker_buy_volume"],
    )  # fmt: skip


def _symbol_key(symbol: str) -> int:
    return zlib.crc32(symbol.encode())


# The venue facade -------------------------------------------------------------------------------
class ReplayConfig(BaseModel):
    """What to replay and how: symbols, span (epoch ms on the minute grid), speed and stream models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbols: tuple[str, ...] = Field(min_length=1, description="symbols to replay, e.g. BTCUSDT")
    start_ms: int = Field(description="replay start, epoch ms on the 1m grid")
    end_ms: int = Field(description="replay end (exclusive for bar opens), epoch ms on the 1m grid")
    speed: float | Literal["step"] = Field(default=1.0, description="replay ms per wall ms, or 'step'")
    mark_ticks_per_minute: int = Field(default=60, ge=1, le=600, description="mark/book ticks per 1m bar")
    kline_updates_per_minute: int = Field(
        default=0, ge=0, le=240, description="x=false kline_1m updates per bar"
    )
    spread_bps: float = Field(
        default=1.0, ge=0, le=1000, description="book half-spread, bps of price (at least tick/2)"
    )
    seed: int = Field(default=0, ge=0, description="seed of the book sizes")
    send_queue_size: int = Field(
        default=10_000, ge=10, description="messages queued per connection before it is closed"
    )
    mark_fallback: Literal["none", "last"] = Field(
        default="none",
        description="none: no mark_1m bar, no mark ticks; last: tick the candle as a derived mark",
    )

    @model_validator(mode="after")
    def _check(self) -> ReplayConfig:
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"symbols repeat: {', '.join(self.symbols)}")
        for name in ("start_ms", "end_ms"):
            if getattr(self, name) % MINUTE_MS:
                raise ValueError(f"{name} {getattr(self, name)} is not on the 1m grid")
        if self.end_ms <= self.start_ms:
            raise ValueError(f"end_ms {self.end_ms} must be after start_ms {self.start_ms}")
        return self


@dataclass(frozen=True, slots=True)
class VenueUrls:
    """Where a running venue listens: ``rest_url`` (http://127.0.0.1:PORT) and ``ws_url`` (ws://…/)."""

    rest_url: str
    ws_url: str

    @property
    def fapi_url(self) -> str:
        """The value for python-binance's ``Client.FUTURES_URL``."""
        return f"{self.rest_url}/fapi"


class ReplayVenue:
    """A local Binance USDⓈ-M venue replaying ``data`` (the lake) from ``start_ms`` to ``end_ms``.

    REST market data, exchangeInfo and premiumIndex up to the replay clock; WebSocket streams from
    the replay driver; fault hooks (``faults``); with ``api_key``/``api_secret`` a paper broker
    (``exchange.venue.trading.PaperBroker``) for orders and user data. ``exchange_info`` (a Binance
    exchangeInfo dict, filtered to ``symbols``) or a generated one. Point python-binance at it with
    ``client.FUTURES_URL = urls.fapi_url`` and ``BinanceSocketManager.FSTREAM_URL = urls.ws_url``.
    A context manager: ``with ReplayVenue(...) as urls:`` starts it running and stops it.
    """

    def __init__(
        self,
        data: MarketData,
        symbols: Sequence[str],
        start_ms: int,
        end_ms: int,
        *,
        speed: float | Literal["step"] = 1.0,
        mark_ticks_per_minute: int = 60,
        kline_updates_per_minute: int = 0,
        seed: int = 0,
        spread_bps: float = 1.0,
        exchange_info: Mapping[str, Any] | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        initial_usdt: float = 10_000.0,
        sim_config: SimConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        weight_limit_1m: int | None = DEFAULT_WEIGHT_LIMIT_1M,
        send_queue_size: int = 10_000,
        mark_fallback: Literal["none", "last"] = "none",
    ) -> None:
        self.config = ReplayConfig(
            symbols=tuple(symbols), start_ms=start_ms, end_ms=end_ms, speed=speed,
            mark_ticks_per_minute=mark_ticks_per_minute, kline_updates_per_minute=kline_updates_per_minute,
            spread_bps=spread_bps, seed=seed, send_queue_size=send_queue_size, mark_fallback=mark_fallback,
        )  # fmt: skip
        cfg = self.config
        listed = set(data.symbols("candles_1m"))
        missing = [s for s in cfg.symbols if s not in listed]
        if missing:
            raise ValueError(f"no candles_1m in the market data for {', '.join(missing)}")
        self.data = data
        self.clock = ReplayClock(cfg.start_ms, cfg.end_ms, cfg.speed)
        if exchange_info is None:
            prices = {s: _price_level(data, s, cfg.start_ms) for s in cfg.symbols}
            self.exchange_info = generate_exchange_info(
                cfg.symbols, prices, cfg.start_ms, weight_limit_1m or 2400
            )
        else:
            self.exchange_info = filter_exchange_info(exchange_info, cfg.symbols)
        specs = {
            s: SymbolSpec(
                symbol_filter(self.exchange_info, s, "PRICE_FILTER", "tickSize"),
                symbol_filter(self.exchange_info, s, "LOT_SIZE", "stepSize"),
            )
            for s in cfg.symbols
        }
        self.faults = Faults()
        self.broker: Any = None
        if api_key or api_secret:
            from exchange.venue.trading import PaperBroker

            self.hub = StreamHub(self.faults, send_queue_size=cfg.send_queue_size)
            self.broker = PaperBroker(
                self.exchange_info, self.clock.now_ms, self.hub.publish_user,
                api_key=api_key or "", api_secret=api_secret or "", initial_usdt=initial_usdt, sim_config=sim_config,
            )  # fmt: skip
            self.hub.listen_key_valid = self.broker.listen_key_valid
            self.faults.attach(
                reject_next=self.broker.reject_next,
                expire_listen_keys=self.broker.expire_listen_keys,
                hide_algo_orders=self.broker.hide_algo_orders,
            )
        else:
            self.hub = StreamHub(self.faults, send_queue_size=cfg.send_queue_size)
        self.driver = ReplayDriver(
            data, cfg.symbols, self.clock, self.hub, specs,
            mark_ticks_per_minute=cfg.mark_ticks_per_minute, kline_updates_per_minute=cfg.kline_updates_per_minute,
            spread_bps=cfg.spread_bps, seed=cfg.seed, broker=self.broker, mark_fallback=cfg.mark_fallback,
        )  # fmt: skip
        app = create_app(data, self.clock.now_ms, weight_limit_1m=weight_limit_1m, faults=self.faults)
        add_info_routes(app, self.exchange_info, self.driver.premium_index, cfg.symbols)
        self.hub.add_routes(app)
        if self.broker is not None:
            self.broker.add_routes(app)
        app.router.add_get("/_venue/clock", self._clock_get)
        app.router.add_post("/_venue/clock", self._clock_post)
        app.on_startup.append(self._start_driver)
        app.on_shutdown.append(self._stop_driver)
        self.app = app
        self._server = BackgroundServer(app, host, port)
        self._driver_task: asyncio.Task[None] | None = None
        self.urls: VenueUrls | None = None
        self._stopped = False

    @property
    def finished(self) -> threading.Event:
        """Set once the replay has emitted everything up to ``end_ms`` (or failed: see ``driver.error``)."""
        return self.driver.finished

    def start(self, paused: bool = False) -> VenueUrls:
        """Start serving on 127.0.0.1 and, unless ``paused`` (or in step mode), let the clock run.

        A venue runs once: after ``stop()`` build a new one.
        """
        if self._stopped:
            raise FatalError("this ReplayVenue was stopped; a venue runs once, build a new one")
        if self.urls is None:
            rest_url = self._server.start()
            self.urls = VenueUrls(rest_url, "ws" + rest_url.removeprefix("http") + "/")
        if not paused:
            self.clock.resume()
        return self.urls

    def resume(self) -> None:
        """Let the replay clock run."""
        self.clock.resume()

    def pause(self) -> None:
        """Stop the replay clock where it stands (streams fall silent, REST keeps answering)."""
        self.clock.pause()

    def wait_until(self, ts_ms: int, timeout_s: float = 30.0) -> bool:
        """Block until the streams have emitted everything up to replay time ``ts_ms``; False on timeout."""
        return self.driver.wait_until(ts_ms, timeout_s)

    def advance_to(self, ts_ms: int, timeout_s: float = 30.0) -> bool:
        """Move the clock to ``ts_ms`` (step mode or paused) and wait until the streams have caught up."""
        self.clock.set_ms(ts_ms)
        return self.driver.wait_until(ts_ms, timeout_s)

    def stats(self) -> dict[str, Any]:
        """Return fault/delivery counters per channel, REST fault counts, requests by path and the replay position."""
        out: dict[str, Any] = self.faults.stats()
        out["requests"] = dict(self.app[STATE].requests)
        out["replay"] = {
            "now_ms": self.clock.now_ms(),
            "replayed_ms": self.driver.replayed_ms,
            "finished": self.finished.is_set(),
        }
        out["mark"] = {
            "fallback": self.config.mark_fallback,
            "derived_symbols": sorted(self.driver.derived_mark),  # marks that were not Binance's
        }
        return out

    def stop(self) -> None:
        """Close every connection, stop the driver and the server. Safe to call twice."""
        self._server.stop()
        self._stopped = self._stopped or self.urls is not None
        self.urls = None

    def __enter__(self) -> VenueUrls:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start_driver(self, app: web.Application) -> None:
        self._driver_task = asyncio.ensure_future(self.driver.run())

    async def _stop_driver(self, app: web.Application) -> None:
        if self._driver_task is not None:
            self._driver_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver_task

    async def _clock_get(self, request: web.Request) -> web.Response:
        return web.json_response(
            self.stats()["replay"] | {"speed": self.clock.speed, "paused": self.clock.paused}
        )

    async def _clock_post(self, request: web.Request) -> web.Response:
        """``POST /_venue/clock`` with ``{"action": "pause"|"resume"|"speed"|"advance", "speed": x, "to_ms": t}``."""
        try:
            body = await request.json()
            action = body["action"]
            if action == "pause":
                self.clock.pause()
            elif action == "resume":
                self.clock.resume()
            elif action == "speed":
                self.clock.set_speed(body["speed"])
            elif action == "advance":
                self.clock.set_ms(int(body["to_ms"]))
            else:
                raise ValueError(f"unknown action {action!r}; expected pause, resume, speed or advance")
        except (ValueError, TypeError, KeyError) as e:
            return web.json_response({"error": f"clock: {e!s}"}, status=400)
        return await self._clock_get(request)


def _price_level(data: MarketData, symbol: str, ts_ms: int) -> float:
    """Return the close of the first 1m bar at or after ``ts_ms`` (else the last before it)."""
    after = data.read("candles_1m", symbol, ts_ms, ts_ms + 7 * 24 * HOUR_MS)
    if len(after):
        return float(after["close"].iat[0])
    before = data.read("candles_1m", symbol, ts_ms - 31 * 24 * HOUR_MS, ts_ms)
    if len(before):
        return float(before["close"].iat[-1])
    raise ValueError(
        f"no candles_1m of {symbol} within a month of {ts_ms}: cannot derive its exchangeInfo filters"
    )
