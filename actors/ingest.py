"""Realtime ingest of one symbol group: streams → candles, mark/book, online features → writer and hook.

``IngestService`` is the whole behaviour as a plain asyncio class; ``IngestActor`` is its Ray shell
(an async actor, one per symbol group). What it does:

- Warm-up: ``FeatureEngine.from_history`` on the lake's candles_1m, mark_1m, premium_1m and funding
  of the group plus BTCUSDT, topped up over REST (klines, markPriceKlines, premiumIndexKlines,
  fundingRate) from the lake's end to the venue's now, so online features continue the offline ones.
  The top-up candles (1m/15m/1h) and the top-up features are written too.
- Streams (``actors.streams``): kline_1m/15m/1h and markPrice@1s on ``/market``, bookTicker on
  ``/public``, routed by stream name; the latest book and mark per symbol are kept.
- Inputs of a 1m bar: OHLCV and taker buy volume from the closed kline (``x`` true); mark high/low/
  close aggregated from the markPrice ticks of that minute; premium close = mark / index − 1 of the
  minute's last tick (an approximation of Binance's premium index, documented in
  ``MarkUpdate.premium``); a minute whose ticks are not complete (a reconnect, dropped ticks) takes
  mark and premium from markPriceKlines/premiumIndexKlines over REST instead. Funding in force is
  the last settled rate, fetched over REST when the stream's next funding time passes.
- A minute of the group closes as soon as every symbol's 1m bar is in, or ``close_deadline_ms``
  (venue time) after the minute's end: the missing bars are then fetched over REST, and a symbol
  still without one is closed as missing (status NOT_CLOSED, ``stale["…"] = "missing bar"``).
  Minutes close strictly in order, so features of backfilled bars are computed in order. While the
  /market connection is down no minute closes; after it reconnects the bars missed in between are
  fetched (Binance replays nothing) before the next close.
- Each closed candle goes to the ``BatchedWriter`` through the candle door; the features of each
  1m close go to ``features_1m``; then the hook's ``on_close`` is awaited. Duplicate and
  out-of-order klines are ignored (per symbol and interval, by open time); malformed payloads become
  ``data_quality.malformed_message`` events (and bus messages with a bus URL), never a crash.

Only the group's own symbols are stored; BTCUSDT is streamed by every group for its cross features.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import ray
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from actors.backfill import BarSequence, FundingBook, MarkMinutes, Verdict, input_row, missing_range
from actors.streams import (
    BookUpdate,
    KlineUpdate,
    MalformedMessage,
    MarkUpdate,
    StreamConnection,
    StreamRouter,
)
from core.config import WriterConfig
from core.features import BTC_SYMBOL, FeatureEngine, SymbolInputs, build_inputs
from core.features_kernel import N_INPUTS
from core.messages import CloseEvent, DataQualityEvent, FeaturesReady, IngestHook, MarketTick, Topic
from core.symbols import parse_universe
from core.time import INTERVAL_MS, MINUTE_MS
from exchange.binance_rest import BinanceRest
from storage import schema
from storage.bus import Bus, open_bus
from storage.db import make_engine
from storage.lake import Lake
from storage.writer import BatchedWriter

log = logging.getLogger(__name__)

MALFORMED_KIND = "data_quality.malformed_message"
#: 1m bars of warm-up history handed to the hook's optional ``warm(history)`` (its own state, e.g. ATR).
HOOK_HISTORY_BARS = 3000
_LAKE_DATASETS = {"candles": "candles_1m", "mark": "mark_1m", "premium": "premium_1m", "funding": "funding"}


class IngestConfig(BaseModel):
    """One ingest actor's configuration. Times in venue milliseconds (``_ms``) or wall seconds (``_s``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: int = Field(ge=0, description="index of the symbol group")
    symbols: tuple[str, ...] = Field(
        description="the group's symbols (internal form); BTCUSDT is streamed too"
    )
    rest_url: str = Field(description="REST base, e.g. https://fapi.binance.com or the replay venue's URL")
    ws_url: str = Field(
        description="stream base (python-binance FSTREAM_URL), e.g. wss://fstream.binance.com/"
    )
    database_url: str = Field(description="SQLAlchemy URL of the database the writer fills")
    lake_path: str | None = Field(None, description="parquet lake with the history for the warm-up")
    bus_url: str | None = Field(None, description="Redis URL of the event bus; None publishes nothing")
    intervals: tuple[str, ...] = Field(("1m", "15m", "1h"), description="kline intervals streamed and stored")
    silence_s: dict[str, float] = Field(
        default_factory=lambda: {"markPrice": 10.0, "bookTicker": 30.0, "kline_1m": 90.0},
        description="wall seconds without a message of a stream kind before its connection is renewed",
    )
    connection_silence_s: float = Field(
        10.0, gt=0, description="wall seconds without any message → reconnect"
    )
    backoff_base_s: float = Field(0.5, gt=0, description="first reconnect wait, wall seconds")
    backoff_cap_s: float = Field(30.0, gt=0, description="longest reconnect wait, wall seconds")
    max_connection_age_s: float = Field(
        23.5 * 3600, gt=0, description="renew a connection after this long (Binance closes at 24 h)"
    )
    overlap_s: float = Field(5.0, ge=0, description="how long old and new connection overlap at renewal")
    close_deadline_ms: int = Field(
        3000,
        ge=0,
        description="venue ms after a minute's end to wait for all 1m bars before fetching/marking",
    )
    mark_max_age_ms: int = Field(5000, gt=0, description="mark older than this (venue ms) is stale")
    book_max_age_ms: int = Field(30_000, gt=0, description="book older than this (venue ms) is stale")
    mark_source: Literal["ticks", "rest"] = Field(
        "ticks",
        description="mark/premium of a minute from the stream's ticks (REST when incomplete) or always REST",
    )
    mark_tick_tolerance_ms: int = Field(
        2000, ge=0, description="a minute counts as covered by ticks if they flowed from its start + this"
    )
    warmup_minutes: int = Field(
        3 * 1440, ge=1, description="history fetched over REST when the lake has none"
    )
    max_topup_minutes: int = Field(7 * 1440, ge=1, description="REST top-up after the lake's end at most")
    tick_batch_ms: int = Field(20, ge=0, le=100, description="on_ticks gathers a burst this long (wall ms)")
    max_queue_size: int = Field(100_000, ge=100, description="messages python-binance may queue per socket")
    writer: WriterConfig = Field(default_factory=WriterConfig)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return parse_universe(list(v))

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [i for i in v if i not in INTERVAL_MS]
        if bad or "1m" not in v:
            raise ValueError(f"intervals must include 1m and be known kline intervals, got {v}")
        return v


