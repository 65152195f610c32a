"""Batched database writer (spec 001 §5.2): buffer rows, write them in bulk, lose nothing.

``BatchedWriter.submit(table, rows)`` normalizes the rows (a bad value is a ValueError right
there), appends them to the table's buffer and returns. A background thread writes each table's
buffer every ``flush_interval_s``, or as soon as it holds ``max_batch_rows``, one transaction per
table and batch (storage.bulk: binary COPY / upsert on PostgreSQL, executemany upsert on SQLite).

What can go wrong, and what happens:

- database down or busy (transient): the rows stay buffered, in order; the flush is retried with
  exponential backoff (``retry_initial_s`` … ``retry_max_s``); each failure is counted and
  reported through ``on_event``.
- buffer full (``max_buffer_rows``): ``submit`` raises WriterBackpressure and buffers nothing of
  that call, or waits up to ``block_timeout_s`` for room.
- a batch the database refuses (constraint or foreign-key violation, bad value): the batch is
  bisected to isolate the offending rows, the good rows are written, the offending ones go to the
  dead-letter list with the error. Never retried forever, never dropped.

``submit_candles`` is the door for candles: core.quality decides which rows may be stored; each
rejected row becomes a ``data_quality.rejected_candle`` row of ``events`` with its reason and values.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from core.config import WriterConfig
from core.errors import TransientError
from storage.batch import ColumnBatch, concat, to_batch
from storage.bulk import is_transient, is_upsert, table_of, write_batches
from storage.candle_door import REJECTED_CANDLE_KIND, CandleScreen, recorded_keys, screen_candles

log = logging.getLogger(__name__)
__all__ = [
    "REJECTED_CANDLE_KIND",
    "BatchedWriter",
    "CandleScreen",
    "DeadLetter",
    "WriterBackpressure",
    "WriterEvent",
    "WriterStats",
]

#: Failed attempts spent isolating bad rows of one batch before the rest is dead-lettered whole.
ISOLATION_BUDGET = 64


class WriterBackpressure(TransientError):
    """The writer's buffer is full: nothing of the refused call was buffered; retry later."""

    def __init__(self, table: str, table_rows: int, buffered_rows: int, max_rows: int, refused: int) -> None:
        super().__init__(
            f"writer buffer full: {buffered_rows} of at most {max_rows} rows buffered "
            f"({table_rows} for {table}); refused {refused} rows of {table}, buffered none of them"
        )
        self.table = table
        self.table_rows = table_rows
        self.buffered_rows = buffered_rows
        self.refused_rows = refused


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Rows the database refused for a non-transient reason, with the error."""

    table: str
    batch: ColumnBatch
    error: str
    error_type: str

    @property
    def n(self) -> int:
        return self.batch.n

    def rows(self) -> list[dict[str, Any]]:
        return self.batch.rows()


@dataclass(frozen=True, slots=True)
class WriterEvent:
    """What the writer reports through ``on_event``.

    kind: ``flushed`` (rows committed), ``flush_failed`` (transient: rows kept, retry in
    ``retry_in_s``), ``dead_letter`` (rows refused), ``candles_rejected`` (rows turned into events).
    """

    kind: str
    table: str
    rows: int
    error: str | None = None
    latency_s: float | None = None
    retry_in_s: float | None = None


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters since start. rows_submitted = rows_written + rows_buffered + rows_dead_lettered."""

    rows_submitted: int
    rows_written: int
    rows_buffered: int
    rows_dead_lettered: int
    rows_rejected: int
    flushes: int
    failures: int
    consecutive_failures: int
    dead_letters: int
    last_flush_latency_s: float | None
    last_error: str | None
    rows_rejected_before: int = 0  # of rows_rejected: their events were recorded before (a rerun)
    rows_written_by_table: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Chunk:
    seq: int
    batch: ColumnBatch


@dataclass(slots=True)
class _Counters:
    submitted: int = 0
    written: int = 0
    dead_rows: int = 0
    rejected: int = 0
    rejected_before: int = 0
    written_by_table: dict[str, int] = field(default_factory=dict)
    flushes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_latency_s: float | None = None
    last_error: str | None = None
    dead: list[DeadLetter] = field(default_factory=list)


