"""Realtime ingest of one symbol group: the I/O around ``IngestBook``, and its Ray actor.

``IngestBook`` (``actors.ingest_book``) holds the rules — what is new, when a minute closes, what
must be fetched — without I/O. ``IngestService`` does the I/O around it as a plain asyncio class;
``IngestActor`` is its Ray shell (an async actor, one per symbol group). What the I/O is:

- Warm-up: ``FeatureEngine.from_history`` on the lake's candles_1m, mark_1m, premium_1m and funding
  of the group plus BTCUSDT, topped up over REST (klines, markPriceKlines, premiumIndexKlines,
  fundingRate) from the lake's end to the venue's now, so online features continue the offline ones.
  The top-up candles (1m/15m/1h) and the top-up features are written too.
- Streams (``exchange.binance``): kline_1m/15m/1h and markPrice@1s on ``/market``, bookTicker on
  ``/public``, each a supervised ``StreamConnection``, routed by stream name into updates that are
  fed to the book. Venue time is the newest event time seen, advanced by the wall time since.
- A closer task asks the book for the next minute to close, fetches over REST what it requests
  (missing bars, marks of minutes the ticks do not cover, funding settlements) and closes it.
- Each accepted candle goes to the ``BatchedWriter`` through the candle door; the features of each
  1m close go to ``features_1m``; then the hook's ``on_close`` is awaited, and batches of market
  ticks go to its ``on_ticks``. Malformed payloads become ``data_quality.malformed_message`` events
  (and bus messages with a bus URL), never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import sqlalchemy as sa

from actors.backfill import FundingBook
from actors.ingest_book import DueMinute, IngestBook, KlineRequest, MarkRequest
from actors.ingest_config import IngestConfig
from core.errors import MalformedMessage
from core.features import SymbolInputs, build_inputs
from core.jsonsafe import json_safe
from core.messages import DataQualityEvent, FeaturesReady, IngestHook, MarketTick, Topic
from core.time import INTERVAL_MS, MINUTE_MS
from exchange.binance.connection import StreamConnection
from exchange.binance.rest import BinanceRest
from exchange.binance.streams import StreamRouter
from exchange.updates import BookUpdate, KlineUpdate, MarkUpdate, closed_bars
from storage import schema
from storage.bus import Bus, open_bus
from storage.db import make_engine
from storage.lake import Lake
from storage.writer import BatchedWriter

__all__ = [
    "HOOK_HISTORY_BARS",
    "MALFORMED_KIND",
    "IngestActor",
    "IngestConfig",
    "IngestService",
    "quality_event_row",
]

log = logging.getLogger(__name__)

MALFORMED_KIND = "data_quality.malformed_message"
#: 1m bars of warm-up history handed to the hook's optional ``warm(history)`` (its own state, e.g. ATR).
HOOK_HISTORY_BARS = 3000
_LAKE_DATASETS = {"candles": "candles_1m", "mark": "mark_1m", "premium": "premium_1m", "funding": "funding"}


class IngestService:
    """The ingest of one symbol group (see the module docstring); ``IngestActor`` runs it in Ray."""

    def __init__(self, config: IngestConfig, hook_factory: Callable[[], IngestHook] | None = None) -> None:
        self.config = config
        self._hook_factory = hook_factory
        self._book = IngestBook(config)
        self._router = StreamRouter(self._book.symbols, config.intervals)
        self._history: dict[str, SymbolInputs] = {}
        self._venue_ms = 0
        self._venue_wall_s = time.monotonic()
        self._ticks: list[MarketTick] = []  # in arrival order, none dropped: every tick can trigger an exit
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
            "malformed": 0, "hook_errors": 0, "tick_batches": 0, "candles_submitted": 0, "feature_rows": 0,
            "writer_errors": 0,
        }  # fmt: skip
        self._messages: dict[str, int] = {}
        self._last_close_latency_ms: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Warm up, connect the streams and start closing minutes; return a warm-up summary."""
        cfg = self.config
        self._rest = BinanceRest(cfg.rest_url, max_attempts=5, backoff_s=0.2, max_backoff_s=5.0)
        db = make_engine(cfg.database_url)
        await asyncio.to_thread(_ensure_instruments, db, self._book.own)
        self._writer = BatchedWriter(db, cfg.writer)
        if cfg.bus_url:
            self._bus = open_bus(cfg.bus_url)
        self._hook = self._hook_factory() if self._hook_factory is not None else None
        stored = await asyncio.to_thread(_last_candles, db, self._book.own)
        summary = await asyncio.to_thread(self._warm_up, stored)
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

    def _warm_up(self, stored: dict[str, int] | None = None) -> dict[str, Any]:
        """``stored``: the database's last 1m candle per own symbol; a restarted actor (its node lost)
        writes the candles after it, from the lake or the REST top-up, so the gap it was away leaves no hole."""
        cfg, rest, book = self.config, self._rest, self._book
        assert rest is not None
        lake = Lake(Path(cfg.lake_path)) if cfg.lake_path else None
        now_ms = rest.server_time_ms()
        forming = now_ms - now_ms % MINUTE_MS
        inputs, funding, topup_start = {}, {}, {}
        for s in book.symbols:
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
            funding[s] = FundingBook(cols["funding"]["ts"], cols["funding"]["funding_rate"])
            if s in book.own:
                first, last = start, (stored or {}).get(s)
                if last is not None:  # the gap since the last stored candle, if any (top-up bound)
                    first = min(start, max(last + MINUTE_MS, forming - cfg.max_topup_minutes * MINUTE_MS))
                self._store_candles("1m", frames["candles"].loc[frames["candles"]["ts"] >= first], s)
        feature_frames = book.warm(inputs, funding, now_ms, _wall_ms())
        self._venue_ms, self._venue_wall_s = now_ms, time.monotonic()
        rows = 0
        for s in book.own:
            frame = feature_frames[s]
            for i in np.flatnonzero(frame.ts_ms >= topup_start[s]):
                self._submit_features([frame.row(int(i))])
                rows += 1
        for interval in cfg.intervals:
            if interval == "1m":
                continue
            step = INTERVAL_MS[interval]
            last_closed = (now_ms // step) * step - step
            for s in book.own:
                start = min(topup_start[s], last_closed) - (min(topup_start[s], last_closed) % step)
                self._store_candles(interval, rest.klines(s, interval, start, last_closed + step), s)
        return {
            "server_time_ms": now_ms, "last_minute_ms": book.last_minute, "feature_rows": rows,
            "history_bars": {s: len(inputs[s]) for s in book.symbols},
            "topup_bars": {s: max(0, (forming - topup_start[s]) // MINUTE_MS) for s in book.symbols},
        }  # fmt: skip

    # --- stream messages ---------------------------------------------------------------------------

    def _state_callback(self, category: str) -> Callable[[bool, bool], Any]:
        async def on_state(up: bool, first: bool) -> None:
            self._book.on_connection(category, up, self._venue_now_ms())
            if category == "market":
                self._wake.set()

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
                self._store_row(update, self._book.on_kline(update, received_wall_ms))
                self._wake.set()
        elif isinstance(update, MarkUpdate):
            self._note_venue_time(update.event_ms)
            tick = self._book.on_mark(update)
            if tick is not None:
                self._ticks.append(tick)
                self._tick_event.set()
        elif isinstance(update, BookUpdate):
            self._book.on_book(update)

    def _note_venue_time(self, event_ms: int) -> None:
        if event_ms > self._venue_ms:
            self._venue_ms, self._venue_wall_s = event_ms, time.monotonic()

    def _venue_now_ms(self) -> int:
        """Venue time: the newest event time seen, advanced by the wall time since it arrived."""
        return self._venue_ms + int((time.monotonic() - self._venue_wall_s) * 1000)

    def _record_malformed(self, e: MalformedMessage) -> None:
        self._counts["malformed"] += 1
        source = f"ingest.g{self.config.group_id}"
        row = quality_event_row(source, e, _wall_ms())
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
                    self._book.last_minute + MINUTE_MS,
                )
                await asyncio.sleep(1.0)

    async def _close_ready_minutes(self) -> None:
        book = self._book
        while (due := book.next_close(self._venue_now_ms())) is not None:
            if due.missing:
                await self._backfill(due)
            await self._close(due.minute)

    async def _backfill(self, due: DueMinute) -> None:
        """Fetch the missing 1m bars of ``due`` over REST, then the holes of the other intervals."""
        for request in self._book.backfill_requests(due, self._venue_now_ms()):
            await self._fetch_bars(request)
        for request in self._book.gap_requests(self._venue_now_ms()):
            await self._fetch_bars(request)

    async def _fetch_bars(self, r: KlineRequest) -> None:
        rest = self._rest
        assert rest is not None
        frame = await asyncio.to_thread(rest.klines, r.symbol, r.interval, r.start_ms, r.end_ms)
        wall_ms = _wall_ms()
        for bar in closed_bars(r.symbol, r.interval, frame):
            self._store_row(bar, self._book.on_kline(bar, wall_ms, fill=True))

    async def _close(self, minute: int) -> None:
        book, rest = self._book, self._rest
        assert rest is not None
        for r in book.close_requests(minute, self._venue_now_ms()):
            if isinstance(r, MarkRequest):
                mark = await asyncio.to_thread(rest.mark_price_klines, r.symbol, "1m", r.start_ms, r.end_ms)
                premium = await asyncio.to_thread(
                    rest.premium_index_klines, r.symbol, "1m", r.start_ms, r.end_ms
                )
                book.add_rest_marks(r.symbol, mark, premium)
            else:
                frame = await asyncio.to_thread(rest.funding_rates, r.symbol, r.start_ms, r.end_ms)
                book.settle_funding(
                    r.symbol, frame["ts"].tolist(), frame["funding_rate"].tolist(), r.end_ms - 1
                )
        wall_ms = _wall_ms()
        closed = book.close(minute, self._venue_now_ms(), wall_ms)
        self._last_close_latency_ms = wall_ms - closed.event.received_ms
        self._submit_features(closed.rows)
        if self._bus is not None:
            try:
                self._bus.publish_many(Topic.FEATURES_READY, [
                    FeaturesReady(symbol=r.symbol, ts_ms=minute, schema_version=r.schema_version, schema_hash=r.schema_hash)
                    for r in closed.rows
                ])  # fmt: skip
            except Exception:
                log.exception("publishing features.ready failed")
        if self._hook is not None:
            # the minute's ticks go before its close (venue-time order; one caller, so the execution
            # actor sees them in this order): a trigger crossed by a tick inside the bar exits on that
            # tick whatever the load, not on the bar rule of a close that overtook it
            await self._flush_ticks(before_ms=minute + MINUTE_MS)
            try:
                await self._hook.on_close(closed.event)
            except Exception:
                self._counts["hook_errors"] += 1
                log.exception("ingest hook on_close failed at %d", minute)

    # --- hook ticks --------------------------------------------------------------------------------

    async def _tick_flusher(self) -> None:
        while True:
            await self._tick_event.wait()
            await asyncio.sleep(self.config.tick_batch_ms / 1000)
            self._tick_event.clear()
            await self._flush_ticks()

    async def _flush_ticks(self, before_ms: int | None = None) -> None:
        """Hand the waiting ticks (those before ``before_ms``, if given) to the hook, oldest first, each
        with the book of its own time."""
        if before_ms is None:
            ticks, self._ticks = self._ticks, []
        else:
            ticks = [t for t in self._ticks if t.ts_ms < before_ms]
            self._ticks = [t for t in self._ticks if t.ts_ms >= before_ms]
        if not ticks or self._hook is None:
            return
        self._counts["tick_batches"] += 1
        try:
            await self._hook.on_ticks(self._book.with_book_at(ticks))
        except Exception:
            self._counts["hook_errors"] += 1
            log.exception("ingest hook on_ticks failed")

    # --- storage -----------------------------------------------------------------------------------

    def _store_row(self, bar: KlineUpdate, row: dict[str, Any] | None) -> None:
        if row is not None:
            self._store_candles(bar.interval, [row], bar.symbol)

    def _store_candles(self, interval: str, rows: Any, symbol: str) -> None:
        if isinstance(rows, pd.DataFrame):
            if rows.empty:
                return
            rows = rows.assign(symbol=symbol)
        if self._writer is None or len(rows) == 0:
            return
        try:
            self._writer.submit_candles(
                interval, rows, self._book.own, source=f"ingest.g{self.config.group_id}"
            )
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
            **self._book.counts, **self._counts, "messages": dict(self._messages), "messages_per_s": total / elapsed,
            "reconnects": sum(c.reconnects for c in conns.values()),
            "connections": {n: {"connects": c.connects, "reconnects": c.reconnects, "silences": c.silences,
                                "proactive_reconnects": c.proactive_reconnects, "errors": c.errors,
                                "failed_connects": c.failed_connects, "connected": c.connected,
                                "last_error": c.last_error, "messages": c.messages,
                                "kind_messages": dict(c.kind_messages)} for n, c in conns.items()},
            "last_close_latency_ms": self._last_close_latency_ms, "last_minute_ms": self._book.last_minute,
            "writer": None if self._writer is None else self._writer.stats().__repr__(),
        }  # fmt: skip

    def hook_stats(self) -> dict[str, Any]:
        """The hook's own counters (``stats()`` of the decision side), {} without a hook or stats."""
        stats = getattr(self._hook, "stats", None)
        return stats() if callable(stats) else {}

    def freshness(self) -> dict[str, dict[str, Any]]:
        """Return per symbol the venue-time and wall-time ages (ms) of its last kline, mark and book,
        and why it is stale (None when fresh)."""
        return self._book.freshness(self._venue_now_ms(), _wall_ms())


@ray.remote(max_concurrency=8)  # type: ignore[call-overload]
class IngestActor(IngestService):
    """Ray shell of ``IngestService``: one async actor per symbol group."""


def _wall_ms() -> int:
    return int(time.time() * 1000)


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


def _last_candles(engine: sa.Engine, symbols: tuple[str, ...]) -> dict[str, int]:
    """The last stored 1m candle's ts of each of ``symbols`` that has one."""
    t = schema.candles_1m
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.symbol, sa.func.max(t.c.ts)).where(t.c.symbol.in_(symbols)).group_by(t.c.symbol)
        )
        return {str(s): int(ts) for s, ts in rows if ts is not None}


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


def _json_safe(value: Any) -> Any:
    # a malformed payload, kept as evidence: bounded, its raw non-finite numbers spelled "NaN"/"Infinity"
    return json_safe(_bounded(value), nonfinite="text")


def _bounded(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return repr(value)[:500]
    if isinstance(value, dict):
        return {str(k): _bounded(v, depth + 1) for k, v in list(value.items())[:100]}
    if isinstance(value, (list, tuple)):
        return [_bounded(v, depth + 1) for v in value[:100]]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)[:500]