class IngestService:
    """The ingest of one symbol group (see the module docstring); ``IngestActor`` runs it in Ray."""

    def __init__(self, config: IngestConfig, hook_factory: Callable[[], IngestHook] | None = None) -> None:
        self.config = config
        self._hook_factory = hook_factory
        self._own = config.symbols
        self._symbols = (BTC_SYMBOL, *(s for s in config.symbols if s != BTC_SYMBOL))
        self._router = StreamRouter(self._symbols, config.intervals)
        self._seq = BarSequence()
        self._marks = MarkMinutes(self._symbols)
        self._funding: dict[str, FundingBook] = {}
        self._engine: FeatureEngine | None = None
        self._history: dict[str, SymbolInputs] = {}
        self._pending: dict[int, dict[str, tuple[float, ...]]] = {}
        self._quote_volume: dict[tuple[str, int], float] = {}
        self._rest_marks: dict[str, dict[int, tuple[float, float, float, float]]] = {
            s: {} for s in self._symbols
        }
        self._last_minute = -1
        self._last_kline_wall: dict[int, int] = {}
        self._book: dict[str, tuple[float, float, int, int]] = {}  # bid, ask, event ms, update id
        self._mark: dict[str, tuple[float, int]] = {}
        self._kline_seen: dict[str, tuple[int, int]] = {}  # last 1m open ms, wall ms
        self._venue_ms = 0
        self._venue_wall_s = time.monotonic()
        self._resync_until_ms = 0
        self._market_up = False
        self._public_up = False
        self._ticks: dict[str, MarketTick] = {}
        self._tick_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._connections: dict[str, StreamConnection] = {}
        self._rest: BinanceRest | None = None
        self._writer: BatchedWriter | None = None
        self._bus: Bus | None = None
        self._hook: IngestHook | None = None
        self._started_wall_s = time.monotonic()
        self._counts: dict[str, int] = {
            "closes": 0, "duplicates": 0, "ignored_ticks": 0, "out_of_order": 0, "late_bars": 0, "malformed": 0,
            "backfilled_bars": 0, "rest_marks": 0, "missing_bars": 0, "hook_errors": 0, "tick_batches": 0,
            "candles_submitted": 0, "feature_rows": 0, "writer_errors": 0, "funding_fetches": 0,
        }  # fmt: skip
        self._messages: dict[str, int] = {}
        self._last_close_latency_ms: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Warm up, connect the streams and start closing minutes; return a warm-up summary."""
        cfg = self.config
        self._rest = BinanceRest(cfg.rest_url, max_attempts=5, backoff_s=0.2, max_backoff_s=5.0)
        db = make_engine(cfg.database_url)
        await asyncio.to_thread(_ensure_instruments, db, self._own)
        self._writer = BatchedWriter(db, cfg.writer)
        if cfg.bus_url:
            self._bus = open_bus(cfg.bus_url)
        self._hook = self._hook_factory() if self._hook_factory is not None else None
        summary = await asyncio.to_thread(self._warm_up)
        warm = getattr(self._hook, "warm", None)
        if callable(warm):  # the hook's own warm-up on the same history, before the first close
            await warm(self._history)
        self._history = {}
        for category in ("market", "public"):
            conn = StreamConnection(
                f"ingest g{cfg.group_id} {category}", cfg.ws_url, category, self._router.names[category],
                self._on_message, self._state_callback(category),
                silence_s=cfg.silence_s, connection_silence_s=cfg.connection_silence_s,
                backoff_base_s=cfg.backoff_base_s, backoff_cap_s=cfg.backoff_cap_s,
                max_age_s=cfg.max_connection_age_s, overlap_s=cfg.overlap_s, max_queue_size=cfg.max_queue_size,
            )  # fmt: skip
            self._connections[category] = conn
            self._tasks.append(asyncio.create_task(conn.run(), name=conn.name))
        self._tasks.append(asyncio.create_task(self._closer(), name="closer"))
        self._tasks.append(asyncio.create_task(self._tick_flusher(), name="ticks"))
        return summary

    async def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Close the streams, flush the writer and return the final stats."""
        for conn in self._connections.values():
            await conn.stop()
        for task in self._tasks:
            if task.get_name() in ("closer", "ticks"):
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close, timeout_s)
        if self._rest is not None:
            self._rest.close()
        if self._bus is not None:
            self._bus.close()
        return self.stats()

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Write every row submitted so far; return False if ``timeout_s`` ran out."""
        assert self._writer is not None, "start() first"
        return await asyncio.to_thread(self._writer.flush, timeout_s)

    # --- warm-up -----------------------------------------------------------------------------------

    def _warm_up(self) -> dict[str, Any]:
        cfg, rest = self.config, self._rest
        assert rest is not None
        lake = Lake(Path(cfg.lake_path)) if cfg.lake_path else None
        now_ms = rest.server_time_ms()
        forming = now_ms - now_ms % MINUTE_MS
        inputs, topup_start = {}, {}
        for s in self._symbols:
            frames = {
                k: _lake_frame(lake, d, s, now_ms + 1 if k == "funding" else forming)
                for k, d in _LAKE_DATASETS.items()
            }
            candles = frames["candles"]
            start = (
                int(candles["ts"].iloc[-1]) + MINUTE_MS
                if len(candles)
                else forming - cfg.warmup_minutes * MINUTE_MS
            )
            start = max(start, forming - cfg.max_topup_minutes * MINUTE_MS)
            topup_start[s] = start
            if start < forming:
                frames["candles"] = _concat(candles, rest.klines(s, "1m", start, forming))
                frames["mark"] = _concat(frames["mark"], rest.mark_price_klines(s, "1m", start, forming))
                frames["premium"] = _concat(
                    frames["premium"], rest.premium_index_klines(s, "1m", start, forming)
                )
            f = frames["funding"]
            f_start = int(f["ts"].iloc[-1]) + 1 if len(f) else start - 30 * 1440 * MINUTE_MS
            frames["funding"] = _concat(f, rest.funding_rates(s, f_start, now_ms + 1))
            cols = {k: {c: v[c].to_numpy() for c in v.columns} for k, v in frames.items()}
            inputs[s] = build_inputs(cols["candles"], cols["mark"], cols["premium"], cols["funding"])
            self._history[s] = SymbolInputs(
                inputs[s].ts_ms[-HOOK_HISTORY_BARS:], inputs[s].values[-HOOK_HISTORY_BARS:]
            )
            self._funding[s] = FundingBook(cols["funding"]["ts"], cols["funding"]["funding_rate"])
            if len(inputs[s]):
                self._seq.accept(s, "1m", int(inputs[s].ts_ms[-1]))
                self._kline_seen[s] = (int(inputs[s].ts_ms[-1]), int(time.time() * 1000))
            if s in self._own:
                self._store_candles("1m", frames["candles"].loc[frames["candles"]["ts"] >= start], s)
        engine, feature_frames = FeatureEngine.from_history(inputs)
        self._engine = engine
        self._last_minute = forming - MINUTE_MS
        self._venue_ms, self._venue_wall_s = now_ms, time.monotonic()
        rows = 0
        for s in self._own:
            frame = feature_frames[s]
            for i in np.flatnonzero(frame.ts_ms >= topup_start[s]):
                self._submit_features([frame.row(int(i))])
                rows += 1
        for interval in cfg.intervals:
            if interval == "1m":
                continue
            step = INTERVAL_MS[interval]
            last_closed = (now_ms // step) * step - step
            for s in self._symbols:
                self._seq.accept(s, interval, last_closed)
                if s in self._own:
                    start = min(topup_start[s], last_closed) - (min(topup_start[s], last_closed) % step)
                    self._store_candles(interval, rest.klines(s, interval, start, last_closed + step), s)
        return {
            "server_time_ms": now_ms, "last_minute_ms": self._last_minute, "feature_rows": rows,
            "history_bars": {s: len(inputs[s]) for s in self._symbols},
            "topup_bars": {s: max(0, (forming - topup_start[s]) // MINUTE_MS) for s in self._symbols},
        }  # fmt: skip

    # --- stream messages ---------------------------------------------------------------------------

    def _state_callback(self, category: str) -> Callable[[bool, bool], Any]:
        async def on_state(up: bool, first: bool) -> None:
            if category == "market":
                self._market_up = up
                if up:  # fetch what was missed before the next close, without waiting for deadlines
                    self._resync_until_ms = self._venue_now_ms() + self.config.close_deadline_ms
                else:
                    self._marks.break_coverage()
                self._wake.set()
            else:
                self._public_up = up

        return on_state

    def _on_message(self, message: dict[str, Any], received_wall_ms: int) -> None:
        try:
            update = self._router.route(message)
        except MalformedMessage as e:
            self._record_malformed(e)
            return
        if update is None:
            return
        kind = type(update).__name__
        self._messages[kind] = self._messages.get(kind, 0) + 1
        if isinstance(update, KlineUpdate):
            self._note_venue_time(update.event_ms)
            if update.closed:
                self._accept_bar(update, received_wall_ms)
        elif isinstance(update, MarkUpdate):
            self._on_mark(update)
        elif isinstance(update, BookUpdate):
            self._on_book(update)

    def _note_venue_time(self, event_ms: int) -> None:
        if event_ms > self._venue_ms:
            self._venue_ms, self._venue_wall_s = event_ms, time.monotonic()

    def _venue_now_ms(self) -> int:
        """Venue time: the newest event time seen, advanced by the wall time since it arrived."""
        return self._venue_ms + int((time.monotonic() - self._venue_wall_s) * 1000)

    def _accept_bar(self, bar: KlineUpdate, received_wall_ms: int, *, fill: bool = False) -> bool:
        """Take a closed bar (streamed, or fetched to ``fill`` a hole); False for a duplicate or a
        streamed bar older than the last accepted one."""
        verdict = self._seq.verdict(bar.symbol, bar.interval, bar.open_ms, fill=fill)
        if verdict is not Verdict.NEW:
            self._counts["duplicates" if verdict is Verdict.DUPLICATE else "out_of_order"] += 1
            return False
        self._seq.accept(bar.symbol, bar.interval, bar.open_ms)
        if bar.symbol in self._own:
            self._store_candles(bar.interval, [bar.row()], bar.symbol)
        if bar.interval != "1m":
            return True
        self._kline_seen[bar.symbol] = (bar.open_ms, received_wall_ms)
        if bar.open_ms <= self._last_minute:  # its minute was closed without it: stored, not featured
            self._counts["late_bars"] += 1
            return True
        values = (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.taker_buy_volume)
        self._pending.setdefault(bar.open_ms, {})[bar.symbol] = values
        self._quote_volume[(bar.symbol, bar.open_ms)] = bar.quote_volume
        self._last_kline_wall[bar.open_ms] = max(self._last_kline_wall.get(bar.open_ms, 0), received_wall_ms)
        self._wake.set()
        return True

    def _on_mark(self, u: MarkUpdate) -> None:
        self._note_venue_time(u.event_ms)
        if not self._marks.add(u.symbol, u.event_ms, u.mark, u.premium):
            self._counts["ignored_ticks"] += 1  # a duplicate or a tick older than the last
            return
        self._mark[u.symbol] = (u.mark, u.event_ms)
        self._funding[u.symbol].expect(u.next_funding_ms)
        if u.symbol in self._own:
            bid, ask, _, _ = self._book.get(u.symbol, (math.nan, math.nan, 0, 0))
            self._ticks[u.symbol] = MarketTick(u.symbol, u.event_ms, u.mark, bid, ask)
            self._tick_event.set()

    def _on_book(self, u: BookUpdate) -> None:
        last = self._book.get(u.symbol)
        if last is not None and (u.update_id, u.event_ms) <= (last[3], last[2]):
            self._counts["ignored_ticks"] += 1
            return
        self._book[u.symbol] = (u.bid, u.ask, u.event_ms, u.update_id)

    def _record_malformed(self, e: MalformedMessage) -> None:
        self._counts["malformed"] += 1
        source = f"ingest.g{self.config.group_id}"
        row = quality_event_row(source, e, int(time.time() * 1000))
        log.warning("%s: malformed message (%s): %s", source, e.reason, e.detail)
        self._submit("events", [row])
        if self._bus is not None:
            try:
                self._bus.publish(Topic.DATA_QUALITY_EVENT, DataQualityEvent(
                    ts_ms=row["ts"], source=source, symbol=e.symbol, reason=e.reason, payload=row["payload"]))  # fmt: skip
            except Exception:
                log.exception("publishing a data-quality event failed")

    # --- closing minutes ---------------------------------------------------------------------------

    async def _closer(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)
            self._wake.clear()
            try:
                await self._close_ready_minutes()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or an unreachable REST must not end ingest: retry next round
                log.exception(
                    "ingest g%d: closing minute %d failed",
                    self.config.group_id,
                    self._last_minute + MINUTE_MS,
                )
                await asyncio.sleep(1.0)

    async def _close_ready_minutes(self) -> None:
        assert self._engine is not None
        while True:
            minute = self._last_minute + MINUTE_MS
            now = self._venue_now_ms()
            if minute + MINUTE_MS > now:
                return
            have = self._pending.get(minute, {})
            missing = [s for s in self._symbols if s not in have]
            if missing:
                if not self._market_up:
                    return  # no close while the stream is down: the gap is fetched after it is back
                waiting = now < minute + MINUTE_MS + self.config.close_deadline_ms
                if waiting and minute + MINUTE_MS > self._resync_until_ms:
                    return
                await self._backfill(missing, minute)
                have = self._pending.get(minute, {})
            await self._close_minute(minute, have)

    async def _backfill(self, symbols: list[str], minute: int) -> None:
        """Fetch the closed 1m bars of ``symbols`` from ``minute`` to now over REST (and 15m/1h gaps)."""
        rest = self._rest
        assert rest is not None
        for s in symbols:
            frame = await asyncio.to_thread(rest.klines, s, "1m", minute, self._venue_now_ms() + MINUTE_MS)
            wall_ms = int(time.time() * 1000)
            for bar in _bars_of(s, "1m", frame):
                if self._accept_bar(bar, wall_ms, fill=True):
                    self._counts["backfilled_bars"] += 1
        for interval in self.config.intervals:
            if interval == "1m":
                continue
            step = INTERVAL_MS[interval]
            for s in self._symbols:
                gap = missing_range(self._seq.last.get((s, interval)), self._venue_now_ms(), step)
                if gap is None or gap[1] + step > self._venue_now_ms() - self.config.close_deadline_ms:
                    continue  # the stream may still bring the newest bar
                frame = await asyncio.to_thread(rest.klines, s, interval, gap[0], gap[1])
                for bar in _bars_of(s, interval, frame):
                    if self._accept_bar(bar, int(time.time() * 1000), fill=True):
                        self._counts["backfilled_bars"] += 1

    async def _mark_of(self, symbol: str, minute: int) -> tuple[float, float, float, float] | None:
        ticks = self._marks.take(symbol, minute, self.config.mark_tick_tolerance_ms)
        if ticks is not None and self.config.mark_source == "ticks":
            return ticks
        cache = self._rest_marks[symbol]
        if minute not in cache:
            rest = self._rest
            assert rest is not None
            end = max(self._venue_now_ms(), minute + MINUTE_MS)
            mark = await asyncio.to_thread(rest.mark_price_klines, symbol, "1m", minute, end)
            premium = await asyncio.to_thread(rest.premium_index_klines, symbol, "1m", minute, end)
            prem = dict(zip(premium["ts"].tolist(), premium["close"].tolist(), strict=True))
            for t, h, lo, c in zip(*(mark[k].tolist() for k in ("ts", "high", "low", "close")), strict=True):
                cache[int(t)] = (h, lo, c, prem.get(t, math.nan))
            self._counts["rest_marks"] += 1
        for t in [t for t in cache if t < minute]:
            del cache[t]
        return cache.pop(minute, None)

    async def _funding_of(self, symbol: str, close_ms: int) -> tuple[float, float]:
        book = self._funding[symbol]
        if book.due(close_ms):
            rest = self._rest
            assert rest is not None
            start = (book.last_ms() or close_ms - 30 * 1440 * MINUTE_MS) + 1
            frame = await asyncio.to_thread(rest.funding_rates, symbol, start, close_ms + 1)
            book.settle(frame["ts"].tolist(), frame["funding_rate"].tolist(), close_ms)
            self._counts["funding_fetches"] += 1
        return book.in_force(close_ms)

    async def _close_minute(self, minute: int, have: dict[str, tuple[float, ...]]) -> None:
        engine = self._engine
        assert engine is not None
        close_ms = minute + MINUTE_MS
        inputs = np.full((len(self._symbols), N_INPUTS), np.nan)
        closed = np.zeros(len(self._symbols), dtype=bool)
        for k, s in enumerate(engine.symbols):
            bar = have.get(s)
            if bar is None:
                self._marks.take(s, minute, 0)  # forget the minute's ticks
                continue
            mark = await self._mark_of(s, minute)
            inputs[k] = input_row(bar, mark, await self._funding_of(s, close_ms))  # type: ignore[arg-type]
            closed[k] = True
        features, status = engine.update(minute, inputs, closed)
        self._submit_features([r for r in engine.rows(minute, features, status) if r.symbol in self._own])
        self._pending.pop(minute, None)
        self._last_minute = minute
        self._counts["closes"] += 1
        self._counts["missing_bars"] += int((~closed).sum())
        received = self._last_kline_wall.pop(minute, int(time.time() * 1000))
        self._last_close_latency_ms = int(time.time() * 1000) - received
        event = CloseEvent(
            group_id=self.config.group_id, ts_ms=minute, symbols=engine.symbols, features=features.copy(),
            status=status.astype(np.int8), close={s: have[s][3] for s in engine.symbols if s in have},
            quote_volume={s: self._quote_volume.pop((s, minute), math.nan) for s in engine.symbols if s in have},
            book={s: (b[0], b[1], b[2]) for s, b in self._book.items()}, mark=dict(self._mark),
            stale=self._stale(set(have)), received_ms=received, inputs=inputs.copy(),
        )  # fmt: skip
        if self._bus is not None:
            try:
                self._bus.publish_many(Topic.FEATURES_READY, [
                    FeaturesReady(symbol=s, ts_ms=minute, schema_version=r.schema_version, schema_hash=r.schema_hash)
                    for s, r in ((r.symbol, r) for r in engine.rows(minute, features, status)) if s in self._own
                ])  # fmt: skip
            except Exception:
                log.exception("publishing features.ready failed")
        if self._hook is not None:
            try:
                await self._hook.on_close(event)
            except Exception:
                self._counts["hook_errors"] += 1
                log.exception("ingest hook on_close failed at %d", minute)

    def _stale(self, with_bar: set[str]) -> dict[str, str]:
        cfg, now = self.config, self._venue_now_ms()
        out: dict[str, str] = {}
        for s in self._symbols:
            book, mark = self._book.get(s), self._mark.get(s)
            if s not in with_bar:
                out[s] = "missing bar"
            elif not self._market_up:
                out[s] = "stream silent (market)"
            elif now < self._resync_until_ms:
                out[s] = "backfilling"
            elif mark is None or now - mark[1] > cfg.mark_max_age_ms:
                out[s] = f"mark older than {cfg.mark_max_age_ms} ms"
            elif not self._public_up:
                out[s] = "stream silent (public)"
            elif book is None or now - book[2] > cfg.book_max_age_ms:
                out[s] = f"book older than {cfg.book_max_age_ms} ms"
        return out

    # --- hook ticks --------------------------------------------------------------------------------

    async def _tick_flusher(self) -> None:
        while True:
            await self._tick_event.wait()
            await asyncio.sleep(self.config.tick_batch_ms / 1000)
            self._tick_event.clear()
            ticks, self._ticks = list(self._ticks.values()), {}
            if not ticks or self._hook is None:
                continue
            ticks = [
                MarketTick(t.symbol, t.ts_ms, t.mark, *self._book.get(t.symbol, (t.bid, t.ask))[:2])
                for t in ticks
            ]
            self._counts["tick_batches"] += 1
            try:
                await self._hook.on_ticks(ticks)
            except Exception:
                self._counts["hook_errors"] += 1
                log.exception("ingest hook on_ticks failed")

    # --- storage -----------------------------------------------------------------------------------

    def _store_candles(self, interval: str, rows: Any, symbol: str) -> None:
        if isinstance(rows, pd.DataFrame):
            if rows.empty:
                return
            rows = rows.assign(symbol=symbol)
        if self._writer is None or len(rows) == 0:
            return
        try:
            self._writer.submit_candles(interval, rows, self._own, source=f"ingest.g{self.config.group_id}")
            self._counts["candles_submitted"] += len(rows)
        except Exception:
            self._counts["writer_errors"] += 1
            log.exception("submitting %s candles of %s failed", interval, symbol)

    def _submit_features(self, rows: list[Any]) -> None:
        self._submit("features_1m", [
            {"symbol": r.symbol, "ts": r.ts_ms, "schema_version": r.schema_version, "features": dict(r.features),
             "atr": r.atr, "funding_z": r.funding_z, "btc_regime": r.btc_regime}
            for r in rows
        ])  # fmt: skip
        self._counts["feature_rows"] += len(rows)

    def _submit(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows or self._writer is None:
            return
        try:
            self._writer.submit(table, rows)
        except Exception:
            self._counts["writer_errors"] += 1
            log.exception("submitting %d rows of %s failed", len(rows), table)

    # --- reports -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Return counters: messages per kind and per second, reconnects, backfills, rejects, latency."""
        elapsed = max(time.monotonic() - self._started_wall_s, 1e-9)
        conns = {name: c.stats for name, c in self._connections.items()}
        total = sum(self._messages.values())
        return {
            **self._counts, "messages": dict(self._messages), "messages_per_s": total / elapsed,
            "reconnects": sum(c.reconnects for c in conns.values()),
            "connections": {n: {"connects": c.connects, "reconnects": c.reconnects, "silences": c.silences,
                                "proactive_reconnects": c.proactive_reconnects, "errors": c.errors,
                                "failed_connects": c.failed_connects, "connected": c.connected,
                                "last_error": c.last_error, "messages": c.messages,
                                "kind_messages": dict(c.kind_messages)} for n, c in conns.items()},
            "last_close_latency_ms": self._last_close_latency_ms, "last_minute_ms": self._last_minute,
            "writer": None if self._writer is None else self._writer.stats().__repr__(),
        }  # fmt: skip

    def hook_stats(self) -> dict[str, Any]:
        """The hook's own counters (``stats()`` of the decision side), {} without a hook or stats."""
        stats = getattr(self._hook, "stats", None)
        return stats() if callable(stats) else {}

    def freshness(self) -> dict[str, dict[str, Any]]:
        """Return per symbol the venue-time and wall-time ages (ms) of its last kline, mark and book,
        and why it is stale (None when fresh)."""
        now, wall = self._venue_now_ms(), int(time.time() * 1000)
        stale = self._stale(
            {s for s in self._symbols if self._kline_seen.get(s, (-1, 0))[0] >= self._last_minute}
        )
        out = {}
        for s in self._symbols:
            kline, mark, book = self._kline_seen.get(s), self._mark.get(s), self._book.get(s)
            out[s] = {
                "last_bar_ms": None if kline is None else kline[0],
                "kline_age_ms": None if kline is None else now - (kline[0] + MINUTE_MS),
                "kline_wall_age_ms": None if kline is None else wall - kline[1],
                "mark_age_ms": None if mark is None else now - mark[1],
                "book_age_ms": None if book is None else now - book[2],
                "stale": stale.get(s),
            }
        return out