class BatchedWriter:
    """Thread-safe buffered writer to the tables of storage.schema (see the module docstring)."""

    def __init__(
        self,
        engine: sa.Engine,
        config: WriterConfig,
        on_event: Callable[[WriterEvent], None] | None = None,
        *,
        start: bool = True,
    ) -> None:
        self._engine = engine
        self._config = config
        self._on_event = on_event
        self._cond = threading.Condition()
        self._flush_lock = threading.RLock()  # one flusher at a time keeps per-table order
        self._pending: dict[str, deque[_Chunk]] = {}
        self._table_rows: dict[str, int] = {}
        self._buffered = 0
        self._seq = 0
        self._closed = False
        self._stopping = False
        self._retry_at: float | None = None
        self._backoff_s = config.retry_initial_s
        self._counters = _Counters()
        self._event_keys: set[str] = set()  # keys of rejection events recorded (by anyone) or buffered
        self._keys_read: set[str | None] = set()  # symbols whose recorded keys were read
        self._thread = threading.Thread(target=self._run, name="raytrade-writer", daemon=True)
        if start:
            self._thread.start()

    # --- submitting -------------------------------------------------------------------------

    def submit(self, table_name: str, rows: Any, *, block_timeout_s: float | None = None) -> int:
        """Buffer ``rows`` for ``table_name`` and return how many; the write happens later.

        Raises ValueError for rows that do not fit the table, WriterBackpressure when the buffer
        has no room (after waiting up to ``block_timeout_s`` seconds, when given).
        """
        table = table_of(table_name)
        batch = to_batch(table, rows, require_pk=is_upsert(table))
        self._enqueue([batch], block_timeout_s)
        return batch.n

    def submit_candles(
        self,
        interval: str,
        rows: Any,
        known_symbols: Collection[str] | None,
        *,
        source: str = "writer.candle_door",
        ts_ms: int | None = None,
        block_timeout_s: float | None = None,
    ) -> CandleScreen:
        """Buffer the acceptable candle rows for ``candles_<interval>``; record the others as events.

        storage.candle_door decides (core.quality.check_candles; ``known_symbols`` None accepts
        any symbol); each rejected row becomes one ``events`` row of kind
        ``data_quality.rejected_candle`` stamped ``ts_ms`` (default: now). Candles and events are
        buffered together or not at all (WriterBackpressure).
        """
        now_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
        screen = screen_candles(interval, rows, known_symbols, source=source, now_ms=now_ms)
        events, fresh_keys = self._unrecorded(screen)
        batches = [screen.accepted] if events is None else [screen.accepted, events]
        self._enqueue(batches, block_timeout_s)
        if screen.rejections:
            with self._cond:
                self._counters.rejected += len(screen.rejections)
                self._counters.rejected_before += len(screen.rejections) - len(fresh_keys)
                self._event_keys |= fresh_keys
            self._emit(WriterEvent("candles_rejected", screen.accepted.table, len(screen.rejections)))
        return screen

    def _unrecorded(self, screen: CandleScreen) -> tuple[ColumnBatch | None, set[str]]:
        """The rejection events of ``screen`` not recorded before (in ``events`` or by this writer),
        and their keys: a rerun rejecting the same rows records nothing twice."""
        if screen.events is None:
            return None, set()
        symbols = set(screen.events.columns["symbol"].values.tolist())
        with self._cond:
            unread = symbols - self._keys_read
        if unread:  # once per symbol and writer: the hot path asks the database no more than that
            try:
                stored = recorded_keys(self._engine, unread)
            except Exception as e:  # database down: keep them all; a duplicate event beats a lost one
                log.warning("could not read recorded rejection events: %s", _describe(e))
            else:
                with self._cond:
                    self._event_keys |= stored
                    self._keys_read |= unread
        with self._cond:
            known = set(self._event_keys)
        fresh = []
        for i, key in enumerate(screen.event_keys):
            if key not in known:
                known.add(key)
                fresh.append(i)
        keys = {screen.event_keys[i] for i in fresh}
        if len(fresh) == screen.events.n:
            return screen.events, keys
        return (screen.events.take(np.array(fresh, dtype=np.intp)) if fresh else None), keys

    def _enqueue(self, batches: list[ColumnBatch], block_timeout_s: float | None) -> None:
        n = sum(b.n for b in batches)
        if n == 0:
            return
        first = batches[0].table
        limit = self._config.max_buffer_rows
        deadline = None if block_timeout_s is None else time.monotonic() + block_timeout_s
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the writer is closed: it accepts no more rows")
                if self._buffered + n <= limit:
                    break
                remaining = 0.0 if deadline is None else deadline - time.monotonic()
                if n > limit or remaining <= 0:
                    raise WriterBackpressure(first, self._table_rows.get(first, 0), self._buffered, limit, n)
                self._cond.wait(remaining)
            self._seq += 1
            for b in batches:
                if b.n:
                    self._pending.setdefault(b.table, deque()).append(_Chunk(self._seq, b))
                    self._table_rows[b.table] = self._table_rows.get(b.table, 0) + b.n
            self._buffered += n
            self._counters.submitted += n
            if any(self._table_rows.get(b.table, 0) >= self._config.max_batch_rows for b in batches):
                self._cond.notify_all()

    # --- flushing ---------------------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> bool:
        """Write every row submitted before this call; return False if ``timeout_s`` ran out first.

        While the database is down this retries with backoff; with ``timeout_s`` None it waits
        until it is back. Rows the database refuses count as done (they are dead letters).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            target = self._seq
        while self._pending_through(target):
            with self._cond:  # after a failure, wait out the backoff (a success elsewhere ends it)
                while self._retry_at is not None and (now := time.monotonic()) < self._retry_at:
                    if deadline is not None and now >= deadline:
                        return not self._pending_through(target)
                    until = self._retry_at if deadline is None else min(self._retry_at, deadline)
                    self._cond.wait(until - now)
            self._flush_pass()
            if deadline is not None and time.monotonic() >= deadline:
                return not self._pending_through(target)
        return True

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, then stop the background thread; raise TransientError if rows are left unwritten."""
        done = self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        if not done:
            with self._cond:
                left = self._buffered
            raise TransientError(
                f"writer closed with {left} rows still buffered: the database did not take them"
            )

    def __enter__(self) -> BatchedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> WriterStats:
        """Return the counters (a consistent snapshot)."""
        with self._cond:
            c = self._counters
            return WriterStats(
                rows_submitted=c.submitted,
                rows_written=c.written,
                rows_buffered=self._buffered,
                rows_dead_lettered=c.dead_rows,
                rows_rejected=c.rejected,
                flushes=c.flushes,
                failures=c.failures,
                consecutive_failures=c.consecutive_failures,
                dead_letters=len(c.dead),
                last_flush_latency_s=c.last_latency_s,
                last_error=c.last_error,
                rows_rejected_before=c.rejected_before,
                rows_written_by_table=dict(c.written_by_table),
            )

    def dead_letters(self) -> list[DeadLetter]:
        """Return the batches the database refused, oldest first."""
        with self._cond:
            return list(self._counters.dead)

    def _pending_through(self, seq: int) -> bool:
        with self._cond:
            return any(q and q[0].seq <= seq for q in self._pending.values())

    def _run(self) -> None:
        interval = self._config.flush_interval_s
        next_due = time.monotonic() + interval
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    if self._retry_at is not None:
                        if now >= self._retry_at:
                            break
                        self._cond.wait(self._retry_at - now)
                        continue
                    if self._buffered and (now >= next_due or self._any_table_full()):
                        break
                    if now >= next_due:
                        next_due = now + interval
                    self._cond.wait(max(0.0, next_due - now))
                if self._stopping:
                    return
            try:
                self._flush_pass()
            except Exception:  # a bug must not stop the flusher: the rows stay buffered
                log.exception("writer flush pass failed")
                self._transient_failure("*", self._buffered, TransientError("flush pass crashed"))
            next_due = time.monotonic() + interval

    def _any_table_full(self) -> bool:
        return any(n >= self._config.max_batch_rows for n in self._table_rows.values())

    def _flush_pass(self) -> bool:
        """Write what is buffered now, table by table; return False after a transient failure."""
        with self._flush_lock:
            with self._cond:
                limit_seq = self._seq
                tables = [t for t, q in self._pending.items() if q]
            for table in tables:
                while chunks := self._take(table, limit_seq):
                    if not self._write(table, chunks):
                        return False
            return True

    def _take(self, table: str, limit_seq: int) -> list[_Chunk]:
        """Return the oldest chunks of ``table`` (up to max_batch_rows), left in the buffer."""
        cap = self._config.max_batch_rows
        with self._cond:
            q = self._pending.get(table)
            if not q or q[0].seq > limit_seq:
                return []
            if q[0].batch.n > cap:  # split an oversized chunk so one transaction stays bounded
                big = q.popleft()
                q.appendleft(_Chunk(big.seq, big.batch.take(slice(cap, None))))
                q.appendleft(_Chunk(big.seq, big.batch.take(slice(0, cap))))
            out, rows = [], 0
            for chunk in q:
                if chunk.seq > limit_seq or rows + chunk.batch.n > cap:
                    break
                out.append(chunk)
                rows += chunk.batch.n
            return out

    def _write(self, table: str, chunks: list[_Chunk]) -> bool:
        runs = _runs([c.batch for c in chunks])
        n = sum(c.batch.n for c in chunks)
        started = time.monotonic()
        try:
            write_batches(self._engine, runs)
        except Exception as e:
            if is_transient(e):
                self._transient_failure(table, n, e)
                return False
            self._count_failure(e)
            written, commits, remaining, dead, transient = self._isolate(runs, e)
            self._complete(table, chunks, written, remaining, dead, commits=commits)
            for letter in dead:
                log.error("dead letter: %d rows of %s refused: %s", letter.n, table, letter.error)
                self._emit(WriterEvent("dead_letter", table, letter.n, error=letter.error))
            if transient is not None:
                self._transient_failure(table, sum(b.n for b in remaining), transient)
                return False
            return True
        latency = time.monotonic() - started
        self._complete(table, chunks, n, [], [], commits=1, latency_s=latency)
        self._emit(WriterEvent("flushed", table, n, latency_s=latency))
        return True

    def _isolate(
        self, runs: list[ColumnBatch], error: Exception
    ) -> tuple[int, int, list[ColumnBatch], list[DeadLetter], Exception | None]:
        """Bisect refused batches: write the good rows, dead-letter the bad ones.

        Returns (rows written, transactions committed, batches left for a retry after a transient
        error, dead letters, that transient error or None).
        """
        queue: deque[tuple[ColumnBatch, Exception | None]] = deque(
            (run, error if len(runs) == 1 else None) for run in runs
        )
        written, commits, budget = 0, 0, ISOLATION_BUDGET
        dead: list[DeadLetter] = []
        while queue:
            batch, failed = queue.popleft()
            if failed is None:
                try:
                    write_batches(self._engine, [batch])
                    written, commits = written + batch.n, commits + 1
                    continue
                except Exception as e:
                    if is_transient(e):
                        return written, commits, [batch, *(b for b, _ in queue)], dead, e
                    failed, budget = e, budget - 1
            if batch.n == 1 or budget <= 0:
                dead.append(DeadLetter(batch.table, batch, _describe(failed), type(failed).__name__))
                continue
            half = batch.n // 2
            queue.appendleft((batch.take(slice(half, None)), None))
            queue.appendleft((batch.take(slice(0, half)), None))
        return written, commits, [], dead, None

    def _complete(
        self,
        table: str,
        chunks: list[_Chunk],
        written: int,
        remaining: list[ColumnBatch],
        dead: list[DeadLetter],
        *,
        commits: int,
        latency_s: float | None = None,
    ) -> None:
        """Replace ``chunks`` (the oldest of ``table``) by ``remaining`` and count the outcome."""
        with self._cond:
            q = self._pending[table]
            for chunk in chunks:
                assert q[0] is chunk, "buffer changed under the flusher"
                q.popleft()
            seq = chunks[0].seq
            q.extendleft(_Chunk(seq, b) for b in reversed(remaining))
            done = written + sum(d.n for d in dead)
            self._table_rows[table] -= done
            self._buffered -= done
            c = self._counters
            c.written += written
            c.written_by_table[table] = c.written_by_table.get(table, 0) + written
            c.dead_rows += sum(d.n for d in dead)
            c.dead.extend(dead)
            c.flushes += commits
            if latency_s is not None:
                c.last_latency_s = latency_s
            if not remaining:
                c.consecutive_failures = 0
                self._retry_at = None
                self._backoff_s = self._config.retry_initial_s
            self._cond.notify_all()

    def _count_failure(self, e: Exception) -> None:
        with self._cond:
            self._counters.failures += 1
            self._counters.last_error = _describe(e)

    def _transient_failure(self, table: str, n: int, e: Exception) -> None:
        with self._cond:
            c = self._counters
            c.failures += 1
            c.consecutive_failures += 1
            c.last_error = _describe(e)
            delay = self._backoff_s
            self._backoff_s = min(self._config.retry_max_s, self._backoff_s * 2)
            self._retry_at = time.monotonic() + delay
            self._cond.notify_all()
        log.warning("writing %d rows of %s failed (retry in %.1f s): %s", n, table, delay, _describe(e))
        self._emit(WriterEvent("flush_failed", table, n, error=_describe(e), retry_in_s=delay))

    def _emit(self, event: WriterEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("on_event callback failed for %s", event)


def _runs(batches: list[ColumnBatch]) -> list[ColumnBatch]:
    """Concatenate consecutive batches with the same columns (order kept)."""
    runs: list[list[ColumnBatch]] = []
    for b in batches:
        if runs and runs[-1][0].names == b.names:
            runs[-1].append(b)
        else:
            runs.append([b])
    return [concat(r) for r in runs]


def _describe(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip()
    return f"{type(orig if orig is not None else e).__name__}: {text}"