@ray.remote(max_concurrency=8)  # type: ignore[call-overload]
class IngestActor(IngestService):
    """Ray shell of ``IngestService``: one async actor per symbol group."""


# --- helpers ---------------------------------------------------------------------------------------


def quality_event_row(source: str, error: MalformedMessage, now_ms: int) -> dict[str, Any]:
    """Return the ``events`` row recording a malformed stream message: reason, detail and the raw message."""
    payload = {"reason": error.reason, "detail": error.detail, "message": _json_safe(error.payload)}
    return {
        "ts": now_ms,
        "kind": MALFORMED_KIND,
        "source": source,
        "symbol": error.symbol,
        "payload": payload,
    }


def _ensure_instruments(engine: sa.Engine, symbols: tuple[str, ...]) -> None:
    """Insert the group's symbols that ``instruments`` lacks (candles refer to them); touch no other row."""
    t = schema.instruments
    with engine.begin() as conn:
        have = set(conn.execute(sa.select(t.c.symbol).where(t.c.symbol.in_(symbols))).scalars())
        new = [{"symbol": s, "created_at": int(time.time() * 1000)} for s in symbols if s not in have]
        if new:
            conn.execute(sa.insert(t), new)


def _lake_frame(lake: Lake | None, dataset: str, symbol: str, end_ms: int) -> pd.DataFrame:
    """The lake's rows of ``dataset`` before ``end_ms``: a replay may run on a lake that also holds
    the minutes still to be replayed, and the warm-up must not see them."""
    if lake is None or lake.coverage(dataset, symbol) is None:
        cols = ["ts", "funding_rate"] if dataset == "funding" else ["ts", "open", "high", "low", "close"]
        return pd.DataFrame({c: np.array([], dtype=np.int64 if c == "ts" else np.float64) for c in cols})
    return lake.read(dataset, symbol, None, end_ms)


def _concat(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    if new.empty:
        return old
    if old.empty:
        return new.reset_index(drop=True)
    both = pd.concat([old, new[[c for c in new.columns if c in old.columns]]], ignore_index=True)
    return both.drop_duplicates("ts", keep="last").sort_values("ts", kind="stable").reset_index(drop=True)


def _bars_of(symbol: str, interval: str, frame: pd.DataFrame) -> list[KlineUpdate]:
    """REST kline rows as closed ``KlineUpdate``s (event time: the bar's end)."""
    step = INTERVAL_MS[interval]
    cols = {c: frame[c].tolist() for c in frame.columns}
    return [
        KlineUpdate(
            symbol=symbol,
            interval=interval,
            open_ms=int(t),
            event_ms=int(t) + step,
            open=cols["open"][i],
            high=cols["high"][i],
            low=cols["low"][i],
            close=cols["close"][i],
            volume=cols["volume"][i],
            quote_volume=cols.get("quote_volume", [math.nan] * len(frame))[i],
            trade_count=int(cols.get("trade_count", [0] * len(frame))[i]),
            taker_buy_volume=cols.get("taker_buy_volume", [math.nan] * len(frame))[i],
            closed=True,
        )  # fmt: skip
        for i, t in enumerate(cols.get("ts", []))
    ]


def _json_safe(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return repr(value)[:500]
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in list(value.items())[:100]}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value[:100]]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)[:500]
